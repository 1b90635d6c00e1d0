// X-Forwarded-Client-Cert encoding. A certificate with arbitrary subject attributes and SANs
// (any bytes: quotes, commas, semicolons, CR/LF, invalid UTF-8) is built and signed with the
// fixture CA key, read back with extract_identity as a connection would, and formatted into an
// element. Properties: the value is a legal header value (no CR, LF, NUL or other controls
// but tab), it parses back (Envoy's grammar) into exactly one element with the configured keys
// in Envoy's order, and the URI/DNS/By values come back as they were (control bytes
// percent-encoded). Subject= is the certificate's subject in RFC 2253 form (as xfcc.cpp writes
// it), quoted whole: the quoted string holds exactly that text (no '"' ends it early, nothing
// after it joins it), and a reader decoding it as RFC 2253 (`\X` and `\HH` escapes; ',' '+' '"'
// '\' '<' '>' ';' never bare) gets the certificate's attributes back, last RDN first. Also
// url_encode_pem and rewrite_xfcc on arbitrary values.
#include <fuzzer/FuzzedDataProvider.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fuzz_support.hpp"
#include "mtlsd/proxy/xfcc.hpp"
#include "mtlsd/tls/identity.hpp"

using namespace mtlsd;

namespace {

tls::evp_pkey_ptr ca_key;

// Envoy's XFCC grammar: elements split on ',' and pairs on ';' outside double quotes, '\'
// escapes inside them. Returns the elements as lists of (key, unquoted value); `raw`, when given,
// gets each pair's value as written (quotes and escapes included), for every element in turn.
using pairs = std::vector<std::pair<std::string, std::string>>;
std::vector<pairs> parse_xfcc(std::string_view v, std::vector<std::string>* raw = nullptr) {
  std::vector<pairs> out(1);
  std::string key, value;
  bool in_key = true, quoted = false, was_quoted = false;
  std::size_t value_at = 0;  // where the current pair's value starts, once its '=' was read
  const auto end_pair = [&](std::size_t at) {
    out.back().emplace_back(key, value);
    if (raw) raw->emplace_back(in_key ? std::string_view() : v.substr(value_at, at - value_at));
    key.clear();
    value.clear();
    in_key = true;
    was_quoted = false;
  };
  for (std::size_t i = 0; i < v.size(); ++i) {
    const char c = v[i];
    if (quoted) {
      if (c == '\\' && i + 1 < v.size()) {
        value += v[++i];
      } else if (c == '"') {
        quoted = false;
      } else {
        value += c;
      }
    } else if (c == '"' && !in_key && value.empty() && !was_quoted) {
      quoted = was_quoted = true;
    } else if (c == ';') {
      end_pair(i);
    } else if (c == ',') {
      end_pair(i);
      out.emplace_back();
    } else if (c == '=' && in_key) {
      in_key = false;
      value_at = i + 1;
    } else {
      (in_key ? key : value) += c;
    }
  }
  fuzz::check(!quoted, "every quoted value is closed");
  end_pair(v.size());
  return out;
}

// A quoted string's content as the grammar above reads it: each '\' takes the byte after it.
std::string unquoted(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i)
    out += s[i] == '\\' && i + 1 < s.size() ? s[++i] : s[i];
  return out;
}

// A distinguished name as (attribute type, value) pairs, the values as bytes.
using rdn_list = std::vector<std::pair<std::string, std::string>>;

// An RFC 2253 name as a reader decodes it: RDNs split on ',' (each of these certificates' RDNs
// has one attribute: no '+'), "type=value", '\' followed by two hex digits a byte, by anything
// else that character. nullopt: not that form (a special character left bare).
std::optional<rdn_list> decode_rfc2253(std::string_view name) {
  rdn_list out;
  if (name.empty()) return out;
  std::string type, value;
  bool in_type = true;
  const auto hex = [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; };
  for (std::size_t i = 0; i <= name.size(); ++i) {
    if (i == name.size() || name[i] == ',') {
      if (in_type || type.empty()) return std::nullopt;
      out.emplace_back(std::move(type), std::move(value));
      type.clear();
      value.clear();
      in_type = true;
      continue;
    }
    const char c = name[i];
    if (in_type) {
      if (c == '=')
        in_type = false;
      else
        type += c;
    } else if (c == '\\') {
      if (i + 1 == name.size()) return std::nullopt;
      if (i + 2 < name.size() && hex(name[i + 1]) && hex(name[i + 2])) {
        value += static_cast<char>(std::stoi(std::string(name.substr(i + 1, 2)), nullptr, 16));
        i += 2;
      } else {
        value += name[++i];
      }
    } else if (std::string_view("+\"<>;").find(c) != std::string_view::npos) {
      return std::nullopt;
    } else {
      value += c;
    }
  }
  return out;
}

