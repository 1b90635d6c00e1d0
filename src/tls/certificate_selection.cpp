#include "mtlsd/tls/certificate_selection.hpp"

#include <openssl/err.h>
#include <openssl/evp.h>

#include <algorithm>

#include "mtlsd/tls/client_hello.hpp"
#include "mtlsd/tls/verify.hpp"

namespace mtlsd::tls {
namespace {

void add_once(std::vector<std::size_t>& v, std::size_t i) {
  if (std::find(v.begin(), v.end(), i) == v.end()) v.push_back(i);
}

const char* key_type_name(int id) {
  switch (id) {
    case EVP_PKEY_RSA:
      return "RSA";
    case EVP_PKEY_RSA_PSS:
      return "RSA-PSS";
    case EVP_PKEY_EC:
      return "ECDSA";
    case EVP_PKEY_ED25519:
      return "Ed25519";
    case EVP_PKEY_ED448:
      return "Ed448";
    default:
      return "this";
  }
}

}  // namespace

certificate_selector::certificate_selector(const config::tls_options& t) : strict_(t.strict_sni) {
  try {
    build(t);
  } catch (...) {
    // A constructor that throws runs no destructor: free the chain stacks made so far.
    for (auto* c : chains_)
      sk_X509_free(c);
    throw;
  }
}

void certificate_selector::build(const config::tls_options& t) {
  for (std::size_t i = 0; i < t.certificates.size(); ++i) {
    const auto& e = t.certificates[i];
    certs_.push_back(load_key_pair(e));
    where_.push_back(e.where);
    STACK_OF(X509)* chain = sk_X509_new_null();
    const auto& kp = certs_.back();
    for (std::size_t j = 1; j < kp.chain.size(); ++j)
      sk_X509_push(chain, kp.chain[j].get());  // certs_ keeps the references alive
    chains_.push_back(chain);
    if (e.server_names.empty()) default_.push_back(i);
    for (const auto& name : e.server_names) {
      if (name.rfind("*.", 0) == 0)
        add_once(wildcard_[name.substr(2)], i);
      else
        add_once(exact_[name], i);
    }
  }
  // No entry without server_names: the first entry's first name stands for the default, with
  // every entry that serves that name (an RSA and an ECDSA certificate stay together).
  const bool borrowed = default_.empty() && !t.certificates.empty();
  if (borrowed) {
    const std::string& first = t.certificates.front().server_names.front();
    default_ = first.rfind("*.", 0) == 0 ? wildcard_[first.substr(2)] : exact_[first];
  }
  // (A default borrowed from the first name is checked with that name below.)
  if (!borrowed) check_key_types(t, default_, "the default (no server_names)");
  for (const auto& [name, entries] : exact_)
    check_key_types(t, entries, "'" + name + "'");
  for (const auto& [suffix, entries] : wildcard_)
    check_key_types(t, entries, "'*." + suffix + "'");
}

certificate_selector::~certificate_selector() {
  for (auto* c : chains_)
    sk_X509_free(c);
}

// One slot per key type in OpenSSL: a second RSA certificate for the same name would silently
// replace the first, so it is refused at load.
void certificate_selector::check_key_types(const config::tls_options& t,
                                           const std::vector<std::size_t>& entries,
                                           const std::string& names) const {
  for (std::size_t a = 0; a < entries.size(); ++a)
    for (std::size_t b = a + 1; b < entries.size(); ++b) {
      const int ka = EVP_PKEY_get_base_id(certs_[entries[a]].key.get());
      const int kb = EVP_PKEY_get_base_id(certs_[entries[b]].key.get());
      if (ka != kb) continue;
      throw config::config_error(
          {{t.certificates[entries[b]].where,
            "tls.certificates[" + std::to_string(entries[b]) + "]: entry " +
                std::to_string(entries[a]) + " already serves " + names +
                " with the same key type (" + key_type_name(ka) + ")" +
                "; give at most one certificate per key type for the same names",
            false}});
    }
}

void certificate_selector::attach(SSL_CTX* ctx) const {
  for (const auto i : default_) {
    if (SSL_CTX_use_cert_and_key(ctx, certs_[i].chain.front().get(), certs_[i].key.get(),
                                 chains_[i], 0) != 1)
      throw config::config_error(
          {{where_[i],
            "cannot use certificate " + subject_of(certs_[i].chain.front().get()) + ": " +
                drain_errors(),
            false}});
  }
  SSL_CTX_set_client_hello_cb(ctx, &certificate_selector::on_client_hello,
                              const_cast<certificate_selector*>(this));
}

const std::vector<std::size_t>& certificate_selector::select(std::string_view sni,
                                                             bool& named) const {
  named = true;
  if (!sni.empty()) {
    if (auto it = exact_.find(std::string(sni)); it != exact_.end()) return it->second;
    // `*.suffix` covers exactly one more label, like certificate wildcards.
    if (const auto dot = sni.find('.'); dot != std::string_view::npos && dot > 0)
      if (auto it = wildcard_.find(std::string(sni.substr(dot + 1))); it != wildcard_.end())
        return it->second;
  }
  named = sni.empty();  // no SNI at all is not an unknown name
  return default_;
}

int certificate_selector::on_client_hello(SSL* ssl, int* alert, void* arg) {
  debug_client_hello(ssl);
  const auto* self = static_cast<const certificate_selector*>(arg);
  const std::string sni = client_sni(ssl);
  // RFC 8446 4.1.2: the ClientHello after a HelloRetryRequest is the first one with a few
  // changes, none of them its server name. One naming another server would be served the
  // certificates chosen for the first (review: a second falling to the default entries kept the
  // first's on the SSL) while the allow rules judged the second name.
  if (auto* vo = verifier::outcome_of(ssl)) {
    if (vo->client_hellos++ > 0 && vo->sni != sni) {
      vo->refusal = reason::protocol_error;
      vo->detail = "the ClientHello after HelloRetryRequest names server '" + sni +
                   "', the first named '" + vo->sni + "' (illegal_parameter alert sent)";
      *alert = SSL_AD_ILLEGAL_PARAMETER;
      return SSL_CLIENT_HELLO_ERROR;
    }
  }
  record_client_sni(ssl, sni);
  bool named = false;
  const auto& entries = self->select(sni, named);
  if (!named && self->strict_) {
    if (auto* vo = verifier::outcome_of(ssl)) {
      vo->refusal = reason::protocol_error;
      vo->detail =
          "strict_sni: no certificate for server name '" + sni + "' (unrecognized_name alert sent)";
    }
    *alert = SSL_AD_UNRECOGNIZED_NAME;
    return SSL_CLIENT_HELLO_ERROR;
  }
  if (&entries == &self->default_) return SSL_CLIENT_HELLO_SUCCESS;  // already on the context
  // A TLS 1.3 HelloRetryRequest runs this callback a second time: clearing first keeps it
  // idempotent.
  SSL_certs_clear(ssl);
  for (const auto i : entries) {
    if (SSL_use_cert_and_key(ssl, self->certs_[i].chain.front().get(), self->certs_[i].key.get(),
                             self->chains_[i], 0) != 1) {
      ERR_clear_error();
      *alert = SSL_AD_INTERNAL_ERROR;
      return SSL_CLIENT_HELLO_ERROR;
    }
  }
  return SSL_CLIENT_HELLO_SUCCESS;
}

}  // namespace mtlsd::tls
