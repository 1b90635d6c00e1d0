#pragma once
// Private to the config library: the YAML spelling of each enumerated setting
// (value_names.cpp), as `mtlsd check --print` writes it and load_text reads it back.
#include "mtlsd/config/config.hpp"

namespace mtlsd::config {

const char* to_text(client_auth_mode m);
const char* to_text(crl_scope s);
const char* to_text(ocsp_mode m);
const char* to_text(unavailable_policy p);
const char* to_text(proxy_protocol_mode m);
const char* to_text(http_upstream_protocol p);
const char* to_text(xfcc_mode m);
const char* to_text(listener_mode m);
const char* to_text(log_format f);

}  // namespace mtlsd::config
