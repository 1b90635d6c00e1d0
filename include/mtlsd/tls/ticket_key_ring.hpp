#pragma once
// The session-ticket keys behind use_shared_ticket_keys() (ticket_keys.hpp): the key issuing
// tickets and the one before it, still decrypting. Rotation is lazy, when a ticket is issued a
// period or more after the current key was made: no timer, no thread. Time is passed in, so the
// schedule can be tested without waiting for it.
#include <array>
#include <chrono>
#include <mutex>
#include <optional>

namespace mtlsd::tls {

struct ticket_key {
  std::array<unsigned char, 16> name{};
  std::array<unsigned char, 32> aes{};
  std::array<unsigned char, 32> hmac{};
  std::chrono::steady_clock::time_point created;
};

// A copy of a key for one OpenSSL callback, wiped when it goes: a retired key in a core dump or
// reused memory would decrypt recorded tickets (a TLS 1.2 ticket holds the master secret).
struct ticket_key_copy {
  std::optional<ticket_key> key;
  ticket_key_copy() = default;
  ticket_key_copy(const ticket_key_copy&) = delete;
  ticket_key_copy& operator=(const ticket_key_copy&) = delete;
  ~ticket_key_copy();
};

class ticket_key_ring {
 public:
  using time_point = std::chrono::steady_clock::time_point;

  // A key issues tickets for `period` and decrypts them until it is twice that old.
  explicit ticket_key_ring(std::chrono::seconds period) : period_(period) {}
  ticket_key_ring(const ticket_key_ring&) = delete;
  ticket_key_ring& operator=(const ticket_key_ring&) = delete;

  // Sets `out` to the key that issues a ticket at `now`, rotating first when the current key is
  // a period old (the current one becomes the previous, the previous one is wiped). Throws when
  // the random generator fails.
  void for_issuing(time_point now, ticket_key_copy& out);
  // Sets `out` to the key named `name` (16 bytes) if it is current or previous and younger than
  // two periods at `now`; leaves `out` empty otherwise (the client gets a full handshake).
  void for_decrypting(const unsigned char* name, time_point now, ticket_key_copy& out);

 private:
  const std::chrono::seconds period_;
  std::mutex mu_;  // taken once per ticket issued or presented; a handshake costs far more
  std::optional<ticket_key> current_;
  std::optional<ticket_key> previous_;
};

}  // namespace mtlsd::tls
