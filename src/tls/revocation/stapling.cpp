#include "mtlsd/tls/revocation/stapling.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <ctime>

#include "mtlsd/tls/credentials.hpp"
#include "mtlsd/tls/revocation/ocsp.hpp"
#include "mtlsd/tls/staple_lapse.hpp"
#include "mtlsd/tls/verify.hpp"
#include "service_state.hpp"

namespace mtlsd::tls::revocation {
namespace {

// SSL_CTX_set_tlsext_status_cb and friends are macros hiding old-style casts: call what they
// expand to.
using status_cb = int (*)(SSL*, void*);

void set_status_cb(SSL_CTX* ctx, status_cb cb) {
  SSL_CTX_callback_ctrl(ctx, SSL_CTRL_SET_TLSEXT_STATUS_REQ_CB, reinterpret_cast<void (*)()>(cb));
}

int staple_our_response(SSL* ssl, void* arg) {
  const auto* slot = static_cast<const staple_slot*>(arg);
  auto r = slot->get();
  // Never staple an expired response: clients would (rightly) refuse the handshake.
  if (!r || r->der.empty() || (r->next_update && r->next_update < std::time(nullptr)))
    return SSL_TLSEXT_ERR_NOACK;
  auto* copy = static_cast<unsigned char*>(OPENSSL_malloc(r->der.size()));
  if (!copy) return SSL_TLSEXT_ERR_NOACK;
  std::memcpy(copy, r->der.data(), r->der.size());
  // OpenSSL takes ownership of `copy`.
  if (SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_STATUS_REQ_OCSP_RESP, static_cast<long>(r->der.size()),
               copy) != 1) {
    OPENSSL_free(copy);
    return SSL_TLSEXT_ERR_NOACK;
  }
  return SSL_TLSEXT_ERR_OK;
}

// A good staple holds until its nextUpdate; one without says newer information is always
// available, so as a cached answer: ocsp_default_lifetime, no longer than its thisUpdate allows.
std::time_t good_until(const ocsp_answer& a, std::time_t now) {
  if (a.next_update) return a.next_update;
  return std::min<std::time_t>(now + ocsp_default_lifetime,
                               a.this_update + ocsp_max_age_without_next_update);
}

// The certificate a staple for the leaf of verified `chain` (at least one) is checked against:
// its issuer; a self-issued anchor answers for itself, and any other lone certificate's staple
// cannot be checked, so it is unusable.
X509* staple_issuer(STACK_OF(X509) * chain) {
  return sk_X509_value(chain, sk_X509_num(chain) >= 2 ? 1 : 0);
}

// The stapled response of the remote of `ssl`, as OpenSSL holds it (empty when none came).
std::string_view stapled_response(SSL* ssl) {
  const unsigned char* resp = nullptr;
  const long len = SSL_ctrl(ssl, SSL_CTRL_GET_TLSEXT_STATUS_REQ_OCSP_RESP, 0, &resp);
  if (!resp || len <= 0) return {};
  return {reinterpret_cast<const char*>(resp), static_cast<std::size_t>(len)};
}

// The callback argument: whether a usable staple is required (revocation.require_staple).
constexpr bool staple_optional = false;
constexpr bool staple_required = true;

// require_staple: no staple, or one that does not say "good", refuses the remote.
int refuse_without_staple(SSL* ssl, verify_outcome* out, const std::string& why) {
  X509* leaf = SSL_get0_peer_certificate(ssl);
  if (out && !out->refusal) {
    out->refusal = reason::revocation_unavailable;
    out->detail = why + " at depth 0: " + (leaf ? subject_of(leaf) : std::string("?")) +
                  " (revocation.require_staple)";
  }
  return 0;
}

// Client side: called once the remote's chain is verified, with or without a staple.
int check_remote_staple(SSL* ssl, void* arg) {
  const bool required = arg && *static_cast<const bool*>(arg);
  verify_outcome* out = verifier::outcome_of(ssl);
  STACK_OF(X509)* chain = SSL_get0_verified_chain(ssl);
  // Without a verified chain there is no issuer to check against. The verify callback's
  // verdict decides, not SSL_get_verify_result: the callback accepts some errors on purpose (an
  // issuing CA trusted alone, a CRL within crl_grace, a CRL gap left to another source), which
  // OpenSSL still records as the result; going by it, a remote with such a chain was never asked
  // for its staple, not even under require_staple. A remote the callback refused fails the
  // handshake anyway.
  if (!chain || sk_X509_num(chain) < 1 || !out || out->refusal || !out->identity) return 1;
  // A one-certificate chain (the remote's own certificate is the anchor) has no issuer in it to
  // check a staple against; require_staple still demands one, whatever the chain's length.
  if (sk_X509_num(chain) < 2 && !required) return 1;
  const std::string_view resp = stapled_response(ssl);
  if (resp.empty()) {  // no staple: nothing to check
    if (!required) return 1;
    // Counted as every other require_staple refusal is (mtlsd_revocation_checks_total).
    out->staple = status::unavailable;
    return refuse_without_staple(ssl, out, "remote stapled no OCSP response");
  }
  X509* leaf = sk_X509_value(chain, 0);
  // Checked against staple_issuer: a lone certificate not self-issued makes any staple unusable
  // (and, required, refused below).
  ocsp_answer a =
      check_ocsp_response(resp, leaf, staple_issuer(chain), nullptr, std::time(nullptr));
  // Counted (mtlsd_revocation_checks_total, method ocsp) when it decides something: good,
  // revoked, or anything under require_staple. An unusable staple is otherwise as good as none
  // and not counted: as `unavailable` it fired the alert on refused peers while none was, and
  // only when no network source was configured (review).
  if (out && (required || a.result == status::good || a.result == status::revoked)) {
    out->staple = a.result;
  }
  if (a.result == status::good) set_stapled_good_until(leaf, good_until(a, std::time(nullptr)));
  if (a.result != status::revoked) {
    // Without require_staple an unusable staple is as good as none.
    if (required && a.result != status::good)
      return refuse_without_staple(ssl, out,
                                   "stapled OCSP response is not usable" +
                                       (a.detail.empty() ? std::string() : " (" + a.detail + ")"));
    return 1;
  }
  if (out && !out->refusal) {
    out->refusal = reason::revoked;
    out->detail = "certificate revoked" +
                  (a.detail.empty() ? std::string() : " (" + a.detail + ")") +
                  " at depth 0: " + subject_of(leaf) + " (stapled OCSP response)";
  }
  return 0;  // fails the handshake with a bad_certificate_status_response alert
}

}  // namespace

