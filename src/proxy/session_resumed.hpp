#pragma once
// Private to session_judge.cpp: what judging a resumed session needs that a full handshake's
// verification gave the session (a resumption skips it): its chain, rebuilt, and its CRL files'
// standing.
#include <openssl/ssl.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "mtlsd/runtime/runtime.hpp"
#include "mtlsd/tls/revocation/crl.hpp"

namespace mtlsd::proxy::detail {

// A resumed session's chain as a full handshake would judge it: the leaf, then its issuers from
// the trust bundle and from the intermediates its ticket carries or, for a session kept in
// memory (client mode's cache), the peer sent. A client that sent only its leaf was completed
// from the bundle, and its ticket carries nothing. Rebuilt on first use only, and once per
// connection (the stale-CRL check and the revocation watch both use it).
class resumed_chain {
 public:
  resumed_chain(const runtime::listener_runtime& l, SSL* ssl, X509* leaf)
      : l_(l), ssl_(ssl), leaf_(leaf) {}

  const tls::revocation::rebuilt_chain& get();

  // The chain the revocation service checks (network sources), as a full handshake's verified
  // chain: up to and with its trust anchor (a partial-chain CA included), which is not checked,
  // `ends_at_anchor` true; a leaf that is itself in the bundle stands alone, as its own anchor.
  // Without an anchor (one in the system store, or a chain too long for the ticket), the
  // certificates below it, `ends_at_anchor` false: the service completes them (review: it
  // completed every resumed leaf from the issuers it remembered, one per name, so a resumed
  // client of an issuing CA trusted alone, or of one key of a CA re-keyed under the same name,
  // was refused 'issuer unknown').
  std::vector<X509*> to_check(bool& ends_at_anchor);

 private:
  const runtime::listener_runtime& l_;
  SSL* ssl_;
  X509* leaf_;
  tls::cert_chain from_ticket_;
  std::optional<tls::revocation::rebuilt_chain> chain_;
};

// The depths of a resumed session's chain without a usable CRL file, and why (the first's,
// without the source: " (crl file)" is the caller's to add).
struct unusable_crls {
  std::uint32_t depths = 0;
  std::string note;
};

// A resumption skips verification, CRL files included. Its CRL files are judged as a full
// handshake would judge them now: the depths its full handshake found without a usable CRL
// (admitted under on_unavailable: allow, or left to OCSP or distribution points: the ticket
// says which; review: they were taken as answered), and those whose CRL went stale since (past
// nextUpdate + crl_grace: the files are in the session id context, the clock is not).
unusable_crls unusable_crls_of_resumed(const runtime::listener_runtime& l, SSL* ssl,
                                       resumed_chain& chain);

}  // namespace mtlsd::proxy::detail
