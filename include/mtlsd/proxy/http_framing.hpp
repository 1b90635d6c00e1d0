#pragma once
// Where an HTTP/1.1 message ends, for the HTTP mode, which forwards each side's bytes as they
// came (http_exchange.cpp): Beast's basic_parser validates the head and walks the body's framing
// (Content-Length, chunked, until close; none for HEAD, 1xx, 204, 304), and these subclasses keep
// only what the relay acts on. No field list and no body buffer: what `put` returns is how many
// of the given bytes belong to the message, framing included, and the caller forwards exactly
// those (a request head with the edits http_forwarding.hpp makes).
//
// Forwarding raw bytes means every byte Beast lets through reaches a peer whose parser may be
// laxer, so these parsers refuse what Beast allows but another parser could frame differently:
// control characters in chunk extensions, folded trailers, chunk sizes (and a response's
// Content-Length) above largest_length, a response's Transfer-Encoding list that does not parse,
// and (requests) X-Forwarded-* trailers; a request head's lists are judged by judge_request.
// A request's chunked body is the exception to "as they came": its framing is written anew
// (rewrite_chunks), as nginx and Envoy do, so that an upstream reads the sizes Beast read.
#include <boost/beast/http/basic_parser.hpp>
#include <boost/beast/http/error.hpp>
#include <charconv>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mtlsd::proxy {

// Whether a field's name is `lower` in any case, with `_` read as `-`: the spellings that CGI,
// WSGI, PHP and Rack map to the same variable.
bool same_field_name(std::string_view name, std::string_view lower);
// The other two X-Forwarded fields mtlsd sets (xfcc.hpp has xfcc_header), lower case.
inline constexpr std::string_view xff_header = "x-forwarded-for";
inline constexpr std::string_view xfp_header = "x-forwarded-proto";
// X-Forwarded-Client-Cert, -For or -Proto in any such spelling: what mtlsd tells the upstream,
// never taken from a client's trailers (HTTP/1.1 refuses them, HTTP/2 drops them).
bool is_forwarding_field(std::string_view name);

// What one Expect field value asks for (RFC 9110 10.1.1), every member read: 100-continue, and
// whether any other expectation is there. HTTP/1.1 and HTTP/2 requests alike.
struct expectations {
  bool continue_100 = false;
  bool other = false;
};
expectations read_expect(std::string_view value);

// What one Transfer-Encoding field value says, read by RFC 9112 7's grammar (a list of codings,
// each a token with `;name=value` parameters). Beast reads the list only up to its first
// character that is not a token's: `chunked, "x"` and `chunked;q=1` are plain chunked to it.
struct transfer_codings {
  bool parsed = true;               // the whole value follows the grammar
  bool other = false;               // a coding besides chunked
  bool chunked_parameters = false;  // chunked with parameters (RFC 9112 7.1: an error)
};
transfer_codings read_transfer_encoding(std::string_view value);
// Why a response whose Transfer-Encoding reads as `codings` is not relayed, or "": a list that
// does not parse, or parameters on chunked (RFC 9112 7.1: an error). Beast may take either for
// plain chunked (as above), where the upstream may have meant another framing or a coding of the
// content. The rule of the HTTP/1.1 relay (response_framing) and, for an HTTP/2 client of an
// HTTP/1.1 upstream, of h2_h1_response.cpp's unframable_for_http2.
std::string_view unreadable_transfer_encoding(const transfer_codings& codings);

// What one Upgrade field value offers (RFC 9110 7.8: protocol-name ["/" protocol-version], both
// tokens): whether it parses, and whether a member names h2c, in any case and with any version.
struct upgrade_protocols {
  bool parsed = true;
  bool h2c = false;
};
upgrade_protocols read_upgrade(std::string_view value);

// The largest Content-Length or chunk size passed on either way: 2^63-1. Beast reads sizes up to
// 2^64-1, but a peer that reads them as signed 64-bit numbers (nginx's off_t, Go's and Java's
// lengths) would take a larger one for negative; nginx refuses them too.
inline constexpr std::uint64_t largest_length = std::numeric_limits<std::int64_t>::max();

