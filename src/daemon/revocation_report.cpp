#include "mtlsd/daemon/revocation_report.hpp"

#include <cstdint>
#include <variant>

#include "mtlsd/log/log.hpp"

namespace mtlsd::daemon {
namespace {

using namespace tls::revocation;

// A distribution point's CRL under its own source of mtlsd_crl_next_update_timestamp_seconds.
std::string crl_source(const std::string& url) {
  return "crl " + url;
}

struct reporter {
  metrics::registry* metrics;

  void operator()(const ocsp_fetched& o) const {
    log::debug("ocsp answer", {{"url", o.url},
                               {"subject", o.subject},
                               {"status", to_string(o.answer.result)},
                               {"detail", o.answer.detail}});
    if (o.answer.result == status::unavailable)
      log::warn("OCSP check failed",
                {{"url", o.url}, {"subject", o.subject}, {"error", o.answer.detail}});
  }

  void operator()(const crl_fetched& o) const {
    if (!o.error.empty()) {
      log::warn("CRL download failed", {{"url", o.url}, {"error", o.error}});
      return;
    }
    const std::string next_update = o.next_update ? log::utc(o.next_update) : "none";
    // Kept but not current (review: both were a plain info line while every peer the CRL does
    // not revoke was refused as revocation_unavailable, or admitted unchecked under allow).
    if (!o.not_current.empty())
      log::warn("downloaded CRL is not current", {{"url", o.url},
                                                  {"issuer", o.issuer},
                                                  {"revoked", static_cast<std::int64_t>(o.revoked)},
                                                  {"this_update", log::utc(o.this_update)},
                                                  {"next_update", next_update},
                                                  {"error", o.not_current}});
    else
      log::info("CRL downloaded", {{"url", o.url},
                                   {"issuer", o.issuer},
                                   {"revoked", static_cast<std::int64_t>(o.revoked)},
                                   {"next_update", next_update}});
    if (!metrics) return;
    // The gauge is the nextUpdate of the freshest CRL held that is current or was: one dated
    // ahead is neither (review: its nextUpdate a day on told an alert all was well while it
    // refused every peer), so this point's series goes until a CRL in force replaces it. One past
    // its nextUpdate stays in, dated in the past: what MtlsdCRLExpired looks for.
    if (o.ahead)
      metrics->set_crl_next_update(crl_source(o.url), {});
    else if (o.next_update)
      metrics->set_crl_next_update(crl_source(o.url),
                                   {{o.issuer, static_cast<double>(o.next_update)}});
  }

  void operator()(const crl_dropped& o) const {
    if (metrics) metrics->set_crl_next_update(crl_source(o.url), {});
  }

  void operator()(const staple_fetched& o) const {
    const ocsp_answer& a = o.answer;
    if (a.result == status::revoked)
      log::error("our own certificate is revoked (stapling the OCSP response that says so)",
                 {{"listener", o.listener}, {"url", o.url}, {"detail", a.detail}});
    else if (a.result != status::good)
      log::warn("cannot refresh the stapled OCSP response",
                {{"listener", o.listener}, {"url", o.url}, {"error", a.detail}});
    else if (o.first)
      log::info("stapling OCSP response",
                {{"listener", o.listener},
                 {"url", o.url},
                 {"next_update", a.next_update ? log::utc(a.next_update) : "none"}});
  }

  void operator()(const task_failed& o) const {
    log::error("revocation task failed", {{"task", o.task}, {"error", o.error}});
  }
};

}  // namespace

void report_revocation(const tls::revocation::outcome& o, metrics::registry* metrics) {
  std::visit(reporter{metrics}, o);
}

}  // namespace mtlsd::daemon
