// Thin on purpose: everything, including argument parsing, lives in mtlsd_core so that tests
// exercise the code that ships.
#include "mtlsd/cli/cli.hpp"
#include "mtlsd/tls/record_buffers.hpp"

namespace {
void hold_standard_descriptors(int, char**, char**) {
  mtlsd::cli::hold_standard_descriptors();
}
}  // namespace

// Before the shared libraries' initializers (see hold_standard_descriptors): only an
// executable's .preinit_array runs that early.
__attribute__((section(".preinit_array"),
               used)) static void (*const preinit_hold)(int, char**,
                                                        char**) = hold_standard_descriptors;

int main(int argc, char** argv) {
  // Before anything allocates through OpenSSL; without it mtlsd works the same, only slower.
  mtlsd::tls::record_buffers::install();
  return mtlsd::cli::main(argc, argv);
}
