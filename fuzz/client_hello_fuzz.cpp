// The server's ClientHello handling on ClientHellos a peer controls: tls/client_hello.cpp
// (client_sni, client_alpn_offer, normalize_server_name, record_client_sni) and the
// certificate_selector (tls/certificate_selection.cpp) OpenSSL's client hello callback runs.
// Four listeners from build_context, once: tls.certificates (defaults in ECDSA and RSA,
// API.Example.org in ECDSA and RSA, *.apps.example.org, Www.Example.COM + *.example.net +
// example.net), alpn [h2, http/1.1]; 0 all, 1 all + strict_sni, 2 no default, *.apps first, 3 no
// default, api first, strict_sni. 8 kinds of ClientHello, from an OpenSSL client once: TLS 1.3,
// 1.2, 1.2-1.3, 1.3 with a P-521 key share (HelloRetryRequest; the second ClientHello kept too),
// RSA-only sigalgs in 1.3 and 1.2, TLS 1.0-1.1, 1.2-1.3 with HRR and RSA only.
// Input: byte 0: bits 0-1 listener, 2-4 kind, 5 patch the second ClientHello (HRR), 6 the second
// sends no SNI, 7 SNI last. Byte 1: bits 0-1 SNI: none / field 1 as host_name / as the body / a
// name_type 1 entry first; 2-3 ALPN: none / field 2 split at '\n' / as the body / as one
// protocol; 4-7 the number of patches. Fields 1 and 2 (2-byte length, bytes); patches: a 2-byte
// offset into the extensions, a byte XORed there (0: deleted). Outer lengths are fixed after.
// Properties: normalize_server_name lower-cases, shows non-host bytes as '?', drops the final
// dots, is idempotent; in a client hello callback client_sni is that of the
// host_name sent ("" for none) and client_alpn_offer, free of control bytes, the protocols joined
// by ',' (',' inside one shown as '?'); select() agrees with a model (exact, else `*.suffix` over
// one label, else the defaults); the outcome holds client_sni's name; a ClientHello after an HRR
// naming another server fails with illegal_parameter and protocol_error (found here: one falling
// to the default entries kept the first's certificates);
// strict_sni fails a name no entry covers with unrecognized_name and protocol_error, never a
// named or absent one (OpenSSL's own checks aside: over 255 bytes, NUL); the certificate sent is
// a selected entry's and SSL_get_certificate's; the SSL holds exactly the selected entries'.
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fuzz_support.hpp"
#include "mtlsd/config/load.hpp"
#include "mtlsd/tls/client_hello.hpp"
#include "mtlsd/tls/context.hpp"
#include "mtlsd/tls/verify.hpp"
#include "test_pki.hpp"

using namespace mtlsd;

