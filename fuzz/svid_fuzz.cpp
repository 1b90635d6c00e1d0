// The SPIFFE Workload API's X.509 update as mtlsd decodes it (tls/spiffe/x509_context.hpp), on
// arbitrary fields: the agent is local, but what it sends becomes the listener's own
// certificate and trust anchors, so a bad update must be refused with a reason and never
// half-applied. Input: fields of a 2-byte big-endian length and that many bytes: spiffe_id,
// x509_svid (concatenated DER), x509_svid_key (PKCS#8 DER), bundle (concatenated DER), then
// pairs of a federated trust domain and its bundle. Properties of an accepted update: its
// trust domain is the SPIFFE ID's, the key matches the leaf, the leaf carries exactly the
// SPIFFE ID as its URI SAN and is not a CA, the bundle is not empty and holds CAs only (the
// SVID chains to it), and trusted_cas() gives the bundle plus the named federated bundles,
// reporting the names it has no bundle for. And the Workload API client's schedule for the SVID
// DER (spiffe::next_update_due_in): 3/4 through the leaf's lifetime from now, within its clamps
// (kQuietAtLeast 30 s, kQuietAtMost 24 h: src/spiffe/workload_client.cpp), 30 s when no leaf.
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <ctime>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.hpp"
#include "mtlsd/config/spiffe_id.hpp"
#include "mtlsd/spiffe/workload_client.hpp"
#include "mtlsd/tls/credentials.hpp"
#include "mtlsd/tls/identity.hpp"
#include "mtlsd/tls/spiffe/x509_context.hpp"

using namespace mtlsd;

namespace {

// The next length-prefixed field; false when the input is used up.
bool next_field(std::string_view& in, std::string& out) {
  if (in.size() < 2) return false;
  const std::size_t n = (static_cast<std::size_t>(static_cast<unsigned char>(in[0])) << 8) |
                        static_cast<unsigned char>(in[1]);
  in.remove_prefix(2);
  out.assign(in.substr(0, n));
  in.remove_prefix(std::min(n, in.size()));
  return true;
}

// When the next Workload API message is due after this SVID: between the clamps, and what the
// leaf's validity gives (the clock read before and after the call: a second may pass).
void check_next_update_due_in(const std::string& der) {
  using std::chrono::seconds;
  constexpr seconds at_least{30}, at_most{24 * 3600};
  const std::time_t before = std::time(nullptr);
  const seconds due = spiffe::next_update_due_in(der);
  const std::time_t after = std::time(nullptr);
  fuzz::check(due >= at_least && due <= at_most, "the next update is due within the clamps");
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  tls::x509_ptr leaf(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  ERR_clear_error();
  if (!leaf) {
    fuzz::check(due == at_least, "no leaf: the next update is due in 30 s");
    return;
  }
  const std::time_t from = tls::not_before_of(leaf.get());
  const std::time_t due_at = from + (tls::not_after_of(leaf.get()) - from) / 4 * 3;
  fuzz::check(due >= std::clamp(seconds(due_at - after), at_least, at_most) &&
                  due <= std::clamp(seconds(due_at - before), at_least, at_most),
              "the next update is due 3/4 through the leaf's lifetime");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  tls::spiffe::raw_x509_svid raw;
  next_field(in, raw.spiffe_id);
  next_field(in, raw.x509_svid);
  next_field(in, raw.x509_svid_key);
  next_field(in, raw.bundle);
  std::string td, der;
  while (next_field(in, td) && next_field(in, der))
    raw.federated_bundles[td] = der;
  check_next_update_due_in(raw.x509_svid);

  std::shared_ptr<const tls::spiffe::x509_context> ctx;
  try {
    ctx = tls::spiffe::parse(raw);
  } catch (const std::runtime_error& e) {
    fuzz::check(*e.what() != '\0', "a refused update says why");
    return 0;
  }
  fuzz::check(!ctx->trust_domain.empty() &&
                  ctx->trust_domain == tls::spiffe::trust_domain_of(raw.spiffe_id),
              "the trust domain is the SPIFFE ID's");
  fuzz::check(!ctx->svid.chain.empty() && ctx->svid.key, "a leaf and its key");
  X509* leaf = ctx->svid.chain.front().get();
  fuzz::check(X509_check_private_key(leaf, ctx->svid.key.get()) == 1, "the key matches the leaf");
  fuzz::check(X509_check_ca(leaf) == 0, "the leaf is not a CA");
  const auto uris = tls::extract_identity(leaf).uri_sans;
  fuzz::check(uris.size() == 1 && uris.front() == raw.spiffe_id, "exactly its SPIFFE ID");
  fuzz::check(config::leaf_spiffe_id_problem(raw.spiffe_id).empty(), "a workload's SPIFFE ID");
  fuzz::check(!ctx->bundle.empty(), "a bundle");
  for (const auto& c : ctx->bundle)
    fuzz::check(X509_check_ca(c.get()) != 0, "a bundle of CA certificates only");

  // Every federated name, our own, and one no update names.
  std::vector<std::string> names{ctx->trust_domain, "fuzz.invalid"};
  std::size_t expected = ctx->bundle.size();
  std::size_t expected_missing = ctx->federated.count("fuzz.invalid") ? 0 : 1;
  if (ctx->trust_domain == "fuzz.invalid") expected_missing = 0;
  for (const auto& [name, cas] : ctx->federated) {
    if (name == ctx->trust_domain) continue;
    names.push_back(name);
    expected += cas.size();
  }
  if (ctx->trust_domain != "fuzz.invalid" && ctx->federated.count("fuzz.invalid"))
    expected += ctx->federated.at("fuzz.invalid").size();  // named twice: counted twice
  std::vector<std::string> missing;
  const auto cas = tls::spiffe::trusted_cas(*ctx, names, &missing);
  fuzz::check(cas.size() == expected, "the bundle and each named federated bundle");
  fuzz::check(missing.size() == expected_missing, "the names with no bundle are reported");
  return 0;
}
