#pragma once
// X-Forwarded-Client-Cert, exactly as Envoy writes it (source/common/http/conn_manager_utility.cc
// and the Ssl::ConnectionInfo accessors it calls), so applications written against Envoy or
// Istio read mtlsd's header unchanged:
//
//   By=<our URI SAN>;Hash=<sha256 hex>;Cert="<url-encoded PEM>";Chain="<url-encoded PEMs>";
//   Subject="<RFC 2253 subject>";URI=<uri SAN>;DNS=<dns SAN>
//
// one By= per URI SAN of our own certificate, one URI=/DNS= per SAN of the client's; elements
// of successive hops are joined with ','. Which request header a connection produces is decided
// once per connection (the client certificate cannot change mid-connection).
#include <openssl/ssl.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mtlsd/config/config.hpp"
#include "mtlsd/tls/identity.hpp"

namespace mtlsd::proxy {

inline constexpr std::string_view xfcc_header = "x-forwarded-client-cert";

// What the current hop knows about its client, in the form the element is built from.
struct xfcc_fields {
  std::vector<std::string> by;  // URI SANs of our own certificate
  std::string hash;             // lower-case hex SHA-256 of the client's DER certificate
  std::string cert;             // url-encoded PEM of the client's leaf ("" = not wanted)
  std::string chain;    // url-encoded PEMs of leaf + chain the client sent ("" = not wanted)
  std::string subject;  // RFC 2253
  std::vector<std::string> uri, dns;
};

// This hop's element. `details` is http.set_current_client_cert_details (uri, dns, subject,
// hash, cert, chain); the output order is Envoy's whatever the configured order: By, Hash, Cert,
// Chain, Subject, URI, DNS. Like Envoy, Subject= and URI= appear even when empty; DNS= only when
// there is one. Unlike Envoy, Hash= is one of the configurable details (the contract lists it).
std::string format_xfcc_element(const std::vector<std::string>& details, const xfcc_fields& f);

// Envoy's URL encoding of a PEM block: '\n' ' ' '+' '/' '=' become %0A %20 %2B %2F %3D.
std::string url_encode_pem(std::string_view pem);

// What happens to a request's X-Forwarded-Client-Cert header on one connection.
struct xfcc_policy {
  enum class action {
    keep,    // forward the client's header(s) untouched
    remove,  // strip every client-supplied header
    set,     // replace whatever the client sent with `element`
    append,  // client's value(s) + "," + `element`
  };
  action what = action::remove;
  std::string element;
};

// Envoy's decision table. `client_cert`: the client presented a certificate on this connection
// (mTLS). sanitize: remove. forward_only: keep with mTLS, else remove. append_forward: append
// with mTLS, else remove. sanitize_set: set with mTLS, else remove. always_forward_only: keep.
// A client-supplied header is never trusted under sanitize/sanitize_set.
xfcc_policy::action xfcc_action(config::xfcc_mode mode, bool client_cert);

// The policy for one connection: decides the action and, when needed, builds the element from
// the peer certificate on `ssl` (nullptr identity = no client certificate).
xfcc_policy make_xfcc_policy(const config::http_options& opts, SSL* ssl,
                             const tls::peer_identity* identity,
                             const std::vector<std::string>& own_uri_sans);

// The header value to send for a request that carried `existing` values (one per header line):
// nullopt = send no header. Not called for action::keep.
std::optional<std::string> rewrite_xfcc(const xfcc_policy& policy,
                                        const std::vector<std::string_view>& existing);

}  // namespace mtlsd::proxy
