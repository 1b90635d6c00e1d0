// CRL and OCSP response handling and the revocation decision, on arbitrary bytes. The first
// byte picks the part: 0 = a CRL (DER or PEM) judged against the fixture CA and leaf, 1 = an
// OCSP response for the fixture leaf, 2 = a table of answers for decide(). Seeds are signed by
// fixtures/ca.key, so mutations reach the signature, scope and freshness checks.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <ctime>
#include <string_view>

#include "fuzz_support.hpp"
#include "mtlsd/tls/revocation/crl.hpp"
#include "mtlsd/tls/revocation/ocsp.hpp"
#include "mtlsd/tls/revocation/policy.hpp"

using namespace mtlsd;
namespace rv = mtlsd::tls::revocation;

namespace {

tls::x509_ptr ca, leaf;

void crl_part(std::string_view bytes) {
  auto crl = rv::parse_crl(bytes);
  if (!crl) return;
  const std::string issuer_problem = rv::check_crl_issuer(crl.get(), ca.get());
  tls::sort_revoked(crl.get());  // as crl_fetcher does once the signature is checked
  (void)rv::check_crl_issuer(crl.get(), leaf.get());
  (void)rv::check_crl_scope(crl.get(), leaf.get());
  (void)rv::check_crl_scope(crl.get(), ca.get());
  const auto entry = rv::lookup_crl(crl.get(), leaf.get());
  if (!entry.revoked) fuzz::check(entry.reason.empty(), "no reason without a revocation");
  (void)rv::crl_this_update(crl.get());
  (void)rv::crl_next_update(crl.get());
  (void)rv::crl_issuer_text(crl.get());
  (void)rv::name_der(X509_CRL_get_issuer(crl.get()));
  const auto serials = rv::revoked_serials(crl.get());
  fuzz::check(std::is_sorted(serials.begin(), serials.end()), "revoked serials are sorted");
  if (entry.revoked && issuer_problem.empty()) {
    const auto mine = rv::serial_der(X509_get0_serialNumber(leaf.get()));
    fuzz::check(std::binary_search(serials.begin(), serials.end(), mine),
                "a revoked leaf's serial is among the CRL's serials");
  }
}

void ocsp_part(std::string_view bytes) {
  const std::time_t now = std::time(nullptr);
  auto a = rv::check_ocsp_response(bytes, leaf.get(), ca.get(), nullptr, now);
  if (a.result == rv::status::unavailable) fuzz::check(!a.detail.empty(), "unavailable says why");
  // With a request whose nonce the response cannot echo (the seeds carry none).
  auto q = rv::make_ocsp_query(leaf.get(), ca.get(), true);
  (void)rv::check_ocsp_response(bytes, leaf.get(), ca.get(), q.request.get(), now);
  // Against the wrong issuer: never good.
  auto wrong = rv::check_ocsp_response(bytes, leaf.get(), leaf.get(), nullptr, now);
  fuzz::check(wrong.result != rv::status::good, "a response checked against the wrong issuer");
}

rv::status status_of(std::uint8_t b) {
  return static_cast<rv::status>(b % 5);
}

void decide_part(std::string_view bytes) {
  if (bytes.empty()) return;
  const bool soft_fail = (static_cast<std::uint8_t>(bytes[0]) & 1) != 0;
  bytes.remove_prefix(1);
  std::vector<rv::level> levels;
  bool any_revoked = false;
  while (bytes.size() >= 3 && levels.size() < 8) {
    rv::level l;
    l.subject = "CN=level" + std::to_string(levels.size());
    l.crl_file = {status_of(static_cast<std::uint8_t>(bytes[0])), "crl file", "d0"};
    l.distribution_point = {status_of(static_cast<std::uint8_t>(bytes[1])), "crl http://x", "d1"};
    l.ocsp = {status_of(static_cast<std::uint8_t>(bytes[2])), "ocsp http://x", "d2"};
    for (auto s : {l.crl_file.result, l.distribution_point.result, l.ocsp.result})
      any_revoked = any_revoked || s == rv::status::revoked;
    levels.push_back(std::move(l));
    bytes.remove_prefix(3);
  }
  const auto v = rv::decide(levels, soft_fail);
  if (any_revoked)
    fuzz::check(v.refusal == reason::revoked, "a revoked answer from any source refuses");
  if (v.refusal) fuzz::check(!v.detail.empty(), "a refusal names the certificate and source");
  if (soft_fail) fuzz::check(v.refusal != reason::revocation_unavailable, "soft fail admits");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  ca = fuzz::fixture_cert("ca.crt");
  leaf = fuzz::fixture_cert("leaf.crt");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 3) {
    case 0:
      crl_part(rest);
      break;
    case 1:
      ocsp_part(rest);
      break;
    default:
      decide_part(rest);
      break;
  }
  return 0;
}
