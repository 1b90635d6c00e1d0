#pragma once
// The sink's output file descriptor (sink.cpp): opening an append-only file and writing whole
// batches to it. Only the writer thread writes.
#include <sys/uio.h>

#include <cstddef>
#include <span>
#include <string>

namespace mtlsd::log::detail {

// Opens `path` to append (created 0640); -1 with errno set when it cannot.
int open_append(const std::string& path);

// Why open_append failed, for the operator.
std::string open_failure(const std::string& path, int err);

// Blocking write of all of `parts` (consumed as they are written). Only the writer thread calls
// this, so a reader that stops reading stalls this thread alone. An fd someone else made
// non-blocking is waited on. How much reached `fd`: all of it, or what went before an error
// (then in `error`).
std::size_t write_all(int fd, std::span<iovec> parts, int& error);

}  // namespace mtlsd::log::detail