namespace detail {

// Beast accepts a quoted chunk extension holding a bare LF; a peer that ends chunk lines at LF
// would take the chunk data to start elsewhere. No control character (HTAB aside) passes.
bool clean_chunk_extension(std::string_view extension);
// For a trailer Beast parsed (its section is whole and ends with an empty line): whether the
// field that starts at `name` goes on over a folded line. Heads are unfolded before parsing;
// trailers cannot be, so a fold there is refused.
bool folded_field(std::string_view name);

// The body callbacks both directions share: count the payload (chunk framing excluded) for the
// access log, keep nothing.
template <bool isRequest>
class framing_base : public boost::beast::http::basic_parser<isRequest> {
 public:
  void count_body_in(std::uint64_t& counter) { body_bytes_ = &counter; }
  // From now on a chunked body is not forwarded as it came but as rewritten() holds it: each
  // chunk's size alone, in lower-case hex without leading zeros and without extensions, its
  // data, and the trailers Beast parsed. An upstream whose parser reads a size with many leading
  // zeros, upper-case digits, whitespace or a quoted extension otherwise than Beast then cannot
  // be led to another end of the body (request smuggling); extensions carry nothing a proxy must
  // keep (RFC 9112 7.1.1 has unknown ones ignored).
  void rewrite_chunks() { rewrite_ = rewrite::canonical; }
  // From now on a chunked body leaves as its data alone (rewritten()), without the chunk framing
  // and the trailers: for an HTTP/1.0 client, which may be sent no transfer coding (RFC 9112
  // 6.1). The body's end is then the connection's close.
  void unchunk() { rewrite_ = rewrite::data_only; }
  // Whether the body leaves as rewritten(): chunked, and rewriting asked for.
  bool rewrites_body() const { return rewrite_ != rewrite::none && this->chunked(); }
  // The framing (none after unchunk()) and data of what `put` consumed since the last clear, to
  // write in its place.
  std::string& rewritten() { return rewritten_; }
  // One step of a body's parse, as bytes arrive: parses what of `unparsed` it can and returns
  // how much it took; `ec` is set only for a malformed body (need_more is no error here).
  // Boost 1.81's Beast asserts (a debug build aborts) when called again with fewer than five
  // bytes once it has seen a last chunk's "0\r\n" that is the body's first chunk
  // (boostorg/beast#2861, fixed in later releases; a review found a client's "0\r\n", then
  // "\r", ended the daemon). After any other chunk the unparsed bytes start with its CRLF, five
  // at least. No whole body ends in fewer than five bytes from there, so that call waits.
  std::size_t put_body(std::string_view unparsed, boost::beast::error_code& ec) {
    ec = {};
    if (!chunk_seen_ && this->chunked() && unparsed.size() < 5 && unparsed.starts_with("0\r\n"))
      return 0;
    const std::size_t took = this->put(boost::asio::buffer(unparsed.data(), unparsed.size()), ec);
    if (ec == boost::beast::http::error::need_more) ec = {};
    return took;
  }
  // Why this parser refused what Beast alone accepts ("" otherwise; Beast's error then says it):
  // the log's reason, more precise than the error code shared by several causes.
  std::string_view refusal() const { return refusal_; }

 protected:
  using string_view = boost::beast::string_view;
  using error_code = boost::beast::error_code;

  void refuse(error_code& ec, boost::beast::http::error code, std::string_view why) {
    ec = code;
    refusal_ = why;
  }
  // A trailer field the subclass let through: kept for rewritten() (Beast trimmed the value).
  void keep_trailer(string_view name, string_view value) {
    if (rewrite_ != rewrite::canonical) return;
    last_.append(name.data(), name.size()).append(": ");
    last_.append(value.data(), value.size()).append("\r\n");
  }

 private:
  void on_body_init_impl(const boost::optional<std::uint64_t>&, error_code&) override {}
  std::size_t on_body_impl(string_view body, error_code&) override {
    *body_bytes_ += body.size();
    return body.size();
  }
  void on_chunk_header_impl(std::uint64_t size, string_view extension, error_code& ec) override {
    chunk_seen_ = true;
    if (size > largest_length) {
      refuse(ec, boost::beast::http::error::bad_chunk, "a chunk size above 2^63-1");
      return;
    }
    if (!clean_chunk_extension({extension.data(), extension.size()})) {
      refuse(ec, boost::beast::http::error::bad_chunk_extension,
             "a control character in a chunk extension");
      return;
    }
    if (rewrite_ != rewrite::canonical) return;
    // The last chunk and the trailers after it wait in last_ until the message is whole
    // (on_finish_impl): a trailer refused later in the same put must not let "0\r\n" reach the
    // upstream, which could take the body for complete.
    std::string& out = size == 0 ? last_ : rewritten_;
    if (size == 0) last_.clear();
    // Beast reads the CRLF that ends a chunk's data with the next chunk's header.
    if (std::exchange(chunk_data_open_, true)) out.append("\r\n");
    char digits[16];
    const auto end = std::to_chars(digits, digits + sizeof digits, size, 16).ptr;
    out.append(digits, end).append("\r\n");
  }
  std::size_t on_chunk_body_impl(std::uint64_t, string_view body, error_code&) override {
    *body_bytes_ += body.size();
    if (rewrite_ != rewrite::none) rewritten_.append(body.data(), body.size());
    return body.size();
  }
  void on_finish_impl(error_code&) override {
    if (rewrite_ == rewrite::canonical && this->chunked())
      rewritten_.append(last_).append("\r\n");  // trailers' end
  }

  std::uint64_t uncounted_ = 0;
  std::uint64_t* body_bytes_ = &uncounted_;
  std::string_view refusal_;
  bool chunk_seen_ = false;  // a chunk header parsed (the last chunk's only once whole)
  enum class rewrite { none, canonical, data_only } rewrite_ = rewrite::none;
  bool chunk_data_open_ = false;  // a chunk header went into rewritten_: its data's CRLF is due
  std::string rewritten_;
  std::string last_;  // the last chunk and the trailers, until the message is whole
};

}  // namespace detail

