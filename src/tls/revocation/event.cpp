#include "mtlsd/tls/revocation/event.hpp"

#include <algorithm>
#include <map>

#include "mtlsd/tls/revocation/crl.hpp"

namespace mtlsd::tls::revocation {

std::vector<peer_cert_id> peer_cert_ids(const std::vector<X509*>& chain) {
  std::vector<peer_cert_id> out;
  out.reserve(chain.size());
  for (X509* c : chain)
    out.push_back({name_der(X509_get_issuer_name(c)), serial_der(X509_get0_serialNumber(c))});
  return out;
}

int revoked_depth(const revocation_event& e, const std::vector<peer_cert_id>& chain) {
  for (std::size_t i = 0; i < chain.size(); ++i)
    if (chain[i].issuer == e.issuer &&
        std::binary_search(e.serials.begin(), e.serials.end(), chain[i].serial))
      return static_cast<int>(i);
  return -1;
}

std::vector<event_ptr> events_from_crl_files(const std::vector<x509_crl_ptr>& crls,
                                             const std::string& listener) {
  std::map<std::string, std::vector<std::string>> by_issuer;
  for (const auto& crl : crls) {
    auto serials = revoked_serials(crl.get());
    if (serials.empty()) continue;
    auto& all = by_issuer[name_der(X509_CRL_get_issuer(crl.get()))];
    all.insert(all.end(), serials.begin(), serials.end());
  }
  std::vector<event_ptr> out;
  for (auto& [issuer, serials] : by_issuer) {
    std::sort(serials.begin(), serials.end());
    serials.erase(std::unique(serials.begin(), serials.end()), serials.end());
    auto e = std::make_shared<revocation_event>();
    e->issuer = issuer;
    e->serials = std::move(serials);
    e->listener = listener;
    e->source = "crl file";
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace mtlsd::tls::revocation
