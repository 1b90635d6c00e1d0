// Private key files in each format the contract names ("PEM or DER, possibly encrypted"),
// read by tls::load_private_key.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <string>

#include "mtlsd/config/diagnostic.hpp"
#include "mtlsd/tls/credentials.hpp"
#include "test_pki.hpp"

namespace {

using ::testing::HasSubstr;
using namespace mtlsd;

// `key` as an encrypted PKCS#8 DER file (what `openssl pkcs8 -topk8 -outform DER` writes).
std::string encrypted_pkcs8_der(EVP_PKEY* key, const std::string& password) {
  BIO* bio = BIO_new(BIO_s_mem());
  EXPECT_EQ(i2d_PKCS8PrivateKey_bio(bio, key, EVP_aes_256_cbc(), nullptr, 0, nullptr,
                                    const_cast<char*>(password.c_str())),
            1);
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  std::string out(data, static_cast<std::size_t>(n));
  BIO_free(bio);
  return out;
}

std::string error_of(const config::file_ref& f, const std::string& password) {
  try {
    tls::load_private_key(f, password);
  } catch (const config::config_error& e) {
    return e.what();
  }
  return "";
}

// Review: an encrypted DER key was "no private key found" with the right password.
TEST(PrivateKeyFormats, EncryptedPkcs8DerIsDecrypted) {
  test::pki_dir dir;
  const test::credential ca = test::make_root_ca({.cn = "Key formats CA"});
  const config::file_ref f{dir.write("key.der", encrypted_pkcs8_der(ca.key(), "secretpw")), {}};
  const auto key = tls::load_private_key(f, "secretpw");
  ASSERT_TRUE(key);
  EXPECT_EQ(EVP_PKEY_eq(key.get(), ca.key()), 1);
  EXPECT_THAT(error_of(f, ""), HasSubstr("private key is encrypted: set key_password_file"));
  EXPECT_THAT(error_of(f, "wrong"), HasSubstr("cannot decrypt private key: wrong password?"));
}

}  // namespace
