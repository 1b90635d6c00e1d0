#include "mtlsd/revocation_status.hpp"

namespace mtlsd {

std::string_view to_string(revocation_status s) {
  switch (s) {
    case revocation_status::not_checked:
      return "not_checked";
    case revocation_status::good:
      return "good";
    case revocation_status::revoked:
      return "revoked";
    case revocation_status::unknown:
      return "unknown";
    case revocation_status::unavailable:
      return "unavailable";
  }
  return "unavailable";
}

std::string_view to_string(revocation_method m) {
  return m == revocation_method::crl ? "crl" : "ocsp";
}

revocation_status worst(revocation_status a, revocation_status b) {
  auto rank = [](revocation_status s) {
    switch (s) {
      case revocation_status::not_checked:
        return 0;
      case revocation_status::good:
        return 1;
      case revocation_status::unknown:
        return 2;
      case revocation_status::unavailable:
        return 3;
      case revocation_status::revoked:
        return 4;
    }
    return 0;
  };
  return rank(a) >= rank(b) ? a : b;
}

}  // namespace mtlsd
