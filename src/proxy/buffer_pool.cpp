#include "mtlsd/proxy/buffer_pool.hpp"

namespace mtlsd::proxy {
namespace {

// Enough for the connections that are moving data at any instant on one worker; beyond that,
// blocks go back to the allocator.
constexpr std::size_t max_cached = 256;

std::vector<std::unique_ptr<pooled_buffer::block>>& free_list() {
  thread_local std::vector<std::unique_ptr<pooled_buffer::block>> list;
  return list;
}

}  // namespace

pooled_buffer::pooled_buffer() {
  auto& list = free_list();
  if (list.empty()) {
    block_ = std::make_unique<block>();
  } else {
    block_ = std::move(list.back());
    list.pop_back();
  }
}

pooled_buffer::~pooled_buffer() {
  auto& list = free_list();
  if (block_ && list.size() < max_cached) list.push_back(std::move(block_));
}

}  // namespace mtlsd::proxy
