#include "mtlsd/tls/staple_lapse.hpp"

#include <algorithm>
#include <cstdint>

namespace mtlsd::tls {
namespace {

// X509 ex_data holding the time itself, not a pointer: nothing to free.
int staple_until_index() {
  static const int i = X509_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return i;
}

}  // namespace

void set_stapled_good_until(X509* leaf, std::time_t until) {
  X509_set_ex_data(
      leaf, staple_until_index(),
      reinterpret_cast<void*>(static_cast<std::intptr_t>(std::max<std::time_t>(1, until))));
}

std::time_t stapled_good_until(X509* leaf) {
  if (!leaf) return 0;
  return static_cast<std::time_t>(
      reinterpret_cast<std::intptr_t>(X509_get_ex_data(leaf, staple_until_index())));
}

}  // namespace mtlsd::tls
