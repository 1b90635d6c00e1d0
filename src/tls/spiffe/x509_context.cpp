// Decoding the Workload API's DER blobs. Every check here guards a promise the rest of mtlsd
// makes about its own certificate (it matches its key, it is ours): an update that fails one is
// refused and the previous SVID keeps serving.
#include "mtlsd/tls/spiffe/x509_context.hpp"

#include <openssl/evp.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cstdint>
#include <ctime>
#include <stdexcept>
#include <string>

#include "mtlsd/config/spiffe_id.hpp"
#include "mtlsd/log/log.hpp"
#include "mtlsd/tls/identity.hpp"

namespace mtlsd::tls::spiffe {
namespace {

// The Workload API concatenates DER certificates with no framing: decode one after the other.
cert_chain parse_der_certificates(const std::string& der, const char* what) {
  cert_chain out;
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  const auto* end = p + der.size();
  while (p < end) {
    X509* c = d2i_X509(nullptr, &p, static_cast<long>(end - p));
    if (!c)
      throw std::runtime_error(std::string(what) + ": not DER certificates: " + drain_errors());
    out.emplace_back(c);
  }
  return out;
}

evp_pkey_ptr parse_pkcs8_key(const std::string& der) {
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  // d2i_AutoPrivateKey takes PKCS#8 PrivateKeyInfo (and the traditional forms).
  EVP_PKEY* k = d2i_AutoPrivateKey(nullptr, &p, static_cast<long>(der.size()));
  if (!k)
    throw std::runtime_error("x509_svid_key: not a DER PKCS#8 private key: " + drain_errors());
  return evp_pkey_ptr(k);
}

std::string bare(std::string td) {
  if (td.rfind("spiffe://", 0) == 0) td = td.substr(9);
  while (!td.empty() && td.back() == '/')
    td.pop_back();
  return td;
}

// A trust domain's bundle holds its CAs: a few, with rollovers. Ten thousand (what gRPC's 4 MB
// message allows) would cost the control thread seconds to sort into anchors and intermediates
// (split_trust_bundle) at every update.
constexpr std::size_t max_bundle_certificates = 1000;

// A bundle is trust anchors: a certificate that is no CA (the SVID itself, sent by mistake)
// would become the trust store and refuse every real peer. And there are not too many.
void only_cas(const cert_chain& bundle, const char* what) {
  if (bundle.size() > max_bundle_certificates)
    throw std::runtime_error(std::string(what) + ": " + std::to_string(bundle.size()) +
                             " certificates, more than the " +
                             std::to_string(max_bundle_certificates) + " a bundle may hold");
  for (const auto& c : bundle)
    if (X509_check_ca(c.get()) == 0)
      throw std::runtime_error(std::string(what) + ": " + subject_of(c.get()) +
                               " is not a CA certificate");
}

// Our SVID must chain to our trust domain's bundle: peers verify it against that bundle, and one
// issued elsewhere would be served to every client and refused by each. Judged at `at`: now, or
// when the SVID becomes valid if that is later (svid_sources holds such an update until then).
void check_chains_to(const cert_chain& svid, const cert_chain& bundle, std::time_t at) {
  x509_store_ptr store(X509_STORE_new());
  for (const auto& c : bundle)
    X509_STORE_add_cert(store.get(), c.get());
  X509_STORE_set_flags(store.get(), X509_V_FLAG_PARTIAL_CHAIN);
  STACK_OF(X509)* intermediates = sk_X509_new_null();
  for (std::size_t i = 1; i < svid.size(); ++i)
    sk_X509_push(intermediates, svid[i].get());
  x509_store_ctx_ptr ctx(X509_STORE_CTX_new());
  bool ok =
      ctx && X509_STORE_CTX_init(ctx.get(), store.get(), svid.front().get(), intermediates) == 1;
  if (ok) {
    X509_VERIFY_PARAM_set_time(X509_STORE_CTX_get0_param(ctx.get()), at);
    ok = X509_verify_cert(ctx.get()) == 1;
  }
  const int err = ctx ? X509_STORE_CTX_get_error(ctx.get()) : X509_V_ERR_UNSPECIFIED;
  sk_X509_free(intermediates);
  drain_errors();
  if (ok) return;
  // A time fault is not a chain fault (review: "does not chain ... not yet valid" sent operators
  // looking at the bundle when a clock was wrong).
  const bool time_fault =
      err == X509_V_ERR_CERT_NOT_YET_VALID || err == X509_V_ERR_CERT_HAS_EXPIRED;
  throw std::runtime_error(
      (time_fault ? "x509_svid's chain is not valid on " + log::utc(at) + ": "
                  : std::string("x509_svid does not chain to the trust domain's bundle: ")) +
      X509_verify_cert_error_string(err));
}

// Each field with its length first, so that no two different updates read the same.
std::string digest_of(const raw_x509_svid& raw) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> md(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  EVP_DigestInit_ex(md.get(), EVP_sha256(), nullptr);
  const auto field = [&](const std::string& f) {
    const std::uint64_t n = f.size();
    EVP_DigestUpdate(md.get(), &n, sizeof n);
    EVP_DigestUpdate(md.get(), f.data(), f.size());
  };
  for (const std::string* f : {&raw.spiffe_id, &raw.x509_svid, &raw.x509_svid_key, &raw.bundle})
    field(*f);
  for (const auto& [td, der] : raw.federated_bundles) {
    field(td);
    field(der);
  }
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  EVP_DigestFinal_ex(md.get(), out, &len);
  return std::string(reinterpret_cast<char*>(out), len);
}

}  // namespace

std::string trust_domain_of(const std::string& spiffe_id) {
  if (spiffe_id.rfind("spiffe://", 0) != 0) return {};
  const std::string rest = spiffe_id.substr(9);
  return rest.substr(0, rest.find('/'));
}

std::shared_ptr<const x509_context> parse(const raw_x509_svid& raw) {
  auto ctx = std::make_shared<x509_context>();
  ctx->digest = digest_of(raw);
  ctx->spiffe_id = raw.spiffe_id;
  ctx->trust_domain = trust_domain_of(raw.spiffe_id);
  if (std::string why = config::leaf_spiffe_id_problem(raw.spiffe_id); !why.empty())
    throw std::runtime_error("spiffe_id '" + raw.spiffe_id +
                             "' is no workload's SPIFFE ID: " + why);
  ctx->svid.chain = parse_der_certificates(raw.x509_svid, "x509_svid");
  if (ctx->svid.chain.empty()) throw std::runtime_error("x509_svid: no certificate");
  ctx->svid.key = parse_pkcs8_key(raw.x509_svid_key);
  X509* leaf = ctx->svid.chain.front().get();
  if (X509_check_private_key(leaf, ctx->svid.key.get()) != 1)
    throw std::runtime_error("x509_svid_key does not match the X.509-SVID: " + drain_errors());
  if (X509_check_ca(leaf) != 0) throw std::runtime_error("x509_svid: the leaf is a CA certificate");
  // Peers refuse an SVID that cannot sign, or may not serve or log in: keep the one serving.
  if (std::string why = svid_key_usage_problem(leaf); !why.empty())
    throw std::runtime_error("x509_svid: " + why);
  if (const std::uint32_t eku = X509_get_extended_key_usage(leaf);
      (eku & (XKU_SSL_SERVER | XKU_SSL_CLIENT)) != (XKU_SSL_SERVER | XKU_SSL_CLIENT))
    throw std::runtime_error(
        "x509_svid: its extendedKeyUsage lacks serverAuth or clientAuth (an X.509-SVID's, when "
        "present, has both)");
  const auto uris = extract_identity(leaf).uri_sans;
  if (uris.size() != 1 || uris.front() != raw.spiffe_id)
    throw std::runtime_error("x509_svid: the leaf's URI SAN is not " + raw.spiffe_id +
                             " (an X.509-SVID carries exactly its SPIFFE ID)");
  ctx->bundle = parse_der_certificates(raw.bundle, "bundle");
  if (ctx->bundle.empty())
    throw std::runtime_error("bundle: no CA certificate for trust domain " + ctx->trust_domain);
  only_cas(ctx->bundle, "bundle");
  // The latest notBefore of the chain we serve: an intermediate from the same skewed server may
  // not be valid yet either.
  for (const auto& c : ctx->svid.chain)
    ctx->not_before = std::max(ctx->not_before, not_before_of(c.get()));
  check_chains_to(ctx->svid.chain, ctx->bundle, std::max(std::time(nullptr), ctx->not_before));
  // A federated bundle that does not parse is set aside with why, not the whole update: it
  // matters only to listeners that trust its domain (svid_sources judges that).
  for (const auto& [td, der] : raw.federated_bundles) {
    const std::string what = "federated_bundles[" + td + "]";
    try {
      if (der.empty()) {
        ctx->empty_federated.insert(bare(td));
        continue;
      }
      cert_chain cas = parse_der_certificates(der, what.c_str());
      only_cas(cas, what.c_str());
      ctx->federated[bare(td)] = std::move(cas);
    } catch (const std::exception& e) {
      ctx->unusable_federated[bare(td)] = e.what();
    }
  }
  return ctx;
}

std::vector<spiffe_anchor> trusted_anchors(const x509_context& ctx,
                                           const std::vector<std::string>& trust_domains,
                                           std::vector<std::string>* missing) {
  std::vector<spiffe_anchor> out;
  for (const auto& c : ctx.bundle)
    out.push_back({ctx.trust_domain, up_ref(c.get())});
  for (const auto& td : trust_domains) {
    if (td == ctx.trust_domain) continue;
    auto it = ctx.federated.find(td);
    if (it == ctx.federated.end()) {
      if (missing) missing->push_back(td);
      continue;
    }
    for (const auto& c : it->second)
      out.push_back({td, up_ref(c.get())});
  }
  return out;
}

cert_chain trusted_cas(const x509_context& ctx, const std::vector<std::string>& trust_domains,
                       std::vector<std::string>* missing) {
  cert_chain out;
  for (auto& a : trusted_anchors(ctx, trust_domains, missing))
    out.push_back(std::move(a.cert));
  return out;
}

}  // namespace mtlsd::tls::spiffe
