#include "mtlsd/tls/verify.hpp"

#include <openssl/err.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <algorithm>

#include "mtlsd/tls/asn1_time.hpp"
#include "mtlsd/tls/credentials.hpp"
#include "mtlsd/tls/name_constraints.hpp"
#include "mtlsd/tls/openssl.hpp"
#include "mtlsd/tls/peer_policy.hpp"
#include "mtlsd/tls/trust_store.hpp"

namespace mtlsd::tls {
namespace {

// ex_data slots: SSL_CTX -> verifier, SSL -> outcome, and for offline checks (no SSL) the same
// two on the X509_STORE_CTX.
struct indexes {
  int ctx_verifier = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  int ssl_outcome = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  int store_verifier = X509_STORE_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  int store_outcome = X509_STORE_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
};

const indexes& idx() {
  static const indexes i;
  return i;
}

// A depth's bit in verify_outcome's masks; depths 31 and deeper share the last.
std::uint32_t depth_bit(int depth) {
  return depth >= 0 && depth < 31 ? (1U << depth) : (1U << 31);
}

std::string describe(int err, int depth, X509* cert) {
  std::string s = X509_verify_cert_error_string(err);
  s += " (depth " + std::to_string(depth);
  if (cert) s += ": " + subject_of(cert);
  s += ")";
  // The most common misconfiguration: say which issuer is missing and the two ways to fix it.
  if (cert && (err == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY ||
               err == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT))
    s += "; issuer " + issuer_of(cert) +
         " is not in the trust store and was not sent by the peer (a missing intermediate must be "
         "sent by the peer or added to the CA bundle)";
  return s;
}

// The top of a verified chain that is not self-issued AND came from the trust store (not from
// the peer or the intermediates pool): an anchor by X509_V_FLAG_PARTIAL_CHAIN.
bool is_partial_chain_anchor(X509_STORE_CTX* store_ctx, int depth, X509* cert) {
  STACK_OF(X509)* chain = X509_STORE_CTX_get0_chain(store_ctx);
  return cert && chain && depth == sk_X509_num(chain) - 1 &&
         depth >= X509_STORE_CTX_get_num_untrusted(store_ctx) &&
         X509_check_issued(cert, cert) != X509_V_OK;
}

}  // namespace

void apply_validation_policy(SSL_CTX* ctx) {
  // Strict RFC 5280 path validation (what `openssl verify -x509_strict` does), and every
  // certificate of the trust bundle is an anchor, self-signed or not (Go's crypto/x509 and
  // rustls-webpki): trusting exactly one issuing CA must not require trusting its root.
  X509_VERIFY_PARAM_set_flags(SSL_CTX_get0_param(ctx),
                              X509_V_FLAG_X509_STRICT | X509_V_FLAG_PARTIAL_CHAIN);
  // Security level 2 at least (112-bit: RSA/DSA >= 2048, EC >= 224 bits, no SHA-1 or MD5
  // signatures), whatever the distribution compiled in as the default. It applies to the peer's
  // chain through the verify parameters' auth level (verify_offline does the same).
  if (SSL_CTX_get_security_level(ctx) < 2) SSL_CTX_set_security_level(ctx, 2);
}

verifier::verifier(peer_role role, config::allow_list allow, crl_policy crl, tls_signers signers)
    : role_(role), allow_(std::move(allow)), crl_(crl), signers_(std::move(signers)) {}

void verifier::attach(SSL_CTX* ctx) const {
  SSL_CTX_set_ex_data(ctx, idx().ctx_verifier, const_cast<verifier*>(this));
  int mode = SSL_CTX_get_verify_mode(ctx);
  SSL_CTX_set_verify(ctx, mode, &verifier::callback);
}

void verifier::bind(SSL* ssl, verify_outcome* out) {
  SSL_set_ex_data(ssl, idx().ssl_outcome, out);
}

verify_outcome* verifier::outcome_of(SSL* ssl) {
  return static_cast<verify_outcome*>(SSL_get_ex_data(ssl, idx().ssl_outcome));
}

int verifier::callback(int ok, X509_STORE_CTX* store_ctx) {
  const verifier* v = nullptr;
  verify_outcome* out = nullptr;
  std::string_view sni;
  if (auto* ssl = static_cast<SSL*>(
          X509_STORE_CTX_get_ex_data(store_ctx, SSL_get_ex_data_X509_STORE_CTX_idx()))) {
    v = static_cast<const verifier*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), idx().ctx_verifier));
    out = static_cast<verify_outcome*>(SSL_get_ex_data(ssl, idx().ssl_outcome));
    // Server: what the client asked for, as recorded from its ClientHello; client: what we send
    // (set before the handshake).
    if (SSL_is_server(ssl)) {
      if (out) sni = out->sni;
    } else if (const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name)) {
      sni = name;
    }
  } else {
    v = static_cast<const verifier*>(X509_STORE_CTX_get_ex_data(store_ctx, idx().store_verifier));
    out = static_cast<verify_outcome*>(X509_STORE_CTX_get_ex_data(store_ctx, idx().store_outcome));
    if (out) sni = out->sni;
  }
  if (!v || !out) return ok;
  return v->decide(ok, store_ctx, *out, sni);
}

