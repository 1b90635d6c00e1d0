// The YAML configuration loader on arbitrary text: it must return a configuration or a list of
// problems, never crash, throw or hang. Seeds: the shipped examples and deployment fixtures.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_support.hpp"
#include "mtlsd/config/config.hpp"
#include "mtlsd/config/load.hpp"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  mtlsd::fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto r = mtlsd::config::load_text(text, "/fuzz/mtlsd.yaml");
  mtlsd::fuzz::check(r.config.has_value() != mtlsd::config::has_errors(r.problems),
                     "a configuration is refused exactly when there is an error");
  for (const auto& p : r.problems)
    mtlsd::fuzz::check(p.where.file == "/fuzz/mtlsd.yaml" && !p.message.empty(),
                       "every problem names the file and says what is wrong");
  if (r.config) {
    // What `check` and the reload watcher do with a loaded configuration.
    (void)r.config->referenced_files();
    for (const auto& l : r.config->listeners)
      mtlsd::fuzz::check(r.config->find_listener(l.name) != nullptr, "listeners are found by name");
  }
  return 0;
}
