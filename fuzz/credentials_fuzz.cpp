// The files an operator names (tls/credentials.hpp), as load and reload read them: certificate
// chains and CA bundles (PEM with several blocks, or DER), CRL files, private keys, password
// files. Input: byte 0 chooses the reader, the rest is the file's content.
// Properties: a reader either returns something usable or throws config_error naming the file,
// never both and never a crash; a chain or CRL list it returns is not empty and holds no null;
// the text mtlsd derives from what it loaded (subject, issuer, serial, validity, the strict-CA
// check, a CRL's issuer and dates) can be computed; a password file loses only its trailing
// line ends. Keys are read without a password (an encrypted one is refused before any key
// derivation: an operator's file may ask for any number of iterations, which says nothing
// about mtlsd).
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "fuzz_support.hpp"
#include "mtlsd/config/config.hpp"
#include "mtlsd/tls/credentials.hpp"
#include "mtlsd/tls/revocation/crl.hpp"

using namespace mtlsd;
namespace fs = std::filesystem;

namespace {

const std::string& input_path() {
  static const std::string path = [] {
    const fs::path dir =
        fs::temp_directory_path() / ("mtlsd-credentials-fuzz-" + std::to_string(::getpid()));
    fs::create_directories(dir);
    return (dir / "input").string();
  }();
  return path;
}

void touch_all(const tls::cert_chain& chain) {
  fuzz::check(!chain.empty(), "a chain that loads holds a certificate");
  for (const auto& c : chain) {
    fuzz::check(c != nullptr, "no null certificate");
    (void)tls::subject_of(c.get());
    (void)tls::issuer_of(c.get());
    (void)tls::serial_of(c.get());
    (void)tls::not_after_of(c.get());
    (void)tls::not_before_of(c.get());
    (void)tls::strict_ca_problem(c.get());
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::string_view content(reinterpret_cast<const char*>(data) + 1, size - 1);
  {
    std::ofstream out(input_path(), std::ios::binary | std::ios::trunc);
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
  }
  const config::file_ref file{input_path(), {}};
  try {
    switch (data[0] % 4) {
      case 0:
        touch_all(tls::load_cert_chain(file));
        break;
      case 1: {
        const auto crls = tls::load_crls(file);
        fuzz::check(!crls.empty(), "a CRL file that loads holds a CRL");
        for (const auto& crl : crls) {
          fuzz::check(crl != nullptr, "no null CRL");
          (void)tls::revocation::crl_this_update(crl.get());
          (void)tls::revocation::crl_next_update(crl.get());
          (void)tls::revocation::crl_issuer_text(crl.get());
        }
        break;
      }
      case 2:
        fuzz::check(tls::load_private_key(file, "") != nullptr, "a key that loads is a key");
        break;
      case 3: {
        const std::string secret = tls::read_secret_file(file);
        fuzz::check(
            content.substr(0, secret.size()) == secret &&
                content.substr(secret.size()).find_first_not_of("\r\n") == std::string_view::npos,
            "a password file loses only its trailing line ends");
        break;
      }
    }
  } catch (const config::config_error& e) {
    fuzz::check(std::string_view(e.what()).find(input_path()) != std::string_view::npos,
                "an error names the file");
  }
  return 0;
}
