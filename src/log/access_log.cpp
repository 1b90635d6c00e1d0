#include "mtlsd/log/access_log.hpp"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstring>
#include <iterator>
#include <string>

#include "byte_classes.hpp"
#include "mtlsd/log/log.hpp"

namespace mtlsd::log {
namespace {
std::atomic<bool> access_enabled{true};

// `v`, or its first access_field_limit bytes (not splitting a UTF-8 sequence) and how much was
// cut, kept in `storage`.
std::string_view capped(std::string_view v, std::string& storage) {
  if (v.size() <= access_field_limit) return v;
  std::size_t keep = access_field_limit;  // back over at most 3 continuation bytes (log.cpp)
  while (keep > access_field_limit - 3 && (static_cast<unsigned char>(v[keep]) & 0xC0) == 0x80)
    --keep;
  storage.assign(v.substr(0, keep));
  storage += "...(" + std::to_string(v.size() - keep) + " more bytes)";
  return storage;
}

// The connection's fields a peer controls (its certificate, the address a PROXY header names,
// the detail that quotes them, the server name a client asked for: recorded before OpenSSL
// refuses one longer than a host name can be, review: 15,000 bytes), as both kinds of line
// write them.
struct peer_fields {
  std::string cut[7];
  std::string_view client, identity, subject, issuer, serial, detail, sni;
  peer_fields(const access_record& r, std::string_view raw_detail)
      : client(capped(r.client, cut[0])),
        identity(capped(r.identity, cut[1])),
        subject(capped(r.peer_subject, cut[2])),
        issuer(capped(r.peer_issuer, cut[3])),
        serial(capped(r.peer_serial, cut[4])),
        detail(capped(raw_detail, cut[5])),
        sni(capped(r.sni, cut[6])) {}
};
}  // namespace

void set_access_log_enabled(bool enabled) {
  access_enabled = enabled;
}

bool access_log_enabled() {
  return access_enabled.load(std::memory_order_relaxed);
}

void write_access(const access_record& r) {
  if (!access_enabled.load(std::memory_order_relaxed)) return;
  const peer_fields p(r, r.detail);  // capped: access_field_limit
  // Refusals are info too: they are the access log's reason to exist, and warn-level noise from
  // scanners would drown real warnings.
  const field connect_ms = r.upstream_connect_ms < 0
                               ? field("upstream_connect_ms", null)
                               : field("upstream_connect_ms", r.upstream_connect_ms);
  write_access_line("access", {{"start", r.start},
                               {"conn_id", r.conn_id},
                               {"listener", r.listener},
                               {"client", p.client},
                               {"identity", p.identity},
                               {"tls_version", r.tls_version},
                               {"cipher", r.cipher},
                               {"resumed", r.resumed},
                               {"sni", p.sni},
                               {"alpn", r.alpn},
                               {"upstream", r.upstream},
                               connect_ms,
                               {"peer_subject", p.subject},
                               {"peer_serial", p.serial},
                               {"peer_issuer", p.issuer},
                               {"peer_sha256", r.peer_sha256},
                               {"peer_not_after", r.peer_not_after},
                               {"rx_bytes", r.rx_bytes},
                               {"tx_bytes", r.tx_bytes},
                               {"duration_ms", r.duration_ms},
                               {"result", r.result},
                               {"reason", r.reason},
                               {"termination", r.termination},
                               {"detail", p.detail}});
}

namespace {

// A key of a request's own fields as append_key writes it, in a slot of fixed size: copied
// whole (a few moves, no call), its size then counted.
struct key_text {
  static constexpr std::size_t slot = 32;
  char text[slot] = {};
  std::size_t size = 0;
};

// The keys of a request's own fields, in field order (append_request_fields).
constexpr std::string_view request_key_names[] = {
    "start",       "method",    "authority",  "path",      "protocol",    "status",
    "grpc_status", "req_bytes", "resp_bytes", "stream_id", "duration_ms", "detail"};
constexpr std::size_t key_count = std::size(request_key_names);
// A key's separators take 5 bytes at most (`,"` and `":`).
static_assert(std::ranges::all_of(request_key_names, [](std::string_view n) {
  return n.size() + 5 <= key_text::slot;
}));

// The keys in one format: the same on every line, so rendered once.
struct request_keys {
  key_text of[key_count];
  explicit request_keys(line_format format) {
    for (std::size_t i = 0; i < key_count; ++i) {
      std::string k;
      append_key(k, format, request_key_names[i]);
      std::copy(k.begin(), k.end(), of[i].text);
      of[i].size = k.size();
    }
  }
};

const request_keys& keys_of(line_format format) {
  static const request_keys text(line_format::text), json(line_format::json);
  return format == line_format::json ? json : text;
}

// The request's fields as append_fields writes them, gathered on the stack and appended to the
// line at once: a line's two dozen small appends (key, value, key...) each paid the string's
// checks and a call to memcpy, as much as the rest of the line together.
class field_buffer {
 public:
  field_buffer(std::string& line, line_format format)
      : line_(line), keys_(keys_of(format)), json_(format == line_format::json) {}
  field_buffer(const field_buffer&) = delete;
  field_buffer& operator=(const field_buffer&) = delete;

