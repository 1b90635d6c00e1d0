#pragma once
// The process: reads the configuration, builds the runtime, binds listeners on every worker,
// serves admin, and handles signals (SIGHUP reload, SIGTERM/SIGINT drain). Everything here runs
// on the control thread; workers are only ever posted to.
#include <string>

namespace mtlsd::daemon {

// Runs until drained. Returns the process exit code (0 after a drain, 1 when startup failed).
int run(const std::string& config_path);

}  // namespace mtlsd::daemon
