// http: the listener relays HTTP/2 and HTTP/1.1 (chosen by ALPN), adds the client's certificate
// details (x-forwarded-client-cert) and X-Forwarded-For/-Proto to each request.
#include <set>

#include "sections.hpp"

namespace mtlsd::config {

// `v` is the http: block, `p` its path ("listeners[0].http").
void parse_http(reader& r, const YAML::Node& v, const std::string& p, http_options& http) {
  http.enabled = true;
  r.map(v, p,
        {"forward_client_cert_details", "set_current_client_cert_details", "protocols",
         "upstream_protocol", "x_forwarded_for", "x_forwarded_proto", "max_concurrent_streams",
         "max_premature_resets", "max_upstream_connections_per_client", "stream_idle_timeout",
         "request_headers_timeout"});
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
  with(v, "protocols", [&](auto x) {
    if (!r.strings(x, p + ".protocols", http.protocols)) return;
    for (const auto& proto : http.protocols)
      if (proto != "h2" && proto != "http/1.1")
        r.error(x, p + ".protocols: unknown protocol '" + proto + "': expected h2 or http/1.1");
    if (http.protocols.empty()) r.error(x, p + ".protocols: name at least one protocol");
  });
  with(v, "upstream_protocol", [&](auto x) {
    r.choice(x, p + ".upstream_protocol",
             {{"http/1.1", http_upstream_protocol::http1},
              {"h2c", http_upstream_protocol::h2c},
              {"same", http_upstream_protocol::same}},
             http.upstream_protocol);
  });
  with(v, "x_forwarded_for", [&](auto x) {
    r.choice(x, p + ".x_forwarded_for", {{"append", true}, {"off", false}}, http.x_forwarded_for);
  });
  with(v, "x_forwarded_proto", [&](auto x) {
    r.choice(x, p + ".x_forwarded_proto", {{"set", true}, {"off", false}}, http.x_forwarded_proto);
  });
  with(v, "max_concurrent_streams", [&](auto x) {
    r.integer_into(x, p + ".max_concurrent_streams", 1, 1'000'000, http.max_concurrent_streams);
  });
  with(v, "max_premature_resets", [&](auto x) {
    r.integer_into(x, p + ".max_premature_resets", 0, 1'000'000, http.max_premature_resets);
  });
  with(v, "max_upstream_connections_per_client", [&](auto x) {
    r.integer_into(x, p + ".max_upstream_connections_per_client", 1, 1000,
                   http.max_upstream_connections_per_client);
  });
  with(v, "stream_idle_timeout",
       [&](auto x) { r.dur(x, p + ".stream_idle_timeout", http.stream_idle_timeout); });
  with(v, "request_headers_timeout",
       [&](auto x) { r.dur(x, p + ".request_headers_timeout", http.request_headers_timeout); });
}

}  // namespace mtlsd::config
