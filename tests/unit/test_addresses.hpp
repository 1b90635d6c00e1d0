#pragma once
// Socket addresses for the PROXY protocol tests, from their text form.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <cstring>

namespace mtlsd::test {

inline sockaddr_storage v4(const char* ip, std::uint16_t port) {
  sockaddr_storage ss{};
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(port);
  inet_pton(AF_INET, ip, &sin.sin_addr);
  std::memcpy(&ss, &sin, sizeof sin);
  return ss;
}

inline sockaddr_storage v6(const char* ip, std::uint16_t port) {
  sockaddr_storage ss{};
  sockaddr_in6 sin6{};
  sin6.sin6_family = AF_INET6;
  sin6.sin6_port = htons(port);
  inet_pton(AF_INET6, ip, &sin6.sin6_addr);
  std::memcpy(&ss, &sin6, sizeof sin6);
  return ss;
}

}  // namespace mtlsd::test
