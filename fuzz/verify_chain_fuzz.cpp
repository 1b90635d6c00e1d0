// Peer chain judging (tls/verify.cpp, verify_spiffe.cpp, verify_reasons.cpp, name_constraints.cpp,
// peer_policy.cpp) on arbitrary chains a peer could send: verifier::verify_offline, which runs
// X509_verify_cert with mtlsd's callback on the SSL_CTX, store and parameters build_context made
// for a listener, as a handshake does. The fixture CA is the one anchor.
//
// Input: byte 0 picks the listener. Bit 0: 0 = mode: server judging a client certificate
// (client_auth required; the client connects from 10.1.2.3 with the SNI api.example.org), 1 =
// mode: client judging the remote (SAN-only host name check). Bits 1-2: 0 = the CA file
// fixtures/ca.crt, no allow list; 1 = the same with allow {spiffe_ids:
// [spiffe://example.org/ns/prod/*], dns_sans: ["*.example.org"]}; 2 = tls.spiffe with the fixture
// CA as the bundle of example.org (the same allow list in client mode, which requires one); 3 =
// the CA file, verify_depth 1 and two allow rules (that SPIFFE path with the SNI api.example.org,
// and from 10.0.0.0/8 in server mode; "*.example.org" but not spiffe://example.org/ns/dev/*).
// Bit 3 (client mode): the upstream is 127.0.0.1:443 (no SNI), else api.example.org:443. Bit 4:
// re-sign every certificate before it is judged, certificate i with the key of certificate i + 1
// when that is a fixture key (the seeds' intermediates use server.key and ocsp.key), else with
// ca.key, so that a mutated certificate still has a valid signature and reaches the policy. Then
// up to 8 certificates, each a 2-byte big-endian length and that much DER, leaf first; an input
// whose certificates do not each decode exactly is dropped (a handshake fails before verifying).
//
// Properties: a verdict is an identity (of the leaf) or a refusal with a detail and one of
// the path reasons of reason.hpp, never both; hostname_mismatch only in client mode,
// not_authorized only with an allow list. An admitted chain runs from the leaf to the fixture
// CA, has at most verify_depth intermediates, every certificate within its validity; its CAs
// have CA:TRUE and keyCertSign and their pathLen holds; its leaf is no CA (unless it is the
// anchor itself), has EKU clientAuth (server mode) / serverAuth (client mode) when it has an
// EKU, keyUsage (when present) with digitalSignature, a key the fuzz listener's TLS (1.2 and
// 1.3, default groups) signs with (RSA, RSA-PSS, Ed25519, Ed448, DSA for TLS 1.2, ECDSA on
// P-256, P-384 or P-521: no other curve is among the default groups), the host name in a SAN
// (client mode), what the allow list asks for, and under tls.spiffe is an X.509-SVID of
// example.org (one URI SAN, keyUsage digitalSignature without keyCertSign or cRLSign); below a
// CA with URI name constraints, every URI SAN of the chain has a plain RFC 3986 host that is
// what OpenSSL's check compares (no userinfo, IP literal, percent-encoding, odd port, nor a
// ':', '?' or '#' that moves OpenSSL's idea of the host). Against OpenSSL's own verdict on the
// same chain and store without mtlsd's callback: mtlsd never admits what OpenSSL refuses;
// OpenSSL's first error decides mtlsd's reason (bad_certificate when the certificate at fault,
// or an issuer of it that was sent, has an extension OpenSSL cannot decode), except for name
// constraints, where mtlsd's reason is name_constraints or an earlier leaf rule of its own,
// never not_authorized; what OpenSSL admits mtlsd refuses only by its own rules (among them
// bad_certificate for a leaf key the listener's TLS cannot sign with, and name_constraints for
// such a URI SAN or, in client mode, for a CA's DNS constraints the host name asked for breaks).
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <array>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.hpp"
#include "mtlsd/config/cidr.hpp"
#include "mtlsd/config/load.hpp"
#include "mtlsd/tls/context.hpp"
#include "mtlsd/tls/trust_store.hpp"
#include "mtlsd/tls/verify.hpp"

using namespace mtlsd;

