#include "mtlsd/tls/client_hello.hpp"

#include "mtlsd/log/log.hpp"
#include "mtlsd/tls/verify.hpp"

namespace mtlsd::tls {

std::string normalize_server_name(std::string name) {
  for (auto& c : name) {
    const auto u = static_cast<unsigned char>(c);
    // Lower-case; anything a host name cannot hold is shown as '?' (it reaches the log).
    if (u >= 'A' && u <= 'Z')
      c = static_cast<char>(u - 'A' + 'a');
    else if (!((u >= 'a' && u <= 'z') || (u >= '0' && u <= '9') || u == '.' || u == '-' ||
               u == '_'))
      c = '?';
  }
  // The absolute form names the same host. Every final dot goes: "a.b.." is no host name, and
  // one left would keep the name from matching the rules' "a.b" (fuzzing found it).
  while (!name.empty() && name.back() == '.')
    name.pop_back();
  return name;
}

// OpenSSL itself rejects a malformed extension later in the handshake.
std::string client_sni(SSL* ssl) {
  const unsigned char* p = nullptr;
  std::size_t len = 0;
  if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &p, &len) != 1 || len < 2) return {};
  std::size_t list = (std::size_t{p[0]} << 8) | p[1];
  if (list + 2 > len) return {};
  p += 2;
  while (list >= 3) {
    const unsigned type = p[0];
    const std::size_t n = (std::size_t{p[1]} << 8) | p[2];
    if (n + 3 > list) return {};
    if (type == TLSEXT_NAMETYPE_host_name)
      return normalize_server_name(std::string(reinterpret_cast<const char*>(p + 3), n));
    p += 3 + n;
    list -= 3 + n;
  }
  return {};
}

std::string client_alpn_offer(SSL* ssl) {
  const unsigned char* p = nullptr;
  std::size_t len = 0;
  if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation, &p,
                                &len) != 1 ||
      len < 2)
    return {};
  std::size_t list = (std::size_t{p[0]} << 8) | p[1];
  if (list + 2 > len) return {};
  p += 2;
  std::string out;
  while (list >= 1) {
    const std::size_t n = p[0];
    if (n + 1 > list) break;
    if (!out.empty()) out += ',';
    for (std::size_t i = 0; i < n; ++i) {
      const auto u = p[1 + i];
      out += (u < 0x20 || u >= 0x7f || u == ',') ? '?' : static_cast<char>(u);
    }
    p += 1 + n;
    list -= 1 + n;
  }
  return out;
}

void debug_client_hello(SSL* ssl) {
  if (!log::enabled(spdlog::level::debug)) return;
  const verify_outcome* vo = verifier::outcome_of(ssl);
  log::debug("ClientHello received", {{"conn_id", vo ? vo->conn_id : 0},
                                      {"sni", client_sni(ssl)},
                                      {"alpn_offered", client_alpn_offer(ssl)}});
}

namespace {
int observe(SSL* ssl, int*, void*) {
  debug_client_hello(ssl);
  record_client_sni(ssl, client_sni(ssl));
  return SSL_CLIENT_HELLO_SUCCESS;
}
}  // namespace

void record_client_sni(SSL* ssl, std::string sni) {
  // A TLS 1.3 HelloRetryRequest runs the callback twice: the second ClientHello's name stands.
  if (verify_outcome* vo = verifier::outcome_of(ssl)) vo->sni = std::move(sni);
}

void observe_client_hello(SSL_CTX* ctx) {
  SSL_CTX_set_client_hello_cb(ctx, observe, nullptr);
}

}  // namespace mtlsd::tls
