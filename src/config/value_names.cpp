// The YAML spelling of each enumerated setting, for `mtlsd check --print` (the reverse of the
// choices the parse_*.cpp files accept).
#include "value_names.hpp"

namespace mtlsd::config {

const char* to_text(client_auth_mode m) {
  switch (m) {
    case client_auth_mode::require:
      return "require";
    case client_auth_mode::optional:
      return "optional";
    case client_auth_mode::none:
      return "none";
  }
  return "";
}

const char* to_text(crl_scope s) {
  return s == crl_scope::leaf ? "leaf" : "chain";
}

const char* to_text(ocsp_mode m) {
  switch (m) {
    case ocsp_mode::off:
      return "off";
    case ocsp_mode::leaf:
      return "leaf";
    case ocsp_mode::chain:
      return "chain";
  }
  return "";
}

const char* to_text(unavailable_policy p) {
  return p == unavailable_policy::fail ? "fail" : "allow";
}

const char* to_text(proxy_protocol_mode m) {
  return m == proxy_protocol_mode::v2 ? "v2" : "off";
}

const char* to_text(http_upstream_protocol p) {
  switch (p) {
    case http_upstream_protocol::http1:
      return "http/1.1";
    case http_upstream_protocol::h2c:
      return "h2c";
    case http_upstream_protocol::same:
      return "same";
  }
  return "http/1.1";
}

const char* to_text(xfcc_mode m) {
  switch (m) {
    case xfcc_mode::sanitize:
      return "sanitize";
    case xfcc_mode::forward_only:
      return "forward_only";
    case xfcc_mode::append_forward:
      return "append_forward";
    case xfcc_mode::sanitize_set:
      return "sanitize_set";
    case xfcc_mode::always_forward_only:
      return "always_forward_only";
  }
  return "";
}

const char* to_text(listener_mode m) {
  return m == listener_mode::client ? "client" : "server";
}

const char* to_text(log_format f) {
  return f == log_format::json ? "json" : "text";
}

}  // namespace mtlsd::config