class response_framing final : public detail::framing_base<false> {
 public:
  unsigned status() const { return status_; }
  int version() const { return version_; }  // 10 or 11: the start line's
  // For a 101: its Upgrade fields' values (joined with ", "; "" when it has none), and whether
  // its Connection lists "upgrade". Recorded for a 101 only (response_head_refusal judges them).
  std::string_view switching_to() const { return switching_to_; }
  bool connection_upgrade() const { return connection_upgrade_; }
  // Whether the head has a hop-by-hop field a client must not get (forward_response_head): a
  // Connection naming a field or listing upgrade, Keep-Alive, Proxy-Connection, TE, Upgrade.
  // "Connection: close" or "keep-alive" alone is not (they say what mtlsd does too): most heads
  // then go out as their bytes came.
  bool hop_by_hop() const { return hop_by_hop_; }
  // Whether the head has Transfer-Encoding, and whether it names a coding besides chunked: an
  // HTTP/1.0 client can be sent neither (RFC 9112 6.1), only the data of a chunked body.
  bool transfer_encoded() const { return transfer_encoding_; }
  bool coding_besides_chunked() const { return other_coding_; }

 private:
  void on_request_impl(boost::beast::http::verb, string_view, string_view, int,
                       error_code&) override {}  // never called: a response parser
  void on_response_impl(int code, string_view, int version, error_code&) override {
    status_ = static_cast<unsigned>(code);
    version_ = version;
  }
  void on_field_impl(boost::beast::http::field f, string_view name, string_view,
                     error_code& ec) override;
  void on_header_impl(error_code& ec) override;

  unsigned status_ = 0;
  int version_ = 11;
  bool transfer_encoding_ = false, content_length_ = false, connection_upgrade_ = false;
  bool hop_by_hop_ = false;
  bool other_coding_ = false;
  std::string switching_to_;
};

// What the relay needs of a request head. The views point into the head's bytes and live as long
// as those stay in the read buffer; every value is there, as heads are unfolded before parsing
// (inbound::whole_head).
struct request_head_view {
  boost::beast::http::verb method = boost::beast::http::verb::unknown;
  std::string_view method_text, target, host;  // host: the first Host field
  int version = 11;
  int host_fields = 0;             // how many Host fields (RFC 9112 3.2 wants one)
  bool transfer_encoding = false;  // the field is present (chunked() says how it ends)
  bool other_coding = false;       // Transfer-Encoding names a coding besides chunked
  // Transfer-Encoding or Upgrade does not follow its list's grammar (read_transfer_encoding,
  // read_upgrade), or chunked has parameters: Beast reads such a list only up to its first
  // character that is not a token's, where a peer reading it whole may find more.
  bool malformed_transfer_encoding = false, chunked_parameters = false;
  bool malformed_upgrade = false;
  // HTTP/1.1, an Upgrade field, and "upgrade" in Connection — unless Upgrade offers h2c (in any
  // member, any case: read_upgrade): a tunnel in which the client would speak HTTP/2 to the
  // upstream itself, past every X-Forwarded-* field mtlsd sets (RFC 9113 deprecates that upgrade).
  bool upgrade = false;
  std::vector<std::string_view> upgrade_offers;  // each Upgrade field's value, as sent
  // Expect, every field and member: 100-continue (mtlsd answers it and drops the field), or
  // another expectation (refused with 417: mtlsd owns Expect, none goes up half-handled).
  bool expect_continue = false;
  bool other_expectation = false;
  bool keep_alive = true;                // what the client asked (version and Connection)
  bool connection_names_fields = false;  // a Connection token other than close/keep-alive/upgrade
  bool te_trailers = false;              // TE lists "trailers" (the client accepts trailers)
  std::optional<std::uint64_t> content_length;
  std::vector<std::string_view> xfcc, xff;  // the client's X-Forwarded-Client-Cert, -For values
  // An absolute-form target ("http://host/path?q", RFC 9112 3.2.2): its parts. The request
  // goes up in origin-form with Host set to `target_authority` (RFC 9112 3.2.2 has a proxy
  // ignore the client's Host then; Envoy does the same).
  bool absolute_form = false;
  std::string_view target_scheme, target_authority;
  std::string_view target_path;  // path and query; may be empty or start with '?': origin_form()
};

// The request target as it goes upstream and into the access log: origin-form for an
// absolute-form target ("/" when its path is empty), else as sent.
std::string origin_form(const request_head_view& head);
// The authority the request is for: the absolute-form target's, else the Host field's.
inline std::string_view request_authority(const request_head_view& head) {
  return head.absolute_form ? head.target_authority : head.host;
}

class request_framing final : public detail::framing_base<true> {
 public:
  const request_head_view& head() const { return head_; }

 private:
  void on_request_impl(boost::beast::http::verb method, string_view method_text, string_view target,
                       int version, error_code&) override;
  void on_response_impl(int, string_view, int, error_code&) override {}  // never called
  void on_field_impl(boost::beast::http::field f, string_view name, string_view value,
                     error_code&) override;
  void on_header_impl(error_code&) override;

  request_head_view head_;
  bool upgrade_field_ = false, connection_upgrade_ = false, upgrade_h2c_ = false;
};

}  // namespace mtlsd::proxy
