#pragma once
// The parsers of the configuration's sections, one file each: each reads its YAML node into its
// struct, reports every problem at its position, and calls its section's rules (validate.hpp)
// once their fields are read.
#include <string>
#include <vector>

#include "yaml_reader.hpp"

namespace mtlsd::config {

// parse_auth.cpp: client_auth and server_auth, with their allow lists and rules.
void parse_client_auth(reader& r, const YAML::Node& n, const std::string& path,
                       client_auth_options& ca);
void parse_server_auth(reader& r, const YAML::Node& n, const std::string& path,
                       server_auth_options& sa);
// Server names (`sni` matchers, tls.certificates[].server_names): lower-cased; each a DNS name
// or "*.suffix".
void parse_server_names(reader& r, const YAML::Node& v, const std::string& path,
                        std::vector<std::string>& out);

// parse_tls.cpp
void parse_tls(reader& r, const YAML::Node& n, const std::string& path, tls_options& t);

// parse_revocation.cpp
void parse_revocation(reader& r, const YAML::Node& n, const std::string& path,
                      revocation_options& rv);

// parse_http.cpp
void parse_http(reader& r, const YAML::Node& v, const std::string& p, http_options& http);

// parse_limits.cpp
// allowed_sources, accept_proxy_protocol and limits of the listener `n` (read after its listen).
void parse_admission(reader& r, const YAML::Node& n, const std::string& path, listener& l);
void parse_timeouts(reader& r, const YAML::Node& v, const std::string& p, timeout_options& t);
// listeners[].upstream_check; `server`: the listener's mode.
void parse_upstream_check(reader& r, const YAML::Node& n, const std::string& path, bool server,
                          upstream_check_options& c);

// parse_listener.cpp: `listeners` of the top-level mapping `root`.
void parse_listeners(reader& r, const YAML::Node& root, std::vector<listener>& out);

// parse_top.cpp: the whole document; `file` is the configuration's absolute path.
configuration parse_root(reader& r, const YAML::Node& root, const std::string& file);

}  // namespace mtlsd::config
