#include "mtlsd/runtime/runtime.hpp"

#include <openssl/ssl.h>

#include <algorithm>
#include <atomic>
#include <ctime>
#include <string_view>
#include <utility>

#include "mtlsd/config/pkcs11_uri.hpp"
#include "mtlsd/log/log.hpp"
#include "mtlsd/runtime/crl_file_warnings.hpp"
#include "mtlsd/runtime/key_permissions.hpp"
#include "mtlsd/runtime/missing_files.hpp"
#include "mtlsd/runtime/svid_graft.hpp"
#include "mtlsd/tls/asn1_time.hpp"
#include "mtlsd/tls/certificate_selection.hpp"
#include "mtlsd/tls/credentials.hpp"
#include "mtlsd/tls/pkcs11.hpp"
#include "mtlsd/tls/signing_probe.hpp"

namespace mtlsd::runtime {
namespace {

using log::utc;

constexpr std::time_t warn_window = 30 * 24 * 3600;

// Each chain we serve with the configuration line that named it: the single cert/pkcs12, the
// X.509-SVID (named after the Workload API, pointing at the spiffe: block), or one per
// tls.certificates entry.
std::vector<std::pair<config::file_ref, const tls::cert_chain*>> own_chains_of(
    const config::listener& l, const tls::tls_context& t, const tls::spiffe::x509_context* svid) {
  std::vector<std::pair<config::file_ref, const tls::cert_chain*>> out;
  if (l.tls.spiffe.enabled) {
    if (svid && !t.own_chain.empty())
      out.emplace_back(
          config::file_ref{"X.509-SVID " + svid->spiffe_id + " from " + l.tls.spiffe.workload_api,
                           l.tls.spiffe.where},
          &t.own_chain);
    return out;
  }
  if (l.tls.certificates.empty()) {
    if (!t.own_chain.empty()) out.emplace_back(l.tls.cert_ref(), &t.own_chain);
    return out;
  }
  for (std::size_t i = 0; i < t.own_chains.size() && i < l.tls.certificates.size(); ++i)
    out.emplace_back(l.tls.certificates[i].cert_ref(), &t.own_chains[i]);
  return out;
}

// Whether `c` is among the certificates the listener named `name` of `rt` serves.
bool served_by(const runtime* rt, const std::string& name, X509* c) {
  const auto l = rt ? rt->find(name) : nullptr;
  if (!l) return false;
  for (const auto& [ref, chain] : own_chains_of(l->cfg, l->tls, l->svid.get()))
    for (const auto& served : *chain)
      if (X509_cmp(served.get(), c) == 0) return true;
  return false;
}

// Problems with one of our chains that would make every handshake fail or confuse clients.
// `serving`: the runtime a reload would replace (see build_options::serving).
void check_own_chain(const config::file_ref& ref, const tls::cert_chain& own, std::time_t now,
                     const runtime* serving, const std::string& listener,
                     config::diagnostics& out) {
  // Only a chain whose leaf serves already: a new leaf under an old expired intermediate is
  // refused, as at start-up (it is no "as before").
  const bool leaf_served = !own.empty() && served_by(serving, listener, own.front().get());
  for (std::size_t i = 0; i < own.size(); ++i) {
    X509* c = own[i].get();
    const std::string what = (i == 0 ? "certificate " : "intermediate ") + tls::subject_of(c);
    const bool out_of_validity = tls::not_after_of(c) < now || tls::not_before_of(c) > now;
    if (out_of_validity && leaf_served && served_by(serving, listener, c)) {
      // Served already: warnings() names it once the reload is in.
    } else if (tls::not_after_of(c) < now)
      out.push_back(
          {ref.where, ref.path + ": " + what + " expired at " + utc(tls::not_after_of(c)), false});
    else if (tls::not_before_of(c) > now)
      out.push_back({ref.where,
                     ref.path + ": " + what + " is not valid before " + utc(tls::not_before_of(c)),
                     false});
    if (i + 1 < own.size() && X509_check_issued(own[i + 1].get(), c) != X509_V_OK)
      out.push_back({ref.where,
                     ref.path + ": chain is out of order: " + tls::subject_of(own[i + 1].get()) +
                         " did not issue " + tls::subject_of(c) +
                         " (put the leaf first, then each issuer)",
                     false});
  }
}

// The keys in a token a listener signs with, each with the entry that names it.
std::vector<std::pair<const config::key_source*, EVP_PKEY*>> token_keys(const config::listener& l,
                                                                        const tls::tls_context& t) {
  std::vector<std::pair<const config::key_source*, EVP_PKEY*>> out;
  if (l.tls.spiffe.enabled || !t.ctx) return out;
  if (l.tls.certificates.empty()) {
    if (EVP_PKEY* key = SSL_CTX_get0_privatekey(t.ctx.get());
        key && config::is_pkcs11_uri(l.tls.key.path))
      out.emplace_back(&l.tls, key);
    return out;
  }
  if (!t.selector) return out;
  const auto& loaded = t.selector->certificates();
  for (std::size_t i = 0; i < loaded.size() && i < l.tls.certificates.size(); ++i)
    if (config::is_pkcs11_uri(l.tls.certificates[i].key.path))
      out.emplace_back(&l.tls.certificates[i], loaded[i].key.get());
  return out;
}

// Whether the listener `name` of `rt` signs with the token key `uri` already.
bool key_serves(const runtime* rt, const std::string& name, const std::string& uri) {
  const auto l = rt ? rt->find(name) : nullptr;
  if (!l) return false;
  if (l->cfg.tls.certificates.empty()) return l->cfg.tls.key.path == uri;
  return std::any_of(l->cfg.tls.certificates.begin(), l->cfg.tls.certificates.end(),
                     [&](const config::certificate_entry& e) { return e.key.path == uri; });
}

// Each key in a token signs once when a configuration first names it: a key the token lists
// but will not sign with (CKA_SIGN false, a mechanism it lacks, an object deleted while libp11
// still lists it) would fail every handshake; found here, the old configuration keeps serving.
// Not again for a key a reload keeps: a token's passing failure must not hold back every other
// change (a new CRL). A key that stopped signing is the handshakes' to report, and a reload
// that keeps it keeps what they found (signing_health: /readyz stays 503).
void probe_token_keys(listener_runtime& lr, const runtime* serving, config::diagnostics& out) {
  const auto keys = token_keys(lr.cfg, lr.tls);
  std::vector<EVP_PKEY*> kept;
  for (const auto& [source, key] : keys) {
    if (key_serves(serving, lr.cfg.name, source->key.path)) {
      kept.push_back(key);
      continue;
    }
    if (auto why = tls::sign_probe(key); !why.empty())
      out.push_back({source->key.where,
                     tls::pkcs11::describe(source->key.path) + " does not sign: " + why, false});
  }
  if (const auto before = serving && !kept.empty() ? serving->find(lr.cfg.name) : nullptr)
    lr.signing->carry_from(*before->signing, kept);
}

}  // namespace

std::shared_ptr<const listener_runtime> runtime::find(std::string_view name) const {
  for (const auto& l : listeners)
    if (l->cfg.name == name) return l;
  return nullptr;
}

std::shared_ptr<const runtime> build(const config::configuration& cfg, const build_options& opts) {
  const std::time_t now = opts.now ? opts.now : std::time(nullptr);
  static std::atomic<std::uint64_t> builds{0};
  auto rt = std::make_shared<runtime>();
  rt->cfg = cfg;
  rt->generation = ++builds;
  config::diagnostics problems;
  for (const auto& l : cfg.listeners) {
    try {
      const auto base = opts.files_from ? opts.files_from->find(l.name) : nullptr;
      if (auto missing = base ? config::diagnostics() : missing_files(l); !missing.empty()) {
        problems.insert(problems.end(), missing.begin(), missing.end());  // all, not the first
        continue;
      }
      auto lr = std::make_shared<listener_runtime>();
      lr->cfg = l;
      lr->generation = rt->generation;
      if (l.tls.spiffe.enabled)
        if (auto it = opts.svids.find(l.tls.spiffe.socket_path); it != opts.svids.end())
          lr->svid = it->second;
      if (lr->svid) {
        tls::svid_material svid{
            lr->svid->spiffe_id, &lr->svid->svid,
            tls::spiffe::trusted_anchors(*lr->svid, l.tls.spiffe.trust_domains)};
        lr->tls = base ? with_svid(l, base->tls, svid) : tls::build_context(l, &svid);
      } else {
        lr->tls = tls::build_context(l);
      }
      lr->staple = tls::revocation::attach_stapling(lr->tls.ctx.get(), l);
      lr->revocation = tls::revocation::policy::from(l.revocation);
      // Client mode checks every remote's staple, and a stapled "revoked" goes to the service
      // (proxy/session.cpp), whatever sources are configured.
      if (lr->revocation.network() || lr->revocation.stapling ||
          l.mode == config::listener_mode::client)
        lr->revocation_service = opts.revocation;
      if (opts.check_own_validity) {
        for (const auto& [ref, chain] : own_chains_of(l, lr->tls, lr->svid.get()))
          check_own_chain(ref, *chain, now, opts.serving, l.name, problems);
        probe_token_keys(*lr, opts.serving, problems);
      }
      if (opts.registry) {
        lr->registry = opts.registry;
        lr->metrics_holder = opts.registry->for_listener(l.name);
        lr->metrics = lr->metrics_holder.get();
      }
      rt->listeners.push_back(std::move(lr));
    } catch (const config::config_error& e) {
      problems.insert(problems.end(), e.problems().begin(), e.problems().end());
    }
  }
  if (config::has_errors(problems)) throw config::config_error(std::move(problems));
  return rt;
}

expiry_windows expiry_warning_windows(const config::listener& l) {
  // SVIDs and their bundles rotate on their own (a helper's test found the warning on each
  // rotation); CA files named beside tls.spiffe are renewed by hand and keep theirs.
  const bool spiffe = l.tls.spiffe.enabled;
  const bool trust_from_bundles =
      spiffe && (l.mode == config::listener_mode::server ? l.client_auth.ca.empty()
                                                         : l.server_auth.ca.empty());
  return {spiffe ? 0 : warn_window, trust_from_bundles ? 0 : warn_window};
}

config::diagnostics warnings(const runtime& rt, std::time_t now) {
  if (!now) now = std::time(nullptr);
  config::diagnostics out;
  for (const auto& l : rt.listeners) {
    const auto [window, trust_window] = expiry_warning_windows(l->cfg);
    // Where the trusted CAs are configured (a client-mode listener has no client_auth).
    const config::source_location trust_where =
        l->cfg.mode == config::listener_mode::client && !l->cfg.server_auth.ca.empty()
            ? l->cfg.server_auth.ca.front().where
            : l->cfg.client_auth.where;
    for (const auto& [ref, chain] : own_chains_of(l->cfg, l->tls, l->svid.get()))
      for (const auto& c : *chain) {
        auto na = tls::not_after_of(c.get());
        auto nb = tls::not_before_of(c.get());
        // Only a reload lets these through (build_options::serving); start-up and `check`
        // refuse them.
        if (na < now || nb > now)
          out.push_back(
              {ref.where,
               ref.path + ": " + tls::subject_of(c.get()) +
                   (na < now ? " expired at " + utc(na) : " is not valid before " + utc(nb)) +
                   "; served still, as before this reload (peers refuse it: renew it)",
               true});
        else if (na - now < window)
          out.push_back({ref.where,
                         ref.path + ": " + tls::subject_of(c.get()) + " expires in " +
                             std::to_string((na - now) / 86400) + " days (" + utc(na) + ")",
                         true});
      }
    for (const auto& c : l->tls.trust) {
      // A configuration that loads but can admit no one through this CA (review: the README's
      // own example CA had no keyUsage; `check` said valid, every client was refused).
      const bool judges_clients = l->cfg.mode == config::listener_mode::server;
      if (auto why = tls::unusable_anchor_problem(c.get(), judges_clients); !why.empty())
        out.push_back({trust_where,
                       "trusted CA " + tls::subject_of(c.get()) + " admits no one: " + why +
                           " (every chain through it is refused, and a peer presenting this "
                           "very certificate too)",
                       true});
      else if (auto why2 = tls::strict_ca_problem(c.get()); !why2.empty())
        out.push_back(
            {trust_where,
             "trusted CA " + tls::subject_of(c.get()) +
                 " cannot issue a certificate mtlsd accepts: " + why2 +
                 " (strict path validation refuses every chain through it; a peer presenting "
                 "this very certificate is still accepted); to issue with it, reissue it as a "
                 "CA (openssl: -addext \"basicConstraints=critical,CA:TRUE\" -addext "
                 "\"keyUsage=critical,keyCertSign,cRLSign\")",
             true});
      auto na = tls::not_after_of(c.get());
      if (na < now)
        out.push_back({trust_where,
                       "trusted CA " + tls::subject_of(c.get()) + " expired at " + utc(na), true});
      else if (na - now < trust_window)
        out.push_back({trust_where,
                       "trusted CA " + tls::subject_of(c.get()) + " expires in " +
                           std::to_string((na - now) / 86400) + " days (" + utc(na) + ")",
                       true});
    }
    crl_file_warnings(*l, now, out);
    if (l->tls.ca_names_bytes > tls::max_ca_names_bytes)
      out.push_back({l->cfg.client_auth.where,
                     "client_auth.ca: the names of its CAs take " +
                         std::to_string(l->tls.ca_names_bytes) +
                         " bytes, more than a CertificateRequest holds; no CA names are sent "
                         "(each client sends the certificate it is configured with)",
                     true});
    // A federated trust domain the agent sends no bundle for is trusted for nothing.
    if (l->svid) {
      std::vector<std::string> missing;
      tls::spiffe::trusted_cas(*l->svid, l->cfg.tls.spiffe.trust_domains, &missing);
      // One the agent sent but that did not decode was set aside with why (svid_sources let
      // the update through because no listener trusted the domain then): say that, not "none".
      for (const auto& td : missing) {
        auto unusable = l->svid->unusable_federated.find(td);
        out.push_back({l->cfg.tls.spiffe.where,
                       l->svid->empty_federated.count(td)
                           ? "tls.spiffe.trust_domains: the Workload API's bundle for " + td +
                                 " holds no CA certificate; its peers are not trusted"
                       : unusable == l->svid->unusable_federated.end()
                           ? "tls.spiffe.trust_domains: the Workload API sent no bundle for " + td +
                                 "; its peers are not trusted"
                           : "tls.spiffe.trust_domains: the Workload API's bundle for " + td +
                                 " is unusable (" + unusable->second +
                                 "); its peers are not trusted until the agent sends one that is",
                       true});
      }
    }
    // A private key the whole machine can read is a key the whole machine has; so is the
    // password or PIN that unlocks it (review: only key and pkcs12 files were looked at).
    std::vector<const config::key_source*> sources = {&l->cfg.tls};
    for (const auto& e : l->cfg.tls.certificates)
      sources.push_back(&e);
    for (const auto* k : sources) {
      config::file_ref pin_source;
      config::pkcs11_uri uri;
      if (config::is_pkcs11_uri(k->key.path) &&
          config::parse_pkcs11_uri(k->key.path, uri).empty() && !uri.pin_source.empty())
        pin_source = {uri.pin_source, k->key.where};
      const std::pair<const config::file_ref*, std::string_view> secrets[] = {
          {&k->key, "private key file"},
          {&k->pkcs12, "private key file"},
          {&k->key_password_file, "key password file"},
          {&k->key_pin_file, "PIN file"},
          {&k->pkcs12_password_file, "PKCS#12 password file"},
          {&pin_source, "PIN file (pin-source)"}};
      for (const auto& [file, what] : secrets)
        if (!config::is_pkcs11_uri(file->path))
          if (auto w = key_permission_warning_once(*file, what)) out.push_back(std::move(*w));
    }
  }
  return out;
}

std::map<std::string, double> crl_next_updates(const runtime& rt) {
  std::map<std::string, double> out;
  for (const auto& l : rt.listeners) {
    for (const auto& crl : l->tls.crls) {
      const std::time_t next = tls::asn1_time_to_unix(X509_CRL_get0_nextUpdate(crl.get()));
      if (!next) continue;
      const std::string name = tls::name_of(X509_CRL_get_issuer(crl.get()));
      auto t = static_cast<double>(next);
      auto [it, inserted] = out.emplace(name, t);
      if (!inserted && t > it->second) it->second = t;
    }
  }
  return out;
}

std::vector<metrics::registry::cert_series> certificate_series(const runtime& rt) {
  std::vector<metrics::registry::cert_series> out;
  for (const auto& l : rt.listeners) {
    const bool server = l->cfg.mode == config::listener_mode::server;
    for (const auto& chain : l->tls.own_chains)
      for (const auto& c : chain)
        out.push_back({l->cfg.name, server ? "server" : "client", tls::subject_of(c.get()),
                       tls::serial_of(c.get()), static_cast<double>(tls::not_after_of(c.get()))});
    for (const auto& c : l->tls.trust)
      out.push_back({l->cfg.name, "ca", tls::subject_of(c.get()), tls::serial_of(c.get()),
                     static_cast<double>(tls::not_after_of(c.get()))});
  }
  return out;
}

}  // namespace mtlsd::runtime
