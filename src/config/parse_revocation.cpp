// revocation: CRL files and distribution points, OCSP, stapling, and what happens when no
// answer can be had.
#include "sections.hpp"

namespace mtlsd::config {

void parse_revocation(reader& r, const YAML::Node& n, const std::string& path,
                      revocation_options& rv) {
  r.map(n, path,
        {"crl_files", "crl_distribution_points", "crl_scope", "ocsp", "ocsp_responder",
         "ocsp_timeout", "on_unavailable", "crl_grace", "recheck_established", "stapling",
         "require_staple"});
  with(n, "crl_files", [&](auto v) { r.files(v, path + ".crl_files", rv.crl_files); });
  with(n, "crl_distribution_points", [&](auto v) {
    r.boolean(v, path + ".crl_distribution_points", rv.crl_distribution_points);
  });
  with(n, "crl_scope", [&](auto v) {
    r.choice(v, path + ".crl_scope", {{"leaf", crl_scope::leaf}, {"chain", crl_scope::chain}},
             rv.scope);
  });
  with(n, "ocsp", [&](auto v) {
    r.choice(v, path + ".ocsp",
             {{"off", ocsp_mode::off},
              {"false", ocsp_mode::off},
              {"leaf", ocsp_mode::leaf},
              {"chain", ocsp_mode::chain}},
             rv.ocsp);
  });
  with(n, "ocsp_responder", [&](auto v) {
    rv.ocsp_responder_where = r.at(v);
    // The scheme here; the rest of the URL where it is parsed for use (tls/revocation/policy.cpp:
    // the URL parser lives in net/, a layer above this one).
    std::string scheme;
    if (r.str(v, path + ".ocsp_responder", rv.ocsp_responder) && !rv.ocsp_responder.empty()) {
      scheme = rv.ocsp_responder.substr(0, 7);
      for (char& c : scheme)
        c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    }
    if (!scheme.empty() && scheme != "http://")
      r.error(v, path +
                     ".ocsp_responder: only http:// responder URLs are supported (OCSP is signed, "
                     "so TLS adds nothing)");
  });
  with(n, "ocsp_timeout", [&](auto v) {
    // 0s is "no limit" elsewhere; here it became 1 ms and refused every client (review).
    if (r.dur(v, path + ".ocsp_timeout", rv.ocsp_timeout) && rv.ocsp_timeout.count() == 0)
      r.error(v, path + ".ocsp_timeout must be greater than 0");
  });
  with(n, "on_unavailable", [&](auto v) {
    r.choice(v, path + ".on_unavailable",
             {{"fail", unavailable_policy::fail}, {"allow", unavailable_policy::allow}},
             rv.on_unavailable);
  });
  with(n, "crl_grace", [&](auto v) { r.dur(v, path + ".crl_grace", rv.crl_grace); });
  with(n, "recheck_established",
       [&](auto v) { r.boolean(v, path + ".recheck_established", rv.recheck_established); });
  with(n, "stapling", [&](auto v) { r.boolean(v, path + ".stapling", rv.stapling); });
  with(n, "require_staple",
       [&](auto v) { r.boolean(v, path + ".require_staple", rv.require_staple); });
}

}  // namespace mtlsd::config
