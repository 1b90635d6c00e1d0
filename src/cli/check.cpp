#include <iostream>

#include "mtlsd/cli/cli.hpp"
#include "mtlsd/config/config.hpp"
#include "mtlsd/config/load.hpp"
#include "mtlsd/config/print.hpp"
#include "mtlsd/runtime/runtime.hpp"
#include "mtlsd/tls/pkcs11.hpp"

namespace mtlsd::cli {

// `mtlsd check`: the same load and build as startup and reload, printed like a compiler.
// With --print (like nginx -T) a usable configuration goes to stdout as YAML and the verdict to
// stderr, so that stdout can be saved and checked again.
int check_command(const options& o) {
  const std::string path = *o.get("config");
  const bool print = o.get("print").has_value();
  // --reload: as daemon::load_next reads it, so that ExecReload's check refuses exactly what
  // the SIGHUP's reload would (review: it refused an unwritable log file the reload accepts).
  auto loaded = config::load_file(path, {.reload = o.get("reload").has_value()});
  for (const auto& p : loaded.problems)
    std::cerr << p.str() << "\n";
  if (!loaded.config) {
    std::cerr << "mtlsd: configuration " << path << " is NOT usable\n";
    return 1;
  }
  try {
    auto rt = runtime::build(*loaded.config);
    for (const auto& w : runtime::warnings(*rt))
      std::cerr << w.str() << "\n";
    // `run` would load the same modules and then refuse to enter the sandbox: say so now.
    if (auto note = tls::pkcs11::threads_started(); !note.empty() && loaded.config->sandbox) {
      std::cerr << loaded.config->file << ": " << note
                << ", so mtlsd run cannot enter the sandbox (it must have one thread then): load "
                   "the token's own module (module-path= in the key's URI), or set sandbox: "
                   "false\n"
                << "mtlsd: configuration " << loaded.config->file << " is NOT usable\n";
      return 1;
    }
    if (print) std::cout << config::print_yaml(*loaded.config) << std::flush;
    (print ? std::cerr : std::cout)
        << "mtlsd: configuration " << loaded.config->file << " is valid (" << rt->listeners.size()
        << (rt->listeners.size() == 1 ? " listener" : " listeners") << ")\n";
    return 0;
  } catch (const config::config_error& e) {
    for (const auto& p : e.problems())
      std::cerr << p.str() << "\n";
    std::cerr << "mtlsd: configuration " << loaded.config->file << " is NOT usable\n";
    return 1;
  }
}

}  // namespace mtlsd::cli
