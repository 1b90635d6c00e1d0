#include "mtlsd/tls/trust_store.hpp"

#include <openssl/x509_vfy.h>

#include <map>
#include <memory>
#include <string>

#include "mtlsd/tls/identity.hpp"

namespace mtlsd::tls {
namespace {

struct stack_free {
  void operator()(STACK_OF(X509) * sk) const { sk_X509_pop_free(sk, X509_free); }
};
using owned_stack = std::unique_ptr<STACK_OF(X509), stack_free>;

owned_stack stack_of(const cert_chain& certs) {
  owned_stack sk(sk_X509_new_null());
  if (!sk) throw std::bad_alloc();
  for (const auto& c : certs) {
    if (!sk_X509_push(sk.get(), c.get())) throw std::bad_alloc();
    X509_up_ref(c.get());
  }
  return sk;
}

// A trust domain's share of a context's SPIFFE bundles.
struct domain_sources {
  owned_stack anchors;  // the X509_STORE's anchors of this domain's bundle
  owned_stack pool;     // its bundle's intermediates
};

// What chain building on a context uses beyond its store; the context owns it (ex_data).
struct chain_sources {
  owned_stack pool;  // every bundle's intermediates (CA files; a leaf of no domain here)
  std::map<std::string, domain_sources, std::less<>> domains;  // SPIFFE bundles, by trust domain

  // `leaf`'s trust domain's share, or null (no SPIFFE ID, or no bundle of its domain here).
  const domain_sources* domain_of(X509* leaf) const {
    if (domains.empty() || !leaf) return nullptr;
    const auto it = domains.find(spiffe_trust_domain(extract_identity(leaf).spiffe_id));
    return it == domains.end() ? nullptr : &it->second;
  }
};

void free_sources(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
  delete static_cast<chain_sources*>(ptr);
}

int sources_index() {
  static const int i = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, &free_sources);
  return i;
}

const chain_sources* sources_of(SSL_CTX* ctx) {
  return static_cast<const chain_sources*>(SSL_CTX_get_ex_data(ctx, sources_index()));
}

STACK_OF(X509) * with_pool(STACK_OF(X509) * peer, STACK_OF(X509) * pool) {
  STACK_OF(X509)* both = peer ? sk_X509_dup(peer) : sk_X509_new_null();
  if (!both) return nullptr;
  for (int i = 0; pool && i < sk_X509_num(pool); ++i) {
    if (!sk_X509_push(both, sk_X509_value(pool, i))) {
      sk_X509_free(both);
      return nullptr;
    }
  }
  return both;
}

// The untrusted certificates for `leaf`'s chain: `peer`'s, then the intermediates of its trust
// domain's bundle (every bundle's when it has none here: it is refused afterwards anyway). A
// partner's look-alike of another domain's intermediate is then never a candidate either.
STACK_OF(X509) * untrusted_for(const chain_sources& src, X509* leaf, STACK_OF(X509) * peer) {
  const domain_sources* own = src.domain_of(leaf);
  return with_pool(peer, own ? own->pool.get() : src.pool.get());
}

// Handshakes: X509_verify_cert with the intermediates added to what the peer sent and the
// anchors confined to the leaf's trust domain, then the peer's stack put back (libssl frees its
// own).
int verify_with_sources(X509_STORE_CTX* store_ctx, void* arg) {
  const auto* src = static_cast<const chain_sources*>(arg);
  X509* leaf = X509_STORE_CTX_get0_cert(store_ctx);
  STACK_OF(X509)* peer = X509_STORE_CTX_get0_untrusted(store_ctx);
  STACK_OF(X509)* both = untrusted_for(*src, leaf, peer);
  if (!both) {
    X509_STORE_CTX_set_error(store_ctx, X509_V_ERR_OUT_OF_MEM);
    return 0;
  }
  X509_STORE_CTX_set0_untrusted(store_ctx, both);
  if (const domain_sources* own = src->domain_of(leaf))
    X509_STORE_CTX_set0_trusted_stack(store_ctx, own->anchors.get());
  const int rc = X509_verify_cert(store_ctx);
  X509_STORE_CTX_set0_untrusted(store_ctx, peer);
  sk_X509_free(both);
  return rc;
}

// A new store for `ctx` holding `anchors`, and the sources beside it (the callback too).
void install(SSL_CTX* ctx, const cert_chain& anchors, std::unique_ptr<chain_sources> src) {
  X509_STORE* store = X509_STORE_new();
  if (!store) throw std::bad_alloc();
  for (const auto& ca : anchors) {
    if (X509_STORE_add_cert(store, ca.get()) != 1) drain_errors();  // duplicates are harmless
  }
  SSL_CTX_set_cert_store(ctx, store);  // the context owns the store now
  free_sources(nullptr, SSL_CTX_get_ex_data(ctx, sources_index()), nullptr, 0, 0, nullptr);
  SSL_CTX_set_ex_data(ctx, sources_index(), nullptr);
  if (sk_X509_num(src->pool.get()) == 0 && src->domains.empty()) {
    SSL_CTX_set_cert_verify_callback(ctx, nullptr, nullptr);  // X509_verify_cert as it is
    return;
  }
  SSL_CTX_set_cert_verify_callback(ctx, &verify_with_sources, src.get());
  SSL_CTX_set_ex_data(ctx, sources_index(), src.release());
}

}  // namespace

cert_chain install_trust_store(SSL_CTX* ctx, cert_chain cas) {
  const trust_split split = split_trust_bundle(cas);
  auto src = std::make_unique<chain_sources>();
  src->pool = stack_of(split.intermediates);
  install(ctx, split.anchors, std::move(src));
  return cas;
}

bundles_by_domain group_by_domain(const std::vector<spiffe_anchor>& anchors) {
  bundles_by_domain out;
  for (const auto& a : anchors)
    out[a.trust_domain].push_back(up_ref(a.cert.get()));
  return out;
}

cert_chain install_bundle_trust(SSL_CTX* ctx, const bundles_by_domain& bundles) {
  auto src = std::make_unique<chain_sources>();
  cert_chain all, anchors, intermediates;
  for (const auto& [domain, certs] : bundles) {
    const trust_split split = split_trust_bundle(certs);
    src->domains.emplace(domain,
                         domain_sources{stack_of(split.anchors), stack_of(split.intermediates)});
    for (const auto& c : certs)
      all.push_back(up_ref(c.get()));
    for (const auto& c : split.anchors)
      anchors.push_back(up_ref(c.get()));
    for (const auto& c : split.intermediates)
      intermediates.push_back(up_ref(c.get()));
  }
  src->pool = stack_of(intermediates);
  install(ctx, anchors, std::move(src));
  return all;
}

STACK_OF(X509) * with_intermediates(SSL_CTX* ctx, X509* leaf, STACK_OF(X509) * peer) {
  const chain_sources* src = sources_of(ctx);
  return src ? untrusted_for(*src, leaf, peer) : with_pool(peer, nullptr);
}

void confine_to_trust_domain(SSL_CTX* ctx, X509_STORE_CTX* store_ctx) {
  const chain_sources* src = sources_of(ctx);
  if (!src) return;
  if (const domain_sources* own = src->domain_of(X509_STORE_CTX_get0_cert(store_ctx)))
    X509_STORE_CTX_set0_trusted_stack(store_ctx, own->anchors.get());
}

}  // namespace mtlsd::tls