namespace {

enum trust_kind { ca_file = 0, ca_file_allow = 1, spiffe_bundle = 2, ca_file_rules = 3 };

bool has_allow(bool server, int trust) {
  return trust == ca_file_allow || trust == ca_file_rules || (trust == spiffe_bundle && !server);
}

tls::x509_ptr ca;
std::array<tls::evp_pkey_ptr, 4> keys;  // ca.key first: the signer of last resort
tls::key_pair own_svid;                 // tls.spiffe: our X.509-SVID (fixtures/leaf.*)
// By selector bits 0-3. Built once and never freed, like tls_stream_fuzz's: destroyed at exit,
// their chain sources (trust_store.cpp) were reported as leaked.
std::array<tls::tls_context*, 16> contexts{};
std::time_t at = 0;  // the verification time of this run
// Server mode: where the client connects from (10.1.2.3); it sends the SNI api.example.org.
std::optional<config::ip_address> source;

tls::evp_pkey_ptr fixture_key(const std::string& name) {
  const std::string pem = fuzz::fixture(name);
  tls::bio_ptr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  tls::evp_pkey_ptr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  fuzz::check(key != nullptr, "a fixture key");
  return key;
}

std::string listener_yaml(bool server, int trust, bool ip) {
  const bool allow = has_allow(server, trust);
  std::string y = "listeners:\n  - name: l\n    listen: 127.0.0.1:0\n";
  y += server ? "    upstream: 127.0.0.1:8080\n"
              : std::string("    mode: client\n    upstream: ") +
                    (ip ? "127.0.0.1:443\n" : "api.example.org:443\n");
  if (trust != spiffe_bundle || allow) y += server ? "    client_auth:\n" : "    server_auth:\n";
  if (trust != spiffe_bundle) y += "      ca: [\"" + fuzz::fixture_path("ca.crt") + "\"]\n";
  if (trust == ca_file_rules)
    y += std::string("      verify_depth: 1\n      allow:\n        rules:\n") +
         "          - spiffe_ids: [\"spiffe://example.org/ns/prod/*\"]\n"
         "            sni: [api.example.org]\n" +
         (server ? "            source_cidrs: [10.0.0.0/8]\n" : "") +
         "          - dns_sans: [\"*.example.org\"]\n"
         "            not: {spiffe_ids: [\"spiffe://example.org/ns/dev/*\"]}\n";
  else if (allow)
    y += "      allow:\n        spiffe_ids: [\"spiffe://example.org/ns/prod/*\"]\n"
         "        dns_sans: [\"*.example.org\"]\n";
  if (trust == spiffe_bundle)
    y += "    tls:\n      spiffe:\n        workload_api: unix:///nonexistent/agent.sock\n";
  else if (server)
    y += "    tls:\n      cert: \"" + fuzz::fixture_path("server.crt") + "\"\n      key: \"" +
         fuzz::fixture_path("server.key") + "\"\n";
  return y;
}

tls::tls_context build(bool server, int trust, bool ip) {
  const std::string yaml = listener_yaml(server, trust, ip);
  const auto r = config::load_text(yaml, fuzz::fixture_path("verify_chain_fuzz.yaml"));
  if (!r.config) {
    for (const auto& p : r.problems)
      std::fprintf(stderr, "fuzz: %s\n", p.str().c_str());
    fuzz::check(false, "the fuzz listener configuration loads");
  }
  if (trust != spiffe_bundle) return tls::build_context(r.config->listeners.at(0));
  tls::svid_material svid{"spiffe://example.org/ns/prod/sa/alice", &own_svid, {}};
  svid.anchors.push_back({"example.org", tls::up_ref(ca.get())});
  return tls::build_context(r.config->listeners.at(0), &svid);
}

// The certificates of `in`: each a 2-byte length and that much DER, 8 at most. False when one
// does not decode exactly.
bool decode(std::string_view in, tls::cert_chain& certs) {
  while (in.size() >= 2 && certs.size() < 8) {
    const std::size_t len = (static_cast<std::size_t>(static_cast<unsigned char>(in[0])) << 8) |
                            static_cast<unsigned char>(in[1]);
    in.remove_prefix(2);
    if (len > in.size()) return false;
    const auto* start = reinterpret_cast<const unsigned char*>(in.data());
    const unsigned char* p = start;
    tls::x509_ptr x(d2i_X509(nullptr, &p, static_cast<long>(len)));
    if (!x || p != start + len) return false;
    certs.push_back(std::move(x));
    in.remove_prefix(len);
  }
  return true;
}

// The last input's re-signed certificates (DER; empty when one could not be signed). ECDSA
// signatures are randomised, and libFuzzer runs an input whose allocations outnumber its frees
// a second time before it looks for a leak: only a run on the same certificates (which hits
// extract_identity's cache) spares it that costly look.
std::string resigned_for;
std::vector<std::string> resigned;

// Signs certs[i] with the key of certs[i + 1] when it is a fixture key, else with ca.key (which
// also makes a certificate with extensions v3), and decodes the DER that gives, so that what is
// judged is exactly what a peer would send. False on failure.
bool resign(tls::cert_chain& certs, std::string_view input) {
  if (input != resigned_for) {
    resigned_for = input;
    resigned.clear();
    for (std::size_t i = 0; i < certs.size(); ++i) {
      EVP_PKEY* signer = keys[0].get();
      EVP_PKEY* next = i + 1 < certs.size() ? X509_get0_pubkey(certs[i + 1].get()) : nullptr;
      for (const auto& k : keys)
        if (next && EVP_PKEY_eq(k.get(), next) == 1) signer = k.get();
      unsigned char* der = nullptr;
      const int n =
          X509_sign(certs[i].get(), signer, EVP_sha256()) > 0 ? i2d_X509(certs[i].get(), &der) : 0;
      if (n > 0) resigned.emplace_back(reinterpret_cast<char*>(der), static_cast<std::size_t>(n));
      OPENSSL_free(der);
      if (n <= 0) {
        resigned.clear();
        break;
      }
    }
  }
  if (resigned.size() != certs.size()) return false;
  for (std::size_t i = 0; i < certs.size(); ++i) {
    const auto* p = reinterpret_cast<const unsigned char*>(resigned[i].data());
    certs[i].reset(d2i_X509(nullptr, &p, static_cast<long>(resigned[i].size())));
    if (!certs[i]) return false;
  }
  return true;
}

// OpenSSL's verdict on the same chain: verify_offline's set-up (store, untrusted certificates,
// purpose, parameters, security level, time) without mtlsd's callback. X509_V_OK or the first
// error, with the certificate it names.
int openssl_verdict(SSL_CTX* ctx, bool server, X509* leaf, STACK_OF(X509) * peer, X509*& fault) {
  STACK_OF(X509)* both = tls::with_intermediates(ctx, leaf, peer);
  tls::x509_store_ctx_ptr sctx(X509_STORE_CTX_new());
  fuzz::check(
      both && sctx && X509_STORE_CTX_init(sctx.get(), SSL_CTX_get_cert_store(ctx), leaf, both) == 1,
      "a verification context");
  tls::confine_to_trust_domain(ctx, sctx.get());
  X509_STORE_CTX_set_default(sctx.get(), server ? "ssl_client" : "ssl_server");
  X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(sctx.get());
  X509_VERIFY_PARAM_set1(param, SSL_CTX_get0_param(ctx));
  X509_VERIFY_PARAM_set_auth_level(param, SSL_CTX_get_security_level(ctx));
  X509_VERIFY_PARAM_set_time(param, at);
  const int rc = X509_verify_cert(sctx.get());
  int err = X509_STORE_CTX_get_error(sctx.get());
  if (rc != 1 && err == X509_V_OK) err = X509_V_ERR_UNSPECIFIED;
  fault = X509_STORE_CTX_get_current_cert(sctx.get());
  if (fault) X509_up_ref(fault);
  sk_X509_free(both);
  return rc == 1 ? X509_V_OK : err;
}

// Whether a leaf's keyUsage, if it has one, allows the handshake's signature.
bool signs(X509* x) {
  return !(X509_get_extension_flags(x) & EXFLAG_KUSAGE) ||
         (X509_get_key_usage(x) & KU_DIGITAL_SIGNATURE);
}

// Whether a certificate of `chain` has an extended key usage without serverAuth (Server Gated
// Crypto alone, say): OpenSSL's server purpose admits it, mtlsd refuses it in a remote's chain.
bool eku_without_server_auth(const tls::cert_chain& chain) {
  for (const auto& c : chain)
    if ((X509_get_extension_flags(c.get()) & EXFLAG_XKUSAGE) &&
        !(X509_get_extended_key_usage(c.get()) & XKU_SSL_SERVER))
      return true;
  return false;
}

// Whether `sent` holds a certificate naming `child`'s issuer whose extensions do not decode:
// OpenSSL skips it and reports a missing issuer, mtlsd names it (bad_certificate).
bool malformed_issuer_sent(const tls::cert_chain& sent, X509* child) {
  for (const auto& c : sent)
    if (c.get() != child &&
        X509_NAME_cmp(X509_get_subject_name(c.get()), X509_get_issuer_name(child)) == 0 &&
        (X509_get_extension_flags(c.get()) & EXFLAG_INVALID))
      return true;
  return false;
}

// Whether the fuzz listener (TLS 1.2 and 1.3, default groups X25519:P-256:P-384) signs with
// `x`'s key: TLS 1.3's schemes, and TLS 1.2's DSA (its ECDSA takes no curve TLS 1.3 does not
// among those groups).
bool tls_signs_with(X509* x) {
  EVP_PKEY* k = X509_get0_pubkey(x);
  if (!k) return false;
  if (EVP_PKEY_is_a(k, "RSA") || EVP_PKEY_is_a(k, "RSA-PSS") || EVP_PKEY_is_a(k, "ED25519") ||
      EVP_PKEY_is_a(k, "ED448") || EVP_PKEY_is_a(k, "DSA"))
    return true;
  char group[64] = "";
  std::size_t n = 0;
  if (!EVP_PKEY_is_a(k, "EC") ||
      EVP_PKEY_get_utf8_string_param(k, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, &n) != 1)
    return false;
  const std::string_view g(group, n);
  return g == "prime256v1" || g == "secp384r1" || g == "secp521r1";
}

// Whether `x` has name constraints with a subtree of `type` (GEN_URI, GEN_DNS).
bool constrains(X509* x, int type) {
  auto* nc =
      static_cast<NAME_CONSTRAINTS*>(X509_get_ext_d2i(x, NID_name_constraints, nullptr, nullptr));
  bool found = false;
  for (const auto* trees :
       {nc ? nc->permittedSubtrees : nullptr, nc ? nc->excludedSubtrees : nullptr})
    for (int i = 0; trees && i < sk_GENERAL_SUBTREE_num(trees); ++i)
      found = found || sk_GENERAL_SUBTREE_value(trees, i)->base->type == type;
  NAME_CONSTRAINTS_free(nc);
  return found;
}

// Whether OpenSSL's URI name-constraint check sees `uri`'s real host: "scheme://", then a
// host of letters, digits and -._~!$&'()*+,;= not ending in '.', then ":digits" and anything, or
// '/' and anything without ':', or nothing.
bool plain_uri_host(std::string_view uri) {
  const auto sep = uri.find("://");
  if (sep == std::string_view::npos || sep == 0 ||
      !std::isalpha(static_cast<unsigned char>(uri[0])))
    return false;
  for (const char c : uri.substr(0, sep))
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '+' && c != '-' && c != '.')
      return false;
  std::string_view rest = uri.substr(sep + 3);
  std::size_t h = 0;
  while (h < rest.size() &&
         (std::isalnum(static_cast<unsigned char>(rest[h])) ||
          std::string_view("-._~!$&'()*+,;=").find(rest[h]) != std::string_view::npos))
    ++h;
  if (h == 0 || rest[h - 1] == '.') return false;  // a trailing dot: the same host without it
  rest.remove_prefix(h);
  if (rest.empty()) return true;
  if (rest[0] == ':') {
    std::size_t d = 1;
    while (d < rest.size() && std::isdigit(static_cast<unsigned char>(rest[d])))
      ++d;
    return d == rest.size() || rest[d] == '/' || rest[d] == '?' || rest[d] == '#';
  }
  return rest[0] == '/' && rest.find(':') == std::string_view::npos;
}

