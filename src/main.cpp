// Thin on purpose: everything, including argument parsing, lives in mtlsd_core so that tests
// exercise the code that ships.
#include "mtlsd/cli/cli.hpp"
#include "mtlsd/tls/record_buffers.hpp"

int main(int argc, char** argv) {
  // Before anything allocates through OpenSSL; without it mtlsd works the same, only slower.
  mtlsd::tls::record_buffers::install();
  return mtlsd::cli::main(argc, argv);
}
