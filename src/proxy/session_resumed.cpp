#include "session_resumed.hpp"

#include <bit>
#include <ctime>

#include "mtlsd/tls/ticket_chain.hpp"

namespace mtlsd::proxy::detail {

const tls::revocation::rebuilt_chain& resumed_chain::get() {
  if (chain_) return *chain_;
  from_ticket_ = tls::ticket_intermediates(ssl_);  // owns what the chain points into
  std::vector<X509*> pool;
  for (const auto& c : from_ticket_)
    pool.push_back(c.get());
  if (STACK_OF(X509)* sent = SSL_get_peer_cert_chain(ssl_))
    for (int i = 0; i < sk_X509_num(sent); ++i)
      pool.push_back(sk_X509_value(sent, i));
  return chain_.emplace(tls::revocation::chain_to_anchor(leaf_, pool, l_.tls.trust_for(leaf_)));
}

std::vector<X509*> resumed_chain::to_check(bool& ends_at_anchor) {
  const auto& chain = get();
  ends_at_anchor = chain.anchor != nullptr;
  if (ends_at_anchor) return chain.with_anchor();
  // OpenSSL's last resort with partial chains: a leaf in the trust store is trusted as itself.
  if (chain.below_anchor.size() == 1)
    for (const auto& t : l_.tls.trust_for(leaf_))
      if (X509_cmp(t.get(), leaf_) == 0) ends_at_anchor = true;
  return chain.below_anchor;
}

unusable_crls unusable_crls_of_resumed(const runtime::listener_runtime& l, SSL* ssl,
                                       resumed_chain& chain) {
  unusable_crls out;
  const auto& rv = l.revocation;
  if (!rv.crl_files) return out;
  if (auto facts = tls::resumed_ticket_facts(ssl, false); facts && facts->crl_unusable_depths) {
    out.depths = facts->crl_unusable_depths;
    out.note = "no usable CRL file for depth " + std::to_string(std::countr_zero(out.depths)) +
               " when the session was established";
  }
  // The common case, every CRL current: no chain rebuilt.
  const std::time_t now = std::time(nullptr);
  if (l.tls.crls.empty() || !tls::revocation::any_crl_stale(l.tls.crls, rv.grace_seconds, now))
    return out;
  std::uint32_t stale = 0;
  auto detail = tls::revocation::stale_crl_file(l.tls.crls, chain.get(),
                                                rv.crl_scope == config::crl_scope::chain,
                                                rv.grace_seconds, now, &stale);
  // The shallower depth's reason names the refusal, as a full handshake's first error does.
  if (stale && (!out.depths || std::countr_zero(stale) < std::countr_zero(out.depths))) {
    // Without the source: the caller names it, as a full handshake's deferred note has none.
    constexpr std::string_view source = " (crl file)";
    if (detail.ends_with(source)) detail.resize(detail.size() - source.size());
    out.note = std::move(detail);
  }
  out.depths |= stale;
  return out;
}

}  // namespace mtlsd::proxy::detail