namespace {

std::time_t verification_time(X509_STORE_CTX* store_ctx) {
  const X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(store_ctx);
  return (X509_VERIFY_PARAM_get_flags(param) & X509_V_FLAG_USE_CHECK_TIME)
             ? X509_VERIFY_PARAM_get_time(param)
             : std::time(nullptr);
}

// A CRL whose thisUpdate is a little ahead of our clock is taken: its CA's clock runs ahead of
// ours (review: a fresh CRL file was unusable until then). Distribution points' CRLs and OCSP
// answers get the same allowance (revocation_skew_seconds).
bool within_skew(X509_STORE_CTX* store_ctx) {
  const X509_CRL* crl = X509_STORE_CTX_get0_current_crl(store_ctx);
  const std::time_t this_update = crl ? asn1_time_to_unix(X509_CRL_get0_lastUpdate(crl)) : 0;
  return this_update && this_update - verification_time(store_ctx) <= revocation_skew_seconds;
}

}  // namespace

bool verifier::within_grace(X509_STORE_CTX* store_ctx) const {
  if (crl_.grace_seconds <= 0) return false;
  const X509_CRL* crl = X509_STORE_CTX_get0_current_crl(store_ctx);
  const std::time_t next = crl ? asn1_time_to_unix(X509_CRL_get0_nextUpdate(crl)) : 0;
  if (!next) return false;
  return verification_time(store_ctx) - next <= crl_.grace_seconds;
}

namespace {

// A certificate the peer sent naming `child`'s issuer whose extensions do not decode, or null.
X509* malformed_issuer_sent(X509_STORE_CTX* store_ctx, X509* child) {
  STACK_OF(X509)* sent = X509_STORE_CTX_get0_untrusted(store_ctx);
  const X509_NAME* issuer = X509_get_issuer_name(child);
  for (int i = 0; sent && i < sk_X509_num(sent); ++i) {
    X509* c = sk_X509_value(sent, i);
    if (c != child && X509_NAME_cmp(X509_get_subject_name(c), issuer) == 0 &&
        (X509_get_extension_flags(c) & EXFLAG_INVALID))
      return c;
  }
  return nullptr;
}

// The host names, IP address and host flags of `from` replace those of `to`: what a handshake
// with `from` checked the peer's certificate against.
void copy_peer_names(X509_VERIFY_PARAM* to, X509_VERIFY_PARAM* from) {
  X509_VERIFY_PARAM_set1_host(to, nullptr, 0);
  for (int i = 0; const char* host = X509_VERIFY_PARAM_get0_host(from, i); ++i)
    X509_VERIFY_PARAM_add1_host(to, host, 0);
  X509_VERIFY_PARAM_set_hostflags(to, X509_VERIFY_PARAM_get_hostflags(from));
  X509_VERIFY_PARAM_set1_ip(to, nullptr, 0);
  if (char* ip = X509_VERIFY_PARAM_get1_ip_asc(from)) {
    X509_VERIFY_PARAM_set1_ip_asc(to, ip);
    OPENSSL_free(ip);
  }
}

}  // namespace

