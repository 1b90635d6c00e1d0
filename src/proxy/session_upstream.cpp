// The session's upstream side: connecting (recorded for the access line), refusing when that
// fails, and the data of the PROXY v2 header sent to the upstream first.
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <cstring>
#include <string>

#include "mtlsd/proxy/proxy_protocol.hpp"
#include "mtlsd/proxy/upstream.hpp"
#include "session_state.hpp"

namespace mtlsd::proxy::detail {
namespace {

// connect_upstream, recording the access line's upstream and upstream_connect_ms.
asio::awaitable<error_code> connect_and_record(session& s, std::string& why) {
  const auto begin = steady::now();
  steady::time_point resolved{};
  stream_endpoint connected_to;
  auto ec = co_await connect_upstream(s.upstream, s.listener->cfg.upstream, why, &resolved,
                                      &connected_to);
  s.upstream_connect_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - begin).count();
  // The address connected to; after a failed connect, the one configured (what was tried: an
  // IP literal, a unix socket, or the name whose addresses were).
  s.upstream_address = ec ? s.listener->cfg.upstream.str() : format_endpoint(connected_to);
  trace_connect(s, begin, resolved, ec, why);
  co_return ec;
}

// The upstream connect failed. Running out of file descriptors is our capacity, not the
// upstream's fault: refused as over_capacity and not counted as an upstream failure.
void refuse_connect(session& s, const error_code& ec, const std::string& why) {
  if (out_of_descriptors(ec))
    return s.refuse(reason::over_capacity, "out of file descriptors: " + why);
  if (s.listener->metrics) s.listener->metrics->upstream_connect_failures->Increment();
  s.refuse(reason::upstream_unavailable, why);
}

}  // namespace

std::string connect_timeout_detail(const session& s) {
  const auto& cfg = s.listener->cfg;
  const std::string after = config::format_duration(cfg.timeouts.connect);
  if (s.connect_step.empty())
    return "connect to " + cfg.upstream.str() + " timed out after " + after;
  return s.connect_step + " timed out after " + after + " (connect to " + cfg.upstream.str() + ")";
}

asio::awaitable<connect_end> connect_phase(session& s) {
  using namespace asio::experimental::awaitable_operators;
  // timeouts.connect bounds the connect here, so that a timeout is a refusal like any other:
  // the client of an http: listener gets its 502 (review: the phase's deadline cut the session,
  // and it got an empty reply). The phase's deadline, a second later, stays the backstop.
  const auto limit = s.listener->cfg.timeouts.connect;
  s.enter(phase::connect, limit + std::chrono::seconds(1));
  std::string why;
  asio::steady_timer deadline(s.peer.get_executor(), limit);
  auto first = co_await (connect_and_record(s, why) ||
                         deadline.async_wait(asio::as_tuple(asio::use_awaitable)));
  error_code ec = first.index() == 0 ? std::get<0>(first) : error_code{};
  if (first.index() == 1 && std::get<0>(std::get<1>(first)))  // cancelled with the session
    ec = asio::error::operation_aborted;
  if (!ec && first.index() == 0) co_return connect_end::connected;
  if (ec == asio::error::operation_aborted) {  // the watchdog's verdict: see finish()
    s.connect_step = std::move(why);
    co_return connect_end::cut;
  }
  if (first.index() == 1) {  // timed out: the connect was cancelled and said which step ran
    s.connect_step = std::move(why);
    if (s.listener->metrics) s.listener->metrics->upstream_connect_failures->Increment();
    s.refuse(reason::upstream_unavailable, connect_timeout_detail(s));
    co_return connect_end::refused;
  }
  refuse_connect(s, ec, why);
  co_return connect_end::refused;
}

asio::awaitable<bool> send_proxy_header(session& s, SSL* ssl) {
  const std::string header = build_proxy_v2_header(proxy_info(s, ssl));
  auto [ec, n] = co_await asio::async_write(s.upstream, asio::buffer(header),
                                            asio::as_tuple(asio::use_awaitable));
  if (!ec) co_return true;
  // The upstream took the connection and then failed: counted against it, as a failed
  // connect is (refuse_connect).
  if (s.listener->metrics) s.listener->metrics->upstream_connect_failures->Increment();
  s.refuse(reason::upstream_unavailable, "writing the PROXY header: " + ec.message());
  co_return false;
}

namespace {

sockaddr_storage sockaddr_of(const stream_endpoint& ep) {
  sockaddr_storage out{};
  std::memcpy(&out, ep.data(), std::min<std::size_t>(ep.size(), sizeof out));
  return out;
}

}  // namespace

// Everything the PROXY v2 header tells the upstream about this connection.
proxy_v2_info proxy_info(const session& s, SSL* ssl) {
  proxy_v2_info info;
  error_code ec;
  info.source = s.proxied ? s.proxied->source : sockaddr_of(s.remote);
  info.destination = s.proxied ? s.proxied->destination : sockaddr_of(s.peer.local_endpoint(ec));
  const unsigned char* alpn = nullptr;
  unsigned alpn_len = 0;
  SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
  if (alpn) info.alpn.assign(reinterpret_cast<const char*>(alpn), alpn_len);
  info.authority = s.sni;
  info.tls_version = s.tls_version;
  info.cipher = s.cipher;
  info.resumed = s.resumed;
  if (X509* cert = SSL_get0_peer_certificate(ssl)) {
    info.client_cert = true;
    // Verified = judged: the session holds a verified identity only for a peer the verify
    // callback accepted (or a resumed one judged again). Not SSL_get_verify_result: the callback
    // accepts some errors on purpose (an issuing CA trusted alone, a CRL within crl_grace, a CRL
    // gap left to another source), which OpenSSL still records as the result, and the upstream
    // would read such an admitted peer as unverified (tls/revocation/stapling.cpp, likewise).
    info.verified = s.peer_identity.has_value();
    info.signature_algorithm = OBJ_nid2sn(X509_get_signature_nid(cert));
    if (EVP_PKEY* key = X509_get0_pubkey(cert)) {
      // HAProxy's spelling: "RSA2048", "EC256", "ED25519".
      const int id = EVP_PKEY_get_base_id(key);
      if (id == EVP_PKEY_RSA)
        info.key_algorithm = "RSA" + std::to_string(EVP_PKEY_get_bits(key));
      else if (id == EVP_PKEY_EC)
        info.key_algorithm = "EC" + std::to_string(EVP_PKEY_get_bits(key));
      else
        info.key_algorithm = OBJ_nid2sn(id);
    }
    unsigned char* der = nullptr;
    int len = i2d_X509(cert, &der);
    if (len > 0)
      info.cert_der.assign(reinterpret_cast<const char*>(der), static_cast<std::size_t>(len));
    OPENSSL_free(der);
  }
  if (s.peer_identity) {
    info.common_name = s.peer_identity->common_name;
    info.spiffe_id = s.peer_identity->spiffe_id;
    info.uri_sans = s.peer_identity->uri_sans;
    info.dns_sans = s.peer_identity->dns_sans;
    info.cert_sha256 = s.peer_identity->sha256;
  }
  return info;
}

}  // namespace mtlsd::proxy::detail
