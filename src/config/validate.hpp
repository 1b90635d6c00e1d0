#pragma once
// The rules that relate two or more fields: every contradiction the configuration can hold, caught
// at load (and so by `mtlsd check` and a reload) rather than as odd runtime behaviour.
//
// A section's parser calls its section's rules at the point where their fields have been read,
// and the listener parser calls check_listener once all its sections are read, so that the
// diagnostics come out in the order they always have. Each rule reports at the YAML node it is
// about: `n` is the mapping that holds the keys named.
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "yaml_reader.hpp"

namespace mtlsd::config {

// --- within a section ---------------------------------------------------------------------

// tls and tls.certificates[i] (`n`): a key file's password vs a pkcs11: key's PIN.
void check_key_secrets(reader& r, const YAML::Node& n, const std::string& path, const file_ref& key,
                       const file_ref& password, const file_ref& pin);
// tls.certificates[i] (`n`): cert + key or pkcs12, one of them, complete.
void check_certificate_entry(reader& r, const YAML::Node& n, const std::string& path,
                             const certificate_entry& e);
// tls: min_version <= max_version.
void check_tls_versions(reader& r, const std::string& path, const tls_options& t);
// server_auth (`n`): insecure_skip_verify vs allow.
void check_server_auth(reader& r, const YAML::Node& n, const std::string& path,
                       const server_auth_options& sa);
// limits (`n`): burst vs connections_per_second.
void check_limits(reader& r, const YAML::Node& n, const std::string& path,
                  const limit_options& lim);
// The listener (`n`): allowed_sources and accept_proxy_protocol vs a unix-socket `listen`.
void check_unix_listener_sources(reader& r, const YAML::Node& n, const std::string& path,
                                 const listener& l);
// The listener (`n`): a warning when any peer may send a PROXY header that source checks read.
void check_proxy_header_senders(reader& r, const YAML::Node& n, const std::string& path,
                                const listener& l);
// upstream_check.path (`v`, well-formed) vs type.
void check_upstream_check_path(reader& r, const YAML::Node& v, const std::string& path,
                               const upstream_check_options& c);
// upstream_check.timeout (`v`) vs interval.
void check_upstream_check_timeout(reader& r, const YAML::Node& v, const std::string& path,
                                  const upstream_check_options& c);
// upstream_check (`n`): type vs the listener's mode.
void check_upstream_check_mode(reader& r, const YAML::Node& n, const std::string& path, bool server,
                               const upstream_check_options& c);

// http (`v`, the http: block): the ALPN an http listener offers is http.protocols; a tls.alpn
// (the way to offer http/1.1 before HTTP/2 was served) stands for it when protocols is not given,
// so this may set l.http.protocols. HTTP/1.1 clients cannot be sent to an h2c upstream.
void check_http_protocols(reader& r, const YAML::Node& v, const std::string& path, listener& l);

// --- across a listener's sections ---------------------------------------------------------

// The listener (`n`) once all its sections are read: where its certificate comes from and which
// keys its mode allows.
void check_listener(reader& r, const YAML::Node& n, const std::string& path, const listener& l);

// --- across listeners ---------------------------------------------------------------------

// Names and listen addresses taken by the listeners read so far.
struct taken_by_listeners {
  std::set<std::string> names;
  std::vector<std::pair<address, std::string>> addresses;  // with the listener's name
};

// listeners[i] (`n`): a name and a listen address no earlier listener has; records both.
void check_listener_unique(reader& r, const YAML::Node& n, const std::string& path,
                           const listener& l, taken_by_listeners& taken);

}  // namespace mtlsd::config
