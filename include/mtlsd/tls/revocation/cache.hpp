#pragma once
// A least-recently-used map bounded by entry count and by total size. Single-threaded: the
// revocation service touches its caches from its own thread only.
#include <cstddef>
#include <functional>
#include <list>
#include <unordered_map>
#include <utility>

namespace mtlsd::tls::revocation {

template <class Key, class Value>
class lru_cache {
 public:
  using size_of_fn = std::function<std::size_t(const Value&)>;
  using evicted_fn = std::function<void(const Key&, Value&)>;

  lru_cache(std::size_t max_entries, std::size_t max_bytes, size_of_fn size_of = nullptr)
      : max_entries_(max_entries), max_bytes_(max_bytes), size_of_(std::move(size_of)) {}

  // Called for every entry pushed out by the bounds (not for erase()).
  void on_evict(evicted_fn f) { on_evict_ = std::move(f); }

  // The entry, marked most recently used; null when absent.
  Value* find(const Key& k) {
    auto it = index_.find(k);
    if (it == index_.end()) return nullptr;
    order_.splice(order_.begin(), order_, it->second);
    return &it->second->second;
  }
  // The entry without touching its recency (background refreshes must not keep entries alive).
  Value* peek(const Key& k) {
    auto it = index_.find(k);
    return it == index_.end() ? nullptr : &it->second->second;
  }

  // Inserts or replaces, then evicts least recently used entries until within bounds. An entry
  // larger than max_bytes on its own is not stored. Returns the stored entry or null.
  Value* put(const Key& k, Value v) {
    const std::size_t size = size_of_ ? size_of_(v) : 0;
    erase(k);
    if (max_entries_ == 0 || (size_of_ && size > max_bytes_)) return nullptr;
    order_.emplace_front(k, std::move(v));
    index_[k] = order_.begin();
    bytes_ += size;
    while (order_.size() > max_entries_ || (size_of_ && bytes_ > max_bytes_)) {
      auto& last = order_.back();
      if (&last == &order_.front()) break;  // never evict what was just inserted
      if (on_evict_) on_evict_(last.first, last.second);
      bytes_ -= size_of_ ? size_of_(last.second) : 0;
      index_.erase(last.first);
      order_.pop_back();
    }
    return &order_.front().second;
  }

  void erase(const Key& k) {
    auto it = index_.find(k);
    if (it == index_.end()) return;
    bytes_ -= size_of_ ? size_of_(it->second->second) : 0;
    order_.erase(it->second);
    index_.erase(it);
  }

  // Calls f(key, value) for every entry, most recently used first, without touching recency.
  template <class F>
  void for_each(F&& f) {
    for (auto& [k, v] : order_)
      f(k, v);
  }

  std::size_t size() const { return order_.size(); }
  std::size_t bytes() const { return bytes_; }

 private:
  using list = std::list<std::pair<Key, Value>>;
  std::size_t max_entries_;
  std::size_t max_bytes_;
  size_of_fn size_of_;
  evicted_fn on_evict_;
  list order_;
  std::unordered_map<Key, typename list::iterator> index_;
  std::size_t bytes_ = 0;
};

}  // namespace mtlsd::tls::revocation
