#include <openssl/x509.h>
#include <sys/stat.h>
#include <unistd.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <iostream>
#include <map>
#include <optional>

#include "mtlsd/cli/cli.hpp"
#include "mtlsd/config/config.hpp"
#include "mtlsd/config/load.hpp"
#include "mtlsd/config/pkcs11_uri.hpp"
#include "mtlsd/daemon/revocation_report.hpp"
#include "mtlsd/log/log.hpp"
#include "mtlsd/net/resolver.hpp"
#include "mtlsd/proxy/admission.hpp"
#include "mtlsd/runtime/runtime.hpp"
#include "mtlsd/tls/client_hello.hpp"
#include "mtlsd/tls/credentials.hpp"
#include "mtlsd/tls/pkcs11.hpp"
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

namespace {

// What the command line asks for.
struct verify_request {
  std::string config_path;
  std::string listener_name;
  std::string cert_path;
  std::optional<std::string> chain_path;
  std::optional<std::time_t> at;
  // The connection's side of allow rules: where the peer connects from, the name it asks for.
  std::optional<config::ip_address> source;
  std::optional<std::string> sni;
};

// The command line's arguments; nullopt once stderr says what is wrong (exit status 2).
std::optional<verify_request> read_request(const options& o) {
  auto config_path = o.get("config");
  auto listener_name = o.get("listener");
  auto cert_path = o.get("cert");
  if (!config_path || !listener_name || !cert_path) {
    std::cerr << "mtlsd verify: needs --config FILE --listener NAME --cert PEM (see mtlsd verify "
                 "--help)\n";
    return std::nullopt;
  }
  verify_request r{*config_path, *listener_name, *cert_path, o.get("chain"), {}, {}, o.get("sni")};
  if (auto t = o.get("at")) {
    auto parsed = parse_time(*t);
    if (!parsed) {
      std::cerr << "mtlsd verify: --at '" << *t
                << "': expected RFC 3339 (2026-01-02T03:04:05Z) or @EPOCH\n";
      return std::nullopt;
    }
    r.at = static_cast<std::time_t>(*parsed);
  }
  if (auto a = o.get("source")) {
    r.source = config::parse_ip(*a);
    if (!r.source) {
      std::cerr << "mtlsd verify: --source '" << *a
                << "': expected an IP address (10.1.2.3 or 2001:db8::1)\n";
      return std::nullopt;
    }
  }
  return r;
}

// tls.spiffe without CA files: the trust store is the agent's bundle, which `verify` does not
// fetch. Saying so (true, on stderr) beats answering unknown_ca for every chain.
bool trusts_only_spiffe_bundles(const config::listener& l) {
  const bool server = l.mode == config::listener_mode::server;
  const auto& cas = server ? l.client_auth.ca : l.server_auth.ca;
  if (!l.tls.spiffe.enabled || !cas.empty()) return false;
  std::cerr << "mtlsd verify: listener '" << l.name
            << "' trusts the SPIFFE Workload API's bundles (tls.spiffe), which verify does not "
               "fetch; name the CA files in "
            << (server ? "client_auth.ca" : "server_auth.ca") << " to verify against them\n";
  return true;
}

// The public key of each certificate of ours whose key a PKCS#11 token holds, to stand in for
// that key: verify judges the peer and signs nothing, so it opens no token and spends none of
// its few PIN tries (review: each run logged in, a try lost per run to a wrong PIN). Skipped
// (the key loaded as before) for a certificate that is no regular file, which a second read
// would not find again (a pipe), and for one that does not load, whose error the build gives
// before it needs the key.
std::map<std::string, tls::evp_pkey_ptr> token_key_stand_ins(const config::listener& l) {
  std::map<std::string, tls::evp_pkey_ptr> out;
  std::vector<const config::key_source*> sources{&l.tls};
  for (const auto& e : l.tls.certificates)
    sources.push_back(&e);
  for (const auto* s : sources) {
    struct stat st {};
    if (!config::is_pkcs11_uri(s->key.path) || !s->pkcs12.empty() || out.count(s->key.path) ||
        ::stat(s->cert.path.c_str(), &st) != 0 || !S_ISREG(st.st_mode))
      continue;
    try {
      const auto chain = tls::load_cert_chain(s->cert);
      if (EVP_PKEY* key = X509_get_pubkey(chain.front().get()))
        out.emplace(s->key.path, tls::evp_pkey_ptr(key));
    } catch (const config::config_error&) {  // the build reports it
    }
  }
  return out;
}

// The named listener and its runtime, built alone; nullptr once stderr says why (exit status 2).
std::shared_ptr<const runtime::runtime> build_listener(const verify_request& r) {
  auto loaded = config::load_file(r.config_path);
  if (!loaded.config) {
    for (const auto& p : loaded.problems)
      std::cerr << p.str() << "\n";
    return nullptr;
  }
  const config::listener* l = loaded.config->find_listener(r.listener_name);
  if (!l) {
    std::cerr << "mtlsd verify: no listener named '" << r.listener_name << "' in "
              << loaded.config->file << "\n";
    return nullptr;
  }
  if (trusts_only_spiffe_bundles(*l)) return nullptr;
  // OCSP responders and distribution points by name: through the configured DNS servers.
  net::resolver_options dns;
  for (const auto& server : loaded.config->dns.servers)
    dns.servers.push_back({server.host, server.port});
  net::set_resolver_options(std::move(dns));
  // Build only this listener, so a problem elsewhere in the file does not get in the way.
  config::configuration one = *loaded.config;
  one.listeners = {*l};
  try {
    runtime::build_options opts;
    opts.check_own_validity = false;
    tls::pkcs11::stand_in_public_keys(token_key_stand_ins(*l));
    return runtime::build(one, opts);
  } catch (const config::config_error& e) {
    for (const auto& p : e.problems())
      std::cerr << p.str() << "\n";
    return nullptr;
  }
}

// The certificates to verify into `presented`; an exit status when there are none to verify.
// A file that cannot be read (missing, not permitted, a directory) is a usage error (2); one
// that is read but holds no certificate a handshake could parse is a rejection (1), exactly as a
// peer sending it would be. The check opens nothing: a named pipe's bytes are read once, by the
// load below.
std::optional<int> read_presented(const verify_request& r, tls::cert_chain& presented) {
  for (const auto* path : {&r.cert_path, r.chain_path ? &*r.chain_path : nullptr}) {
    if (!path) continue;
    struct stat st {};
    std::string why;
    if (::stat(path->c_str(), &st) != 0 || ::access(path->c_str(), R_OK) != 0)
      why = std::strerror(errno);
    else if (S_ISDIR(st.st_mode))
      why = "a directory";
    if (!why.empty()) {
      std::cerr << "mtlsd verify: cannot read " << *path << ": " << why << "\n";
      return 2;
    }
  }
  try {
    presented = tls::load_cert_chain({r.cert_path, {}});
    if (r.chain_path)
      for (auto& c : tls::load_cert_chain({*r.chain_path, {}}))
        presented.push_back(std::move(c));
  } catch (const config::config_error& e) {
    std::cout << "rejected: " << to_string(reason::bad_certificate) << ": " << e.what() << "\n";
    return 1;
  }
  return std::nullopt;
}

// A server-mode listener with client_auth.mode: none: its handshake asks for no certificate.
bool asks_no_certificate(const runtime::listener_runtime& lr) {
  return lr.cfg.mode == config::listener_mode::server &&
         lr.cfg.client_auth.mode == config::client_auth_mode::none;
}

// The handshake's verifier on `presented`, with the connection's side taken from the request.
tls::verify_outcome judge(const verify_request& r, const runtime::listener_runtime& lr,
                          const tls::cert_chain& presented) {
  const bool client_mode = lr.cfg.mode == config::listener_mode::client;
  STACK_OF(X509)* untrusted = sk_X509_new_null();
  for (std::size_t i = 1; i < presented.size(); ++i)
    sk_X509_push(untrusted, presented[i].get());
  // Client mode: the SNI a handshake sends (none for an IP), unless --sni says otherwise.
  std::string sni;
  if (r.sni)  // as a handshake on a server-mode listener records the client's (client_hello.hpp)
    sni = client_mode ? *r.sni : tls::normalize_server_name(*r.sni);
  else if (client_mode && !tls::is_ip_literal(lr.tls.server_name))
    sni = lr.tls.server_name;
  if (r.source && client_mode)
    std::cerr << "mtlsd verify: --source is ignored on a client-mode listener (server_auth has "
                 "no source_cidrs)\n";
  const config::ip_address* src = r.source && !client_mode ? &*r.source : nullptr;
  // A connection from there would be refused before its handshake, as `verify` says now
  // (review: it accepted a source allowed_sources does not hold), in the accept's words.
  if (const auto refusal = src ? proxy::source_refusal(lr.cfg, src) : std::nullopt) {
    sk_X509_free(untrusted);
    tls::verify_outcome refused;
    refused.refusal = refusal->why;
    refused.detail = refusal->detail;
    return refused;
  }
  if (asks_no_certificate(lr)) {  // its handshake judges none: every such client is admitted
    sk_X509_free(untrusted);
    return {};
  }
  auto outcome = lr.tls.peer_verifier->verify_offline(lr.tls.ctx.get(), presented.front().get(),
                                                      untrusted, r.at, {src, sni});
  sk_X509_free(untrusted);
  return outcome;
}

// Text from the certificate (its names, the detail built from them) as printed: control
// bytes, quotes and invalid UTF-8 escaped as in the access log's JSON (review: a SAN holding
// "\naccepted: spiffe://..." forged a verdict line, another set the terminal's title).
std::string printable(std::string_view text) {
  std::string out;
  log::append_json_escaped(out, text);
  return out;
}

// The verdict on stdout: 0 accepted, 1 rejected (by the chain or by a revocation answer).
int print_verdict(const runtime::listener_runtime& lr, tls::verify_outcome& outcome,
                  std::optional<std::time_t> at) {
  if (outcome.refusal) {
    std::cout << "rejected: " << to_string(*outcome.refusal) << ": " << printable(outcome.detail)
              << "\n";
    return 1;
  }
  std::string revocation_line;
  if (lr.revocation.network()) {
    auto v = check_revocation(lr, outcome, at);
    if (v.refusal) {
      std::cout << "rejected: " << to_string(*v.refusal) << ": " << printable(v.detail) << "\n";
      return 1;
    }
    if (!v.soft_fail_note.empty())
      revocation_line =
          "revocation: unavailable, admitted by on_unavailable: allow: " + v.soft_fail_note;
    else if (!v.source.empty())
      revocation_line = "revocation: good (" + v.source + ")";
  }
  std::cout << "accepted: "
            << (outcome.identity ? printable(outcome.identity->display())
                                 : std::string("(no identity)"))
            << "\n";
  // Review: a listener that asks for no certificate was said to refuse one it cannot trust,
  // while every live client was admitted.
  if (asks_no_certificate(lr))
    std::cout << "matched: nothing: client_auth.mode is none, so listener " << lr.cfg.name
              << " asks for no client certificate and admits every client without judging one\n";
  else
    std::cout << "matched: " << tls::describe_match(lr.tls.peer_verifier->allow(), outcome.match)
              << "\n";
  if (!revocation_line.empty()) std::cout << printable(revocation_line) << "\n";
  return 0;
}

}  // namespace

// `mtlsd verify`: the handshake's own verifier, run on certificates from files.
int verify_command(const options& o) {
  const auto request = read_request(o);
  if (!request) return 2;
  const auto rt = build_listener(*request);
  if (!rt) return 2;
  const auto& lr = *rt->listeners.front();
  tls::cert_chain presented;
  if (auto status = read_presented(*request, presented)) return *status;
  auto outcome = judge(*request, lr, presented);
  return print_verdict(lr, outcome, request->at);
}

}  // namespace mtlsd::cli