namespace {

struct entry_spec {
  const char *cn, *key_type;
  std::vector<std::string> names;  // as configured (the loader lower-cases them)
};
const std::vector<entry_spec> specs = {
    {"default-ec", "", {}},
    {"default-rsa", "RSA-2048", {}},
    {"api-ec", "", {"API.Example.org"}},
    {"api-rsa", "RSA-2048", {"api.example.org"}},
    {"apps", "", {"*.apps.example.org"}},
    {"misc", "", {"Www.Example.COM", "*.example.net", "example.net"}}};
struct listener {  // tls.certificates[i] is specs[entries[i]]; defaults: those without names,
  std::vector<std::size_t> entries, defaults;  // else those serving the first entry's first
  bool strict = false;
  tls::tls_context* tls = nullptr;  // never freed, like tls_stream_fuzz's
};
std::array<listener, 4> listeners = {{{{0, 1, 2, 3, 4, 5}, {0, 1}, false, nullptr},
                                      {{0, 1, 2, 3, 4, 5}, {0, 1}, true, nullptr},
                                      {{4, 2, 3, 5}, {0}, false, nullptr},
                                      {{2, 4, 5, 3}, {0, 3}, true, nullptr}}};
struct kind {  // a ClientHello record up to its extensions and those but server_name and ALPN
  std::string head[2], exts[2], ccs;  // [1]: the second, after HRR, and `ccs` sent before it
  bool hrr = false;
};
std::array<kind, 8> kinds;
SSL_CTX* observer = nullptr;  // its client hello callback runs client_sni and client_alpn_offer

const auto u8 = [](std::string_view s, std::size_t i) -> std::size_t { return s[i] & 0xff; };
const auto u16 = [](std::string_view s, std::size_t i) { return (u8(s, i) << 8) | u8(s, i + 1); };
const auto put16 = [](std::string& o, std::size_t v) { o += {char(v >> 8), char(v & 0xff)}; };
X509* cert_of(const listener& l, std::size_t i) {
  return l.tls->selector->certificates()[i].chain.front().get();
}
SSL* new_ssl(SSL_CTX* ctx, bool server) {
  SSL* s = SSL_new(ctx);
  SSL_set_bio(s, BIO_new(BIO_s_mem()), BIO_new(BIO_s_mem()));
  server ? SSL_set_accept_state(s) : SSL_set_connect_state(s);
  return s;
}
// Gives `s` the bytes `in` and runs its handshake until it wants more or fails: what it wrote.
std::string run(SSL* s, const std::string& in, bool* failed = nullptr) {
  BIO_write(SSL_get_rbio(s), in.data(), static_cast<int>(in.size()));
  const int r = SSL_do_handshake(s);
  if (failed) *failed = r <= 0 && SSL_get_error(s, r) != SSL_ERROR_WANT_READ;
  std::string out(static_cast<std::size_t>(BIO_pending(SSL_get_wbio(s))), '\0');
  if (!out.empty()) BIO_read(SSL_get_wbio(s), out.data(), static_cast<int>(out.size()));
  return out;
}
char host_char(unsigned char u) {
  if (u >= 'A' && u <= 'Z') return static_cast<char>(u - 'A' + 'a');
  const bool ok = std::islower(u) || std::isdigit(u) || u == '.' || u == '-' || u == '_';
  return ok ? static_cast<char>(u) : '?';
}
void check_sni_shape(const std::string& n) {
  for (const char c : n)
    fuzz::check(host_char(c & 0xff) == c, "a server name holds only [a-z0-9._-?]");
  fuzz::check(n.empty() || n.back() != '.', "a server name does not end in '.'");
  fuzz::check(tls::normalize_server_name(n) == n, "normalize_server_name is idempotent");
}
std::vector<std::size_t> model_select(const listener& l, std::string_view sni, bool& named) {
  std::vector<std::size_t> exact, wild;
  for (std::size_t i = 0; i < l.entries.size() && !sni.empty(); ++i)
    for (const auto& n : specs[l.entries[i]].names) {
      const bool w = n.rfind("*.", 0) == 0;  // covers a name ending in ".suffix", one more label
      const std::string_view rest = sni.substr(0, sni.size() - std::min(sni.size(), n.size() - 1));
      const std::string name = tls::normalize_server_name(n);  // lower case ('*' shown as '?')
      if (w ? rest.empty() || rest.find('.') != rest.npos ||
                  sni.substr(rest.size()) != name.substr(1)
            : name != sni)
        continue;
      auto& v = w ? wild : exact;
      if (v.empty() || v.back() != i) v.push_back(i);
    }
  named = true;
  if (!exact.empty() || !wild.empty()) return exact.empty() ? wild : exact;
  named = sni.empty();
  return l.defaults;
}
void check_select(const listener& l, const std::string& sni) {
  bool named = false, model_named = false;
  const auto& got = l.tls->selector->select(sni, named);
  fuzz::check(got == model_select(l, sni, model_named) && named == model_named,
              "select() picks the exact name, else a *.suffix over one label, else the defaults");
}

// What client_sni and client_alpn_offer must make of a ClientHello (nullopt: not known here,
// after patches or for raw extension bodies), and whether OpenSSL may send unrecognized_name.
struct expected {
  std::optional<std::string> sni, alpn;
  bool openssl_refuses_name = true;
} seen;  // also what the observer's callback saw (sni set when it ran)
int observe(SSL* ssl, int* alert, void*) {
  seen = {tls::client_sni(ssl), tls::client_alpn_offer(ssl)};
  *alert = SSL_AD_HANDSHAKE_FAILURE;
  return SSL_CLIENT_HELLO_ERROR;  // nothing else to do
}
// --- The listener's SSL: what it wrote while reading one ClientHello.
struct written {
  std::vector<int> alerts;
  tls::x509_ptr cert;  // the leaf of its Certificate message
} wrote;
void on_message(int write_p, int, int type, const void* buf, std::size_t len, SSL* ssl, void*) {
  std::string_view m(static_cast<const char*>(buf), len);
  if (write_p && type == SSL3_RT_ALERT && len == 2) wrote.alerts.push_back(m[1] & 0xff);
  if (!write_p || type != SSL3_RT_HANDSHAKE || len < 4 || m[0] != SSL3_MT_CERTIFICATE) return;
  m.remove_prefix(4);
  if (SSL_version(ssl) == TLS1_3_VERSION && !m.empty())  // certificate_request_context
    m.remove_prefix(std::min(m.size(), 1 + u8(m, 0)));
  const auto* der = reinterpret_cast<const unsigned char*>(m.data() + 6);
  if (m.size() >= 6) wrote.cert.reset(d2i_X509(nullptr, &der, static_cast<long>(m.size() - 6)));
}
// One ClientHello (and what precedes it) into the listener's SSL; `chosen`: the name the
// callback chose certificates for. False once the handshake failed.
bool serve(const listener& l, SSL* s, tls::verify_outcome& vo, const std::string& wire,
           const expected& e, std::optional<std::string>& chosen) {
  wrote = {};
  const unsigned hellos_before = vo.client_hellos;
  bool failed = false, named = false;
  run(s, wire, &failed);
  if (vo.client_hellos == hellos_before) {
    fuzz::check(!wrote.cert, "no certificate is sent without the ClientHello callback");
    return !failed;
  }
  // The one after a HelloRetryRequest must name the server the first named (RFC 8446 4.1.2):
  // found by this target, a second falling to the default entries kept the first's
  // certificates on the SSL.
  if (chosen && vo.refusal && vo.detail.find("after HelloRetryRequest") != std::string::npos) {
    fuzz::check(!e.sni || *e.sni != *chosen, "only another server name refuses a second hello");
    fuzz::check(
        failed && !wrote.cert &&
            std::count(wrote.alerts.begin(), wrote.alerts.end(), SSL_AD_ILLEGAL_PARAMETER) > 0,
        "a second hello naming another server fails with illegal_parameter");
    return false;
  }
  if (chosen && e.sni)
    fuzz::check(*e.sni == *chosen, "a second hello naming another server is refused");
  check_sni_shape(vo.sni);
  if (e.sni) fuzz::check(vo.sni == *e.sni, "the outcome holds the normalized host_name sent");
  check_select(l, vo.sni);
  const auto entries = model_select(l, vo.sni, named);
  const bool unrecognized =
      std::count(wrote.alerts.begin(), wrote.alerts.end(), SSL_AD_UNRECOGNIZED_NAME) > 0;
  if (l.strict && !named) {
    fuzz::check(vo.refusal == reason::protocol_error && vo.detail.rfind("strict_sni", 0) == 0,
                "strict_sni: a name no entry covers is refused as protocol_error");
    fuzz::check(failed && unrecognized && !wrote.cert,
                "strict_sni: a name no entry covers fails with unrecognized_name");
    return false;
  }
  fuzz::check(!vo.refusal, "a named or absent SNI is not refused");
  fuzz::check(!unrecognized || e.openssl_refuses_name,
              "a named or absent SNI gets unrecognized_name only from OpenSSL's own checks");
  if (wrote.cert) {
    fuzz::check(
        std::any_of(entries.begin(), entries.end(),
                    [&](std::size_t i) { return !X509_cmp(cert_of(l, i), wrote.cert.get()); }),
        "the certificate sent is one of the selected entries'");
    fuzz::check(!X509_cmp(SSL_get_certificate(s), wrote.cert.get()),
                "SSL_get_certificate is the certificate sent");
  }
  chosen = vo.sni;
  return !failed;
}
// --- ClientHellos: an OpenSSL client's taken apart (the fuzzer's are put together below).
void take_apart(std::string_view wire, std::string& head, std::string& exts, std::string& ccs) {
  for (; wire.size() >= 5 && wire[0] != SSL3_RT_HANDSHAKE; wire.remove_prefix(5 + u16(wire, 3)))
    ccs += wire.substr(0, 5 + u16(wire, 3));  // the change_cipher_spec before a second
  // One record, one ClientHello: after random, session id, cipher suites, compression methods.
  std::size_t p = 9 + 34 + 1 + u8(wire, 9 + 34);
  p += 2 + u16(wire, p);
  p += 1 + u8(wire, p);
  fuzz::check(wire.size() == p + 2 + u16(wire, p), "the client wrote one ClientHello record");
  head = wire.substr(0, p);
  for (std::string_view e = wire.substr(p + 2); e.size() >= 4; e.remove_prefix(4 + u16(e, 2)))
    if (u16(e, 0) != 0 && u16(e, 0) != 16) exts += e.substr(0, 4 + u16(e, 2));
}
void make_hellos() {
  const struct {
    int min, max;
    const char *groups, *sigalgs, *ciphers;  // ciphers: TLS 1.2 and below
  } variants[8] = {
      {TLS1_3_VERSION, TLS1_3_VERSION, nullptr, nullptr, nullptr},
      {TLS1_2_VERSION, TLS1_2_VERSION, nullptr, nullptr, nullptr},
      {TLS1_2_VERSION, TLS1_3_VERSION, nullptr, nullptr, nullptr},
      {TLS1_3_VERSION, TLS1_3_VERSION, "P-521:X25519", nullptr, nullptr},
      {TLS1_3_VERSION, TLS1_3_VERSION, nullptr, "rsa_pss_rsae_sha256:rsa_pss_rsae_sha384", nullptr},
      {TLS1_2_VERSION, TLS1_2_VERSION, nullptr, "RSA+SHA256", "ECDHE-RSA-AES128-GCM-SHA256"},
      {TLS1_VERSION, TLS1_1_VERSION, nullptr, nullptr, "DEFAULT:@SECLEVEL=0"},
      {TLS1_2_VERSION, TLS1_3_VERSION, "P-521:X25519", "rsa_pss_rsae_sha256", nullptr},
  };
  for (std::size_t i = 0; i < kinds.size(); ++i) {
    const auto& v = variants[i];
    kind& k = kinds[i];
    const tls::ssl_ctx_ptr ctx(SSL_CTX_new(TLS_client_method()));
    SSL_CTX* c = ctx.get();
    SSL_CTX_set_security_level(c, v.min < TLS1_2_VERSION ? 0 : 2);
    SSL_CTX_set_min_proto_version(c, v.min);
    SSL_CTX_set_max_proto_version(c, v.max);
    if (v.groups) SSL_CTX_set1_groups_list(c, v.groups);
    if (v.sigalgs) SSL_CTX_set1_sigalgs_list(c, v.sigalgs);
    if (v.ciphers) SSL_CTX_set_cipher_list(c, v.ciphers);
    const tls::ssl_ptr client(new_ssl(c, false));
    const std::string first = run(client.get(), "");
    take_apart(first, k.head[0], k.exts[0], k.ccs);
    if ((k.hrr = v.groups != nullptr)) {  // the listeners lack P-521: an HRR for X25519
      const tls::ssl_ptr server(new_ssl(listeners[0].tls->ctx.get(), true));
      take_apart(run(client.get(), run(server.get(), first)), k.head[1], k.exts[1], k.ccs);
    }
  }
  ERR_clear_error();
}
void make_listeners() {
  test::pki_dir dir;  // build_context reads the files; they are not needed afterwards
  const auto root = test::make_root_ca({.cn = "Fuzz SNI Root"});
  std::vector<std::string> yaml_entries;
  for (const auto& s : specs) {
    const auto f = dir.write_pair(s.cn, test::make_leaf(root, {.cn = s.cn,
                                                               .dns_sans = {"localhost"},
                                                               .usage = test::key_usage::server,
                                                               .key_type = s.key_type}));
    std::string names;
    for (const auto& n : s.names)
      names += (names.empty() ? "\"" : ", \"") + n + "\"";
    yaml_entries.push_back("{cert: " + f.cert + ", key: " + f.key + ", server_names: [" + names +
                           "]}");
  }
  const std::string listener_yaml =
      "listeners:\n  - {name: fuzz, listen: 127.0.0.1:1, upstream: "
      "127.0.0.1:2, client_auth: {mode: require, ca: [" +
      fuzz::fixture_path("ca.crt") + "]}, tls: {alpn: [h2, http/1.1]";
  for (auto& l : listeners) {
    std::string yaml =
        listener_yaml + ", strict_sni: " + (l.strict ? "true" : "false") + ", certificates: [";
    for (const auto e : l.entries)
      yaml += yaml_entries[e] + (e == l.entries.back() ? "" : ", ");
    auto loaded = config::load_text(yaml + "]}}\n", "/fuzz/client_hello.yaml");
    fuzz::check(loaded.config.has_value(), "the client_hello fuzz configuration loads");
    l.tls = new tls::tls_context(tls::build_context(loaded.config->listeners.front()));
  }
}
std::string take(std::string_view& in) {  // at most 7000 bytes: a ClientHello fits one record
  if (in.size() < 2) return std::string(std::exchange(in, {}));
  const std::size_t n = std::min(u16(in, 0), in.size() - 2);
  std::string out(in.substr(2, std::min<std::size_t>(n, 7000)));
  in.remove_prefix(2 + n);
  return out;
}
// Extension `type` (0 server_name, 16 ALPN) made of `field` as `mode` says (see the top), and
// what client_sni or client_alpn_offer must make of it (`expect`).
std::string extension(unsigned type, unsigned mode, const std::string& field,
                      std::optional<std::string>& expect) {
  expect = mode == 2 ? std::nullopt : std::optional<std::string>("");
  if (mode == 0) return "";
  std::string list = std::string("\0\0\1\0\1x", mode == 3 && type == 0 ? 6 : 2);
  if (mode == 2) list = field;
  if (type == 0 && mode != 2) {
    put16(list += '\0', field.size());
    list += field;
    expect = tls::normalize_server_name(field);
  }
  for (std::size_t at = 0; type == 16 && mode != 2 && at <= field.size();) {
    const std::size_t end = mode == 3 ? field.size() : std::min(field.find('\n', at), field.size());
    const std::string p = field.substr(at, std::min<std::size_t>(end - at, 255));
    if (!p.empty()) list += static_cast<char>(p.size()) + p;
    for (std::size_t i = 0; i < p.size(); ++i)  // as client_alpn_offer shows it
      *expect += std::string(i == 0 && !expect->empty() ? "," : "") +
                 ((p[i] & 0xff) < 0x20 || (p[i] & 0xff) >= 0x7f || p[i] == ',' ? '?' : p[i]);
    at = end + 1;
  }
  if (mode != 2) list[0] = char((list.size() - 2) >> 8), list[1] = char((list.size() - 2) & 0xff);
  std::string out{'\0', static_cast<char>(type)};
  put16(out, list.size());
  return out + list;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  make_listeners();
  make_hellos();
  observer = SSL_CTX_new(TLS_server_method());
  SSL_CTX_set_client_hello_cb(observer, observe, nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const unsigned a = data[0], b = data[1];
  std::string_view rest(reinterpret_cast<const char*>(data) + 2, size - 2);
  const std::string sni_field = take(rest), alpn_field = take(rest);
  const listener& l = listeners[a & 3];
  const kind& k = kinds[(a >> 2) & 7];
  const std::string name = tls::normalize_server_name(sni_field);
  for (std::size_t i = 0; i < sni_field.size(); ++i)
    fuzz::check(i < name.size() ? name[i] == host_char(sni_field[i] & 0xff) : sni_field[i] == '.',
                "normalize_server_name maps each byte and drops the final dots");
  check_sni_shape(name);
  check_select(l, name);
  std::array<expected, 2> e;
  const std::string sni = extension(0, b & 3, sni_field, e[0].sni);
  const std::string alpn = extension(16, (b >> 2) & 3, alpn_field, e[0].alpn);
  e[0].openssl_refuses_name =
      (b & 3) != 1 || sni_field.size() > 255 || sni_field.find('\0') != std::string::npos;
  e[1] = a & 0x40 ? expected{"", e[0].alpn, false} : e[0];
  const auto put = [&](const std::string& base, const std::string& n) {
    return a & 0x80 ? base + alpn + n : n + base + alpn;
  };
  std::string exts[2] = {put(k.exts[0], sni), put(k.exts[1], a & 0x40 ? "" : sni)};
  const int patched = (a & 0x20) && k.hrr ? 1 : 0;
  for (unsigned n = b >> 4; n > 0 && rest.size() >= 3 && !exts[patched].empty(); --n) {
    std::string& x = exts[patched];
    const std::size_t at = u16(rest, 0) % x.size();
    rest[2] != 0 ? void(x[at] = static_cast<char>(x[at] ^ rest[2])) : void(x.erase(at, 1));
    rest.remove_prefix(3);
    e[patched] = {std::nullopt, std::nullopt, true};
  }
  SSL* s = new_ssl(l.tls->ctx.get(), true);
  tls::verify_outcome vo;
  tls::verifier::bind(s, &vo);
  SSL_set_msg_callback(s, on_message);
  std::optional<std::string> chosen;
  for (int i = 0; i < (k.hrr ? 2 : 1); ++i) {
    std::string wire = k.head[i];
    const std::size_t body = wire.size() - 9 + 2 + exts[i].size();  // exts: under 16000 bytes
    wire[3] = char((body + 4) >> 8), wire[4] = char((body + 4) & 0xff);
    wire[7] = char(body >> 8), wire[8] = char(body & 0xff);
    put16(wire, exts[i].size());
    seen = {};
    run(tls::ssl_ptr(new_ssl(observer, true)).get(), wire += exts[i]);
    if (seen.sni) {
      check_sni_shape(*seen.sni);
      fuzz::check(!e[i].sni || seen.sni == e[i].sni, "client_sni is the normalized host_name sent");
      for (const unsigned char c : *seen.alpn)
        fuzz::check(c >= 0x20 && c < 0x7f, "client_alpn_offer holds no control byte");
      fuzz::check(!e[i].alpn || seen.alpn == e[i].alpn, "client_alpn_offer joins the protocols");
    }
    if (!serve(l, s, vo, (i ? k.ccs : "") + wire, e[i], chosen)) break;
  }
  if (chosen) {  // the SSL holds exactly the certificates of the entries chosen
    bool named = false;
    std::vector<X509*> want, have;
    for (const auto i : model_select(l, *chosen, named))
      want.push_back(cert_of(l, i));
    for (long op = SSL_CERT_SET_FIRST; SSL_set_current_cert(s, op) == 1; op = SSL_CERT_SET_NEXT)
      have.push_back(SSL_get_certificate(s));
    fuzz::check(std::is_permutation(want.begin(), want.end(), have.begin(), have.end()),
                "the SSL holds exactly the selected entries' certificates");
  }
  SSL_free(s);
  ERR_clear_error();
  return 0;
}
