// The top level: admin, log, workers, sandbox, reload, shutdown and dns; listeners are handed to
// parse_listener.cpp.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>

#include "sections.hpp"

namespace mtlsd::config {
namespace {

namespace fs = std::filesystem;

// Why mtlsd could not append to (or create) the file `path`, or nothing. Checked at load so
// that `mtlsd check` and start-up refuse a path the daemon could not open; a reload only warns
// (parse_log).
std::optional<std::string> unwritable_log_file(const std::string& path) {
  std::error_code ec;
  const auto st = fs::status(path, ec);
  if (fs::exists(st)) {
    if (fs::is_directory(st)) return "it is a directory";
    if (::access(path.c_str(), W_OK) != 0) return std::string(std::strerror(errno));
    return std::nullopt;
  }
  const fs::path dir = fs::path(path).parent_path();
  const auto dst = fs::status(dir, ec);
  if (!fs::exists(dst)) return "the directory " + dir.string() + " does not exist";
  if (!fs::is_directory(dst)) return dir.string() + " is not a directory";
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    return "the directory " + dir.string() + " is not writable (" + std::strerror(errno) + ")";
  return std::nullopt;
}

// dns.servers: IP:PORT entries. A DNS server cannot itself be found by name, and c-ares takes
// addresses only.
void parse_dns_servers(reader& r, const YAML::Node& n, std::vector<address>& out) {
  out.clear();
  if (n.IsNull()) return;
  if (!n.IsSequence() && !n.IsScalar()) {  // one scalar is one server, as for other lists
    r.error(n, "dns.servers: expected a list of IP:PORT addresses, got " + reader::kind(n));
    return;
  }
  const std::size_t count = n.IsScalar() ? 1 : n.size();
  for (std::size_t i = 0; i < count; ++i) {
    const YAML::Node item = n.IsScalar() ? n : n[i];
    const std::string path =
        n.IsScalar() ? std::string("dns.servers") : "dns.servers[" + std::to_string(i) + "]";
    address a;
    if (!r.addr(item, path, a)) continue;
    in6_addr scratch{};
    const bool ip = ::inet_pton(AF_INET, a.host.c_str(), &scratch) == 1 ||
                    ::inet_pton(AF_INET6, a.host.c_str(), &scratch) == 1;
    if (a.is_unix()) {
      r.error(item, path + ": a DNS server is an IP:PORT address, not a unix socket");
    } else if (!ip) {
      r.error(item, path + ": '" + a.host +
                        "' is not an IP address (a DNS server cannot be found by name)");
    } else if (a.port == 0) {
      r.error(item, path + ": port 0 is not a DNS server's port (53 is the usual one)");
    } else {
      out.push_back(a);
    }
  }
}

void parse_admin(reader& r, const YAML::Node& v, admin_options& admin) {
  r.map(v, "admin", {"address"});
  with(v, "address", [&](auto a) {
    std::string text;
    if (!r.str(a, "admin.address", text)) return;
    if (text.empty()) {
      admin.listen.reset();
      return;
    }
    address parsed;
    if (!r.addr(a, "admin.address", parsed)) return;
    // What `run` accepts (admin/admin_server.cpp): no name to resolve before the sandbox.
    // An IPv6 scope (fe80::1%eth0) is the interface's: only what comes before it is checked.
    in6_addr scratch{};
    const std::string ip = parsed.host.substr(0, parsed.host.find('%'));
    const bool scoped = ip.size() != parsed.host.size();
    if (!parsed.is_unix() && (scoped ? ip.size() + 1 == parsed.host.size() ||
                                           ::inet_pton(AF_INET6, ip.c_str(), &scratch) != 1
                                     : ::inet_pton(AF_INET, ip.c_str(), &scratch) != 1 &&
                                           ::inet_pton(AF_INET6, ip.c_str(), &scratch) != 1)) {
      r.error(a, "admin.address: '" + parsed.host +
                     "' is not an IP address: the admin address is an IP address or a unix: path, "
                     "not a host name");
      return;
    }
    if (const auto why = socket_directory_problem(parsed); !why.empty())
      r.warning(a, "admin.address: " + why + ": mtlsd cannot create the socket " + parsed.path +
                       " and start until it does");
    admin.listen = parsed;
  });
}

void parse_log(reader& r, const YAML::Node& v, log_options& log) {
  r.map(v, "log", {"level", "format", "access_log", "access_log_path"});
  with(v, "level", [&](auto x) {
    r.choice(x, "log.level",
             {{"trace", std::string("trace")},
              {"debug", std::string("debug")},
              {"info", std::string("info")},
              {"warn", std::string("warn")},
              {"error", std::string("error")}},
             log.level);
  });
  with(v, "format", [&](auto x) {
    r.choice(x, "log.format", {{"text", log_format::text}, {"json", log_format::json}}, log.format);
  });
  with(v, "access_log", [&](auto x) { r.boolean(x, "log.access_log", log.access_log); });
  with(v, "access_log_path", [&](auto x) {
    std::string raw;
    if (!r.str(x, "log.access_log_path", raw)) return;
    // The streams, also by their /dev names: as a file path, /dev/stdout would make the
    // sandbox let mtlsd create files in /dev (the log file's directory) and open any file for
    // writing (seccomp), and SIGUSR1 would "reopen" a stream.
    if (raw == "/dev/stdout" || raw == "/dev/fd/1") raw = "stdout";
    if (raw == "/dev/stderr" || raw == "/dev/fd/2") raw = "stderr";
    if (raw.empty() || raw == "stderr" || raw == "stdout") {
      log.access_log_path = raw == "stderr" ? "" : raw;
      return;
    }
    const file_ref f = r.resolve(raw, x);
    log.access_log_path = f.path;
    const auto why = unwritable_log_file(f.path);
    if (!why) return;
    const std::string msg = "log.access_log_path: cannot write '" + f.path + "': " + *why;
    // A reload does not open the file (SIGUSR1 does, a new path waits for a restart): refused,
    // it blocked certificate and CRL rotation after a logrotate `create` mtlsd cannot write, or
    // a log directory removed (review). Said, and loaded.
    if (r.options().reload)
      r.warning(x, msg +
                       "; the running process keeps writing access lines where it writes them now, "
                       "but `mtlsd check` and a start with this configuration refuse it");
    else
      r.error(x, msg);
  });
}

}  // namespace

configuration parse_root(reader& r, const YAML::Node& root, const std::string& file) {
  configuration c;
  c.file = file;
  r.note_empty_values(root);
  if (!root.IsMap()) {
    r.error(root, "expected a mapping at the top level (admin, log, listeners, ...), got " +
                      reader::kind(root));
    return c;
  }
  r.map(root, "the top level",
        {"admin", "log", "workers", "reload", "shutdown", "dns", "sandbox", "listeners"});
  with(root, "admin", [&](auto v) { parse_admin(r, v, c.admin); });
  with(root, "log", [&](auto v) { parse_log(r, v, c.log); });
  with(root, "workers", [&](auto v) { r.integer_into(v, "workers", 0, 1024, c.workers); });
  with(root, "sandbox", [&](auto v) { r.boolean(v, "sandbox", c.sandbox); });
  with(root, "reload", [&](auto v) {
    r.map(v, "reload", {"watch", "poll_interval"});
    with(v, "watch", [&](auto x) { r.boolean(x, "reload.watch", c.reload.watch); });
    with(v, "poll_interval",
         [&](auto x) { r.dur(x, "reload.poll_interval", c.reload.poll_interval); });
  });
  with(root, "shutdown", [&](auto v) {
    r.map(v, "shutdown", {"drain_timeout"});
    with(v, "drain_timeout",
         [&](auto x) { r.dur(x, "shutdown.drain_timeout", c.shutdown.drain_timeout); });
  });
  with(root, "dns", [&](auto v) {
    r.map(v, "dns", {"servers"});
    with(v, "servers", [&](auto x) { parse_dns_servers(r, x, c.dns.servers); });
  });
  parse_listeners(r, root, c.listeners);
  // The admin server binds after the listeners: one sharing a listener's address would not
  // start.
  if (c.admin.listen)
    for (const auto& l : c.listeners)
      if (may_overlap(*c.admin.listen, l.listen)) {
        const YAML::Node admin = root["admin"];
        const bool written = admin.IsDefined() && admin.IsMap() && admin["address"].IsDefined();
        r.error(written ? admin["address"] : root,
                "admin.address: " + c.admin.listen->str() + (written ? "" : " (the default)") +
                    " overlaps listener '" + l.name + "' (" + l.listen.str() +
                    "); give one of them " +
                    (l.listen.is_unix() ? "another path" : "another port"));
        break;
      }
  return c;
}

}  // namespace mtlsd::config