  // Already rendered (the connection's fields).
  void raw(std::string_view s) {
    if (s.size() <= room()) {
      end_ = std::copy(s.begin(), s.end(), end_);
      return;
    }
    flush();
    line_.append(s);
  }
  // A short value with nothing to escape (most) is copied, quoted as append_string_value
  // would; any other goes its way.
  [[gnu::always_inline]] void string(std::size_t key, std::string_view v) {
    const auto form = detail::form_of(detail::classes_of(v), v.size(), json_);
    if (form != detail::value_form::escaped && v.size() <= kShort &&
        key_text::slot + v.size() + 2 <= room()) {
      put_key(key);
      char* p = end_;  // not end_ itself: a char written may alias it, so it was stored each time
      if (form == detail::value_form::quoted) *p++ = '"';
      p = std::copy(v.begin(), v.end(), p);
      if (form == detail::value_form::quoted) *p++ = '"';
      end_ = p;
      return;
    }
    flush();
    line_.append(keys_.of[key].text, keys_.of[key].size);
    append_string_value(line_, v, json_);
  }
  // A value capped at access_field_limit first.
  [[gnu::always_inline]] void capped_string(std::size_t key, std::string_view v) {
    if (v.size() <= access_field_limit) [[likely]]
      return string(key, v);
    cut_string(key, v);
  }
  [[gnu::noinline]] void cut_string(std::size_t key, std::string_view v) {
    std::string cut;
    string(key, capped(v, cut));
  }
  // A time, formatted here: RFC 3339's characters (digits, '-', 'T', ':', '.', 'Z') are written
  // as they are, quoted in JSON, as append_string_value writes them.
  void time(std::size_t key, std::chrono::system_clock::time_point t) {
    if (key_text::slot + 32 + 2 > room()) flush();
    put_key(key);
    char text[32];
    const std::size_t size = format_rfc3339(text, t, true).size();
    if (json_) *end_++ = '"';
    std::memcpy(end_, text, sizeof text);  // the whole array (room() was checked for it)
    end_ += size;
    if (json_) *end_++ = '"';
  }
  [[gnu::always_inline]] void integer(std::size_t key, std::uint64_t v) {
    if (key_text::slot + 20 > room()) flush();  // a uint64 has at most 20 characters
    put_key(key);
    end_ = put_decimal(end_, v);
  }
  [[gnu::always_inline]] void integer(std::size_t key, std::int64_t v) {
    if (key_text::slot + 20 > room()) flush();  // so has an int64, its sign included
    put_key(key);
    if (v < 0) *end_++ = '-';
    end_ = put_decimal(end_,
                       v < 0 ? 0 - static_cast<std::uint64_t>(v) : static_cast<std::uint64_t>(v));
  }
  // A negative value is unknown: null, as append_field_value writes it.
  void integer_or_null(std::size_t key, std::int64_t v) {
    if (v >= 0) return integer(key, static_cast<std::uint64_t>(v));
    if (key_text::slot + 4 > room()) flush();
    put_key(key);
    raw(json_ ? "null" : "\"\"");
  }
  void flush() {
    line_.append(buf_, static_cast<std::size_t>(end_ - buf_));
    end_ = buf_;
  }

 private:
  static constexpr std::size_t kShort = 256;  // within field_value_limit: never cut
  // `v` in decimal at `p`; the end. Values of up to three digits (a status, most byte counts of
  // small exchanges, stream ids, durations) written without a loop; longer ones by to_chars.
  // to_chars alone was a call of ~50 instructions a value (callgrind, the bench's
  // http_accesslog), a digit-by-digit loop ~30.
  [[gnu::always_inline]] static char* put_decimal(char* p, std::uint64_t v) {
    if (v < 10) {
      *p = static_cast<char>('0' + v);
      return p + 1;
    }
    if (v < 100) {
      p[0] = static_cast<char>('0' + v / 10);
      p[1] = static_cast<char>('0' + v % 10);
      return p + 2;
    }
    if (v < 1000) {
      p[0] = static_cast<char>('0' + v / 100);
      p[1] = static_cast<char>('0' + v / 10 % 10);
      p[2] = static_cast<char>('0' + v % 10);
      return p + 3;
    }
    return std::to_chars(p, p + 20, v).ptr;  // room() was checked for 20
  }
  std::size_t room() const { return static_cast<std::size_t>(std::end(buf_) - end_); }
  // The whole slot (room() was checked for it), but only the key counts.
  void put_key(std::size_t key) {
    std::memcpy(end_, keys_.of[key].text, key_text::slot);
    end_ += keys_.of[key].size;
  }