// Whether a URI SAN of `x` is not plain_uri_host.
bool odd_uri_san(X509* x) {
  auto* sans =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(x, NID_subject_alt_name, nullptr, nullptr));
  bool odd = false;
  for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(sans, i);
    if (gn->type == GEN_URI)
      odd = odd ||
            !plain_uri_host(
                {reinterpret_cast<const char*>(
                     ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier)),
                 static_cast<std::size_t>(ASN1_STRING_length(gn->d.uniformResourceIdentifier))});
  }
  GENERAL_NAMES_free(sans);
  return odd;
}

// Whether a certificate of the verified `chain` (leaf first) that is subject to the
// constraints above it (the leaf, or a CA not self-issued) has an odd URI SAN below a CA with
// URI constraints.
bool odd_uri_below_uri_constraints(const tls::cert_chain& chain) {
  bool constrained = false;  // by a CA above the current certificate
  for (std::size_t i = chain.size(); i-- > 0;) {
    X509* c = chain[i].get();
    if (constrained && (i == 0 || !(X509_get_extension_flags(c) & EXFLAG_SI)) && odd_uri_san(c))
      return true;
    constrained = constrained || (i > 0 && constrains(c, GEN_URI));
  }
  return false;
}

bool claims_ca(X509* x) {
  const std::uint32_t f = X509_get_extension_flags(x);
  return (f & EXFLAG_CA) || ((f & EXFLAG_KUSAGE) && (X509_get_key_usage(x) & KU_KEY_CERT_SIGN));
}

