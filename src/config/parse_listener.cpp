// listeners: each listener's own keys (name, mode, listen, upstream, ...), then each of its
// sections through its parser, then the rules across them (validate.hpp).
#include <algorithm>
#include <cctype>

#include "sections.hpp"
#include "validate.hpp"

namespace mtlsd::config {
namespace {

void parse_name(reader& r, const YAML::Node& n, const std::string& path, listener& l) {
  const YAML::Node name = n["name"];
  if (!name.IsDefined())
    r.error(n, path + ": missing required key 'name'");
  else if (r.str(name, path + ".name", l.name)) {
    bool ok = !l.name.empty() && std::all_of(l.name.begin(), l.name.end(), [](unsigned char c) {
      return std::isalnum(c) || c == '_' || c == '-' || c == '.';
    });
    if (!ok)
      r.error(name, path + ".name: '" + l.name +
                        "' must be non-empty and use only letters, digits, '_', '-' and '.'");
  }
}

// unix_socket_mode: "0660". A leading 0 is required: a YAML 1.1 tool (PyYAML) reads an unquoted
// 0660 as the octal number 432 and writes it back as 432, which would otherwise be taken as
// 0432 without a word.
void parse_unix_socket_mode(reader& r, const YAML::Node& n, const std::string& path, listener& l) {
  with(n, "unix_socket_mode", [&](auto v) {
    const std::string key = path + ".unix_socket_mode";
    std::string text;
    if (!r.str(v, key, text)) return;
    const bool octal =
        text.size() >= 2 && text.size() <= 8 && text.front() == '0' &&
        std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '7'; });
    if (!octal) {
      r.error(v, key + ": expected permission bits in octal with a leading 0, in quotes (e.g. " +
                     "\"0660\"), got '" + text + "'");
      return;
    }
    const unsigned mode = static_cast<unsigned>(std::stoul(text, nullptr, 8));
    if (mode > 0777) {
      r.error(v, key + ": " + text + " is above 0777: only the read, write and execute bits of " +
                     "owner, group and others can be set");
      return;
    }
    if (!l.listen.is_unix()) {
      r.error(v, key + ": applies to a unix: listen address only, and listen is " + l.listen.str());
      return;
    }
    l.unix_socket_mode = mode;
  });
}

void parse_listen(reader& r, const YAML::Node& n, const std::string& path, listener& l) {
  const YAML::Node listen = n["listen"];
  if (!listen.IsDefined())
    r.error(n, path + ": missing required key 'listen'");
  else if (r.addr(listen, path + ".listen", l.listen))
    parse_unix_socket_mode(r, n, path, l);  // judged by the address it is for
}

void parse_upstream(reader& r, const YAML::Node& n, const std::string& path, listener& l) {
  const YAML::Node upstream = n["upstream"];
  if (!upstream.IsDefined())
    r.error(n, path + ": missing required key 'upstream'");
  else if (r.addr(upstream, path + ".upstream", l.upstream)) {
    if (l.upstream.type == address::kind::tcp && l.upstream.port == 0)
      r.error(upstream, path + ".upstream: port 0 is not a valid destination");
  }
}

// Everything after name, mode, listen and upstream, in the order its problems are reported.
void parse_sections(reader& r, const YAML::Node& n, const std::string& path, listener& l) {
  with(n, "max_connections", [&](auto v) {
    r.integer_into(v, path + ".max_connections", 1, 10'000'000, l.max_connections);
  });
  with(n, "timeouts", [&](auto v) { parse_timeouts(r, v, path + ".timeouts", l.timeouts); });
  parse_admission(r, n, path, l);
  // Absent, a section's problems are the listener's (its position); given, even empty, its own.
  l.tls.where = l.where;
  with(n, "tls", [&](auto v) { parse_tls(r, v, path + ".tls", l.tls); });
  l.client_auth.where = l.where;
  with(n, "client_auth",
       [&](auto v) { parse_client_auth(r, v, path + ".client_auth", l.client_auth); });
  with(n, "server_auth",
       [&](auto v) { parse_server_auth(r, v, path + ".server_auth", l.server_auth); });
  with(n, "revocation",
       [&](auto v) { parse_revocation(r, v, path + ".revocation", l.revocation); });
  with(n, "proxy_protocol", [&](auto v) {
    r.choice(v, path + ".proxy_protocol",
             {{"off", proxy_protocol_mode::off},
              {"false", proxy_protocol_mode::off},
              {"v2", proxy_protocol_mode::v2}},
             l.proxy_protocol);
  });
  with(n, "http", [&](auto v) {
    parse_http(r, v, path + ".http", l.http);
    check_http_protocols(r, v, path, l);
  });
  const bool server = l.mode == listener_mode::server;
  with(n, "upstream_check", [&](auto v) {
    parse_upstream_check(r, v, path + ".upstream_check", server, l.upstream_check);
    // The probe speaks HTTP/1.1: an h2c-only upstream (a gRPC server) could never answer it,
    // and the listener would read down for good (review). A warning, not an error: some
    // upstreams serve both on one port (Go's h2c handler, Envoy), and such configurations work.
    if (l.upstream_check.enabled && l.upstream_check.type == upstream_check_type::http &&
        l.http.enabled && l.http.upstream_protocol == http_upstream_protocol::h2c)
      r.warning(v, path + ".upstream_check: type: http probes with HTTP/1.1, which an h2c-only " +
                       "upstream (http.upstream_protocol: h2c) does not answer: it would read " +
                       "down; use type: tcp unless the upstream also speaks HTTP/1.1");
  });
  // Last: client_auth's rules judge the source, http and proxy_protocol tell the upstream of it.
  check_proxy_header_senders(r, n, path, l);
}

void parse_listener(reader& r, const YAML::Node& n, const std::string& path, listener& l) {
  l.where = r.at(n);
  if (!n.IsMap()) {
    r.error(n, path + ": expected a mapping describing a listener, got " + reader::kind(n));
    return;
  }
  r.map(n, path,
        {"name", "mode", "listen", "unix_socket_mode", "upstream", "max_connections", "timeouts",
         "tls", "client_auth", "server_auth", "revocation", "proxy_protocol", "http",
         "upstream_check", "allowed_sources", "accept_proxy_protocol", "limits"});
  parse_name(r, n, path, l);
  with(n, "mode", [&](auto v) {
    r.choice(v, path + ".mode",
             {{"server", listener_mode::server}, {"client", listener_mode::client}}, l.mode);
  });
  parse_listen(r, n, path, l);
  parse_upstream(r, n, path, l);
  parse_sections(r, n, path, l);
  check_listener(r, n, path, l);
}

}  // namespace

void parse_listeners(reader& r, const YAML::Node& root, std::vector<listener>& out) {
  const YAML::Node ls = root["listeners"];
  if (!ls.IsDefined() || ls.IsNull()) {
    r.error(root, "no listeners configured: add at least one under 'listeners:'");
  } else if (!ls.IsSequence()) {
    r.error(ls, "listeners: expected a list of listeners, got " + reader::kind(ls));
  } else {
    taken_by_listeners taken;
    for (std::size_t i = 0; i < ls.size(); ++i) {
      listener l;
      const std::string path = "listeners[" + std::to_string(i) + "]";
      parse_listener(r, ls[i], path, l);
      check_listener_unique(r, ls[i], path, l, taken);
      out.push_back(std::move(l));
    }
    if (ls.size() == 0) r.error(ls, "no listeners configured: add at least one under 'listeners:'");
  }
}

}  // namespace mtlsd::config
