#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iostream>

#include "mtlsd/cli/cli.hpp"
#include "mtlsd/config/config.hpp"
#include "mtlsd/config/load.hpp"
#include "mtlsd/daemon/revocation_report.hpp"
#include "mtlsd/log/log.hpp"
#include "mtlsd/net/resolver.hpp"
#include "mtlsd/runtime/runtime.hpp"
#include "mtlsd/tls/credentials.hpp"
#include "mtlsd/tls/revocation/service.hpp"

namespace mtlsd::cli {
namespace {

// The answers that need the network (OCSP, distribution points), from the same revocation
// service a daemon uses, on a local event loop.
tls::revocation::verdict check_revocation(const runtime::listener_runtime& lr,
                                          tls::verify_outcome& outcome,
                                          std::optional<std::time_t> at) {
  // The service logs what went wrong with a responder: on stderr, so stdout stays the verdict.
  log::settings quiet;
  quiet.level = "warn";
  log::setup(quiet);
  boost::asio::io_context ioc;
  tls::revocation::service svc(
      ioc.get_executor(),
      [](const tls::revocation::outcome& o) { daemon::report_revocation(o, nullptr); }, {}, false);
  tls::revocation::check_request req;
  req.chain = std::move(outcome.chain);
  req.pol = lr.revocation;
  req.crl_file_unavailable = outcome.crl_deferred_depths;
  req.crl_file_note = outcome.crl_note;
  req.at = at ? *at : 0;
  tls::revocation::verdict v;
  v.refusal = reason::revocation_unavailable;
  v.detail = "internal error in the revocation check";
  boost::asio::co_spawn(ioc, svc.check(std::move(req)),
                        [&v](std::exception_ptr e, tls::revocation::verdict r) {
                          if (!e) v = std::move(r);
                        });
  ioc.run();
  return v;
}

}  // namespace

namespace {

// Exactly `n` ASCII digits at text[pos...].
std::optional<int> digits(std::string_view text, std::size_t pos, std::size_t n) {
  if (pos + n > text.size()) return std::nullopt;
  int v = 0;
  for (std::size_t i = pos; i < pos + n; ++i) {
    if (text[i] < '0' || text[i] > '9') return std::nullopt;
    v = v * 10 + (text[i] - '0');
  }
  return v;
}

int days_in_month(int year, int month) {
  static constexpr int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  return month == 2 && leap ? 29 : days[month - 1];
}

}  // namespace

std::optional<long long> parse_time(std::string_view text) {
  if (!text.empty() && text.front() == '@') {
    long long v = 0;
    const char* first = text.data() + 1;
    const char* last = text.data() + text.size();
    auto [p, ec] = std::from_chars(first, last, v);
    if (first == last || ec != std::errc{} || p != last || *first == '-') return std::nullopt;
    return v;
  }
  // RFC 3339: YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM), every field full width.
  auto year = digits(text, 0, 4), month = digits(text, 5, 2), day = digits(text, 8, 2);
  auto hour = digits(text, 11, 2), minute = digits(text, 14, 2), second = digits(text, 17, 2);
  if (!year || !month || !day || !hour || !minute || !second || text[4] != '-' || text[7] != '-' ||
      (text[10] != 'T' && text[10] != 't' && text[10] != ' ') || text[13] != ':' || text[16] != ':')
    return std::nullopt;
  if (*month < 1 || *month > 12 || *day < 1 || *day > days_in_month(*year, *month) || *hour > 23 ||
      *minute > 59 || *second > 60)
    return std::nullopt;
  std::string_view rest = text.substr(19);
  if (!rest.empty() && rest.front() == '.') {  // fractional seconds: at least one digit, ignored
    std::size_t n = 1;
    while (n < rest.size() && rest[n] >= '0' && rest[n] <= '9')
      ++n;
    if (n == 1) return std::nullopt;
    rest.remove_prefix(n);
  }
  long long offset = 0;
  if (rest == "Z" || rest == "z") {
  } else if (rest.size() == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':') {
    auto oh = digits(rest, 1, 2), om = digits(rest, 4, 2);
    if (!oh || !om || *oh > 23 || *om > 59) return std::nullopt;
    offset = (*oh * 3600LL + *om * 60LL) * (rest[0] == '+' ? 1 : -1);
  } else {
    return std::nullopt;
  }
  std::tm tm{};
  tm.tm_year = *year - 1900;
  tm.tm_mon = *month - 1;
  tm.tm_mday = *day;
  tm.tm_hour = *hour;
  tm.tm_min = *minute;
  tm.tm_sec = *second;
  return static_cast<long long>(timegm(&tm)) - offset;
}

// `mtlsd verify`: the handshake's own verifier, run on certificates from files.
int verify_command(const options& o) {
  auto config_path = o.get("config");
  auto listener_name = o.get("listener");
  auto cert_path = o.get("cert");
  if (!config_path || !listener_name || !cert_path) {
    std::cerr << "mtlsd verify: needs --config FILE --listener NAME --cert PEM (see mtlsd verify "
                 "--help)\n";
    return 2;
  }
  std::optional<std::time_t> at;
  if (auto t = o.get("at")) {
    auto parsed = parse_time(*t);
    if (!parsed) {
      std::cerr << "mtlsd verify: --at '" << *t
                << "': expected RFC 3339 (2026-01-02T03:04:05Z) or @EPOCH\n";
      return 2;
    }
    at = static_cast<std::time_t>(*parsed);
  }
  // The connection's side of allow rules: where the peer connects from, the name it asks for.
  std::optional<config::ip_address> source;
  if (auto a = o.get("source")) {
    source = config::parse_ip(*a);
    if (!source) {
      std::cerr << "mtlsd verify: --source '" << *a
                << "': expected an IP address (10.1.2.3 or 2001:db8::1)\n";
      return 2;
    }
  }
  auto loaded = config::load_file(*config_path);
  if (!loaded.config) {
    for (const auto& p : loaded.problems)
      std::cerr << p.str() << "\n";
    return 2;
  }
  const config::listener* l = loaded.config->find_listener(*listener_name);
  if (!l) {
    std::cerr << "mtlsd verify: no listener named '" << *listener_name << "' in "
              << loaded.config->file << "\n";
    return 2;
  }
  // tls.spiffe without CA files: the trust store is the agent's bundle, which `verify` does not
  // fetch. Saying so beats answering unknown_ca for every chain.
  const auto& cas =
      l->mode == config::listener_mode::server ? l->client_auth.ca : l->server_auth.ca;
  if (l->tls.spiffe.enabled && cas.empty()) {
    std::cerr << "mtlsd verify: listener '" << l->name
              << "' trusts the SPIFFE Workload API's bundles (tls.spiffe), which verify does not "
                 "fetch; name the CA files in "
              << (l->mode == config::listener_mode::server ? "client_auth.ca" : "server_auth.ca")
              << " to verify against them\n";
    return 2;
  }
  // OCSP responders and distribution points by name: through the configured DNS servers.
  net::resolver_options dns;
  for (const auto& server : loaded.config->dns.servers)
    dns.servers.push_back({server.host, server.port});
  net::set_resolver_options(std::move(dns));
  // Build only this listener, so a problem elsewhere in the file does not get in the way.
  config::configuration one = *loaded.config;
  one.listeners = {*l};
  std::shared_ptr<const runtime::runtime> rt;
  try {
    runtime::build_options opts;
    opts.check_own_validity = false;
    rt = runtime::build(one, opts);
  } catch (const config::config_error& e) {
    for (const auto& p : e.problems())
      std::cerr << p.str() << "\n";
    return 2;
  }
  const auto& lr = *rt->listeners.front();
  // A file that cannot be opened is a usage error; one that opens but holds no certificate a
  // handshake could parse is a rejection, exactly as a peer sending it would be.
  auto chain_path = o.get("chain");
  for (const auto* path : {&*cert_path, chain_path ? &*chain_path : nullptr}) {
    if (path && !std::ifstream(*path)) {
      std::cerr << "mtlsd verify: cannot open " << *path << ": " << std::strerror(errno) << "\n";
      return 2;
    }
  }
  tls::cert_chain presented;
  try {
    presented = tls::load_cert_chain({*cert_path, {}});
    if (chain_path)
      for (auto& c : tls::load_cert_chain({*chain_path, {}}))
        presented.push_back(std::move(c));
  } catch (const config::config_error& e) {
    std::cout << "rejected: " << to_string(reason::bad_certificate) << ": " << e.what() << "\n";
    return 1;
  }
  STACK_OF(X509)* untrusted = sk_X509_new_null();
  for (std::size_t i = 1; i < presented.size(); ++i)
    sk_X509_push(untrusted, presented[i].get());
  // Client mode: the SNI a handshake sends (none for an IP), unless --sni says otherwise.
  std::string sni;
  if (auto n = o.get("sni"))
    sni = *n;
  else if (l->mode == config::listener_mode::client && !tls::is_ip_literal(lr.tls.server_name))
    sni = lr.tls.server_name;
  if (source && l->mode == config::listener_mode::client)
    std::cerr << "mtlsd verify: --source is ignored on a client-mode listener (server_auth has "
                 "no source_cidrs)\n";
  const config::ip_address* src =
      source && l->mode == config::listener_mode::server ? &*source : nullptr;
  auto outcome = lr.tls.peer_verifier->verify_offline(lr.tls.ctx.get(), presented.front().get(),
                                                      untrusted, at, {src, sni});
  sk_X509_free(untrusted);
  if (outcome.refusal) {
    std::cout << "rejected: " << to_string(*outcome.refusal) << ": " << outcome.detail << "\n";
    return 1;
  }
  std::string revocation_line;
  if (lr.revocation.network()) {
    auto v = check_revocation(lr, outcome, at);
    if (v.refusal) {
      std::cout << "rejected: " << to_string(*v.refusal) << ": " << v.detail << "\n";
      return 1;
    }
    if (!v.soft_fail_note.empty())
      revocation_line =
          "revocation: unavailable, admitted by on_unavailable: allow: " + v.soft_fail_note;
    else if (!v.source.empty())
      revocation_line = "revocation: good (" + v.source + ")";
  }
  std::cout << "accepted: "
            << (outcome.identity ? outcome.identity->display() : std::string("(no identity)"))
            << "\n";
  std::cout << "matched: " << tls::describe_match(lr.tls.peer_verifier->allow(), outcome.match)
            << "\n";
  if (!revocation_line.empty()) std::cout << revocation_line << "\n";
  return 0;
}

}  // namespace mtlsd::cli
