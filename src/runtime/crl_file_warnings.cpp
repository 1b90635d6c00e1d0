// The CRL files' warnings of runtime::warnings: files that load but answer for nobody.
#include "mtlsd/runtime/crl_file_warnings.hpp"

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "mtlsd/log/log.hpp"
#include "mtlsd/tls/asn1_time.hpp"
#include "mtlsd/tls/credentials.hpp"
#include "mtlsd/tls/revocation/crl.hpp"
#include "mtlsd/tls/revocation/ocsp.hpp"
#include "mtlsd/tls/trust_store.hpp"

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

// Whether `crls` hold a complete CRL signed by an issuer of `ca` in `bundle` (its name); the
// issuer's subject, for the warning, in `issuer_name`.
bool issuer_crl_given(const tls::cert_chain& bundle, X509* ca,
                      const std::vector<tls::x509_crl_ptr>& crls, std::string& issuer_name) {
  for (const auto& cand : bundle) {
    if (cand.get() == ca || X509_check_issued(cand.get(), ca) != X509_V_OK) continue;
    if (issuer_name.empty()) issuer_name = tls::subject_of(cand.get());
    for (const auto& crl : crls)
      if (tls::revocation::check_crl_issuer(crl.get(), cand.get()).empty()) return true;
  }
  tls::drain_errors();
  return false;
}

// crl_scope: chain checks every CA below the anchor, and a CA the trust bundle holds with its
// issuer is no anchor (tls::split_trust_bundle): it needs a CRL of that issuer, unless OCSP
// (ocsp: chain) or a distribution point it names may answer for it (review: the shipped
// examples named one CRL, of the issuing CA, beside root and issuing CA in the bundle; `check`
// said valid, and every client was refused: unable to get certificate CRL, depth 1).
void chain_crl_warnings(const listener_runtime& l, config::diagnostics& out) {
  const auto& rv = l.cfg.revocation;
  if (rv.scope != config::crl_scope::chain || rv.crl_files.empty()) return;
  const std::string peer = l.cfg.mode == config::listener_mode::server ? "client" : "server";
  const std::string outcome =
      rv.on_unavailable == config::unavailable_policy::fail
          ? "every " + peer + " through it will be refused as revocation_unavailable (unable " +
                "to get certificate CRL)"
          : "every " + peer + " through it is admitted unchecked at that level, warned about " +
                "and counted unavailable (on_unavailable: allow)";
  std::vector<const tls::cert_chain*> bundles;
  for (const auto& [domain, bundle] : l.tls.trust_by_domain)
    bundles.push_back(&bundle);
  if (bundles.empty()) bundles.push_back(&l.tls.trust);
  for (const auto* bundle : bundles)
    for (const auto& ca : tls::split_trust_bundle(*bundle).intermediates) {
      X509* c = ca.get();
      if (rv.crl_distribution_points && !tls::revocation::crl_urls(c).empty()) continue;
      if (rv.ocsp == config::ocsp_mode::chain &&
          (!rv.ocsp_responder.empty() || !tls::revocation::ocsp_urls(c).empty()))
        continue;
      std::string issuer;
      if (issuer_crl_given(*bundle, c, l.tls.crls, issuer)) continue;
      out.push_back({rv.crl_files.front().where,
                     "revocation.crl_files: crl_scope: chain checks the trusted CA " +
                         tls::subject_of(c) + " (listed with its issuer " + issuer +
                         ", so no anchor), and no CRL of " + issuer + " is in crl_files: " +
                         outcome + "; add the CRL of every CA level, or set crl_scope: leaf",
                     true});
    }
}

// A CA at the bottom of the trust bundle (issuing none of its other CAs; those above another are
// chain_crl_warnings' concern) needs a CRL of its own in the files, unless OCSP or distribution
// points may answer: under crl_scope: chain for whatever it issues, peers' certificates or the
// intermediates peers send; under leaf for the peers' certificates it issues directly, which it
// may not do when a CRL in the files is of an issuer the bundle does not hold (the peers send
// intermediates then: a root-only bundle with the intermediate's CRL, the usual layout; review).
// Without it, each such peer is refused under on_unavailable: fail (review: a bundle whose
// issuing CA's CRL was left out refused every client, `check` silent).
void issuing_ca_crl_warnings(const listener_runtime& l, config::diagnostics& out) {
  const auto& rv = l.cfg.revocation;
  if (rv.crl_files.empty() || rv.ocsp != config::ocsp_mode::off || rv.crl_distribution_points)
    return;
  std::vector<const tls::cert_chain*> bundles;
  for (const auto& [domain, bundle] : l.tls.trust_by_domain)
    bundles.push_back(&bundle);
  if (bundles.empty()) bundles.push_back(&l.tls.trust);
  const bool chain = rv.scope == config::crl_scope::chain;
  if (!chain)
    for (const auto& crl : l.tls.crls) {
      bool issuer_in_bundle = false;
      for (const auto* bundle : bundles)
        for (const auto& ca : *bundle)
          issuer_in_bundle =
              issuer_in_bundle ||
              X509_NAME_cmp(X509_CRL_get_issuer(crl.get()), X509_get_subject_name(ca.get())) == 0;
      if (!issuer_in_bundle) return;
    }
  const std::string peer = l.cfg.mode == config::listener_mode::server ? "client" : "server";
  const std::string outcome =
      (chain ? "every " + peer + " through it (crl_scope: chain checks every level) "
             : "every " + peer + " certificate it issues directly ") +
      (rv.on_unavailable == config::unavailable_policy::fail
           ? "will be refused as revocation_unavailable (unable to get certificate CRL)"
           : "is admitted unchecked, warned about and counted unavailable (on_unavailable: "
             "allow)");
  for (const auto* bundle : bundles)
    for (const auto& ca : *bundle) {
      bool issues_a_ca = false;
      for (const auto& other : *bundle)
        issues_a_ca = issues_a_ca || (other.get() != ca.get() &&
                                      X509_check_issued(ca.get(), other.get()) == X509_V_OK);
      bool has_crl = false;
      for (const auto& crl : l.tls.crls)
        has_crl = has_crl || tls::revocation::check_crl_issuer(crl.get(), ca.get()).empty();
      tls::drain_errors();
      if (issues_a_ca || has_crl) continue;
      out.push_back({rv.crl_files.front().where,
                     "revocation.crl_files: no CRL of the trusted CA " + tls::subject_of(ca.get()) +
                         " is in crl_files: " + outcome + "; add its CRL",
                     true});
    }
}

}  // namespace

// An issuer whose CRLs in the files are none of them current answers for nobody: with
// on_unavailable: fail every peer under it is refused (review: `check` said valid, start-up said
// ready, and every client got revocation_unavailable). Judged per issuer, as OpenSSL picks among
// them: an expired base with a current delta, or an old CRL beside a current one, is fine.
void crl_file_warnings(const listener_runtime& l, std::time_t now, config::diagnostics& out) {
  // Not loaded, and said to be unused (config/validate.cpp): no refusal of theirs to warn of.
  if (l.cfg.server_auth.insecure_skip_verify) return;
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
  chain_crl_warnings(l, out);
  issuing_ca_crl_warnings(l, out);
}

}  // namespace mtlsd::runtime