bool is_nc_error(int err) {
  return err == X509_V_ERR_PERMITTED_VIOLATION || err == X509_V_ERR_EXCLUDED_VIOLATION ||
         err == X509_V_ERR_SUBTREE_MINMAX || err == X509_V_ERR_UNSUPPORTED_CONSTRAINT_TYPE ||
         err == X509_V_ERR_UNSUPPORTED_CONSTRAINT_SYNTAX ||
         err == X509_V_ERR_UNSUPPORTED_NAME_SYNTAX;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  return true;
}

// Whether a SAN of `leaf` names the upstream: IP 127.0.0.1, or DNS api.example.org (exactly or
// as *.example.org, case-insensitively).
bool names_upstream(X509* leaf, bool ip) {
  auto* sans =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(leaf, NID_subject_alt_name, nullptr, nullptr));
  bool found = false;
  for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(sans, i);
    if (ip && gn->type == GEN_IPADD) {
      const std::string_view v(reinterpret_cast<const char*>(ASN1_STRING_get0_data(gn->d.ip)),
                               static_cast<std::size_t>(ASN1_STRING_length(gn->d.ip)));
      found = found || v == std::string_view("\x7f\0\0\x01", 4);
    } else if (!ip && gn->type == GEN_DNS) {
      const std::string_view v(reinterpret_cast<const char*>(ASN1_STRING_get0_data(gn->d.dNSName)),
                               static_cast<std::size_t>(ASN1_STRING_length(gn->d.dNSName)));
      found = found || iequals(v, "api.example.org") || iequals(v, "*.example.org");
    }
  }
  GENERAL_NAMES_free(sans);
  return found;
}

