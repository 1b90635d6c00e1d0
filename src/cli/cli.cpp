#include "mtlsd/cli/cli.hpp"

#include <openssl/crypto.h>

#include <algorithm>
#include <boost/version.hpp>
#include <cstdio>
#include <iostream>
#include <map>

#include "mtlsd/daemon/daemon.hpp"
#include "mtlsd/version.hpp"

namespace mtlsd::cli {
namespace {

constexpr const char* usage_text = R"(mtlsd — mTLS sidecar and reverse proxy

Usage:
  mtlsd run    --config FILE      run the daemon (also: mtlsd --config FILE)
  mtlsd check  --config FILE      validate configuration and every file it names, like nginx -t
  mtlsd verify --config FILE --listener NAME --cert PEM [--chain PEM] [--at TIME]
                                  would this certificate be admitted by listener NAME?
  mtlsd health --url URL [--timeout DURATION]
                                  probe an admin endpoint (exit 0 on HTTP 200), for HEALTHCHECK
  mtlsd version                   print versions of mtlsd, OpenSSL and Boost
  mtlsd <command> --help          help for one command

Signals: SIGHUP reloads; SIGTERM/SIGINT drain open connections, then exit 0.
)";

const std::map<std::string, std::string, std::less<>> command_help = {
    {"run", R"(Usage: mtlsd run --config FILE

Runs the daemon with the YAML configuration FILE until SIGTERM/SIGINT (drain, exit 0).
SIGHUP (or a change to any watched file) reloads; a bad reload keeps the old configuration.
)"},
    {"check", R"(Usage: mtlsd check --config FILE

Parses and type-checks FILE, loads every certificate, key, CA bundle and CRL it names and checks
each key matches its certificate. Prints one line per problem as FILE:LINE:COL: message.
Warnings (expiry within 30 days, private keys readable by group/others) do not fail the check.
Exit status: 0 when the configuration is usable, 1 otherwise.
)"},
    {"verify",
     R"(Usage: mtlsd verify --config FILE --listener NAME --cert PEM [--chain PEM] [--at TIME]

Runs the same verification a live handshake on listener NAME would run (trust store, depth,
key usage, allow list) on the certificate in PEM (more certificates in PEM, and those in
--chain, are treated as intermediates the peer sends). On a client-mode listener it judges a
remote server's certificate against server_auth instead (trust, server_name, allow list).
--at TIME validates at TIME: RFC 3339 (2026-01-02T03:04:05Z) or @EPOCH seconds.
Prints `accepted: <identity>` (exit 0) or `rejected: <reason>: <detail>` (exit 1).
)"},
    {"health", R"(Usage: mtlsd health --url URL [--timeout DURATION]

GETs URL (http:// only, e.g. http://127.0.0.1:9901/readyz) and exits 0 on HTTP 200, 1
otherwise. For container HEALTHCHECKs and exec probes: no shell or curl needed.
)"},
    {"version", "Usage: mtlsd version\n\nPrints the versions of mtlsd, OpenSSL and Boost.\n"},
};

int usage_error(const std::string& msg) {
  std::cerr << "mtlsd: " << msg << "\n\n" << usage_text;
  return 2;
}

int version_command() {
  std::cout << "mtlsd " << kVersion << "\n"
            << "OpenSSL " << OpenSSL_version(OPENSSL_VERSION_STRING) << " (built with "
            << OPENSSL_VERSION_TEXT << ")\n"
            << "Boost " << BOOST_VERSION / 100000 << "." << BOOST_VERSION / 100 % 1000 << "."
            << BOOST_VERSION % 100 << "\n";
  return 0;
}

}  // namespace

std::optional<std::string> options::get(std::string_view name) const {
  for (const auto& [k, v] : flags)
    if (k == name) return v;
  return std::nullopt;
}

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  options o;
  std::size_t i = 0;
  if (!args.empty() && args[0].rfind("-", 0) != 0) o.command = args[i++];
  for (; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "-h" || a == "--help") {
      o.help = true;
      continue;
    }
    if (a.rfind("--", 0) != 0 && a != "-c") return usage_error("unexpected argument '" + a + "'");
    std::string name = a == "-c" ? "config" : a.substr(2);
    std::string value;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    } else {
      if (i + 1 >= args.size()) return usage_error("option --" + name + " needs a value");
      value = args[++i];
    }
    o.flags.emplace_back(name, value);
  }
  if (o.command.empty()) {
    if (o.help) {
      std::cout << usage_text;
      return 0;
    }
    if (o.get("config"))
      o.command = "run";
    else
      return usage_error("no command given");
  }
  if (o.command == "help") {
    std::cout << usage_text;
    return 0;
  }
  auto help = command_help.find(o.command);
  if (help == command_help.end()) return usage_error("unknown command '" + o.command + "'");
  if (o.help) {
    std::cout << help->second;
    return 0;
  }
  auto allowed = [&](std::initializer_list<std::string_view> names) -> std::optional<int> {
    for (const auto& [k, v] : o.flags)
      if (std::find(names.begin(), names.end(), k) == names.end())
        return usage_error("unknown option --" + k + " for '" + o.command + "'");
    return std::nullopt;
  };
  if (o.command == "version") {
    if (auto e = allowed({})) return *e;
    return version_command();
  }
  if (o.command == "health") {
    if (auto e = allowed({"url", "timeout"})) return *e;
    return health_command(o);
  }
  if (o.command == "verify") {
    if (auto e = allowed({"config", "listener", "cert", "chain", "at"})) return *e;
    return verify_command(o);
  }
  if (auto e = allowed({"config"})) return *e;
  auto config = o.get("config");
  if (!config) return usage_error("'" + o.command + "' needs --config FILE");
  if (o.command == "check") return check_command(o);
  return daemon::run(*config);
}

}  // namespace mtlsd::cli
