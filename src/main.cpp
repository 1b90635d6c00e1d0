// Thin on purpose: everything, including argument parsing, lives in mtlsd_core so that tests
// exercise the code that ships.
#include "mtlsd/cli/cli.hpp"

int main(int argc, char** argv) {
  return mtlsd::cli::main(argc, argv);
}