bool under(std::string_view id, std::string_view prefix) {
  return id.size() > prefix.size() && id.substr(0, prefix.size()) == prefix;
}

// What the allow lists admit at most: a SPIFFE ID below spiffe://example.org/ns/prod/ (by the
// rules only with the SNI api.example.org, which is not sent to an IP upstream), or a DNS SAN of
// one more label below example.org (by the rules not beside a SPIFFE ID below .../ns/dev/).
bool allowed(const tls::peer_identity& id, bool rules, bool sni) {
  if (under(id.spiffe_id, "spiffe://example.org/ns/prod/") && (!rules || sni)) return true;
  if (rules && under(id.spiffe_id, "spiffe://example.org/ns/dev/")) return false;
  for (const auto& d : id.dns_sans) {
    const std::size_t dot = d.find('.');
    if (dot != 0 && dot != std::string::npos && iequals(d.substr(dot), ".example.org")) return true;
  }
  return false;
}

void check_admitted(const tls::verify_outcome& o, X509* leaf, bool server, int trust, bool ip) {
  fuzz::check(o.identity->sha256 == tls::sha256_fingerprint(leaf), "the identity is the leaf's");
  const int n = static_cast<int>(o.chain.size());
  fuzz::check(n >= 1 && X509_cmp(o.chain.front().get(), leaf) == 0, "the chain starts at the leaf");
  fuzz::check(X509_cmp(o.chain.back().get(), ca.get()) == 0, "the chain ends at the fixture CA");
  fuzz::check(n - 2 <= (trust == ca_file_rules ? 1 : 4), "at most verify_depth intermediates");
  std::time_t before = at - 1;
  for (const auto& c : o.chain)
    fuzz::check(X509_cmp_time(X509_get0_notBefore(c.get()), &at) < 0 &&
                    X509_cmp_time(X509_get0_notAfter(c.get()), &before) > 0,
                "every certificate is within its validity");
  int below = 0;  // CAs below the current one that are not self-issued
  for (int i = 1; i < n; ++i) {
    X509* c = o.chain[static_cast<std::size_t>(i)].get();
    const std::uint32_t f = X509_get_extension_flags(c);
    fuzz::check(
        (f & EXFLAG_CA) && (f & EXFLAG_KUSAGE) && (X509_get_key_usage(c) & KU_KEY_CERT_SIGN),
        "every issuer has CA:TRUE and keyCertSign");
    const long pathlen = X509_get_pathlen(c);
    fuzz::check(pathlen < 0 || below <= pathlen, "every pathLen constraint holds");
    if (!(f & EXFLAG_SI)) ++below;
  }
  fuzz::check(n == 1 || !claims_ca(leaf), "the peer's own certificate is no CA");
  const std::uint32_t f = X509_get_extension_flags(leaf);
  if (f & EXFLAG_XKUSAGE)
    fuzz::check(X509_get_extended_key_usage(leaf) & (server ? XKU_SSL_CLIENT : XKU_SSL_SERVER),
                "the leaf's EKU names its side");
  fuzz::check(signs(leaf), "the leaf's keyUsage has digitalSignature");
  fuzz::check(tls_signs_with(leaf), "a TLS signature scheme takes the leaf's key");
  fuzz::check(!odd_uri_below_uri_constraints(o.chain),
              "below URI name constraints, every URI SAN's host is what OpenSSL compared");
  if (!server && trust != spiffe_bundle)
    fuzz::check(names_upstream(leaf, ip), "a SAN of the remote names the upstream");
  if (has_allow(server, trust))
    fuzz::check(allowed(*o.identity, trust == ca_file_rules, server || !ip),
                "the allow list admits the peer");
  if (trust == spiffe_bundle) {
    fuzz::check(o.identity->spiffe_id.rfind("spiffe://example.org/", 0) == 0 &&
                    o.identity->uri_sans.size() == 1,
                "an X.509-SVID of example.org");
    const std::uint32_t ku = X509_get_key_usage(leaf);
    fuzz::check((f & EXFLAG_KUSAGE) && (ku & KU_DIGITAL_SIGNATURE) &&
                    !(ku & (KU_KEY_CERT_SIGN | KU_CRL_SIGN)),
                "an X.509-SVID's keyUsage");
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  at = std::time(nullptr);
  source = config::parse_ip("10.1.2.3");
  ca = fuzz::fixture_cert("ca.crt");
  keys = {fixture_key("ca.key"), fixture_key("leaf.key"), fixture_key("server.key"),
          fixture_key("ocsp.key")};
  own_svid.chain.push_back(fuzz::fixture_cert("leaf.crt"));
  own_svid.key = fixture_key("leaf.key");
  for (int s = 0; s < 16; ++s)
    contexts[static_cast<std::size_t>(s)] =
        new tls::tls_context(build((s & 1) == 0, (s >> 1) & 3, (s & 8) != 0));
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t sel = data[0];
  const bool server = (sel & 1) == 0, ip = (sel & 8) != 0;
  const int trust = (sel >> 1) & 3;
  const tls::tls_context& t = *contexts[sel & 15];
  tls::cert_chain certs;
  if (!decode({reinterpret_cast<const char*>(data) + 1, size - 1}, certs) || certs.empty() ||
      ((sel & 16) && !resign(certs, {reinterpret_cast<const char*>(data), size}))) {
    ERR_clear_error();  // what OpenSSL queued would be kept from one input to the next
    return 0;
  }
  X509* leaf = certs.front().get();
  STACK_OF(X509)* peer = sk_X509_new_null();
  for (std::size_t i = 1; i < certs.size(); ++i)
    sk_X509_push(peer, certs[i].get());
  const tls::verify_outcome o = t.peer_verifier->verify_offline(
      t.ctx.get(), leaf, peer, at,
      {server ? &*source : nullptr, server || !ip ? "api.example.org" : ""});
  X509* fault = nullptr;
  const int err = openssl_verdict(t.ctx.get(), server, leaf, peer, fault);
  const tls::x509_ptr fault_owner(fault);
  sk_X509_free(peer);
  ERR_clear_error();

  fuzz::check(o.identity.has_value() != o.refusal.has_value(), "an identity or a refusal");
  if (o.identity) {
    check_admitted(o, leaf, server, trust, ip);
    fuzz::check(err == X509_V_OK, "mtlsd never admits what OpenSSL refuses");
    return 0;
  }
  const reason r = *o.refusal;
  fuzz::check(!o.detail.empty(), "a refusal says why");
  fuzz::check(reason_from_string(to_string(r)) == r, "a reason by its name");
  fuzz::check(r == reason::unknown_ca || r == reason::expired || r == reason::not_yet_valid ||
                  r == reason::bad_signature || r == reason::bad_key_usage ||
                  r == reason::chain_too_long || r == reason::not_authorized ||
                  r == reason::hostname_mismatch || r == reason::name_constraints ||
                  r == reason::bad_certificate,
              "a reason of path validation (no CRLs are configured)");
  fuzz::check(r != reason::hostname_mismatch || !server, "host names only in client mode");
  fuzz::check(r != reason::not_authorized || has_allow(server, trust),
              "not_authorized only with an allow list");
  // mtlsd's own rules on a leaf OpenSSL admits.
  const bool own_rule = r == reason::not_authorized || r == reason::bad_key_usage ||
                        (r == reason::unknown_ca && trust == spiffe_bundle) ||
                        (r == reason::bad_certificate && !tls_signs_with(leaf));
  if (err == X509_V_OK) {
    // Its name-constraint rules: URI SANs (of what was sent) below a CA with URI constraints
    // (sent, or the anchor), and the host name asked for against DNS constraints.
    bool uri_nc = constrains(ca.get(), GEN_URI), dns_nc = constrains(ca.get(), GEN_DNS),
         odd = false;
    for (const auto& c : certs) {
      uri_nc = uri_nc || constrains(c.get(), GEN_URI);
      dns_nc = dns_nc || constrains(c.get(), GEN_DNS);
      odd = odd || odd_uri_san(c.get());
    }
    const bool nc_rule =
        r == reason::name_constraints && ((uri_nc && odd) || (!server && !ip && dns_nc));
    fuzz::check(own_rule || nc_rule, "what OpenSSL admits is refused only by mtlsd's own rules");
    if (r == reason::bad_key_usage)
      fuzz::check(claims_ca(leaf) || trust == spiffe_bundle || !signs(leaf) ||
                      (!server && eku_without_server_auth(certs)),
                  "bad_key_usage: a CA leaf, an SVID, a keyUsage that does not sign, or a "
                  "remote's chain with an EKU without serverAuth");
  } else if (is_nc_error(err)) {
    fuzz::check(r == reason::name_constraints || (own_rule && r != reason::not_authorized),
                "a name-constraint violation is never refused as not_authorized");
  } else {
    const bool missing_issuer = err == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT ||
                                err == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY;
    const bool undecodable = fault && ((X509_get_extension_flags(fault) & EXFLAG_INVALID) ||
                                       (missing_issuer && malformed_issuer_sent(certs, fault)));
    fuzz::check(r == (undecodable ? reason::bad_certificate : tls::reason_from_x509_error(err)),
                "OpenSSL's first error decides the reason");
  }
  return 0;
}
