#include "mtlsd/tls/asn1_time.hpp"

namespace mtlsd::tls {

std::time_t asn1_time_to_unix(const ASN1_TIME* t) {
  std::tm tm{};
  if (!t || ASN1_TIME_to_tm(t, &tm) != 1) return 0;
  return timegm(&tm);
}

}  // namespace mtlsd::tls
