#include "mtlsd/proxy/xfcc.hpp"

#include <openssl/pem.h>

#include <algorithm>
#include <cstdio>

#include "mtlsd/tls/openssl.hpp"

namespace mtlsd::proxy {
namespace {

bool wants(const std::vector<std::string>& details, std::string_view d) {
  return std::find(details.begin(), details.end(), d) != details.end();
}

// SAN values are IA5Strings that OpenSSL does not police: a CR/LF in one must never split the
// header, and a ',' ';' or '"' must not forge another key or element. Plain values (every SAN
// a sane CA issues) pass through unchanged, as in Envoy; anything else is quoted, with control
// bytes percent-encoded. An '=' is quoted too (a URI's query): Envoy's format quotes values
// holding ',' ';' or '=', and a reader splitting on every '=' would misread it (review).
std::string san_value(std::string_view v) {
  const bool plain = std::all_of(v.begin(), v.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u > 0x20 && u < 0x7f && c != ',' && c != ';' && c != '=' && c != '"' && c != '\\';
  });
  if (plain) return std::string(v);
  std::string out = "\"";
  for (char c : v) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20 || u == 0x7f) {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", u);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string pem_of(X509* cert) {
  tls::bio_ptr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) return {};
  char* p = nullptr;
  long n = BIO_get_mem_data(bio.get(), &p);
  return n > 0 ? std::string(p, static_cast<std::size_t>(n)) : std::string();
}

}  // namespace

std::string url_encode_pem(std::string_view pem) {
  std::string out;
  out.reserve(pem.size() + pem.size() / 16);
  for (char c : pem) {
    switch (c) {
      case '\n':
        out += "%0A";
        break;
      case ' ':
        out += "%20";
        break;
      case '+':
        out += "%2B";
        break;
      case '/':
        out += "%2F";
        break;
      case '=':
        out += "%3D";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string format_xfcc_element(const std::vector<std::string>& details, const xfcc_fields& f) {
  std::vector<std::string> parts;
  for (const auto& by : f.by)
    parts.push_back("By=" + san_value(by));
  if (wants(details, "hash") && !f.hash.empty()) parts.push_back("Hash=" + f.hash);
  if (wants(details, "cert") && !f.cert.empty()) parts.push_back("Cert=\"" + f.cert + "\"");
  if (wants(details, "chain") && !f.chain.empty()) parts.push_back("Chain=\"" + f.chain + "\"");
  // RFC 2253 already escapes '"', '\\' and control characters with a backslash, so the subject
  // cannot end the quoted string early (Envoy relies on the same).
  if (wants(details, "subject")) parts.push_back("Subject=\"" + f.subject + "\"");
  if (wants(details, "uri")) {
    if (f.uri.empty()) parts.push_back("URI=");
    for (const auto& u : f.uri)
      parts.push_back("URI=" + san_value(u));
  }
  if (wants(details, "dns"))
    for (const auto& d : f.dns)
      parts.push_back("DNS=" + san_value(d));
  std::string out;
  for (const auto& p : parts)
    out += (out.empty() ? "" : ";") + p;
  return out;
}

xfcc_policy::action xfcc_action(config::xfcc_mode mode, bool client_cert) {
  using action = xfcc_policy::action;
  switch (mode) {
    case config::xfcc_mode::always_forward_only:
      return action::keep;
    case config::xfcc_mode::sanitize:
      return action::remove;
    case config::xfcc_mode::forward_only:
      return client_cert ? action::keep : action::remove;
    case config::xfcc_mode::append_forward:
      return client_cert ? action::append : action::remove;
    case config::xfcc_mode::sanitize_set:
      return client_cert ? action::set : action::remove;
  }
  return action::remove;
}

xfcc_policy make_xfcc_policy(const config::http_options& opts, SSL* ssl,
                             const tls::peer_identity* identity,
                             const std::vector<std::string>& own_uri_sans) {
  X509* leaf = ssl ? SSL_get0_peer_certificate(ssl) : nullptr;
  xfcc_policy p;
  p.what = xfcc_action(opts.forward_client_cert_details, leaf != nullptr && identity != nullptr);
  if (p.what != xfcc_policy::action::set && p.what != xfcc_policy::action::append) return p;

  const auto& details = opts.set_current_client_cert_details;
  xfcc_fields f;
  f.by = own_uri_sans;
  f.hash = identity->sha256;
  f.subject = identity->subject;
  f.uri = identity->uri_sans;
  f.dns = identity->dns_sans;
  if (wants(details, "cert")) f.cert = url_encode_pem(pem_of(leaf));
  if (wants(details, "chain")) {
    // The verified chain, leaf first, without its trust anchor (ours, not the client's): not
    // what the client sent, where any certificate can be added (review: a self-signed "CA"
    // appended by the client reached the upstream as part of its chain). A resumed session
    // has no verified chain here, only the leaf.
    f.chain = url_encode_pem(pem_of(leaf));
    if (STACK_OF(X509)* verified = SSL_get0_verified_chain(ssl)) {
      for (int i = 1; i + 1 < sk_X509_num(verified); ++i)
        f.chain += url_encode_pem(pem_of(sk_X509_value(verified, i)));
    }
  }
  p.element = format_xfcc_element(details, f);
  // An empty element (no details configured, no By) carries nothing: strip rather than send an
  // empty header.
  if (p.element.empty() && p.what == xfcc_policy::action::set) p.what = xfcc_policy::action::remove;
  return p;
}

std::optional<std::string> rewrite_xfcc(const xfcc_policy& policy,
                                        const std::vector<std::string_view>& existing) {
  using action = xfcc_policy::action;
  switch (policy.what) {
    case action::keep:
    case action::remove:
      return std::nullopt;
    case action::set:
      return policy.element;
    case action::append: {
      // Several header lines are one comma-separated list (RFC 9110 5.3).
      std::string out;
      for (auto v : existing) {
        if (v.empty()) continue;
        out += (out.empty() ? "" : ",");
        out.append(v);
      }
      if (policy.element.empty()) return out.empty() ? std::nullopt : std::optional(out);
      out += (out.empty() ? "" : ",") + policy.element;
      return out;
    }
  }
  return std::nullopt;
}

}  // namespace mtlsd::proxy
