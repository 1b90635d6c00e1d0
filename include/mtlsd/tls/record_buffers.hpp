#pragma once
// OpenSSL's record buffers, kept for reuse on each thread.
//
// mtlsd sets SSL_MODE_RELEASE_BUFFERS so that an idle connection holds no record buffer
// (tls/context.cpp). The price: OpenSSL mallocs and frees its ~17 KiB read and write buffers
// around every record exchange, about 1,200 instructions per keep-alive request (callgrind,
// bench/run.sh --instructions, with and without the mode). Routing OpenSSL's allocations
// through here keeps a few blocks of that size per thread: a busy connection takes one from a
// free list instead, which saves ~700 of those, and idle connections still give theirs back.
#include <cstddef>

namespace mtlsd::tls::record_buffers {

// Requests of these sizes (both of OpenSSL 3.0's record buffers, with read-ahead, for TLS and
// DTLS) are served with a block of block_size bytes, the one size the free list holds.
inline constexpr std::size_t smallest = 16 * 1024;
inline constexpr std::size_t block_size = 20 * 1024;
// Per thread: enough for the records moving at any instant on one worker; beyond that blocks
// go back to malloc, so a burst does not pin memory.
inline constexpr std::size_t max_cached = 16;
// Blocks are allocated at this alignment, so that release() tells one from the ~4,000 other
// pointers a full handshake frees by its address alone: only a block-aligned pointer (1 in
// 256 of malloc's others) has its size asked (malloc_usable_size). Asking it of every pointer
// cost ~150k instructions per full handshake (callgrind: 2% of it, more than nginx's own code).
// A multiple of it, block_size spans 5 pages, not 6.
inline constexpr std::size_t block_align = 4096;
static_assert(block_size % block_align == 0);

// Makes OpenSSL allocate through allocate/release below. Must run before OpenSSL allocates
// anything (first thing in main); false when that is too late, and nothing changes.
bool install();
// Whether install() took effect (for the daemon's start-up log).
bool installed();

// malloc and free, with blocks for sizes in [smallest, block_size] taken from and given back
// to this thread's free list. Any pointer from malloc may be released here.
void* allocate(std::size_t size);
void release(void* block);

// For tests: blocks on this thread's free list, and requests it has served since the thread
// began.
std::size_t cached();
std::size_t reused();

}  // namespace mtlsd::tls::record_buffers
