#pragma once
// Stapling our own certificate's OCSP response (revocation.stapling): a loop per listener that
// keeps its staple_slot filled with a verified response, refreshed halfway to its nextUpdate,
// for as long as the slot lives and is not retired.
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <memory>
#include <string>

#include "mtlsd/net/url.hpp"
#include "mtlsd/tls/openssl.hpp"
#include "mtlsd/tls/revocation/stapling.hpp"
#include "service_state.hpp"

namespace mtlsd::tls::revocation {

struct staple_source {
  x509_ptr cert;
  x509_ptr issuer;
  net::http_url url;
  std::chrono::milliseconds timeout{2000};
  std::string listener;
};

boost::asio::awaitable<void> keep_stapled(std::shared_ptr<service_state> state,
                                          std::weak_ptr<staple_slot> slot, staple_source src);

}  // namespace mtlsd::tls::revocation
