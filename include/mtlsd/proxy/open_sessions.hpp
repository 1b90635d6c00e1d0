#pragma once
// How many connections are open across every listener and worker, and a wake-up for the one
// party that waits for none to be left (drain, on the control thread). Workers count from
// their own threads; nothing is posted anywhere until someone waits.
#include <atomic>
#include <functional>

namespace mtlsd::proxy {

class open_sessions {
 public:
  // A session was admitted (counted before it starts, so that a drain never sees zero while
  // one is on its way). Any thread.
  void opened() { count_.fetch_add(1); }
  // A session ended. Any thread; the one that ends the last calls the hook, if one is set.
  void closed() {
    // seq_cst on both sides (here and in call_when_none): either this thread sees the hook, or
    // the waiter sees the count this decrement left.
    if (count_.fetch_sub(1) == 1 && hooked_.load()) on_none_();
  }
  int count() const { return count_.load(); }

  // From now on `on_none` is called (on the thread that closed the last session) each time the
  // count drops to zero. Call once; it must not block (post to the waiting thread). The waiter
  // reads count() after this call: a count that reached zero before it is seen there.
  void call_when_none(std::function<void()> on_none) {
    on_none_ = std::move(on_none);
    hooked_.store(true);
  }

 private:
  std::atomic<int> count_{0};
  std::atomic<bool> hooked_{false};
  std::function<void()> on_none_;  // written once, before hooked_ is set; read after it is seen
};

}  // namespace mtlsd::proxy
