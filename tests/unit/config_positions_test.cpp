// Where config::load_text places the problems of empty values, and the values it refuses that it
// once took as "none" (review). yaml-cpp gives an empty value (`tls:`, a `-` alone) the position
// of the NEXT token, often lines further on; errors after an empty required key of a listener
// were all reported at that key. Each YAML text starts on line 1, so that the expected
// LINE:COL can be read off the literal.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "mtlsd/config/load.hpp"

namespace mtlsd::config {
namespace {

const std::string kFile = "/etc/mtlsd/mtlsd.yaml";

// "LINE:COL: message" of each problem (warnings keep their "warning: ").
std::vector<std::string> problems_of(const std::string& yaml) {
  const load_result r = load_text(yaml, kFile);
  std::vector<std::string> out;
  for (const auto& p : r.problems)
    out.push_back(p.str().substr(kFile.size() + 1));
  return out;
}

const std::string kNeedsCert =
    ": a server-mode listener needs its certificate: set cert + key or pkcs12";
const std::string kNeedsCa =
    ": client certificates are required (mode require) but no CA bundle is configured";

TEST(ConfigPositions, EmptyValuesAfterAnEmptyRequiredKeyAreAtTheirOwnKeys) {
  EXPECT_EQ(
      problems_of(R"(listeners:
  - name: a
    listen: 127.0.0.1:18443
    upstream:
    max_connections: 10
    tls:
    client_auth:
    revocation: {crl_files: [ca.crt, ~]}
)"),
      (std::vector<std::string>{
          "4:5: listeners[0].upstream: invalid address '': expected HOST:PORT, "
          "[IPV6]:PORT or unix:/path",
          "8:38: listeners[0].revocation.crl_files[1]: an empty file path",
          "6:5: listeners[0].tls" + kNeedsCert, "7:5: listeners[0].client_auth.ca" + kNeedsCa}));
}

TEST(ConfigPositions, AnEmptyLastLineIsAtItsKeyNotPastTheEnd) {
  EXPECT_EQ(problems_of(R"(listeners:
  - name: a
    listen: 127.0.0.1:18443
    upstream: 127.0.0.1:18080
    tls:
    client_auth:)"),
            (std::vector<std::string>{"5:5: listeners[0].tls" + kNeedsCert,
                                      "6:5: listeners[0].client_auth.ca" + kNeedsCa}));
}

TEST(ConfigPositions, AnEmptyListItemIsAtItsDashOrAtItsListsKey) {
  EXPECT_EQ(problems_of(R"(listeners:
  -
  - name: b
    listen: 127.0.0.1:18444
    upstream: 127.0.0.1:1
    tls: {cert: a.crt, key: a.key}
    client_auth:
      ca:
        - ca.crt
        -
        - ~
      allow:
        rules:
          -
          - spiffe_ids: [spiffe://example.org/a]
          -
)"),
            (std::vector<std::string>{
                // The first item: its `-` (the list's own position).
                "2:3: listeners[0]: expected a mapping describing a listener, got nothing",
                // A later one: the list's key; the message names the index.
                "8:7: listeners[1].client_auth.ca[1]: an empty file path",
                // `~` is where it is written.
                "11:11: listeners[1].client_auth.ca[2]: an empty file path",
                "14:11: listeners[1].client_auth.allow.rules[0]: an empty rule (give at least "
                "one matcher: spiffe_ids, uri_sans, dns_sans, common_names, organizational_units, "
                "sha256_fingerprints, email_sans, source_cidrs, sni, not)",
                "13:9: listeners[1].client_auth.allow.rules[2]: an empty rule (give at least "
                "one matcher: spiffe_ids, uri_sans, dns_sans, common_names, organizational_units, "
                "sha256_fingerprints, email_sans, source_cidrs, sni, not)"}));
}

TEST(ConfigPositions, AWarningAboutAnEmptySectionIsAtItsKey) {
  EXPECT_EQ(problems_of(R"(listeners:
  - name: a
    listen: 127.0.0.1:18443
    upstream: 127.0.0.1:18080
    tls: {cert: a.crt, key: a.key}
    client_auth: {ca: ca.crt}
    http:
    upstream_check:
    accept_proxy_protocol:
  - name: b
    mode: client
    listen: 127.0.0.1:18444
    upstream: 127.0.0.1:18443
    revocation: {ocsp_timeout: }
)"),
            (std::vector<std::string>{
                "9:5: warning: listeners[0].accept_proxy_protocol: any peer may send the header "
                "(trusted_sources is empty), so any client can choose the source address the "
                "X-Forwarded-For hop mtlsd appends upstream: list the load balancers in "
                "trusted_sources",
                "14:18: listeners[1].revocation.ocsp_timeout: invalid duration nothing: expected "
                "a number with a unit (ms, s, m, h), e.g. 250ms, 10s, 5m"}));
}

const std::string kClient = R"(listeners:
  - name: out
    mode: client
    listen: 127.0.0.1:18444
    upstream: localhost:18443
)";

TEST(ConfigEmptyPaths, AnEmptyScalarInAFileListIsRefusedAsAnEmptyEntryIs) {
  EXPECT_EQ(problems_of(kClient + R"(    server_auth: {ca: ""}
    revocation:
      crl_files: ''
)"),
            (std::vector<std::string>{
                "6:23: listeners[0].server_auth.ca: an empty file path (to name no file, write "
                "[] or leave the key out)",
                "8:18: listeners[0].revocation.crl_files: an empty file path (to name no file, "
                "write [] or leave the key out)"}));
  EXPECT_EQ(problems_of(R"(listeners:
  - name: a
    listen: 127.0.0.1:18443
    upstream: 127.0.0.1:18080
    tls: {cert: a.crt, key: a.key}
    client_auth: {ca: ""}
)"),
            (std::vector<std::string>{"6:23: listeners[0].client_auth.ca: an empty file path (to "
                                      "name no file, write [] or leave the key out)",
                                      "6:18: listeners[0].client_auth.ca" + kNeedsCa}));
}

TEST(ConfigEmptyPaths, NullEmptyListsAndSinglePathsStillNameNone) {
  for (const std::string rest : {"    server_auth: {ca: []}\n    revocation: {crl_files: ~}\n",
                                 "    server_auth: {ca: }\n    revocation: {crl_files: []}\n",
                                 "    tls: {cert: \"\", key: \"\", pkcs12: \"\"}\n"}) {
    const load_result r = load_text(kClient + rest, kFile);
    ASSERT_TRUE(r.config) << rest << (r.problems.empty() ? "" : r.problems[0].str());
    const listener& l = r.config->listeners.at(0);
    EXPECT_TRUE(l.server_auth.ca.empty() && l.revocation.crl_files.empty() && l.tls.cert.empty())
        << rest;
  }
}

TEST(ConfigNits, BlockValuesStayOnOneLineAndOddKeysAreNamed) {
  EXPECT_EQ(problems_of(R"(listeners:
  - name: a
    listen: "127.0.0.1:18443 "
    upstream: |
      127.0.0.1:18080
    tls: {cert: a.crt, key: a.key}
    client_auth: {ca: ca.crt}
    ~: 1
    "": 2
    ? {a: b}
    : 3
  - name: b
    listen: unix:/tmp/a b.sock
    upstream: "unix:/run/app.sock\t"
    tls: {cert: a.crt, key: a.key}
    client_auth: {ca: ca.crt}
)"),
            (std::vector<std::string>{
                "8:5: an empty key in listeners[0] (null, ~ and \"\" name no key)",
                "9:5: an empty key in listeners[0] (null, ~ and \"\" name no key)",
                "10:7: a key that is not a string (a mapping) in listeners[0]",
                "3:13: listeners[0].listen: invalid address '127.0.0.1:18443 ': whitespace is no "
                "part of HOST:PORT (a space or newline around the host or port?)",
                "4:15: listeners[0].upstream: invalid address '127.0.0.1:18080\\n': whitespace is "
                "no part of HOST:PORT (a space or newline around the host or port?)",
                "14:15: listeners[1].upstream: invalid address 'unix:/run/app.sock\\t': a socket "
                "path that begins or ends with whitespace, or holds a control character (a "
                "newline?), is surely a mistake"}));
}

}  // namespace
}  // namespace mtlsd::config