int verifier::decide_error(X509_STORE_CTX* store_ctx, verify_outcome& out) const {
  const int depth = X509_STORE_CTX_get_error_depth(store_ctx);
  X509* cert = X509_STORE_CTX_get_current_cert(store_ctx);
  int err = X509_STORE_CTX_get_error(store_ctx);
  // A certificate whose extensions OpenSSL could not decode (malformed, or one twice) fails its
  // issuer lookup first, which reads as a missing issuer (unknown_ca, "was not sent by the
  // peer"): name the real fault, and let the alert say bad_certificate too.
  if (cert && (X509_get_extension_flags(cert) & EXFLAG_INVALID) &&
      err != X509_V_ERR_INVALID_EXTENSION) {
    err = X509_V_ERR_INVALID_EXTENSION;
    X509_STORE_CTX_set_error(store_ctx, err);
  }
  // The same for an issuer the peer did send but OpenSSL skipped as malformed: it is no missing
  // issuer either (review: "... was not sent by the peer" for one it sent).
  if (cert && (err == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT ||
               err == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY))
    if (X509* bad = malformed_issuer_sent(store_ctx, cert)) {
      cert = bad;
      err = X509_V_ERR_INVALID_EXTENSION;
      X509_STORE_CTX_set_current_cert(store_ctx, cert);
      X509_STORE_CTX_set_error_depth(store_ctx, depth + 1);
      X509_STORE_CTX_set_error(store_ctx, err);
      return decide_error(store_ctx, out);
    }
  if (crl_.enabled && reason_from_x509_error(err) == reason::revocation_unavailable &&
      is_partial_chain_anchor(store_ctx, depth, cert)) {
    // An issuing CA listed in the trust bundle without its issuer is an anchor, trusted by
    // configuration like a root: it needs no CRL from an issuer nobody configured (crl_scope:
    // chain means every level below the anchor, as for the network sources).
    return 1;
  }
  if (crl_.enabled && err == X509_V_ERR_CRL_NOT_YET_VALID && within_skew(store_ctx)) {
    // OpenSSL goes on to check the certificate against it, as for a current CRL.
    return 1;
  }
  if (crl_.enabled && err == X509_V_ERR_CRL_HAS_EXPIRED && within_grace(store_ctx)) {
    // Within crl_grace the stale CRL is still enforced: once we accept the time error,
    // OpenSSL goes on to check the certificate against it.
    return 1;
  }
  if (crl_.enabled && crl_.defer_unavailable &&
      reason_from_x509_error(err) == reason::revocation_unavailable) {
    // Another source (OCSP, a distribution point) may answer for this certificate: the
    // revocation service decides after the handshake. A CRL that is present still revokes.
    out.crl_deferred_depths |= depth_bit(depth);
    out.crl_unusable_depths |= depth_bit(depth);
    if (out.crl_note.empty()) out.crl_note = describe(err, depth, cert);
    return 1;
  }
  if (crl_.enabled && crl_.soft_fail &&
      reason_from_x509_error(err) == reason::revocation_unavailable) {
    // on_unavailable: allow — admit, but say so (metrics count it as "unavailable"). A CRL
    // that IS present still revokes: this branch only sees missing/stale/unusable CRLs.
    // The first certificate without a usable CRL (leaf side first), as a refusal names it.
    out.crl = revocation_status::unavailable;
    out.crl_unusable_depths |= depth_bit(depth);
    if (out.crl_note.empty()) out.crl_note = describe(err, depth, cert);
    return 1;
  }
  if (err == X509_V_ERR_CERT_REVOKED)
    out.crl = revocation_status::revoked;
  else if (reason_from_x509_error(err) == reason::revocation_unavailable)
    out.crl = revocation_status::unavailable;
  if (!out.refusal) {  // the first error is the real one; later ones are consequences
    if (X509* leaf = X509_STORE_CTX_get0_cert(store_ctx)) out.refused_peer = extract_identity(leaf);
    out.refusal = reason_from_x509_error(err);
    out.detail = describe(err, depth, cert);
    if (std::string why = unreached_bundle(store_ctx, err); !why.empty())
      out.detail = std::move(why);
    if (std::string why = name_mismatch_detail(store_ctx, err); !why.empty())
      out.detail = std::move(why);
    // CRLs in the store come from revocation.crl_files: say which source answered.
    if (*out.refusal == reason::revoked || *out.refusal == reason::revocation_unavailable)
      out.detail += " (crl file)";
  }
  return 0;
}