// The certificate's subject, last RDN first as RFC 2253 writes it, each value under its short
// name: a UTF8String's bytes as they are (the subject is written with ASN1_STRFLGS_ESC_MSB off:
// bytes past 0x7f pass as they are, valid UTF-8 or not), another string type in UTF-8. nullopt
// when one has no UTF-8 form.
std::optional<rdn_list> subject_rdns(X509* cert) {
  const X509_NAME* name = X509_get_subject_name(cert);
  rdn_list out;
  for (int i = X509_NAME_entry_count(name) - 1; i >= 0; --i) {
    const X509_NAME_ENTRY* e = X509_NAME_get_entry(name, i);
    const ASN1_STRING* data = X509_NAME_ENTRY_get_data(e);
    std::string value;
    if (ASN1_STRING_type(data) == V_ASN1_UTF8STRING) {
      value.assign(reinterpret_cast<const char*>(ASN1_STRING_get0_data(data)),
                   static_cast<std::size_t>(ASN1_STRING_length(data)));
    } else {
      unsigned char* utf8 = nullptr;
      const int n = ASN1_STRING_to_UTF8(&utf8, data);
      if (n < 0) return std::nullopt;
      value.assign(reinterpret_cast<const char*>(utf8), static_cast<std::size_t>(n));
      OPENSSL_free(utf8);
    }
    out.emplace_back(OBJ_nid2sn(OBJ_obj2nid(X509_NAME_ENTRY_get_object(e))), std::move(value));
  }
  return out;
}

// What a SAN value looks like after san_value(): control bytes percent-encoded.
std::string expected_san(std::string_view s) {
  std::string out;
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      static constexpr char hex[] = "0123456789ABCDEF";
      out += '%';
      out += hex[u >> 4];
      out += hex[u & 0xf];
    } else {
      out += c;
    }
  }
  return out;
}

void add_name_entry(X509_NAME* name, int nid, const std::string& value, bool raw_utf8) {
  if (raw_utf8) {  // bytes as they are, invalid UTF-8 included
    X509_NAME_ENTRY* e = X509_NAME_ENTRY_create_by_NID(
        nullptr, nid, V_ASN1_UTF8STRING, reinterpret_cast<const unsigned char*>(value.data()),
        static_cast<int>(value.size()));
    if (e) X509_NAME_add_entry(name, e, -1, 0);
    X509_NAME_ENTRY_free(e);
  } else {
    X509_NAME_add_entry_by_NID(name, nid, MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>(value.data()),
                               static_cast<int>(value.size()), -1, 0);
  }
}

void add_san(GENERAL_NAMES* names, int type, const std::string& value) {
  ASN1_IA5STRING* s = ASN1_IA5STRING_new();
  ASN1_STRING_set(s, value.data(), static_cast<int>(value.size()));
  GENERAL_NAME* gn = GENERAL_NAME_new();
  GENERAL_NAME_set0_value(gn, type, s);
  sk_GENERAL_NAME_push(names, gn);
}

tls::x509_ptr make_cert(FuzzedDataProvider& in) {
  tls::x509_ptr cert(X509_new());
  X509_set_version(cert.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 7);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), 0);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 3600);
  X509_NAME* subject = X509_get_subject_name(cert.get());
  static constexpr int nids[] = {NID_commonName, NID_organizationName, NID_organizationalUnitName,
                                 NID_countryName, NID_pkcs9_emailAddress};
  for (int n = in.ConsumeIntegralInRange(0, 4); n > 0; --n)
    add_name_entry(subject, in.PickValueInArray(nids), in.ConsumeRandomLengthString(80),
                   in.ConsumeBool());
  X509_set_issuer_name(cert.get(), subject);
  GENERAL_NAMES* names = sk_GENERAL_NAME_new_null();
  for (int n = in.ConsumeIntegralInRange(0, 4); n > 0; --n)
    add_san(names, in.ConsumeBool() ? GEN_URI : GEN_DNS, in.ConsumeRandomLengthString(80));
  if (sk_GENERAL_NAME_num(names) > 0)
    X509_add1_ext_i2d(cert.get(), NID_subject_alt_name, names, 0, 0);
  GENERAL_NAMES_free(names);
  X509_set_pubkey(cert.get(), ca_key.get());
  if (X509_sign(cert.get(), ca_key.get(), EVP_sha256()) == 0) return nullptr;
  return cert;
}

