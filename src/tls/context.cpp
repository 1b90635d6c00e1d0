#include "mtlsd/tls/context.hpp"

#include <arpa/inet.h>
#include <openssl/err.h>

#include <set>

#include "mtlsd/tls/cipher_fit.hpp"
#include "mtlsd/tls/client_hello.hpp"
#include "mtlsd/tls/ticket_chain.hpp"
#include "mtlsd/tls/ticket_keys.hpp"
#include "mtlsd/tls/trust_store.hpp"

namespace mtlsd::tls {
namespace {

[[noreturn]] void fail(const config::source_location& where, const std::string& what) {
  throw config::config_error({{where, what, false}});
}

const config::source_location& ciphers_where(const config::tls_options& t) {
  return t.ciphers_where.line > 0 ? t.ciphers_where : t.where;
}

int protocol_version(const std::string& v) {
  return v == "1.3" ? TLS1_3_VERSION : TLS1_2_VERSION;
}

// ALPN wire format: length-prefixed protocol names.
std::string alpn_wire(const std::vector<std::string>& protos) {
  std::string out;
  for (const auto& p : protos) {
    out += static_cast<char>(p.size());
    out += p;
  }
  return out;
}

int select_alpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                unsigned int inlen, void* arg) {
  const auto* ours = static_cast<const std::string*>(arg);
  unsigned char* selected = nullptr;
  // Server preference order; with no overlap, continue without ALPN rather than fail the
  // handshake (the upstream decides what to do with the bytes).
  if (SSL_select_next_proto(&selected, outlen, reinterpret_cast<const unsigned char*>(ours->data()),
                            static_cast<unsigned>(ours->size()), in,
                            inlen) != OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK;
  *out = selected;
  return SSL_TLSEXT_ERR_OK;
}

void apply_protocol_settings(SSL_CTX* ctx, const config::tls_options& t) {
  SSL_CTX_set_min_proto_version(ctx, protocol_version(t.min_version));
  SSL_CTX_set_max_proto_version(ctx, protocol_version(t.max_version));
  // No renegotiation, no compression (CRIME), our cipher order, and a peer that drops TCP without
  // close_notify reads as EOF rather than as an error (what every browser does anyway).
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_IGNORE_UNEXPECTED_EOF);
  // Idle connections give their 34 KiB of record buffers back.
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  // Read whole socket buffers, not a 5-byte record header then its body: 3-4x fewer read()
  // calls per handshake (nginx does the same).
  SSL_CTX_set_read_ahead(ctx, 1);
  SSL_CTX_set_max_early_data(ctx, 0);  // no 0-RTT: early data is replayable
  const std::string ciphers = t.ciphers.empty() ? default_tls12_ciphers : t.ciphers;
  if (SSL_CTX_set_cipher_list(ctx, ciphers.c_str()) != 1)
    fail(t.where, "tls.ciphers: no usable TLS 1.2 cipher in '" + ciphers + "': " + drain_errors());
  const std::string suites = t.cipher_suites.empty() ? default_tls13_suites : t.cipher_suites;
  if (SSL_CTX_set_ciphersuites(ctx, suites.c_str()) != 1)
    fail(t.where, "tls.cipher_suites: invalid TLS 1.3 suites '" + suites + "': " + drain_errors());
  const std::string groups = t.curves.empty() ? default_groups : t.curves;
  if (SSL_CTX_set1_groups_list(ctx, groups.c_str()) != 1)
    fail(t.where, "tls.curves: invalid groups '" + groups + "': " + drain_errors());
}

// What a context's TLS versions and groups can sign with (tls_key_problem), for its verifier.
tls_signers signers_for(SSL_CTX* ctx, const config::tls_options& t) {
  return signers_of(SSL_CTX_get_min_proto_version(ctx), SSL_CTX_get_max_proto_version(ctx),
                    t.curves.empty() ? default_groups : t.curves);
}

cert_chain copy_chain(const cert_chain& c) {
  cert_chain out;
  for (const auto& x : c)
    out.push_back(up_ref(x.get()));
  return out;
}

// The leaf, its key and the rest of the chain into the context; false when OpenSSL refuses them.
bool use_chain_and_key(SSL_CTX* ctx, const cert_chain& c, EVP_PKEY* key) {
  STACK_OF(X509)* rest = sk_X509_new_null();
  for (std::size_t i = 1; i < c.size(); ++i)
    sk_X509_push(rest, c[i].get());
  const int rc = SSL_CTX_use_cert_and_key(ctx, c.front().get(), key, rest, 1);
  sk_X509_free(rest);  // the context took its own references
  return rc == 1;
}

void use_key_pair(SSL_CTX* ctx, const config::tls_options& t, tls_context& out) {
  key_pair kp = load_key_pair(t);
  if (!use_chain_and_key(ctx, kp.chain, kp.key.get()))
    fail(t.cert_ref().where, "cannot use certificate and key: " + drain_errors());
  out.own_uri_sans = extract_identity(kp.chain.front().get()).uri_sans;
  out.own_chain = std::move(kp.chain);
  out.own_chains.push_back(copy_chain(out.own_chain));
}

// tls.spiffe: the X.509-SVID is our certificate, exactly like a cert/key pair from files.
void use_svid(SSL_CTX* ctx, const config::listener& l, const svid_material& svid,
              tls_context& out) {
  if (!use_chain_and_key(ctx, svid.svid->chain, svid.svid->key.get()))
    fail(l.tls.spiffe.where, "cannot use the X.509-SVID " + svid.spiffe_id + ": " + drain_errors());
  out.own_chain = copy_chain(svid.svid->chain);
  out.own_chains.push_back(copy_chain(out.own_chain));
  out.own_uri_sans = {svid.spiffe_id};
}

// tls.certificates: the selector loads every entry and chooses per handshake.
void use_certificates(SSL_CTX* ctx, const config::tls_options& t, tls_context& out) {
  out.selector = std::make_unique<certificate_selector>(t);
  out.selector->attach(ctx);
  for (const auto& kp : out.selector->certificates())
    out.own_chains.push_back(copy_chain(kp.chain));
  out.own_chain = copy_chain(out.own_chains.front());
  out.own_uri_sans = extract_identity(out.own_chain.front().get()).uri_sans;
}

// Tells clients (curl, browsers) which CAs we accept, so they pick the right certificate: each
// distinct subject once. The names travel in one list with a 2-byte length, and OpenSSL fails
// every handshake (internal_error) when they do not fit; then none is sent, and each client
// sends the certificate it is configured with. Returns the bytes the names take.
std::size_t advertise_ca_names(SSL_CTX* ctx, const cert_chain& cas) {
  std::set<std::string> seen;
  std::vector<X509*> distinct;
  std::size_t bytes = 0;
  for (const auto& ca : cas) {
    unsigned char* der = nullptr;
    const int n = i2d_X509_NAME(X509_get_subject_name(ca.get()), &der);
    if (n <= 0) continue;
    const bool fresh =
        seen.emplace(reinterpret_cast<char*>(der), static_cast<std::size_t>(n)).second;
    OPENSSL_free(der);
    if (!fresh) continue;
    distinct.push_back(ca.get());
    bytes += 2 + static_cast<std::size_t>(n);
  }
  if (bytes <= max_ca_names_bytes)
    for (X509* ca : distinct)
      SSL_CTX_add_client_CA(ctx, ca);
  return bytes;
}

// Installs on `ctx` the CA files the configuration names or, with tls.spiffe and no files, the
// trust bundles (an empty store until the first X.509-SVID arrives: nothing verifies, never the
// system store), and says what it trusts in `out`.
void install_trust(SSL_CTX* ctx, const config::listener& l,
                   const std::vector<config::file_ref>& files, const svid_material* svid,
                   tls_context& out) {
  if (!l.tls.spiffe.enabled || !files.empty()) {
    out.trust = install_trust_store(ctx, load_ca_bundles(files));
  } else if (!svid) {
    out.trust = install_trust_store(ctx, {});
  } else {
    out.trust_by_domain = group_by_domain(svid->anchors);
    out.trust = install_bundle_trust(ctx, out.trust_by_domain);
  }
}

// When install_trust gave the bundles: each vouches for its own trust domain only.
void bind_to_bundles(verifier& v, const config::listener& l,
                     const std::vector<config::file_ref>& files, const svid_material* svid) {
  if (!l.tls.spiffe.enabled || !files.empty() || !svid) return;
  std::vector<spiffe_anchor> anchors;
  for (const auto& a : svid->anchors)
    anchors.push_back({a.trust_domain, up_ref(a.cert.get())});
  v.bind_trust_domains(std::move(anchors));
}

// CRL files into the trust store; OpenSSL then checks signature, issuer, time and delta CRLs
// during chain verification, so revocation is decided inside the handshake.
crl_policy install_crls(SSL_CTX* ctx, const config::revocation_options& rv, tls_context& out) {
  if (rv.crl_files.empty()) return {};
  X509_STORE* store = SSL_CTX_get_cert_store(ctx);
  for (const auto& f : rv.crl_files) {
    auto file = load_crl_file(f);  // shared with other listeners naming it, and across reloads
    for (const auto& crl : file->crls) {
      // The store takes its own reference. A CRL is never changed once decoded (its entries
      // are sorted then: sort_revoked), so stores of several threads may share it.
      if (X509_STORE_add_crl(store, crl.get()) != 1) drain_errors();  // duplicate: harmless
      X509_CRL_up_ref(crl.get());
      out.crls.emplace_back(crl.get());
    }
    out.crl_files.push_back(std::move(file));
  }
  unsigned long flags = X509_V_FLAG_CRL_CHECK | X509_V_FLAG_USE_DELTAS;
  // chain: every CA level needs a CRL; a level without one follows on_unavailable.
  if (rv.scope == config::crl_scope::chain) flags |= X509_V_FLAG_CRL_CHECK_ALL;
  X509_VERIFY_PARAM_set_flags(SSL_CTX_get0_param(ctx), flags);
  return crl_policy_with_files(rv);
}

// Server mode: our certificate (SVID, one pair, or the per-handshake selector).
void use_server_certificate(SSL_CTX* ctx, const config::listener& l, const svid_material* svid,
                            tls_context& out) {
  if (l.tls.spiffe.enabled) {
    if (svid) use_svid(ctx, l, *svid, out);  // none yet: handshakes fail, /readyz says why
    observe_client_hello(ctx);
  } else if (l.tls.certificates.empty()) {
    use_key_pair(ctx, l.tls, out);
    observe_client_hello(ctx);  // the selector does it otherwise
  } else {
    use_certificates(ctx, l.tls, out);
  }
  // TLS 1.2 alone: a key no cipher can sign for would fail every handshake (cipher_fit.hpp).
  if (l.tls.max_version != "1.2") return;
  for (const auto& chain : out.own_chains)
    if (auto gap = tls12_cipher_gap(ctx, chain.front().get()); !gap.empty())
      fail(ciphers_where(l.tls), "tls.ciphers: " + gap +
                                     ", and max_version \"1.2\" rules out TLS 1.3: every "
                                     "handshake would fail (no shared cipher)");
}

// Server mode: how client certificates are asked for and judged (client_auth).
void verify_clients(SSL_CTX* ctx, const config::listener& l, const svid_material* svid,
                    tls_context& out) {
  const auto& ca = l.client_auth;
  // optional: a certificate is verified when sent; a client without one is refused in the
  // handshake (no_client_cert) where client_certificate_required says so.
  int mode = SSL_VERIFY_NONE;
  if (ca.mode != config::client_auth_mode::none)
    mode = client_certificate_required(ca) ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT
                                           : SSL_VERIFY_PEER;
  crl_policy crl;
  if (ca.mode != config::client_auth_mode::none) {
    install_trust(ctx, l, ca.ca, svid, out);
    out.ca_names_bytes = advertise_ca_names(ctx, out.trust);
    SSL_CTX_set_verify_depth(ctx, ca.verify_depth);
    crl = install_crls(ctx, l.revocation, out);
  }
  SSL_CTX_set_verify(ctx, mode, nullptr);
  out.peer_verifier =
      std::make_unique<verifier>(peer_role::client, ca.allow, crl, signers_for(ctx, l.tls));
  bind_to_bundles(*out.peer_verifier, l, ca.ca, svid);
  out.peer_verifier->attach(ctx);
}

// Server mode: session resumption and the ALPN protocols offered.
void set_server_sessions_and_alpn(SSL_CTX* ctx, const config::listener& l, tls_context& out) {
  // Resumed sessions must be bound to this listener and to the trust they were verified
  // under: the id context digests both (ticket_keys.hpp), so a session from another listener,
  // or from before a reload that changed CAs, CRLs or client_auth, makes a full handshake.
  // Ticket keys are the process's (every worker, across reloads).
  bind_session_context(ctx, l.name, out.peer_verifier->trust_binding());
  if (l.tls.session_resumption) {
    // Tickets only, no session cache (TLS 1.2 session IDs): a ticket carries what resuming
    // must honour (ticket_chain.hpp), and costs no memory per session (Go's crypto/tls server,
    // ghostunnel's, does the same).
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    use_shared_ticket_keys(ctx);
    keep_peer_chain_in_tickets(ctx);
    SSL_CTX_set_num_tickets(ctx, 1);  // each ticket costs ~140 µs; one is enough to resume
    // A ticket says it lives as long as its key surely decrypts it: a key decrypts for two
    // periods from its first ticket, so a ticket made late in its key's period has one period
    // left (OpenSSL's 7200 s default outlived it: a client offered a dead ticket for an hour).
    SSL_CTX_set_timeout(ctx, static_cast<long>(ticket_key_period.count()));
  } else {
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 0);
  }
  // An http listener offers the protocols its relay speaks (http.protocols).
  const auto& alpn = l.http.enabled ? l.http.protocols : l.tls.alpn;
  if (!alpn.empty()) {
    out.alpn_wire = std::make_unique<const std::string>(alpn_wire(alpn));
    SSL_CTX_set_alpn_select_cb(ctx, select_alpn, const_cast<std::string*>(out.alpn_wire.get()));
  }
}

