#include <openssl/err.h>

#include "mtlsd/tls/openssl.hpp"

namespace mtlsd::tls {

std::string drain_errors() {
  std::string out;
  const char* file = nullptr;
  const char* func = nullptr;
  const char* data = nullptr;
  int line = 0;
  int flags = 0;
  while (unsigned long e = ERR_get_error_all(&file, &line, &func, &data, &flags)) {
    if (!out.empty()) out += "; ";
    const char* reason = ERR_reason_error_string(e);
    out += reason ? reason : ("error " + std::to_string(ERR_GET_REASON(e)));
    if (data && (flags & ERR_TXT_STRING) && *data) {
      out += " (";
      out += data;
      out += ")";
    }
  }
  return out;
}

}  // namespace mtlsd::tls
