// mtlsd_loadgen's command line (see loadgen.cpp for the modes, bench/README.md for the options).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace loadgen {

struct options {
  std::string mode = "handshakes";
  std::string host = "127.0.0.1";
  int port = 0;
  std::string cert, key, ca;
  std::string server_name = "localhost";
  std::string path;  // default depends on the mode
  std::string label;
  std::string format = "json";
  int threads = 4;
  int connections = 0;  // default depends on the mode
  double duration = 5.0;
  double warmup = 1.0;
  double settle = 0.5;
  double timeout = 5.0;
  std::uint64_t count = 0;              // 0 = bounded by duration only
  double rate = 0;                      // total operations per second over all threads; 0 = unpaced
  int hold = 0;                         // flood: connections opened first and kept
  std::vector<std::string> proxy_srcs;  // PROXY v1 source addresses; empty = no header
  std::string scenario;                 // copied into the output
  std::string pending = "silent";       // pending: silent | half (half a ClientHello sent)
  pid_t hup_pid = 0;                    // resumed: send SIGHUP to this process in the window
  double hup_at = 0;                    // ... this many seconds into the window
  double hup_wait = 1.5;                // then wait this long before trying pre-reload tickets
  std::vector<pid_t> server_pids;
  std::vector<pid_t> upstream_pids;
};

// Parses the command line; prints the usage and exits on a bad one.
options parse(int argc, char** argv);

}  // namespace loadgen
