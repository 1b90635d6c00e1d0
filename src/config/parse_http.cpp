// http: the listener relays HTTP/1.1 and adds the client's certificate details to each request
// (x-forwarded-client-cert).
#include <set>

#include "sections.hpp"

namespace mtlsd::config {

// `v` is the http: block, `p` its path ("listeners[0].http").
void parse_http(reader& r, const YAML::Node& v, const std::string& p, http_options& http) {
  http.enabled = true;
  r.map(v, p, {"forward_client_cert_details", "set_current_client_cert_details"});
  with(v, "forward_client_cert_details", [&](auto x) {
    r.choice(x, p + ".forward_client_cert_details",
             {{"sanitize", xfcc_mode::sanitize},
              {"forward_only", xfcc_mode::forward_only},
              {"append_forward", xfcc_mode::append_forward},
              {"sanitize_set", xfcc_mode::sanitize_set},
              {"always_forward_only", xfcc_mode::always_forward_only}},
             http.forward_client_cert_details);
  });
  with(v, "set_current_client_cert_details", [&](auto x) {
    if (!r.strings(x, p + ".set_current_client_cert_details", http.set_current_client_cert_details))
      return;
    static const std::set<std::string> known = {"uri", "dns", "subject", "hash", "cert", "chain"};
    for (const auto& d : http.set_current_client_cert_details)
      if (!known.count(d))
        r.error(x, p + ".set_current_client_cert_details: unknown detail '" + d +
                       "': expected uri, dns, subject, hash, cert or chain");
  });
}

}  // namespace mtlsd::config
