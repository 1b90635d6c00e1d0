#include "mtlsd/tls/revocation/policy.hpp"

#include "mtlsd/net/url.hpp"

namespace mtlsd::tls::revocation {

policy policy::from(const config::revocation_options& rv) {
  policy p;
  p.ocsp = rv.ocsp;
  p.ocsp_responder = rv.ocsp_responder;
  // Parsed as every lookup will parse it, so that a URL no lookup could use is refused at load
  // (review: `check` passed credentials, port 0 and a bad %-escape, and each lookup then failed:
  // every client refused, or admitted unchecked under on_unavailable: allow). The URL itself is
  // not repeated: it may hold a password.
  if (std::string why; !p.ocsp_responder.empty() && !net::parse_http_url(p.ocsp_responder, &why))
    throw config::config_error(
        {{rv.ocsp_responder_where, "revocation.ocsp_responder is not a usable URL: " + why}});
  p.timeout = std::chrono::duration_cast<std::chrono::milliseconds>(rv.ocsp_timeout);
  if (p.timeout.count() <= 0) p.timeout = std::chrono::milliseconds(1);
  p.crl_files = !rv.crl_files.empty();
  p.distribution_points = rv.crl_distribution_points;
  p.crl_scope = rv.scope;
  p.soft_fail = rv.on_unavailable == config::unavailable_policy::allow;
  p.grace_seconds = static_cast<std::time_t>(
      std::chrono::duration_cast<std::chrono::seconds>(rv.crl_grace).count());
  p.recheck_established = rv.recheck_established;
  p.stapling = rv.stapling;
  return p;
}

namespace {

std::string describe(const answer& a) {
  std::string s = a.detail;
  if (!a.source.empty()) s += (s.empty() ? "" : " ") + std::string("(") + a.source + ")";
  return s;
}

// Per method, for the metric: the CRL method is answered when either CRL source answered.
status crl_method_result(const level& l) {
  status crl = status::not_checked;
  for (const answer* a : {&l.crl_file, &l.distribution_point}) {
    if (a->result == status::not_checked) continue;
    if (crl == status::not_checked || a->result == status::revoked ||
        (a->result == status::good && crl != status::revoked))
      crl = a->result;
  }
  return crl;
}

}  // namespace

verdict decide(const std::vector<level>& levels, bool soft_fail) {
  verdict v;
  std::string missing;  // certificates nobody could answer for
  for (std::size_t depth = 0; depth < levels.size(); ++depth) {
    const level& l = levels[depth];
    const answer* sources[] = {&l.crl_file, &l.distribution_point, &l.ocsp};
    const answer* revoked = nullptr;
    bool good = false, applies = false;
    for (const answer* a : sources) {
      if (a->result == status::not_checked) continue;
      applies = true;
      if (a->result == status::revoked && !revoked) revoked = a;
      if (a->result == status::good) good = true;
    }
    if (!applies) continue;

    v.crl = worst(v.crl, crl_method_result(l));
    v.ocsp = worst(v.ocsp, l.ocsp.result);

    const std::string where = "depth " + std::to_string(depth) + ": " + l.subject;
    if (revoked) {
      if (v.refusal != reason::revoked) {
        v.refusal = reason::revoked;
        v.source = revoked->source;
        v.detail = "certificate revoked" +
                   (revoked->detail.empty() ? std::string() : " (" + revoked->detail + ")") +
                   " at " + where + (revoked->source.empty() ? "" : " (" + revoked->source + ")");
      }
      continue;
    }
    if (good) {
      if (v.refusal != reason::revoked)
        for (const answer* a : sources)
          if (a->result == status::good && !a->source.empty() &&
              v.source.find(a->source) == std::string::npos)
            v.source += (v.source.empty() ? "" : ", ") + a->source;
      continue;
    }
    std::string why;
    for (const answer* a : sources)
      if (a->result != status::not_checked) why += (why.empty() ? "" : "; ") + describe(*a);
    missing += (missing.empty() ? "" : "; ") + where + ": " + why;
  }
  if (!missing.empty() && !v.refusal) {
    if (soft_fail) {
      v.soft_fail_note = missing;
    } else {
      v.refusal = reason::revocation_unavailable;
      v.detail = "no revocation answer for " + missing;
    }
  }
  return v;
}

}  // namespace mtlsd::tls::revocation
