#pragma once
// Rules on a loaded configuration that are applied when the runtime is built rather than at load:
// such a configuration is well-formed (it loads, and tests load it), but this build cannot serve
// it. runtime::build applies them, so `mtlsd check`, start and reload all refuse it. The rules
// applied at load are in src/config/validate.cpp too.
#include "mtlsd/config/config.hpp"
#include "mtlsd/config/diagnostic.hpp"

namespace mtlsd::config {

// Combinations that name a feature this build does not have. Accepting them silently would be a
// security hole (an operator who asked for a feature must not get its absence), so each adds an
// error at the listener to `out`.
void refuse_unbuilt_features(const listener& l, diagnostics& out);

}  // namespace mtlsd::config