void build_server_side(SSL_CTX* ctx, const config::listener& l, const svid_material* svid,
                       tls_context& out) {
  use_server_certificate(ctx, l, svid, out);
  verify_clients(ctx, l, svid, out);
  set_server_sessions_and_alpn(ctx, l, out);
}

// Client mode: the upstream's chain against our trust, then its name (server_auth).
void verify_upstream(SSL_CTX* ctx, const config::listener& l, const svid_material* svid,
                     tls_context& out) {
  const auto& sa = l.server_auth;
  if (sa.ca.empty() && !l.tls.spiffe.enabled) {
    if (SSL_CTX_set_default_verify_paths(ctx) != 1)
      fail(l.where, "cannot load the system trust store: " + drain_errors());
  } else {
    install_trust(ctx, l, sa.ca, svid, out);
  }
  SSL_CTX_set_verify(ctx, sa.insecure_skip_verify ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, nullptr);
  SSL_CTX_set_verify_depth(ctx, sa.verify_depth);
  // No CRL with insecure_skip_verify: nothing of the remote's is judged, revocation included.
  const crl_policy crl =
      sa.insecure_skip_verify ? crl_policy{} : install_crls(ctx, l.revocation, out);
  // By default the upstream's host as certificates name it (config::host_as_named). A final dot
  // names the same host, but OpenSSL's host check compares names as written and RFC 6066 has SNI
  // without it ("example.org." refused every remote as hostname_mismatch): dropped, as Go does.
  out.server_name =
      sa.server_name.empty() ? config::host_as_named(l.upstream.host) : sa.server_name;
  if (out.server_name.size() > 1 && out.server_name.back() == '.') out.server_name.pop_back();
  X509_VERIFY_PARAM* param = SSL_CTX_get0_param(ctx);
  // tls.spiffe authenticates the remote by its SPIFFE ID (server_auth.allow, required then):
  // an X.509-SVID names no host, so the host name is checked only when server_name is set.
  const bool spiffe_peer = l.tls.spiffe.enabled && sa.ca.empty() && sa.server_name.empty();
  if (!spiffe_peer && is_ip_literal(out.server_name)) {
    X509_VERIFY_PARAM_set1_ip_asc(param, out.server_name.c_str());
  } else if (!spiffe_peer) {
    // DNS SANs only: never fall back to the subject CN (dropped by browsers, Go and rustls;
    // a CN is not typed, so "127.0.0.1" or "*.example.org" there would mean anything).
    X509_VERIFY_PARAM_set_hostflags(
        param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS | X509_CHECK_FLAG_NEVER_CHECK_SUBJECT);
    X509_VERIFY_PARAM_set1_host(param, out.server_name.c_str(), 0);
  }
  out.peer_verifier =
      std::make_unique<verifier>(peer_role::server, sa.allow, crl, signers_for(ctx, l.tls));
  bind_to_bundles(*out.peer_verifier, l, sa.ca, svid);
  out.peer_verifier->attach(ctx);
}

