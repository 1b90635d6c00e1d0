// The command line, parsed by CLI11: subcommands, `--opt value` / `--opt=value`, generated help
// per command, and the messages and exit codes people expect (0 ok; 1 rejected, problems found,
// or a daemon that cannot start; 2 a usage error, or a configuration verify or health cannot
// load). The commands themselves (check.cpp, verify.cpp, health.cpp)
// read their values from `options`, so they do not depend on the parser.
#include "mtlsd/cli/cli.hpp"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <boost/version.hpp>
#include <deque>
#include <exception>
#include <iostream>
#include <string_view>

#include "mtlsd/daemon/daemon.hpp"
#include "mtlsd/util/regular_file.hpp"
#include "mtlsd/version.hpp"

namespace mtlsd::cli {
namespace {

constexpr const char* signals_text =
    "Signals: SIGHUP reloads; SIGTERM/SIGINT drain open connections, then exit 0.\n"
    "Exit status: 0 ok; 1 rejected (verify), problems found (check: its configuration errors too;\n"
    "health) or a daemon that cannot start (run); 2 a usage error, or a configuration that\n"
    "verify or health cannot load.";

constexpr const char* check_text =
    R"(Parses and type-checks FILE, loads every certificate, key, CA bundle and CRL it names and
checks each key matches its certificate. Prints one line per problem as FILE:LINE:COL: message.
Warnings (expiry within 30 days, a trusted CA strict validation refuses as an issuer, private
keys readable by others or by a group mtlsd is not in)
do not fail the check. Exit status: 0 when the configuration is usable, 1 otherwise.
With --print, a usable configuration is printed on stdout as YAML with every default filled in
and secrets redacted (like nginx -T); `mtlsd check` accepts that output again, once a redacted
PKCS#11 pin-value is given again.)";

constexpr const char* verify_text =
    R"(Runs the same verification a live handshake on listener NAME would run (trust store, depth,
key usage, allow list) on the certificate in PEM (more certificates in PEM, and those in
--chain, are treated as intermediates the peer sends). On a client-mode listener it judges a
remote server's certificate against server_auth instead (trust, server_name, allow list).
--at TIME validates at TIME: RFC 3339 (2026-01-02T03:04:05Z) or @EPOCH seconds.
--source ADDR and --sni NAME give the connection's side for allow rules on source_cidrs and
sni (on a client-mode listener the SNI defaults to the name mtlsd sends).
Prints `accepted: <identity>` and `matched: <rule>` (exit 0) or `rejected: <reason>: <detail>`
(exit 1; when allow rules refuse, the detail names the closest rule and its first failing
matcher with the peer's values); exit 2 for usage or configuration errors.)";

int version_command() {
  std::cout << "mtlsd " << kVersion << "\n"
            << "OpenSSL " << OpenSSL_version(OPENSSL_VERSION_STRING) << " (built with "
            << OPENSSL_VERSION_TEXT << ")\n"
            << "Boost " << BOOST_VERSION / 100000 << "." << BOOST_VERSION / 100 % 1000 << "."
            << BOOST_VERSION % 100 << "\n";
  return 0;
}

// The parser and where each option's value lands, so that the chosen command's options can be
// handed over as `options`.
class parser {
 public:
  parser() : app_("mtlsd — mTLS sidecar and reverse proxy", "mtlsd") {
    app_.footer(signals_text);
    app_.require_subcommand(0, 1);
    app_.add_flag("-V,--version", version_, "print versions of mtlsd, OpenSSL and Boost");
    // `mtlsd --config FILE` is `mtlsd run --config FILE` (container ENTRYPOINT + args).
    top_config_ = app_.add_option("-c,--config", config_, "run the daemon with FILE (= run)")
                      ->type_name("FILE");

    auto* run = command(
        "run", "run the daemon",
        R"(Runs the daemon with the YAML configuration FILE until SIGTERM/SIGINT (drain, exit 0).
SIGHUP (or a change to any watched file) reloads; a bad reload keeps the old configuration.)");
    option(run, "-c,--config", "FILE", "the YAML configuration", true);

    auto* check = command(
        "check", "validate the configuration and every file it names, like nginx -t", check_text);
    option(check, "-c,--config", "FILE", "the YAML configuration", true);
    flag(check, "--print",
         "print the effective configuration (defaults filled in, secrets "
         "redacted) as YAML on stdout");
    flag(check, "--reload",
         "judge it as a running daemon's reload would: what only start-up applies "
         "(log.access_log_path's file) is a warning (systemd's ExecReload)");

    auto* verify =
        command("verify", "would this certificate be admitted by listener NAME?", verify_text);
    option(verify, "-c,--config", "FILE", "the YAML configuration", true);
    option(verify, "--listener", "NAME", "the listener whose policy judges the certificate", true);
    option(verify, "--cert", "PEM", "the peer's certificate (leaf first; more = intermediates)",
           true);
    option(verify, "--chain", "PEM", "more intermediates the peer sends", false);
    option(verify, "--at", "TIME", "validation time: RFC 3339 or @EPOCH (default: now)", false);
    option(verify, "--source", "ADDR", "the peer's IP address, for allow rules on source_cidrs",
           false);
    option(verify, "--sni", "NAME", "the server name the peer asked for, for allow rules on it",
           false);

    auto* health = command(
        "health", "probe an admin endpoint (exit 0 on HTTP 200)",
        R"(GETs URL (plain http://, e.g. http://127.0.0.1:9901/readyz) and exits 0 on HTTP 200, 1
otherwise. An admin server on a unix socket: unix:/PATH (GETs /readyz) or unix:/PATH:/TARGET.
For container HEALTHCHECKs and exec probes: no shell or curl needed.)");
    option(health, "--url", "URL", "http://HOST:PORT/PATH or unix:/PATH[:/TARGET] to GET", true);
    option(health, "--timeout", "DURATION", "give up after this long (default 2s)", false);

    command("version", "print versions of mtlsd, OpenSSL and Boost",
            "Prints the versions of mtlsd, OpenSSL and Boost (same as mtlsd --version).");
    auto* help = command("help", "help for mtlsd or one command", "");
    help->add_option("command", help_topic_, "the command to explain");
  }

  int main(int argc, char** argv) {
    // An unknown word where the command goes is an unknown command, not a stray argument.
    if (argc > 1 && argv[1][0] != '-' && !find_command(argv[1]))
      return usage_error("unknown command '" + std::string(argv[1]) + "'", nullptr);
    try {
      app_.parse(argc, argv);
    } catch (const CLI::CallForHelp&) {
      std::cout << app_.help();
      return 0;
    } catch (const CLI::ParseError& e) {
      // CLI11 checks required options before it complains about unknown ones; the unknown one
      // is the real mistake (a typo of a required option), so name it first.
      if (!extras().empty()) return unexpected_arguments();
      if (top_config_->count() > 0 && chosen()) return config_before_command(chosen());
      return usage_error(e.what(), chosen());
    }
    if (version_) return version_command();
    CLI::App* sub = chosen();
    if (!sub) {
      if (top_config_->count() == 0) return usage_error("no command given", nullptr);
      return daemon::run(config_);
    }
    const std::string name = sub->get_name();
    if (top_config_->count() > 0) return config_before_command(sub);
    if (name == "help") {
      CLI::App* topic = help_topic_.empty() ? nullptr : find_command(help_topic_);
      if (!help_topic_.empty() && !topic)
        return usage_error("unknown command '" + help_topic_ + "'", nullptr);
      // app_.help() would explain `help` itself, the command that was chosen.
      std::cout << (topic ? topic->help("mtlsd")
                          : app_.get_formatter()->make_help(&app_, "", CLI::AppFormatMode::Normal));
      return 0;
    }
    if (name == "version") return version_command();
    options o;
    o.command = name;
    for (const auto& v : values_)
      if (v.command == sub && v.opt->count() > 0) o.flags.emplace_back(v.name, *v.value);
    if (name == "health") return health_command(o);
    if (name == "verify" || name == "check") util::allow_streams();  // util/regular_file.hpp
    if (name == "verify") return verify_command(o);
    if (name == "check") return check_command(o);
    return daemon::run(*o.get("config"));
  }

 private:
  struct bound {
    CLI::App* command;
    CLI::Option* opt;
    std::string name;    // as `options::get` knows it: the long name without dashes
    std::string* value;  // "true" for a flag
  };

  CLI::App* command(const char* name, const char* summary, const char* text) {
    auto* sub = app_.add_subcommand(name, summary);
    if (*text) sub->footer(text);
    return sub;
  }

  void option(CLI::App* sub, const std::string& names, const char* value_name, const char* help,
              bool required) {
    auto* value = &storage_.emplace_back();
    auto* opt = sub->add_option(names, *value, help)->type_name(value_name);
    if (required) opt->required();
    values_.push_back({sub, opt, opt->get_single_name(), value});
  }

  void flag(CLI::App* sub, const std::string& names, const char* help) {
    auto* value = &storage_.emplace_back("true");
    const std::string description(help);
    // A flag takes no value: `--print=false` is refused, not taken as --print (review).
    auto* opt = sub->add_flag(names, description)->disable_flag_override();
    values_.push_back({sub, opt, opt->get_single_name(), value});
  }

  CLI::App* find_command(const std::string& name) {
    auto found = app_.get_subcommands([&](const CLI::App* a) { return a->get_name() == name; });
    return found.empty() ? nullptr : found.front();
  }

  CLI::App* chosen() const {
    auto subs = app_.get_subcommands();
    return subs.empty() ? nullptr : subs.front();
  }

  // CLI11 lists what it did not expect; say which command it was unexpected for and whether it
  // looked like an option.
  std::vector<std::string> extras() const {
    CLI::App* sub = chosen();
    std::vector<std::string> extra = sub ? sub->remaining() : std::vector<std::string>{};
    for (const auto& a : app_.remaining())
      extra.push_back(a);
    return extra;
  }

  int unexpected_arguments() const {
    CLI::App* sub = chosen();
    const auto extra = extras();
    const std::string where = sub ? " for 'mtlsd " + sub->get_name() + "'" : "";
    if (extra.empty()) return usage_error("unexpected argument" + where, sub);
    const std::string& first = extra.front();
    if (first.size() > 1 && first[0] == '-')
      return usage_error("unknown option '" + first.substr(0, first.find('=')) + "'" + where, sub);
    return usage_error("unexpected argument '" + first + "'" + where, sub);
  }

  int config_before_command(CLI::App* sub) const {
    return usage_error(
        "--config goes after the command: mtlsd " + sub->get_name() + " --config FILE", sub);
  }

  int usage_error(const std::string& msg, CLI::App* sub) const {
    std::cerr << "mtlsd: " << msg << "\n"
              << "Run 'mtlsd " << (sub ? sub->get_name() + " " : std::string()) << "--help' "
              << (sub ? "for its options." : "for usage.") << "\n";
    return 2;
  }

  CLI::App app_;
  CLI::Option* top_config_ = nullptr;
  bool version_ = false;
  std::string config_;
  std::string help_topic_;
  std::deque<std::string> storage_;  // stable addresses for CLI11 to write into
  std::vector<bound> values_;
};

}  // namespace

std::optional<std::string> options::get(std::string_view name) const {
  for (const auto& [k, v] : flags)
    if (k == name) return v;
  return std::nullopt;
}

void hold_standard_descriptors() {
  for (int fd = 0; fd <= 2; ++fd) {
    if (fcntl(fd, F_GETFD) != -1) continue;
    const int held = open("/dev/null", O_RDWR);
    if (held != -1 && held != fd) close(held);  // fd was open after all; nothing to hold
  }
}

// No command but run ends on an uncaught exception (std::terminate, exit 134, a core): an
// unexpected one is said, and exits as the command's own failure: 2 for verify (it could not
// judge), 1 for check and health. `run` still aborts: past its start an exception escaping the
// control loop is a crash, which a supervisor restarts (the systemd unit does not restart exit 1,
// a start that failed; review).
int main(int argc, char** argv) {
  const std::string_view command = argc > 1 ? argv[1] : "";
  try {
    parser p;
    return p.main(argc, argv);
  } catch (const std::exception& e) {
    if (command == "run") throw;
    std::cerr << "mtlsd: internal error: " << e.what() << "\n";
  } catch (...) {
    if (command == "run") throw;
    std::cerr << "mtlsd: internal error: an unknown exception\n";
  }
  return command == "verify" ? 2 : 1;
}

}  // namespace mtlsd::cli
