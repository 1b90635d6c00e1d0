#pragma once
// Shared by the fuzz targets: the fixed test PKI of fixtures/ and a quiet logger.
#include <openssl/x509.h>

#include <string>

#include "mtlsd/tls/openssl.hpp"

namespace mtlsd::fuzz {

// The content of fixtures/<name>; aborts when missing (a broken build, not an input).
std::string fixture(const std::string& name);
// A PEM certificate from fixtures/.
tls::x509_ptr fixture_cert(const std::string& name);
// The absolute path of fixtures/<name>.
std::string fixture_path(const std::string& name);

// Logs nothing: a fuzzer writing a line per input would spend its time in stderr.
void quiet_logs();

// Fails the run (libFuzzer reports it as a crash with the input) when `ok` is false.
void check(bool ok, const char* what);

// For a target whose harness makes blocking system calls (connect, accept, send, read): adds
// SA_RESTART to the SIGALRM handler libFuzzer installs for -timeout (without it; it fires every
// timeout/2 + 1 seconds, 6 s under dev.sh fuzz), so that such a call it lands in goes on rather
// than failing with EINTR, which the harness took for a failing property (admin_server_fuzz:
// "a client connects to the admin listener", after ~10 minutes of fuzzing). Call it at the top of
// LLVMFuzzerTestOneInput: libFuzzer installs the handler after LLVMFuzzerInitialize.
void restart_interrupted_calls();

}  // namespace mtlsd::fuzz