// Client mode: the session cache and the ALPN protocols asked for.
void set_client_sessions_and_alpn(SSL_CTX* ctx, const config::listener& l, tls_context& out) {
  // OCSP stapling (asking for the remote's staple and checking it) is installed on top of this
  // context by the runtime (revocation::attach_stapling).
  // require_staple: a resumed session carries no staple (the status callback does not run),
  // so it would skip the check; every connection of such a listener makes a full handshake.
  if (l.tls.session_resumption && !l.revocation.require_staple) {
    out.sessions = std::make_unique<client_session_cache>();
    out.sessions->attach(ctx);
  } else {
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);  // TLS 1.2: do not even ask for a ticket
  }
  if (!l.tls.alpn.empty()) {
    std::string wire = alpn_wire(l.tls.alpn);
    SSL_CTX_set_alpn_protos(ctx, reinterpret_cast<const unsigned char*>(wire.data()),
                            static_cast<unsigned>(wire.size()));
  }
}

void build_client_side(SSL_CTX* ctx, const config::listener& l, const svid_material* svid,
                       tls_context& out) {
  if (l.tls.spiffe.enabled) {
    if (svid) use_svid(ctx, l, *svid, out);
  } else if (!l.tls.cert.empty() || !l.tls.pkcs12.empty()) {
    use_key_pair(ctx, l.tls, out);
  }
  verify_upstream(ctx, l, svid, out);
  set_client_sessions_and_alpn(ctx, l, out);
  // TLS 1.2 alone and no cipher the security level allows: no remote could answer.
  if (l.tls.max_version == "1.2" && tls12_ciphers_offered(ctx).empty())
    fail(ciphers_where(l.tls), "tls.ciphers: " + tls12_cipher_gap(ctx, nullptr) +
                                   ", and max_version \"1.2\" rules out TLS 1.3: every "
                                   "handshake would fail");
}

}  // namespace

