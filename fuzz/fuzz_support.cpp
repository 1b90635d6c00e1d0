#include "fuzz_support.hpp"

#include <openssl/pem.h>
#include <spdlog/spdlog.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace mtlsd::fuzz {

std::string fixture_path(const std::string& name) {
  return std::string(MTLSD_FUZZ_FIXTURES) + "/" + name;
}

std::string fixture(const std::string& name) {
  std::ifstream in(fixture_path(name), std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "fuzz: missing fixture %s\n", fixture_path(name).c_str());
    std::abort();
  }
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

tls::x509_ptr fixture_cert(const std::string& name) {
  const std::string pem = fixture(name);
  tls::bio_ptr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  tls::x509_ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) {
    std::fprintf(stderr, "fuzz: fixture %s holds no certificate\n", name.c_str());
    std::abort();
  }
  return cert;
}

void quiet_logs() {
  spdlog::set_level(spdlog::level::off);
}

void check(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "fuzz: property violated: %s\n", what);
  std::abort();
}

void restart_interrupted_calls() {
  static const bool done = [] {
    struct sigaction alarm {};
    if (::sigaction(SIGALRM, nullptr, &alarm) != 0) return false;
    const bool handled = (alarm.sa_flags & SA_SIGINFO) != 0
                             ? alarm.sa_sigaction != nullptr
                             : alarm.sa_handler != SIG_DFL && alarm.sa_handler != SIG_IGN;
    if (!handled) return false;  // no -timeout alarm: nothing to restart after
    alarm.sa_flags |= SA_RESTART;
    return ::sigaction(SIGALRM, &alarm, nullptr) == 0;
  }();
  (void)done;
}

}  // namespace mtlsd::fuzz
