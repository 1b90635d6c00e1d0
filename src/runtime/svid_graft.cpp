#include "mtlsd/runtime/svid_graft.hpp"

#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include <memory>
#include <utility>
#include <vector>

#include "mtlsd/tls/ticket_keys.hpp"
#include "mtlsd/tls/trust_store.hpp"

namespace mtlsd::runtime {
namespace {

bool server_mode(const config::listener& l) {
  return l.mode == config::listener_mode::server;
}

// The CA files that judge peers (client_auth.ca, or server_auth.ca in client mode).
const std::vector<config::file_ref>& ca_files(const config::listener& l) {
  return server_mode(l) ? l.client_auth.ca : l.server_auth.ca;
}

// The listener with no file for build_context to read: no CA files (it takes the bundles then)
// and no CRL files. What those gave is put back from the context built before.
config::listener without_files(config::listener l) {
  l.client_auth.ca.clear();
  l.server_auth.ca.clear();
  l.revocation.crl_files.clear();
  return l;
}

std::vector<tls::spiffe_anchor> copy_anchors(const std::vector<tls::spiffe_anchor>& anchors) {
  std::vector<tls::spiffe_anchor> out;
  for (const auto& a : anchors)
    out.push_back({a.trust_domain, tls::up_ref(a.cert.get())});
  return out;
}

tls::cert_chain copy_chain(const tls::cert_chain& c) {
  tls::cert_chain out;
  for (const auto& x : c)
    out.push_back(tls::up_ref(x.get()));
  return out;
}

}  // namespace

tls::tls_context with_svid(const config::listener& l, const tls::tls_context& built,
                           const tls::svid_material& svid) {
  const bool server = server_mode(l);
  const bool files_trust = !ca_files(l).empty();
  // Trust is installed where peers are verified: always in client mode, in server mode unless
  // client_auth is none.
  const bool verifies = !server || l.client_auth.mode != config::client_auth_mode::none;
  // With CA files, the bundles are not the trust (build_context ignores them then).
  tls::svid_material ours{svid.spiffe_id, svid.svid, {}};
  if (!files_trust) ours.anchors = copy_anchors(svid.anchors);
  tls::tls_context out = tls::build_context(without_files(l), &ours);
  SSL_CTX* ctx = out.ctx.get();
  SSL_CTX* before = built.ctx.get();

  if (files_trust && verifies) {
    out.trust = tls::install_trust_store(ctx, copy_chain(built.trust));  // a new store
    out.trust_by_domain.clear();
    if (server) {
      // The CA names sent in a CertificateRequest: those of the CA files (none when too many).
      SSL_CTX_set_client_CA_list(ctx, SSL_dup_CA_list(SSL_CTX_get_client_CA_list(before)));
      out.ca_names_bytes = built.ca_names_bytes;
    }
  }
  X509_STORE* store = SSL_CTX_get_cert_store(ctx);
  for (const auto& crl : built.crls) {
    if (X509_STORE_add_crl(store, crl.get()) != 1) tls::drain_errors();  // duplicate: harmless
    X509_CRL_up_ref(crl.get());
    out.crls.emplace_back(crl.get());
  }
  out.crl_files = built.crl_files;
  // The verify parameters as the files made them (the same configuration built both): the CRL
  // flags, and in client mode with CA files the remote's host name, which is checked then only.
  X509_VERIFY_PARAM_set1(SSL_CTX_get0_param(ctx), SSL_CTX_get0_param(before));

  // A verifier with the CRL policy and the trust-domain binding of the files' build.
  auto v = std::make_unique<tls::verifier>(
      server ? tls::peer_role::client : tls::peer_role::server,
      server ? l.client_auth.allow : l.server_auth.allow,
      built.crl_files.empty() ? tls::crl_policy{} : tls::crl_policy_with_files(l.revocation),
      out.peer_verifier->signers());
  if (!files_trust) v->bind_trust_domains(copy_anchors(ours.anchors));
  v->attach(ctx);
  out.peer_verifier = std::move(v);  // the context points at the new one already
  // Last: the session id context digests the store and the parameters as they are now.
  if (server) tls::bind_session_context(ctx, l.name, out.peer_verifier->trust_binding());
  tls::drain_errors();
  return out;
}

}  // namespace mtlsd::runtime
