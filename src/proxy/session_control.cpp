#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <optional>
#include <string>
#include <utility>

#include "mtlsd/proxy/admission.hpp"
#include "mtlsd/proxy/session_registry.hpp"
#include "mtlsd/tls/context.hpp"
#include "mtlsd/tls/ticket_chain.hpp"

namespace mtlsd::proxy {

void session_control::kill() {
  killed_ = true;
  if (watchdog_) watchdog_->cancel();
}

void session_control::drain_gracefully() {
  if (draining_ || killed_) return;
  draining_ = true;
  if (on_drain_) on_drain_();
}

void session_control::on_drain(std::function<void()> handler) {
  on_drain_ = std::move(handler);
  if (draining_ && !killed_ && on_drain_) on_drain_();
}

void session_control::kill(reason why, std::string detail) {
  kill(why == reason::revoked ? termination::revoked : termination::error, why, std::move(detail));
}

void session_control::kill(termination how, std::optional<reason> why, std::string detail) {
  if (killed_) return;
  kill_termination_ = how;
  kill_reason_ = why;
  kill_detail_ = std::move(detail);
  kill();
}

void session_control::watch_revocation(const std::string* listener,
                                       std::vector<tls::revocation::peer_cert_id> certs,
                                       bool checking) {
  listener_ = listener;
  peer_certs_ = std::move(certs);
  checking_revocation_ = checking;
}

bool session_control::revoke_if(const tls::revocation::revocation_event& e) {
  if (killed_ || peer_certs_.empty()) return false;
  if (!e.listener.empty() && (!listener_ || *listener_ != e.listener)) return false;
  const int depth = tls::revocation::revoked_depth(e, peer_certs_);
  if (depth < 0) return false;
  const std::string at = "certificate at depth " + std::to_string(depth);
  if (checking_revocation_) {
    if (revoked_while_checking_.empty())
      revoked_while_checking_ = at + " revoked while its revocation check ran (" + e.source + ")";
    return false;
  }
  kill(reason::revoked, at + " revoked while connected (" + e.source + ")");
  return true;
}

std::optional<std::string> session_control::revocation_checked(bool admitted) {
  checking_revocation_ = false;
  std::string revoked = std::exchange(revoked_while_checking_, {});
  if (admitted && revoked.empty()) return std::nullopt;
  peer_certs_.clear();  // refused: nothing more to watch
  if (!admitted) return std::nullopt;
  return revoked;
}

std::optional<std::pair<reason, std::string>> session_control::judged(
    SSL* ssl, const config::ip_address* source, const std::string* sni,
    const runtime::listener_runtime* current) {
  ssl_ = ssl;
  source_ = source;
  sni_ = sni;
  current_ = current;
  if (!registry_) return std::nullopt;
  const auto* next = registry_->catch_up_with(*this);
  if (!next) return std::nullopt;
  auto refused = refusal_by(*next);
  // Admitted: judged by that listener from now on, as the sessions the reload re-judged are
  // (session_registry::rejudge), which keeps it.
  if (!refused && next->cfg.mode == current->cfg.mode) {
    current_ = next;
    judged_by_ = registry_->held(next);
  }
  return refused;
}

namespace {

// Whether `certs` holds `c` (the same certificate, not only the same object).
bool holds(STACK_OF(X509) * certs, X509* c) {
  for (int i = 0; certs && i < sk_X509_num(certs); ++i)
    if (X509_cmp(sk_X509_value(certs, i), c) == 0) return true;
  return false;
}

// Whether `lr` admits the peer of `ssl` (connecting from `source`, asking for `sni`): nothing,
// or why not.
std::optional<std::pair<reason, std::string>> verdict_of(const runtime::listener_runtime& lr,
                                                         SSL* ssl, const config::ip_address* source,
                                                         std::string_view sni) {
  // allowed_sources, as the accept judged it: a range dropped closes what came from it
  // (review: only the certificate's judges were asked again).
  if (auto refused = source_refusal(lr.cfg, source))
    return std::pair{refused->why, std::move(refused->detail)};
  X509* leaf = SSL_get0_peer_certificate(ssl);
  if (lr.cfg.mode == config::listener_mode::server) {
    const auto& ca = lr.cfg.client_auth;
    if (ca.mode == config::client_auth_mode::none) return std::nullopt;
    // What the handshake's verify mode does (tls/context.hpp).
    if (!leaf) {
      if (!tls::client_certificate_required(ca)) return std::nullopt;
      return std::pair{reason::no_client_cert, std::string("client sent no certificate")};
    }
  } else if (lr.cfg.server_auth.insecure_skip_verify || !leaf) {
    return std::nullopt;
  }
  // The chain as verified (after a full handshake), else what the peer sent, else (a resumed
  // session) what its ticket carried: everything but the leaf is offered as untrusted
  // intermediates, so that a former anchor no longer in the trust store leads nowhere. The
  // verified chain's anchor itself is left out unless the peer sent it: offered, it ended the
  // chain as "self-signed certificate in certificate chain", naming a certificate the peer never
  // sent, where a fresh handshake says its issuer is not in the trust store (review).
  STACK_OF(X509)* sent = SSL_get_peer_cert_chain(ssl);
  STACK_OF(X509)* chain = SSL_get0_verified_chain(ssl);
  const int anchor_at = chain ? sk_X509_num(chain) - 1 : -1;
  if (!chain) chain = sent;
  const tls::cert_chain from_ticket = tls::ticket_intermediates(ssl);
  STACK_OF(X509)* untrusted = sk_X509_new_null();
  if (!untrusted) return std::nullopt;
  for (int i = 0; chain && i < sk_X509_num(chain); ++i) {
    X509* c = sk_X509_value(chain, i);
    if (c == leaf || X509_cmp(c, leaf) == 0) continue;
    if (i == anchor_at && !holds(sent, c)) continue;
    sk_X509_push(untrusted, c);
  }
  for (const auto& c : from_ticket)
    sk_X509_push(untrusted, c.get());
  // Allow rules judge a client's address; a client-mode listener's peer is a remote server,
  // whose name is the one its handshake checked (a reload's new server_name names another).
  const bool server = lr.cfg.mode == config::listener_mode::server;
  auto out = lr.tls.peer_verifier->verify_offline(lr.tls.ctx.get(), leaf, untrusted, std::nullopt,
                                                  {server ? source : nullptr, sni},
                                                  server ? nullptr : ssl);
  sk_X509_free(untrusted);
  if (!out.refusal) return std::nullopt;
  return std::pair{*out.refusal, std::move(out.detail)};
}

}  // namespace

std::optional<std::pair<reason, std::string>> session_control::refusal_by(
    const runtime::listener_runtime& next) const {
  if (killed_ || !ssl_ || !current_ || &next == current_ || next.cfg.mode != current_->cfg.mode)
    return std::nullopt;
  const std::string_view sni = sni_ ? std::string_view(*sni_) : std::string_view();
  auto now = verdict_of(next, ssl_, source_, sni);
  if (!now) return std::nullopt;
  // revocation.recheck_established: false keeps revoked peers' open connections: a reload that
  // brings a new CRL must not close them either.
  if ((now->first == reason::revoked || now->first == reason::revocation_unavailable) &&
      !next.cfg.revocation.recheck_established)
    return std::nullopt;
  // Refused by the old runtime for the same reason (the certificate expired while connected; a
  // CRL file past its nextUpdate under both): the reload did not change this peer's verdict,
  // time did, and that is not the reload's to act on. Another reason is the reload's doing
  // (review: while a CRL file was stale the old runtime refused everybody, so a reload that
  // brought a fresh one and dropped a peer from `allow`, or removed its CA, closed nothing).
  if (auto before = verdict_of(*current_, ssl_, source_, sni);
      before && before->first == now->first)
    return std::nullopt;
  now->second.insert(0, "reload_rejudged: ");
  return now;
}

bool session_control::rejudge(const runtime::listener_runtime& next) {
  auto refusal = refusal_by(next);
  if (!refusal) return false;
  kill(termination::reload_rejudged, refusal->first, std::move(refusal->second));
  return true;
}

}  // namespace mtlsd::proxy
