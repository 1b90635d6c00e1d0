#include "mtlsd/config/spiffe_id.hpp"

namespace mtlsd::config {
namespace {

constexpr std::string_view scheme = "spiffe://";
constexpr std::size_t max_id_bytes = 2048;
constexpr std::size_t max_trust_domain_bytes = 255;

bool trust_domain_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

bool path_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '-' || c == '_';
}

}  // namespace

std::string spiffe_id_problem(std::string_view id) {
  if (id.substr(0, scheme.size()) != scheme) return "it must start with spiffe://";
  if (id.size() > max_id_bytes) return "it is longer than 2048 bytes";
  const std::string_view rest = id.substr(scheme.size());
  const std::size_t slash = rest.find('/');
  const std::string_view td = rest.substr(0, slash);
  if (td.empty()) return "it names no trust domain";
  if (td.size() > max_trust_domain_bytes) return "its trust domain is longer than 255 bytes";
  for (char c : td)
    if (!trust_domain_char(c))
      return std::string("its trust domain holds '") + c +
             "' (only lowercase letters, digits, '.', '-' and '_'; no user or port)";
  if (slash == std::string_view::npos) return "";
  std::string_view path = rest.substr(slash + 1);
  for (;;) {
    const std::size_t next = path.find('/');
    const std::string_view segment = path.substr(0, next);
    if (segment.empty()) return "its path has an empty segment (or ends with '/')";
    if (segment == "." || segment == "..") return "its path has a '.' or '..' segment";
    for (char c : segment)
      if (!path_char(c))
        return std::string("its path holds '") + c +
               "' (only letters, digits, '.', '-' and '_'; no percent-encoding, query or fragment)";
    if (next == std::string_view::npos) return "";
    path = path.substr(next + 1);
  }
}

std::string leaf_spiffe_id_problem(std::string_view id) {
  if (std::string why = spiffe_id_problem(id); !why.empty()) return why;
  if (id.find('/', scheme.size()) == std::string_view::npos)
    return "it names only a trust domain (a workload's SPIFFE ID has a path)";
  return "";
}

}  // namespace mtlsd::config