void element_part(FuzzedDataProvider& in) {
  static const std::string all[] = {"uri", "dns", "subject", "hash", "cert", "chain"};
  std::vector<std::string> details;
  for (const auto& d : all)
    if (in.ConsumeBool()) details.push_back(d);
  std::vector<std::string> own;
  for (int n = in.ConsumeIntegralInRange(0, 2); n > 0; --n)
    own.push_back(in.ConsumeRandomLengthString(40));
  const auto cert = make_cert(in);
  if (!cert) return;
  const auto id = tls::extract_identity(cert.get());

  // As make_xfcc_policy fills them.
  proxy::xfcc_fields f;
  f.by = own;
  f.hash = id.sha256;
  f.subject = id.subject;
  f.uri = id.uri_sans;
  f.dns = id.dns_sans;
  {
    tls::bio_ptr bio(BIO_new(BIO_s_mem()));
    PEM_write_bio_X509(bio.get(), cert.get());
    char* p = nullptr;
    const long n = BIO_get_mem_data(bio.get(), &p);
    f.cert = proxy::url_encode_pem(std::string(p, static_cast<std::size_t>(n)));
    f.chain = f.cert + f.cert;
  }
  const std::string element = proxy::format_xfcc_element(details, f);
  for (const char c : element) {
    const auto u = static_cast<unsigned char>(c);
    fuzz::check(!(u < 0x20 && c != '\t') && u != 0x7f, "no control byte in the header value");
  }
  if (element.empty()) return;
  std::vector<std::string> raw;
  const auto parsed = parse_xfcc(element, &raw);
  fuzz::check(parsed.size() == 1, "one element: no ',' escapes its quotes");

  // The keys, in Envoy's order.
  const auto wants = [&](std::string_view d) {
    return std::find(details.begin(), details.end(), d) != details.end();
  };
  pairs expected;
  for (const auto& b : own)
    expected.emplace_back("By", expected_san(b));
  if (wants("hash") && !f.hash.empty()) expected.emplace_back("Hash", f.hash);
  if (wants("cert")) expected.emplace_back("Cert", f.cert);
  if (wants("chain")) expected.emplace_back("Chain", f.chain);
  if (wants("subject")) expected.emplace_back("Subject", unquoted(f.subject));
  if (wants("uri")) {
    if (f.uri.empty()) expected.emplace_back("URI", "");
    for (const auto& u : f.uri)
      expected.emplace_back("URI", expected_san(u));
  }
  if (wants("dns"))
    for (const auto& d : f.dns)
      expected.emplace_back("DNS", expected_san(d));
  const pairs& got = parsed.front();
  fuzz::check(got.size() == expected.size(), "as many pairs as configured details");
  for (std::size_t i = 0; i < got.size(); ++i) {
    fuzz::check(got[i].first == expected[i].first, "keys in Envoy's order, none forged");
    fuzz::check(got[i].second == expected[i].second, "values come back unchanged");
    if (got[i].first != "Subject") continue;
    // RFC 2253 escapes with '\' too, so the grammar's unquoting is not the subject: a reader
    // takes the quoted text as it is and decodes it as RFC 2253.
    fuzz::check(raw[i] == '"' + id.subject + '"', "Subject: the RFC 2253 subject, quoted whole");
    const auto rdns = decode_rfc2253(id.subject);
    fuzz::check(rdns.has_value(), "the Subject reads as RFC 2253, every special escaped");
    if (const auto want = subject_rdns(cert.get()))
      fuzz::check(rdns == want, "the Subject decodes to the certificate's attributes");
  }
}

void encode_part(FuzzedDataProvider& in) {
  const std::string pem = in.ConsumeRandomLengthString(4096);
  const std::string enc = proxy::url_encode_pem(pem);
  fuzz::check(enc.find_first_of("\n +/=") == std::string::npos, "nothing left to encode");
  if (pem.find('%') == std::string::npos) {
    std::string dec;
    for (std::size_t i = 0; i < enc.size(); ++i) {
      if (enc[i] == '%') {
        dec += static_cast<char>(std::stoi(enc.substr(i + 1, 2), nullptr, 16));
        i += 2;
      } else {
        dec += enc[i];
      }
    }
    fuzz::check(dec == pem, "url_encode_pem is reversible");
  }

  proxy::xfcc_policy policy;
  policy.what = static_cast<proxy::xfcc_policy::action>(in.ConsumeIntegralInRange(0, 3));
  policy.element = in.ConsumeRandomLengthString(64);
  std::vector<std::string> values;
  for (int n = in.ConsumeIntegralInRange(0, 3); n > 0; --n)
    values.push_back(in.ConsumeRandomLengthString(64));
  const std::vector<std::string_view> existing(values.begin(), values.end());
  const auto out = proxy::rewrite_xfcc(policy, existing);
  using action = proxy::xfcc_policy::action;
  if (policy.what == action::keep || policy.what == action::remove)
    fuzz::check(!out, "keep and remove write no header");
  if (policy.what == action::set) fuzz::check(out == policy.element, "set replaces");
  if (policy.what == action::append && out && !policy.element.empty())
    fuzz::check(out->size() >= policy.element.size() &&
                    out->compare(out->size() - policy.element.size(), std::string::npos,
                                 policy.element) == 0,
                "append puts our element last");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  const std::string pem = fuzz::fixture("ca.key");
  tls::bio_ptr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  ca_key.reset(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  fuzz::check(ca_key != nullptr, "fixtures/ca.key loads");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  if (in.ConsumeBool())
    element_part(in);
  else
    encode_part(in);
  return 0;
}
