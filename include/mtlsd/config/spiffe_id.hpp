#pragma once
// The SPIFFE ID syntax (SPIFFE-ID.md, section 2): what a peer's URI SAN must be to count as its
// SPIFFE ID, and what an allow rule may name.
#include <string>
#include <string_view>

namespace mtlsd::config {

// "" when `id` is a SPIFFE ID: "spiffe://", a trust domain of lowercase letters, digits, '.',
// '-' and '_' (no user, no port), then a path of '/'-separated segments of letters, digits,
// '.', '-' and '_' — none empty, '.' or '..', no trailing '/', no percent-encoding, query or
// fragment — at most 2048 bytes in all. Otherwise what is wrong, for messages.
std::string spiffe_id_problem(std::string_view id);

// As spiffe_id_problem, for the ID of a certificate that identifies a workload (a leaf: a peer's,
// or mtlsd's own SVID): it must also have a path. "spiffe://example.org" names the trust domain
// itself, which only a signing certificate may carry (X509-SVID, sections 3.1 and 5.2).
std::string leaf_spiffe_id_problem(std::string_view id);

}  // namespace mtlsd::config
