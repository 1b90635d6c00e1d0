// YAML -> configuration structs, through the typed readers of yaml_reader.hpp.
#include "mtlsd/config/load.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>

#include <unistd.h>

#include "mtlsd/config/config.hpp"
#include "mtlsd/config/pkcs11_uri.hpp"
#include "sections.hpp"
#include "validate.hpp"
#include "yaml_reader.hpp"

namespace mtlsd::config {
namespace {

namespace fs = std::filesystem;

// Why mtlsd could not append to (or create) the file `path`, or nothing. Checked at load so
// that `mtlsd check` and a reload refuse a path the daemon could not open.
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

configuration parse_root(reader& r, const YAML::Node& root, const std::string& file) {
  configuration c;
  c.file = file;
  if (!root.IsMap()) {
    r.error(root, "expected a mapping at the top level (admin, log, listeners, ...), got " +
                      reader::kind(root));
    return c;
  }
  r.map(root, "the top level",
        {"admin", "log", "workers", "reload", "shutdown", "dns", "sandbox", "listeners"});
  with(root, "admin", [&](auto v) {
    r.map(v, "admin", {"address"});
    with(v, "address", [&](auto a) {
      std::string text;
      if (!r.str(a, "admin.address", text)) return;
      if (text.empty()) {
        c.admin.listen.reset();
        return;
      }
      address parsed;
      if (r.addr(a, "admin.address", parsed)) c.admin.listen = parsed;
    });
  });
  with(root, "log", [&](auto v) {
    r.map(v, "log", {"level", "format", "access_log", "access_log_path"});
    with(v, "level", [&](auto x) {
      std::string level;
      r.choice(x, "log.level",
               {{"trace", std::string("trace")},
                {"debug", std::string("debug")},
                {"info", std::string("info")},
                {"warn", std::string("warn")},
                {"error", std::string("error")}},
               c.log.level);
      (void)level;
    });
    with(v, "format", [&](auto x) {
      r.choice(x, "log.format", {{"text", log_format::text}, {"json", log_format::json}},
               c.log.format);
    });
    with(v, "access_log", [&](auto x) { r.boolean(x, "log.access_log", c.log.access_log); });
    with(v, "access_log_path", [&](auto x) {
      std::string raw;
      if (!r.str(x, "log.access_log_path", raw)) return;
      c.log.access_log_path_where = r.at(x);
      if (raw.empty() || raw == "stderr" || raw == "stdout") {
        c.log.access_log_path = raw == "stderr" ? "" : raw;
        return;
      }
      const file_ref f = r.resolve(raw, x);
      c.log.access_log_path = f.path;
      if (auto why = unwritable_log_file(f.path))
        r.error(x, "log.access_log_path: cannot write '" + f.path + "': " + *why);
    });
  });
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
  return c;
}

// Where the second YAML document of `text` starts, if there is one. YAML::Load reads only the
// first, so a file with `---` and more would silently lose the rest (and any error in it).
class document_starts : public YAML::EventHandler {
 public:
  std::vector<YAML::Mark> marks;
  void OnDocumentStart(const YAML::Mark& mark) override { marks.push_back(mark); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

std::optional<YAML::Mark> second_document(const std::string& text) {
  std::istringstream in(text);
  YAML::Parser parser(in);
  document_starts starts;
  while (starts.marks.size() < 2 && parser.HandleNextDocument(starts)) {
  }
  if (starts.marks.size() < 2) return std::nullopt;
  return starts.marks[1];
}

load_result finish(configuration c, diagnostics problems) {
  load_result out;
  out.problems = std::move(problems);
  if (!has_errors(out.problems)) out.config = std::move(c);
  return out;
}

}  // namespace

load_result load_text(const std::string& text, const std::string& file) {
  diagnostics problems;
  reader r(file, problems);
  YAML::Node root;
  try {
    root = YAML::Load(text);
    if (auto second = second_document(text))
      problems.push_back({{file, second->line + 1, second->column + 1},
                          "a second YAML document starts here: a configuration file holds exactly "
                          "one (remove the '---' line and what follows, or merge it into the "
                          "first)"});
  } catch (const YAML::ParserException& e) {
    problems.push_back({{file, e.mark.line + 1, e.mark.column + 1}, "YAML syntax error: " + e.msg});
    return finish({}, std::move(problems));
  }
  configuration c = parse_root(r, root, file);
  return finish(std::move(c), std::move(problems));
}

load_result load_file(const std::string& path) {
  std::string absolute = fs::absolute(path).lexically_normal().string();
  std::ifstream in(absolute, std::ios::binary);
  if (!in) {
    load_result out;
    out.problems.push_back(
        {{absolute, 0, 0}, std::string("cannot read configuration file: ") + std::strerror(errno)});
    return out;
  }
  std::stringstream buf;
  buf << in.rdbuf();
  return load_text(buf.str(), absolute);
}

}  // namespace mtlsd::config