int verifier::decide(int ok, X509_STORE_CTX* store_ctx, verify_outcome& out,
                     std::string_view sni) const {
  if (!ok) return decide_error(store_ctx, out);
  const int depth = X509_STORE_CTX_get_error_depth(store_ctx);
  X509* cert = X509_STORE_CTX_get_current_cert(store_ctx);
  if (depth != 0 || !cert) return 1;
  // A CA certificate (basicConstraints CA:TRUE, or keyCertSign) is no peer's own: holding an
  // intermediate CA's key would otherwise log in as that CA (webpki and Go refuse it too). Unless
  // it is the whole chain: a certificate the trust store holds itself, pinned by the operator.
  STACK_OF(X509)* chain = X509_STORE_CTX_get0_chain(store_ctx);
  const std::uint32_t flags = X509_get_extension_flags(cert);
  const bool claims_ca = (flags & EXFLAG_CA) ||
                         ((flags & EXFLAG_KUSAGE) && (X509_get_key_usage(cert) & KU_KEY_CERT_SIGN));
  if (claims_ca && chain && sk_X509_num(chain) > 1) {
    X509_STORE_CTX_set_error(store_ctx, X509_V_ERR_INVALID_NON_CA);
    return decide_error(store_ctx, out);
  }
  // A key this listener's TLS versions and curves cannot sign with (ECDSA on P-224 outside
  // tls.curves, DSA under TLS 1.3 only) passed OpenSSL's checks and then failed the handshake
  // for another reason (no_client_cert, protocol_error): say what it is.
  if (std::string why = tls_key_problem(cert, signers_); !why.empty()) {
    out.refusal = reason::bad_certificate;
    out.detail = "key unusable in TLS: " + why + " (depth 0: " + subject_of(cert) + ")";
    out.refused_peer = extract_identity(cert);
    X509_STORE_CTX_set_error(store_ctx, X509_V_ERR_CERT_REJECTED);  // alert bad_certificate
    return 0;
  }
  // A peer's key usage, when present, allows digitalSignature: every handshake mtlsd allows
  // (ECDHE, TLS 1.2 and 1.3) has the peer sign with its key (RFC 5280 4.2.1.3). OpenSSL's
  // purposes also take keyAgreement alone (static ECDH) and, for a server, keyEncipherment
  // alone (RSA key transport), which no cipher mtlsd offers uses (verify_chain_fuzz, then a
  // review; the SVID rule, svid_key_usage_problem, was this strict already).
  // (Under a SPIFFE bundle the X.509-SVID rule below says it, with its own words.)
  if (anchors_.empty() && (flags & EXFLAG_KUSAGE) &&
      !(X509_get_key_usage(cert) & KU_DIGITAL_SIGNATURE)) {
    X509_STORE_CTX_set_error(store_ctx, X509_V_ERR_KEYUSAGE_NO_DIGITAL_SIGNATURE);
    return decide_error(store_ctx, out);
  }
  // A remote server's extended key usage, where present along the chain, names serverAuth:
  // OpenSSL's server purpose also takes Netscape's and Microsoft's Server Gated Crypto alone,
  // export-era purposes that webpki and Go refuse (review).
  if (role_ == peer_role::server)
    for (int i = 0; chain && i < sk_X509_num(chain); ++i) {
      X509* c = sk_X509_value(chain, i);
      if ((X509_get_extension_flags(c) & EXFLAG_XKUSAGE) &&
          !(X509_get_extended_key_usage(c) & XKU_SSL_SERVER)) {
        X509_STORE_CTX_set_error_depth(store_ctx, i);
        X509_STORE_CTX_set_current_cert(store_ctx, c);
        X509_STORE_CTX_set_error(store_ctx, X509_V_ERR_INVALID_PURPOSE);
        return decide_error(store_ctx, out);
      }
    }
  // The chain is valid up to a trusted root; now: is this peer one we admit?
  peer_identity id = extract_identity(cert);
  if (std::string why = outside_trust_domain(store_ctx, id); !why.empty()) {
    out.refusal = reason::unknown_ca;
    out.detail = std::move(why);
    out.refused_peer = std::move(id);
    // The alert a CA that is not trusted for this peer gets: unknown_ca.
    X509_STORE_CTX_set_error(store_ctx, X509_V_ERR_INVALID_CA);
    return 0;
  }
  // A SPIFFE bundle vouches for X.509-SVIDs: a leaf whose key usage is a CA's, or does not
  // sign, is none (go-spiffe refuses it too).
  if (!anchors_.empty()) {
    if (std::string why = svid_key_usage_problem(cert); !why.empty()) {
      out.refusal = reason::bad_key_usage;
      out.detail = "not an X.509-SVID: " + why;
      out.refused_peer = std::move(id);
      X509_STORE_CTX_set_error(store_ctx, X509_V_ERR_KEYUSAGE_NO_DIGITAL_SIGNATURE);
      return 0;
    }
  }
  // Before the allow list: OpenSSL's own name-constraint check comes after this call, and a
  // peer both refuse would be logged as not_authorized (name_constraints.hpp).
  std::string nc_why;  // a URI SAN whose host OpenSSL's check would not see
  if (int at = 0; const int nc = name_constraint_violation(store_ctx, at, nc_why)) {
    X509_STORE_CTX_set_error_depth(store_ctx, at);
    X509_STORE_CTX_set_current_cert(store_ctx, sk_X509_value(chain, at));
    X509_STORE_CTX_set_error(store_ctx, nc);
    const int rc = decide_error(store_ctx, out);
    if (!nc_why.empty() && out.refusal == reason::name_constraints) out.detail += ": " + nc_why;
    return rc;
  }
  policy_decision d = evaluate(allow_, id, peer_context{out.source, sni});
  if (!d.allowed) {
    out.refusal = reason::not_authorized;
    out.detail = std::move(d.detail);
    out.refused_peer = std::move(id);
    X509_STORE_CTX_set_error(store_ctx, X509_V_ERR_APPLICATION_VERIFICATION);
    return 0;
  }
  out.identity = std::move(id);
  out.match = d.match;
  if (crl_.enabled && out.crl == revocation_status::not_checked) out.crl = revocation_status::good;
  return 1;
}

