#pragma once
// The command line: run, check, verify, version, health, --help (the README's "Command line").
#include <optional>
#include <string>
#include <vector>

namespace mtlsd::cli {

// The options given to one subcommand, as (long name without dashes, value); a flag has the
// value "true". Filled by the CLI11 parser in cli.cpp, so the commands do not depend on it.
struct options {
  std::string command;
  std::vector<std::pair<std::string, std::string>> flags;
  bool help = false;
  std::optional<std::string> get(std::string_view name) const;
};

int main(int argc, char** argv);

// Opens /dev/null on whichever of descriptors 0, 1 and 2 is closed. A closed one would be taken by
// the next descriptor opened (gRPC's initializer opens an eventfd, then the event loop's, the
// listeners, peers' sockets), and what is meant for stdout or stderr would be written into it:
// into a connection. Called from the executable's .preinit_array (main.cpp), before any
// library's initializer runs; OpenSSH does the same (sanitise_stdfd).
void hold_standard_descriptors();

int check_command(const options& o);
int verify_command(const options& o);
int health_command(const options& o);

// Parses RFC 3339 ("2026-01-02T03:04:05Z", "...+02:00", fractional seconds allowed) or "@EPOCH".
std::optional<long long> parse_time(std::string_view text);

}  // namespace mtlsd::cli
