#include "mtlsd/tls/record_buffers.hpp"

#include <malloc.h>
#include <openssl/crypto.h>

#include <cstdint>
#include <cstdlib>

namespace mtlsd::tls::record_buffers {
namespace {

// What malloc_usable_size reports for a block of block_size bytes: a released, block-aligned
// pointer with this usable size can serve any request up to block_size, whoever allocated it.
std::size_t block_usable_size() {
  static const std::size_t usable = [] {
    void* probe = std::aligned_alloc(block_align, block_size);
    const std::size_t n = probe ? malloc_usable_size(probe) : 0;
    std::free(probe);
    return n;
  }();
  return usable;
}

struct free_list {
  void* blocks[max_cached];
  std::size_t count = 0;
  std::size_t reused = 0;
  ~free_list();
};

// Set when this thread's list is gone (thread exit): later releases on the thread, OpenSSL's
// own cleanup among them, go straight to free. A plain bool stays readable after the list's
// destructor has run.
thread_local bool list_gone = false;
thread_local free_list list;

bool installed_ = false;

free_list::~free_list() {
  list_gone = true;
  while (count > 0)
    std::free(blocks[--count]);
}

void* openssl_malloc(std::size_t size, const char*, int) {
  return size == 0 ? nullptr : allocate(size);
}

void* openssl_realloc(void* block, std::size_t size, const char*, int) {
  // Every block is malloc's own (the list only holds released ones): realloc takes any of them.
  if (size == 0) {
    release(block);
    return nullptr;
  }
  return std::realloc(block, size);
}

void openssl_free(void* block, const char*, int) {
  release(block);
}

}  // namespace

bool install() {
  block_usable_size();  // computed now: not inside OpenSSL's first free
  installed_ = CRYPTO_set_mem_functions(openssl_malloc, openssl_realloc, openssl_free) == 1;
  return installed_;
}

bool installed() {
  return installed_;
}

void* allocate(std::size_t size) {
  if (size < smallest || size > block_size) return std::malloc(size);
  if (!list_gone && list.count > 0) {
    ++list.reused;
    return list.blocks[--list.count];
  }
  return std::aligned_alloc(block_align, block_size);
}

void release(void* block) {
  // The common case first: what is not block-aligned is no block (OpenSSL frees ~4,000
  // pointers per full handshake, ~13 of them record buffers), and needs no size asked.
  if ((reinterpret_cast<std::uintptr_t>(block) & (block_align - 1)) != 0) {
    std::free(block);
    return;
  }
  if (!block) return;
  if (!list_gone && list.count < max_cached && malloc_usable_size(block) == block_usable_size()) {
    list.blocks[list.count++] = block;
    return;
  }
  std::free(block);
}

std::size_t cached() {
  return list_gone ? 0 : list.count;
}

std::size_t reused() {
  return list_gone ? 0 : list.reused;
}

}  // namespace mtlsd::tls::record_buffers
