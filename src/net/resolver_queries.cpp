// The resolver's cache and queries: one c-ares query per name however many wait for it, each
// waiter completed through its own handler's executor, answers cached for their TTL.
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <cstring>
#include <limits>

#include "resolver_impl.hpp"

namespace mtlsd::net {

namespace {

// A definitive "this name has no address": worth remembering for a moment. Timeouts, refusals
// and server failures are not: the very next lookup may succeed.
bool negative_answer(int status) {
  return status == ARES_ENOTFOUND || status == ARES_ENODATA || status == ARES_ENONAME ||
         status == ARES_EBADNAME;
}

}  // namespace

std::optional<resolve_result> resolver::impl::lookup(const std::string& key) {
  auto it = cache.find(key);
  if (it == cache.end()) return std::nullopt;
  if (it->second.expires <= steady::now()) {
    cache.erase(it);
    return std::nullopt;
  }
  resolve_result r;
  r.ec = it->second.ec;
  r.addresses = it->second.addresses;
  r.from_cache = true;
  return r;
}

void resolver::impl::store(const std::string& key, const resolve_result& r, int status,
                           std::chrono::seconds ttl) {
  if (status == ARES_SUCCESS)
    ttl = std::clamp(ttl, opts.min_ttl, std::max(opts.min_ttl, opts.max_ttl));
  else if (negative_answer(status))
    ttl = opts.negative_ttl;
  else
    return;  // a failure to get an answer says nothing about the name
  if (ttl <= std::chrono::seconds::zero() || opts.max_cache_entries == 0) return;
  const auto now = steady::now();
  if (cache.size() >= opts.max_cache_entries && !cache.count(key)) {
    std::erase_if(cache, [&](const auto& e) { return e.second.expires <= now; });
    if (cache.size() >= opts.max_cache_entries) cache.erase(cache.begin());
  }
  cache[key] = cache_entry{r.ec, r.addresses, now + ttl};
}

void resolver::impl::start(std::string key, std::unique_ptr<waiter> w) {
  auto it = inflight.find(key);
  if (it != inflight.end()) {  // the same name is already being looked up: share its answer
    attach(*it->second, std::move(w));
    return;
  }
  auto q = std::make_unique<query>();
  q->owner = this;
  q->host = key;
  query* raw = q.get();
  inflight.emplace(key, std::move(q));
  attach(*raw, std::move(w));
  ++started;
  ares_addrinfo_hints hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_protocol = IPPROTO_TCP;
  // May answer at once (from /etc/hosts, or a malformed name): `raw` may be gone after this.
  ares_getaddrinfo(channel, key.c_str(), nullptr, &hints, &impl::on_answer, raw);
  schedule_timeout();
}

void resolver::impl::attach(query& q, std::unique_ptr<waiter> w) {
  waiter* p = w.get();
  q.waiters.push_back(std::move(w));
  p->q = &q;
  p->self = std::prev(q.waiters.end());
}

// From a waiter's cancellation slot: it leaves at once. The query runs on for its other
// waiters (c-ares cannot cancel a single query); see reap_soon() for when nobody is left.
void resolver::impl::cancel(waiter* w) {
  std::unique_ptr<waiter> mine = std::move(*w->self);
  w->q->waiters.erase(w->self);
  resolve_result r;
  r.ec = asio::error::operation_aborted;
  mine->complete(std::move(r), true);
  reap_soon();
}

// When nobody waits for any query any more, all of them are cancelled: a query nobody awaits
// must not keep its io_context busy (a drain, `mtlsd verify` finishing) for c-ares's retry
// cycle. Posted: c-ares must not be cancelled from inside one of its own callbacks.
void resolver::impl::reap_soon() {
  if (reap_posted || inflight.empty()) return;
  reap_posted = true;
  asio::post(ioc, [this] {
    reap_posted = false;
    if (!channel || inflight.empty()) return;
    for (const auto& [name, q] : inflight)
      if (!q->waiters.empty()) return;
    ares_cancel(channel);  // ARES_ECANCELLED for each: not cached, no one to tell
    schedule_timeout();
  });
}

void resolver::impl::on_answer(void* arg, int status, int /*timeouts*/, ares_addrinfo* res) {
  std::unique_ptr<ares_addrinfo, void (*)(ares_addrinfo*)> owned(res, &ares_freeaddrinfo);
  if (status == ARES_EDESTRUCTION) return;  // stop(): the waiters go with the query
  auto* q = static_cast<query*>(arg);
  impl& self = *q->owner;
  resolve_result r;
  int ttl = std::numeric_limits<int>::max();
  if (status == ARES_SUCCESS && res) {
    for (const ares_addrinfo_node* n = res->nodes; n; n = n->ai_next) {
      asio::ip::address a;
      if (n->ai_family == AF_INET && n->ai_addr) {
        const auto* in = reinterpret_cast<const sockaddr_in*>(n->ai_addr);
        asio::ip::address_v4::bytes_type b;
        std::memcpy(b.data(), &in->sin_addr, b.size());
        a = asio::ip::address_v4(b);
      } else if (n->ai_family == AF_INET6 && n->ai_addr) {
        const auto* in6 = reinterpret_cast<const sockaddr_in6*>(n->ai_addr);
        asio::ip::address_v6::bytes_type b;
        std::memcpy(b.data(), &in6->sin6_addr, b.size());
        a = asio::ip::address_v6(b, in6->sin6_scope_id);
      } else {
        continue;
      }
      if (std::find(r.addresses.begin(), r.addresses.end(), a) == r.addresses.end())
        r.addresses.push_back(a);
      ttl = std::min(ttl, n->ai_ttl);
    }
    for (const ares_addrinfo_cname* c = res->cnames; c; c = c->next)
      ttl = std::min(ttl, c->ttl);
  }
  if (status == ARES_SUCCESS && r.addresses.empty()) status = ARES_ENODATA;
  if (status != ARES_SUCCESS) {
    r.ec = make_error(status);
    r.addresses.clear();
    ttl = 0;
  }
  self.store(q->host, r, status, std::chrono::seconds(std::max(ttl, 0)));
  auto node = self.inflight.extract(q->host);  // keeps the query alive until the end
  if (node.empty()) return;
  auto waiters = std::move(node.mapped()->waiters);
  for (auto& w : waiters)
    w->complete(r, false);
  self.reap_soon();  // other queries may have been left by all their waiters
}

}  // namespace mtlsd::net