bool is_ip_literal(const std::string& host) {
  unsigned char buf[sizeof(in6_addr)];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

const cert_chain& tls_context::trust_for(X509* leaf) const {
  if (trust_by_domain.empty() || !leaf) return trust;
  const auto it = trust_by_domain.find(spiffe_trust_domain(extract_identity(leaf).spiffe_id));
  return it == trust_by_domain.end() ? trust : it->second;
}

tls_context build_context(const config::listener& l, const svid_material* svid) {
  tls_context out;
  const bool server = l.mode == config::listener_mode::server;
  out.ctx.reset(SSL_CTX_new(server ? TLS_server_method() : TLS_client_method()));
  if (!out.ctx) fail(l.where, "cannot create TLS context: " + drain_errors());
  SSL_CTX* ctx = out.ctx.get();
  apply_protocol_settings(ctx, l.tls);
  apply_validation_policy(ctx);
  if (server)
    build_server_side(ctx, l, svid, out);
  else
    build_client_side(ctx, l, svid, out);
  // Our own key, as peers' keys are judged (tls_key_problem, with this listener's versions and
  // curves): one it cannot sign with fails handshakes. An SVID is the Workload API's matter.
  if (!l.tls.spiffe.enabled)
    for (const auto& chain : out.own_chains)
      if (auto why = tls_key_problem(chain.front().get(), out.peer_verifier->signers());
          !why.empty())
        fail(l.tls.where,
             "tls: the key of " + subject_of(chain.front().get()) + " is unusable in TLS: " + why);
  drain_errors();
  return out;
}

}  // namespace mtlsd::tls
