#pragma once
// Hands a source's news from the thread that receives it to the control thread, keeping only the
// newest of each kind. The receiving thread reads on at its peer's pace; what the control thread
// does with each piece (an SVID update rebuilds every listener on its socket) may be slower. A
// post per piece then queues without bound: an agent streaming SVID updates back to back grew
// mtlsd to 1.6 GB in 100 s and starved the admin endpoint (review). Here at most one delivery is
// queued at a time, and a piece not yet taken is replaced by a newer one of its kind: the control
// thread applies the latest update, then the latest error, in the order they came.
#include <cstdint>
#include <mutex>
#include <optional>
#include <utility>

namespace mtlsd::daemon {

template <class Update, class Error>
class latest_mailbox {
 public:
  // Receiving thread. True when the caller must queue a delivery (none is queued); false when
  // the one queued will take this too.
  bool put_update(Update u) { return put(update_, std::move(u)); }
  bool put_error(Error e) { return put(error_, std::move(e)); }

  struct taken {
    std::optional<Update> update;
    std::optional<Error> error;
    bool error_first = false;  // both: the error came before the update
  };
  // Control thread, in the queued delivery: everything waiting; the next put queues again.
  taken take() {
    std::lock_guard lock(mutex_);
    queued_ = false;
    taken out;
    out.error_first = update_.piece && error_.piece && error_.order < update_.order;
    out.update = std::exchange(update_.piece, std::nullopt);
    out.error = std::exchange(error_.piece, std::nullopt);
    return out;
  }

 private:
  template <class T>
  struct slot {
    std::optional<T> piece;
    std::uint64_t order = 0;
  };

  template <class T>
  bool put(slot<T>& s, T piece) {
    std::lock_guard lock(mutex_);
    s.piece = std::move(piece);
    s.order = ++count_;
    return !std::exchange(queued_, true);
  }

  std::mutex mutex_;
  slot<Update> update_;
  slot<Error> error_;
  std::uint64_t count_ = 0;
  bool queued_ = false;
};

}  // namespace mtlsd::daemon