verify_outcome verifier::verify_offline(SSL_CTX* ctx, X509* leaf, STACK_OF(X509) * untrusted,
                                        std::optional<std::time_t> at, const peer_context& peer,
                                        SSL* names_of) const {
  verify_outcome out;
  out.source = peer.source;
  out.sni = std::string(peer.sni);
  // What a handshake's chain building does (trust_store.hpp): the trust bundles' intermediates
  // help too, and with SPIFFE bundles the anchors are the leaf's trust domain's.
  std::unique_ptr<STACK_OF(X509), void (*)(STACK_OF(X509)*)> both(
      with_intermediates(ctx, leaf, untrusted), [](STACK_OF(X509) * sk) { sk_X509_free(sk); });
  x509_store_ctx_ptr sctx(X509_STORE_CTX_new());
  if (!both || !sctx ||
      X509_STORE_CTX_init(sctx.get(), SSL_CTX_get_cert_store(ctx), leaf, both.get()) != 1) {
    out.refusal = reason::protocol_error;
    out.detail = "cannot set up verification: " + drain_errors();
    return out;
  }
  confine_to_trust_domain(ctx, sctx.get());
  // What ssl_verify_cert_chain() does for a handshake: purpose by peer role, then the context's
  // parameters (depth, flags, host names).
  X509_STORE_CTX_set_default(sctx.get(), role_ == peer_role::client ? "ssl_client" : "ssl_server");
  X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(sctx.get());
  X509_VERIFY_PARAM_set1(param, SSL_CTX_get0_param(ctx));
  if (names_of) copy_peer_names(param, SSL_get0_param(names_of));
  // ssl_verify_cert_chain() does this too: the peer's keys and signature digests must meet the
  // context's security level. Without it `verify` would accept RSA-1024 or SHA-1 chains that a
  // handshake refuses.
  X509_VERIFY_PARAM_set_auth_level(param, SSL_CTX_get_security_level(ctx));
  if (at) X509_VERIFY_PARAM_set_time(param, *at);
  X509_STORE_CTX_set_verify_cb(sctx.get(), &verifier::callback);
  X509_STORE_CTX_set_ex_data(sctx.get(), idx().store_verifier, const_cast<verifier*>(this));
  X509_STORE_CTX_set_ex_data(sctx.get(), idx().store_outcome, &out);
  int rc = X509_verify_cert(sctx.get());
  if (rc == 1)
    if (STACK_OF(X509)* chain = X509_STORE_CTX_get0_chain(sctx.get()))
      for (int i = 0; i < sk_X509_num(chain); ++i)
        out.chain.push_back(up_ref(sk_X509_value(chain, i)));
  if (rc != 1 && !out.refusal) {
    int err = X509_STORE_CTX_get_error(sctx.get());
    out.refusal = reason_from_x509_error(err);
    out.detail = describe(err, X509_STORE_CTX_get_error_depth(sctx.get()),
                          X509_STORE_CTX_get_current_cert(sctx.get()));
  }
  drain_errors();
  return out;
}

}  // namespace mtlsd::tls
