#pragma once
// Relay buffers on loan. An idle connection holds no buffer: a pump waits for readability
// first and borrows a 16 KiB block only while data moves, then gives it back. Each worker thread
// keeps its own free list (thread_local, no locks), capped so a burst does not pin memory.
#include <array>
#include <boost/asio/buffer.hpp>
#include <cstddef>
#include <memory>
#include <vector>

namespace mtlsd::proxy {

// 16 KiB: one maximum-size TLS record, so each TLS write is one record.
inline constexpr std::size_t relay_buffer_size = 16 * 1024;

class pooled_buffer {
 public:
  pooled_buffer();
  ~pooled_buffer();
  pooled_buffer(const pooled_buffer&) = delete;
  pooled_buffer& operator=(const pooled_buffer&) = delete;

  char* data() { return block_->data(); }
  static constexpr std::size_t size() { return relay_buffer_size; }
  boost::asio::mutable_buffer buffer() { return boost::asio::buffer(block_->data(), size()); }

  using block = std::array<char, relay_buffer_size>;

 private:
  std::unique_ptr<block> block_;
};

}  // namespace mtlsd::proxy