std::shared_ptr<staple_slot> attach_stapling(SSL_CTX* ctx, const config::listener& l) {
  if (l.mode == config::listener_mode::client) {
    // A remote stapling "revoked" is refused, and with require_staple so is one that staples
    // nothing usable. Not with insecure_skip_verify, which judges nothing of the remote's (a
    // stapled "revoked" refused a remote whose CRL-revoked certificate was let through): no
    // staple is asked for.
    if (!l.server_auth.insecure_skip_verify) check_staples(ctx, l.revocation.require_staple);
    return nullptr;
  }
  if (!l.revocation.stapling) return nullptr;
  auto slot = std::make_shared<staple_slot>();
  serve_staples(ctx, slot.get());
  return slot;
}

void serve_staples(SSL_CTX* ctx, const staple_slot* slot) {
  set_status_cb(ctx, staple_our_response);
  SSL_CTX_ctrl(ctx, SSL_CTRL_SET_TLSEXT_STATUS_REQ_CB_ARG, 0, const_cast<staple_slot*>(slot));
}

remote_staple stapled_by_remote(SSL* ssl) {
  remote_staple out;
  STACK_OF(X509)* chain = SSL_get0_verified_chain(ssl);
  const std::string_view resp = stapled_response(ssl);
  if (!chain || sk_X509_num(chain) < 1 || resp.empty()) return out;
  out.leaf = up_ref(sk_X509_value(chain, 0));
  out.issuer = up_ref(staple_issuer(chain));
  out.response = resp;
  return out;
}

void check_staples(SSL_CTX* ctx, bool require) {
  SSL_CTX_ctrl(ctx, SSL_CTRL_SET_TLSEXT_STATUS_REQ_TYPE, TLSEXT_STATUSTYPE_ocsp, nullptr);
  set_status_cb(ctx, check_remote_staple);
  SSL_CTX_ctrl(ctx, SSL_CTRL_SET_TLSEXT_STATUS_REQ_CB_ARG, 0,
               const_cast<bool*>(require ? &staple_required : &staple_optional));
}

}  // namespace mtlsd::tls::revocation
