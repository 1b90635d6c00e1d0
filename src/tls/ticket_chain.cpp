#include "mtlsd/tls/ticket_chain.hpp"

#include <limits>
#include <string>

#include "mtlsd/tls/asn1_time.hpp"
#include "mtlsd/tls/verify.hpp"

namespace mtlsd::tls {
namespace {

// The application data's layout: a version byte (DER certificates start with 0x30, so the
// intermediates-only data of earlier versions never reads as facts), the chain's earliest
// notAfter and the CRL depths (big-endian, 8 and 4 bytes), then the intermediates' DER.
constexpr unsigned char facts_version = 1;
constexpr std::size_t facts_header = 1 + 8 + 4;

void put_be(std::string& out, std::uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i)
    out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

std::uint64_t get_be(const unsigned char* p, int bytes) {
  std::uint64_t v = 0;
  for (int i = 0; i < bytes; ++i)
    v = (v << 8) | p[i];
  return v;
}

// The facts in `session`'s application data, without decoding the intermediates (`der` points
// at them); false when there are none.
bool read_header(SSL_SESSION* session, std::time_t& not_after, std::uint32_t& crl_depths,
                 const unsigned char*& der, std::size_t& der_len) {
  void* data = nullptr;
  size_t len = 0;
  if (!session || SSL_SESSION_get0_ticket_appdata(session, &data, &len) != 1 || !data ||
      len < facts_header)
    return false;
  const auto* p = static_cast<const unsigned char*>(data);
  if (p[0] != facts_version) return false;
  not_after = static_cast<std::time_t>(get_be(p + 1, 8));
  crl_depths = static_cast<std::uint32_t>(get_be(p + 9, 4));
  der = p + facts_header;
  der_len = len - facts_header;
  return true;
}

// Called as a ticket is made: after a full handshake its verified chain, verify outcome and the
// peer's intermediates are at hand; after a resumption they are not, and the session keeps the
// facts its own ticket brought (OpenSSL copies the application data into the new session).
int store_facts(SSL* ssl, void*) {
  if (SSL_session_reused(ssl)) return 1;
  std::string data;
  data.push_back(static_cast<char>(facts_version));
  put_be(data, static_cast<std::uint64_t>(earliest_not_after(SSL_get0_verified_chain(ssl))), 8);
  const verify_outcome* vo = verifier::outcome_of(ssl);
  put_be(data, vo ? vo->crl_unusable_depths : 0, 4);
  std::string der;
  if (STACK_OF(X509)* chain = SSL_get_peer_cert_chain(ssl))
    for (int i = 0; i < sk_X509_num(chain); ++i) {
      unsigned char* out = nullptr;
      const int n = i2d_X509(sk_X509_value(chain, i), &out);
      if (n > 0) der.append(reinterpret_cast<const char*>(out), static_cast<std::size_t>(n));
      OPENSSL_free(out);
    }
  if (der.size() <= max_ticket_chain_bytes) data += der;
  SSL_SESSION_set1_ticket_appdata(SSL_get0_session(ssl), data.data(), data.size());
  return 1;
}

// OpenSSL's own answer for each outcome of decrypting a ticket (SSL_CTX_set_session_ticket_cb),
// but for a ticket whose chain holds a certificate no longer valid, or that carries no facts:
// the session it holds is ignored, so the client makes a full handshake, and verification
// refuses the certificate with its alert (`expired`). OpenSSL itself resumes such a session
// until the ticket's own lifetime ends, and a resumption issues a new ticket with a new
// lifetime: without this, a certificate that expired would keep resuming for as long as the
// client kept coming back (Go's crypto/tls refuses the same).
SSL_TICKET_RETURN use_unless_expired(SSL*, SSL_SESSION* session, const unsigned char*, size_t,
                                     SSL_TICKET_STATUS status, void*) {
  switch (status) {
    case SSL_TICKET_SUCCESS:
    case SSL_TICKET_SUCCESS_RENEW: {
      std::time_t not_after = 0;
      std::uint32_t crl_depths = 0;
      const unsigned char* der = nullptr;
      std::size_t der_len = 0;
      if (!read_header(session, not_after, crl_depths, der, der_len) ||
          not_after <= std::time(nullptr))
        return SSL_TICKET_RETURN_IGNORE_RENEW;
      if (X509* peer = SSL_SESSION_get0_peer(session); peer && !valid_now(peer))
        return SSL_TICKET_RETURN_IGNORE_RENEW;  // not valid yet by this clock, say
      return status == SSL_TICKET_SUCCESS ? SSL_TICKET_RETURN_USE : SSL_TICKET_RETURN_USE_RENEW;
    }
    case SSL_TICKET_EMPTY:
    case SSL_TICKET_NO_DECRYPT:
      return SSL_TICKET_RETURN_IGNORE_RENEW;
    default:
      return SSL_TICKET_RETURN_ABORT;
  }
}

}  // namespace

bool valid_now(const X509* cert) {
  return X509_cmp_current_time(X509_get0_notBefore(cert)) < 0 &&
         X509_cmp_current_time(X509_get0_notAfter(cert)) > 0;
}

std::time_t earliest_not_after(STACK_OF(X509) * chain) {
  std::time_t out = std::numeric_limits<std::time_t>::max();
  for (int i = 0; chain && i < sk_X509_num(chain); ++i)
    out = std::min(out, asn1_time_to_unix(X509_get0_notAfter(sk_X509_value(chain, i))));
  return out;
}

void keep_peer_chain_in_tickets(SSL_CTX* ctx) {
  SSL_CTX_set_session_ticket_cb(ctx, store_facts, use_unless_expired, nullptr);
}

std::optional<ticket_facts> resumed_ticket_facts(const SSL* ssl, bool with_intermediates) {
  SSL_SESSION* session = SSL_get0_session(ssl);
  ticket_facts out;
  const unsigned char* p = nullptr;
  std::size_t len = 0;
  if (!SSL_session_reused(ssl) ||
      !read_header(session, out.chain_not_after, out.crl_unusable_depths, p, len))
    return std::nullopt;
  if (!with_intermediates) return out;
  const auto* end = p + len;
  while (p < end) {
    X509* c = d2i_X509(nullptr, &p, static_cast<long>(end - p));
    if (!c) break;
    out.intermediates.emplace_back(c);
  }
  drain_errors();
  return out;
}

cert_chain ticket_intermediates(const SSL* ssl) {
  auto facts = resumed_ticket_facts(ssl);
  return facts ? std::move(facts->intermediates) : cert_chain{};
}

}  // namespace mtlsd::tls