  std::string& line_;
  const request_keys& keys_;
  const bool json_;
  char buf_[1024];  // a bench request's fields take ~750 bytes
  char* end_ = buf_;
};

// A request line's fields after its head: the request's own, with the connection's from `c`.
void append_request_fields(std::string& out, const request_line_cache& c,
                           const http_request_record& q) {
  enum key : std::size_t {
    start,
    method,
    authority,
    path,
    protocol,
    status,
    grpc_status,
    req_bytes,
    resp_bytes,
    stream_id,
    duration_ms,
    detail
  };
  field_buffer b(out, c.format());
  b.time(start, q.start);
  b.raw(c.text());
  b.capped_string(method, q.method);
  b.capped_string(authority, q.authority);
  b.capped_string(path, q.path);
  b.string(protocol, q.protocol);
  b.integer(status, std::int64_t{q.status});
  b.integer_or_null(grpc_status, q.grpc_status);
  b.integer(req_bytes, q.req_bytes);
  b.integer(resp_bytes, q.resp_bytes);
  b.integer(stream_id, q.stream_id);
  b.integer(duration_ms, q.duration_ms);
  b.capped_string(detail, q.detail);
  b.flush();
}

}  // namespace

void request_line_cache::render(line_format format, const access_record& c) {
  const peer_fields p(c, {});
  format_ = format;
  text_.clear();
  append_fields(text_, format,
                {{"conn_id", c.conn_id},
                 {"listener", c.listener},
                 {"client", p.client},
                 {"identity", p.identity},
                 {"tls_version", c.tls_version},
                 {"cipher", c.cipher},
                 {"resumed", c.resumed},
                 {"sni", p.sni},
                 {"alpn", c.alpn}});
  upstream_at_ = text_.size();
  upstream_size_ = 0;
  rendered_ = false;  // set_upstream renders them whatever they are
  set_upstream(c.upstream, c.upstream_connect_ms);
  append_fields(text_, format,
                {{"peer_subject", p.subject},
                 {"peer_serial", p.serial},
                 {"peer_issuer", p.issuer},
                 {"peer_sha256", c.peer_sha256},
                 {"peer_not_after", c.peer_not_after}});
  text_.shrink_to_fit();  // kept for the connection's life: no room to spare
  rendered_ = true;
}

void request_line_cache::set_upstream(std::string_view upstream, std::int64_t connect_ms) {
  if (rendered_ && upstream == upstream_ && connect_ms == upstream_connect_ms_) return;
  std::string rendered;
  append_fields(rendered, format_,
                {{"upstream", upstream},
                 connect_ms < 0 ? field("upstream_connect_ms", null)
                                : field("upstream_connect_ms", connect_ms)});
  text_.replace(upstream_at_, upstream_size_, rendered);
  upstream_size_ = rendered.size();
  upstream_ = upstream;
  upstream_connect_ms_ = connect_ms;
}

void write_request_access(const access_record& c, const http_request_record& q) {
  if (!access_enabled.load(std::memory_order_relaxed)) return;
  request_line_cache conn;  // for this line alone
  conn.render(current_line_format(), c);
  write_request_access(conn, c.upstream, c.upstream_connect_ms, q);
}

void write_request_access(request_line_cache& c, std::string_view upstream,
                          std::int64_t upstream_connect_ms, const http_request_record& q) {
  if (!access_enabled.load(std::memory_order_relaxed)) return;
  c.set_upstream(upstream, upstream_connect_ms);
  std::string line = begin_access_line(c.format(), "request");
  append_request_fields(line, c, q);
  end_access_line(std::move(line), c.format());
}

std::string format_request_line(line_format format, const access_record& c,
                                const http_request_record& q) {
  request_line_cache conn;
  conn.render(format, c);
  return format_request_line(conn, c.upstream, c.upstream_connect_ms, q);
}

std::string format_request_line(request_line_cache& c, std::string_view upstream,
                                std::int64_t upstream_connect_ms, const http_request_record& q) {
  c.set_upstream(upstream, upstream_connect_ms);
  std::string line = format_line(c.format(), spdlog::level::info, "request", {});
  append_request_fields(line, c, q);
  return line;
}

}  // namespace mtlsd::log
