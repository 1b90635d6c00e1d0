#include "mtlsd/tls/revocation/ocsp.hpp"

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <algorithm>

#include "mtlsd/tls/asn1_time.hpp"

namespace mtlsd::tls::revocation {
namespace {

using ocsp_certid_ptr = std::unique_ptr<OCSP_CERTID, openssl_deleter<OCSP_CERTID_free>>;
using ocsp_response_ptr = std::unique_ptr<OCSP_RESPONSE, openssl_deleter<OCSP_RESPONSE_free>>;
using ocsp_basic_ptr = std::unique_ptr<OCSP_BASICRESP, openssl_deleter<OCSP_BASICRESP_free>>;

template <class T, class Encode>
std::string encode(T* obj, Encode i2d) {
  unsigned char* buf = nullptr;
  const int len = i2d(obj, &buf);
  if (len <= 0) return {};
  std::string out(reinterpret_cast<const char*>(buf), static_cast<std::size_t>(len));
  OPENSSL_free(buf);
  return out;
}

ocsp_answer unusable(std::string why) {
  ocsp_answer a;
  a.result = status::unavailable;
  a.detail = std::move(why);
  return a;
}

// "" when `basic` is signed by `issuer` or by a responder it delegated to; otherwise why not. The
// issuer, already verified as part of the peer's chain, is the only trust anchor: the responder
// is the issuer itself or a certificate it issued with the OCSPSigning EKU (OpenSSL's
// ocsp_check_issuer/ocsp_check_delegated).
std::string check_signer(OCSP_BASICRESP* basic, X509* issuer) {
  x509_store_ptr anchors(X509_STORE_new());
  if (!anchors || X509_STORE_add_cert(anchors.get(), issuer) != 1) {
    drain_errors();
    return "cannot set up OCSP verification";
  }
  X509_STORE_set_flags(anchors.get(), X509_V_FLAG_PARTIAL_CHAIN);
  STACK_OF(X509)* certs = sk_X509_new_null();
  sk_X509_push(certs, issuer);
  const int verified = OCSP_basic_verify(basic, certs, anchors.get(), 0);
  sk_X509_free(certs);
  if (verified > 0) return {};
  std::string why = drain_errors();
  return "response signature does not verify against the issuer" +
         (why.empty() ? std::string() : ": " + why);
}

}  // namespace

std::vector<std::string> ocsp_urls(X509* cert) {
  std::vector<std::string> out;
  STACK_OF(OPENSSL_STRING)* urls = X509_get1_ocsp(cert);
  for (int i = 0; urls && i < sk_OPENSSL_STRING_num(urls); ++i) {
    std::string url = sk_OPENSSL_STRING_value(urls, i);
    if (url.rfind("http://", 0) == 0) out.push_back(std::move(url));
  }
  X509_email_free(urls);  // frees a STACK_OF(OPENSSL_STRING), whatever its name says
  return out;
}

ocsp_query make_ocsp_query(X509* cert, X509* issuer, bool nonce) {
  ocsp_query q;
  ocsp_certid_ptr id(OCSP_cert_to_id(nullptr, cert, issuer));
  if (!id) return q;
  q.cert_id = encode(id.get(), i2d_OCSP_CERTID);
  q.request.reset(OCSP_REQUEST_new());
  OCSP_CERTID* for_request = OCSP_CERTID_dup(id.get());
  if (!q.request || !for_request || !OCSP_request_add0_id(q.request.get(), for_request)) {
    OCSP_CERTID_free(for_request);
    q.request.reset();
    drain_errors();
    return q;
  }
  if (nonce) OCSP_request_add1_nonce(q.request.get(), nullptr, -1);
  q.der = encode(q.request.get(), i2d_OCSP_REQUEST);
  drain_errors();
  return q;
}

ocsp_answer check_ocsp_response(std::string_view der, X509* cert, X509* issuer,
                                OCSP_REQUEST* request, std::time_t now) {
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  ocsp_response_ptr response(d2i_OCSP_RESPONSE(nullptr, &p, static_cast<long>(der.size())));
  if (!response) {
    drain_errors();
    return unusable("not an OCSP response");
  }
  const int rs = OCSP_response_status(response.get());
  if (rs != OCSP_RESPONSE_STATUS_SUCCESSFUL) {
    ocsp_answer a =
        unusable(std::string("responder answered '") + OCSP_response_status_str(rs) + "'");
    // About the responder itself; malformedRequest, sigRequired and unauthorized are about this
    // request.
    a.declined = rs == OCSP_RESPONSE_STATUS_TRYLATER || rs == OCSP_RESPONSE_STATUS_INTERNALERROR;
    return a;
  }
  // d2i stops at the end of the DER and ignores what follows (looked at after the status, so a
  // responder declining with text appended is still one declining). A body with more (a proxy's or
  // responder's appended text) is not an OCSPResponse: stapled as received, strict clients (Go's
  // ocsp.ParseResponse, Python's cryptography) refuse it, so it is a bad answer here too.
  if (const auto used =
          static_cast<std::size_t>(p - reinterpret_cast<const unsigned char*>(der.data()));
      used != der.size())
    return unusable("not an OCSP response: " + std::to_string(der.size() - used) +
                    " bytes follow its DER");
  ocsp_basic_ptr basic(OCSP_response_get1_basic(response.get()));
  if (!basic) {
    drain_errors();
    return unusable("not a basic OCSP response");
  }
  // 1 = echoed, 2 = no nonce either side, -1 = the responder does not echo nonces (allowed:
  // many pre-generate responses), 3 = nonce only in the response. 0 = a different nonce: this is
  // an answer to someone else's question.
  if (request && OCSP_check_nonce(request, basic.get()) == 0) {
    drain_errors();
    return unusable("response nonce does not match the request (replayed response?)");
  }

  if (std::string why = check_signer(basic.get(), issuer); !why.empty())
    return unusable(std::move(why));

  ocsp_certid_ptr id(OCSP_cert_to_id(nullptr, cert, issuer));
  int st = -1, reason = -1;
  ASN1_GENERALIZEDTIME *revoked = nullptr, *this_update = nullptr, *next_update = nullptr;
  if (!id || OCSP_resp_find_status(basic.get(), id.get(), &st, &reason, &revoked, &this_update,
                                   &next_update) != 1) {
    drain_errors();
    return unusable("response does not cover this certificate");
  }
  ocsp_answer a;
  a.this_update = asn1_time_to_unix(this_update);
  a.next_update = asn1_time_to_unix(next_update);
  if (st == V_OCSP_CERTSTATUS_REVOKED) {
    a.result = status::revoked;
    a.revoked_at = asn1_time_to_unix(revoked);
    if (reason >= 0) a.detail = OCSP_crl_reason_str(reason);
    // Signed by the CA or its delegate and about this certificate: a revocation does not expire
    // with the response that announced it, so its times are not judged (README: "A revocation
    // always refuses ... or an OCSP answer that expired"). Except a certificateHold, which the
    // CA may lift: an old one, replayed over plain HTTP, must not refuse the certificate for
    // ever.
    if (reason != OCSP_REVOKED_STATUS_CERTIFICATEHOLD) {
      drain_errors();
      return a;
    }
  }
  if (!this_update || a.this_update > now + revocation_skew_seconds)
    return unusable("response is not yet valid (thisUpdate in the future)");
  // A window that ends before it begins says nothing about any time, also when both ends are
  // within the skew of now (OpenSSL's OCSP_check_validity refuses it too).
  if (a.next_update && a.next_update < a.this_update)
    return unusable("response's nextUpdate is before its thisUpdate");
  if (a.next_update && a.next_update < now - revocation_skew_seconds)
    return unusable("response is stale (nextUpdate has passed)");
  if (!a.next_update && a.this_update < now - ocsp_max_age_without_next_update)
    return unusable("response is stale (no nextUpdate, and thisUpdate is " +
                    std::to_string((now - a.this_update) / 60) + " minutes old)");
  switch (st) {
    case V_OCSP_CERTSTATUS_GOOD:
      a.result = status::good;
      break;
    case V_OCSP_CERTSTATUS_REVOKED:  // a certificateHold within its times: set above
      break;
    default:
      a.result = status::unknown;
      a.detail = "the responder does not know this certificate";
      break;
  }
  drain_errors();
  return a;
}

std::optional<std::time_t> ocsp_refresh_due(const ocsp_refresh_facts& f, std::time_t now) {
  if (!f.watched || f.lasting_revocation) return std::nullopt;
  if (now - f.last_used > ocsp_refresh_idle_lifetime || f.not_after <= now) return std::nullopt;
  return std::max(f.fresh_until, f.retry_at);
}

}  // namespace mtlsd::tls::revocation
