// The CRL files' warnings of runtime::warnings: files that load but answer for nobody.
#include "mtlsd/runtime/crl_file_warnings.hpp"

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "mtlsd/log/log.hpp"
#include "mtlsd/tls/asn1_time.hpp"
#include "mtlsd/tls/revocation/crl.hpp"

namespace mtlsd::runtime {
namespace {

using log::utc;

// Why `crl` says nothing current at `now` (past its nextUpdate + grace, or dated ahead of this
// clock), or "".
std::string not_current(X509_CRL* crl, std::time_t now, std::time_t grace) {
  const std::time_t next = tls::revocation::crl_next_update(crl);
  const std::time_t issued = tls::revocation::crl_this_update(crl);
  if (next && now > next + grace)
    return "is past its nextUpdate (" + utc(next) + (grace ? ") and crl_grace" : ")");
  if (issued > now + tls::revocation_skew_seconds)
    return "is not valid before " + utc(issued) + " (its thisUpdate is ahead of this clock)";
  return {};
}

}  // namespace

// An issuer whose CRLs in the files are none of them current answers for nobody: with
// on_unavailable: fail every peer under it is refused (review: `check` said valid, start-up said
// ready, and every client got revocation_unavailable). Judged per issuer, as OpenSSL picks among
// them: an expired base with a current delta, or an old CRL beside a current one, is fine.
void crl_file_warnings(const listener_runtime& l, std::time_t now, config::diagnostics& out) {
  const auto& rv = l.cfg.revocation;
  const std::time_t grace = std::chrono::duration_cast<std::chrono::seconds>(rv.crl_grace).count();
  std::string outcome =
      "every peer whose chain it covers is refused as revocation_unavailable (on_unavailable: "
      "fail)";
  if (rv.ocsp != config::ocsp_mode::off || rv.crl_distribution_points)
    outcome = "the peers it covers are judged by OCSP or distribution points alone";
  else if (rv.on_unavailable == config::unavailable_policy::allow)
    outcome = "the peers it covers are admitted unless it lists them (on_unavailable: allow)";
  struct issuer_crls {
    bool current = false;
    const config::file_ref* file = nullptr;  // of the first CRL that is not
    std::string issuer, why;
  };
  std::map<std::string, issuer_crls> by_issuer;  // by the issuer name's DER
  std::vector<std::string> order;
  for (std::size_t i = 0; i < l.tls.crl_files.size() && i < rv.crl_files.size(); ++i)
    for (const auto& crl : l.tls.crl_files[i]->crls) {
      const std::string key = tls::revocation::name_der(X509_CRL_get_issuer(crl.get()));
      auto [it, added] = by_issuer.try_emplace(key);
      if (added) order.push_back(key);
      std::string why = not_current(crl.get(), now, grace);
      if (why.empty()) {
        it->second.current = true;
      } else if (!it->second.file) {
        it->second.file = &rv.crl_files[i];
        it->second.issuer = tls::revocation::crl_issuer_text(crl.get());
        it->second.why = std::move(why);
      }
    }
  for (const auto& key : order)
    if (const auto& c = by_issuer[key]; !c.current)
      out.push_back({c.file->where,
                     c.file->path + ": the CRL of " + c.issuer + " " + c.why + ", and no current " +
                         "CRL of that issuer is given: " + outcome + " until one is written",
                     true});
}

}  // namespace mtlsd::runtime
