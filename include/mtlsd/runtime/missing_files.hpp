#pragma once
#include "mtlsd/config/config.hpp"

namespace mtlsd::runtime {

// Every file listener `l` loads that does not exist (no such file, or a path through something
// that is not a directory), each as the problem its loader reports ("PATH: cannot read
// certificate: No such file or directory"). A listener's build stops at its first problem, so
// without this `check` named one missing file per listener and run (review). Only what `stat`
// can tell without opening is looked at: a pipe given for a file must not be opened twice.
config::diagnostics missing_files(const config::listener& l);

}  // namespace mtlsd::runtime
