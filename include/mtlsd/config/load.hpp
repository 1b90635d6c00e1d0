#pragma once
// Loading a configuration: YAML text -> the validated structs of config.hpp, with every problem
// found (not just the first) as FILE:LINE:COL. Implemented in src/config/load.cpp, which hands
// the document to the section parsers (src/config/parse_*.cpp); the rules between keys are in
// src/config/validate.cpp.
#include <cstddef>
#include <optional>
#include <string>

#include "mtlsd/config/config.hpp"
#include "mtlsd/config/diagnostic.hpp"

namespace mtlsd::config {

struct load_result {
  std::optional<configuration> config;  // set when there is no error (warnings allowed)
  diagnostics problems;
};

// How a configuration is read. The default is for `mtlsd check` and start-up.
struct load_options {
  // A running daemon's reload: what it does not apply (log.access_log_path: opened at start-up
  // only) is not held against the new configuration. A log file mtlsd could not write is then a
  // warning, not an error: the running process keeps writing where it writes, and refusing the
  // reload would block certificate and CRL rotation until someone fixes the file (review).
  bool reload = false;
};

// The most load_file reads: a larger configuration file is refused (it names the file and this
// bound), and so is a stream (`check --config /dev/stdin`) that goes on past it.
inline constexpr std::size_t max_config_bytes = 16 * 1024 * 1024;

// Reads and validates the YAML file. Never throws for bad input: every problem is returned with
// FILE:LINE:COL. Does not open the certificate files it names (the runtime build does that).
load_result load_file(const std::string& path, const load_options& options = {});

// Same, from text (for tests and for a config handed over in memory). `file` names it in errors
// and anchors relative paths.
load_result load_text(const std::string& text, const std::string& file,
                      const load_options& options = {});

}  // namespace mtlsd::config
