#include "mtlsd/tls/revocation/service.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <vector>

#include "chain_completion.hpp"
#include "crl_fetcher.hpp"
#include "mtlsd/net/url.hpp"
#include "mtlsd/tls/credentials.hpp"
#include "mtlsd/tls/staple_lapse.hpp"
#include "ocsp_client.hpp"
#include "service_state.hpp"
#include "stapler.hpp"

namespace mtlsd::tls::revocation {

// A CRL file and a CRL download are read up to the same size.
static_assert(service_limits{}.crl_bytes == max_crl_file_bytes);

namespace asio = boost::asio;
using asio::as_tuple;
using asio::use_awaitable;

namespace {

struct join_flight : flight {
  using flight::flight;
  std::size_t left = 0;
};

// Stores what `lookup` answers in `*out` (a level of the check's own frame, which outlives it).
asio::awaitable<void> answer_into(answer* out, asio::awaitable<answer> lookup) {
  *out = co_await std::move(lookup);
}

}  // namespace

struct service::impl : std::enable_shared_from_this<impl> {
  impl(asio::any_io_executor ex, outcome_sink report, service_limits lim, bool background)
      : state(std::make_shared<service_state>(std::move(ex), std::move(report), lim, background)),
        ocsp(std::make_shared<ocsp_client>(state)),
        crls(std::make_shared<crl_fetcher>(state)),
        issuers(lim.issuers) {}

  std::shared_ptr<service_state> state;
  std::shared_ptr<ocsp_client> ocsp;
  std::shared_ptr<crl_fetcher> crls;
  known_issuers issuers;

  // Runs every lookup concurrently and returns when all have ended.
  asio::awaitable<void> run_all(std::vector<asio::awaitable<void>> tasks) {
    if (tasks.empty()) co_return;
    auto join = std::make_shared<join_flight>(state->ex);
    join->left = tasks.size();
    for (auto& t : tasks)
      asio::co_spawn(state->ex, std::move(t), [join, st = state](const std::exception_ptr& e) {
        if (e) st->report(task_failed{"revocation lookup", util::message_of(e)});
        if (--join->left == 0) join->finish();
      });
    co_await join->wait();
  }

  // The lookups that level `d` of `req.chain` needs, with what is known without the network
  // (CRL files, a stapled response, an unknown issuer) filled into `l` at once.
  void plan_level(const check_request& req, std::size_t d, level& l,
                  std::vector<asio::awaitable<void>>& lookups) {
    const policy& pol = req.pol;
    const std::size_t n = req.chain.size();
    X509* cert = req.chain[d].get();
    l.subject = subject_of(cert);
    if (pol.crl_files && pol.crl_at(d)) {
      // Checked inside the handshake; a resumed session's depths are those its ticket says had
      // no usable CRL file, or whose CRL went stale since (proxy/session_resumed.hpp).
      const bool missing = d < 32 && (req.crl_file_unavailable >> d) & 1U;
      l.crl_file = {missing ? status::unavailable : status::good, "crl file",
                    missing ? req.crl_file_note : std::string()};
    }
    X509* issuer = d + 1 < n ? req.chain[d + 1].get() : nullptr;
    if (!issuer) {
      // The top of the chain: a trust anchor, which nothing above can revoke — unless the
      // chain stops short of it (a resumed session whose issuer the service cannot find).
      if (req.ends_at_anchor || X509_check_issued(cert, cert) == X509_V_OK) return;
      const answer no_issuer{status::unavailable, "",
                             "issuer unknown (a resumed session whose chain could not be rebuilt "
                             "to its trust anchor)"};
      if (pol.distribution_points && pol.crl_at(d)) l.distribution_point = no_issuer;
      if (pol.ocsp_at(d)) l.ocsp = no_issuer;
      return;
    }
    if (pol.distribution_points && pol.crl_at(d))
      lookups.push_back(answer_into(&l.distribution_point,
                                    crls->lookup(up_ref(cert), up_ref(issuer), pol, req.at)));
    if (pol.ocsp_at(d)) {
      // Client mode: a verified staple saying "good" is the leaf's OCSP answer already, unless
      // the OCSP client knows the leaf revoked; with recheck_established it is watched as a
      // fetched answer is, and asked again once it lapses.
      if (d == 0 && req.leaf_stapled_good)
        l.ocsp =
            ocsp->take_stapled_good(up_ref(cert), up_ref(issuer), pol, stapled_good_until(cert));
      else
        lookups.push_back(answer_into(&l.ocsp, ocsp->lookup(up_ref(cert), up_ref(issuer), pol)));
    }
  }

  asio::awaitable<verdict> check(check_request req) {
    auto self = shared_from_this();  // outlives the lookups below even if the service stops
    if (req.ends_at_anchor)
      issuers.learn(req.chain);
    else
      issuers.complete(req.chain);
    std::vector<level> levels(req.chain.size());
    std::vector<asio::awaitable<void>> lookups;
    for (std::size_t d = 0; d < req.chain.size(); ++d)
      plan_level(req, d, levels[d], lookups);
    co_await run_all(std::move(lookups));
    co_return decide(levels, req.pol.soft_fail);
  }
};

service::service(asio::any_io_executor ex, outcome_sink report, service_limits limits,
                 bool background)
    : impl_(std::make_shared<impl>(std::move(ex), std::move(report), limits, background)) {}

service::~service() = default;

asio::any_io_executor service::executor() const {
  return impl_->state->ex;
}

asio::awaitable<verdict> service::check(check_request req) {
  return impl_->check(std::move(req));
}

void service::subscribe(std::function<void(event_ptr)> sink) {
  asio::post(impl_->state->ex, [st = impl_->state, sink = std::move(sink)]() mutable {
    st->subscribe(std::move(sink));
  });
}

bool service::staple(std::weak_ptr<staple_slot> slot, x509_ptr cert, x509_ptr issuer,
                     const std::string& url, std::chrono::milliseconds timeout,
                     std::string listener) {
  auto parsed = net::parse_http_url(url);
  if (!parsed) return false;
  staple_source src{std::move(cert), std::move(issuer), std::move(*parsed), timeout,
                    std::move(listener)};
  asio::post(impl_->state->ex,
             [st = impl_->state, slot = std::move(slot), src = std::move(src)]() mutable {
               if (st->stopping || !st->background) return;
               st->spawn(keep_stapled(st, std::move(slot), std::move(src)), "stapling");
             });
  return true;
}

void service::learn_stapled_revocation(x509_ptr leaf, x509_ptr issuer, std::string response,
                                       policy pol) {
  if (!leaf || !issuer || response.empty()) return;
  asio::post(
      impl_->state->ex, [ocsp = impl_->ocsp, leaf = std::move(leaf), issuer = std::move(issuer),
                         response = std::move(response), pol = std::move(pol)] {
        // Judged here again rather than taken from the caller: what is kept for every listener
        // rests on the signed response alone.
        const ocsp_answer a =
            check_ocsp_response(response, leaf.get(), issuer.get(), nullptr, std::time(nullptr));
        ocsp->keep_stapled_revocation(leaf, issuer, a, pol);
      });
}

void service::stop() {
  asio::post(impl_->state->ex, [st = impl_->state] { st->stop(); });
}

asio::awaitable<std::optional<verdict>> await_check(service& svc, check_request req) {
  struct state {
    explicit state(const asio::any_io_executor& ex) : wake(ex, steady::time_point::max()) {}
    asio::steady_timer wake;  // on the caller's executor
    std::optional<verdict> result;
  };
  auto caller = co_await asio::this_coro::executor;
  auto st = std::make_shared<state>(caller);
  asio::co_spawn(svc.executor(), svc.check(std::move(req)), [st](std::exception_ptr e, verdict v) {
    // On the service's thread: hand the verdict over on the caller's.
    asio::post(st->wake.get_executor(), [st, e, v = std::move(v)]() mutable {
      if (e) {
        v = {};
        v.refusal = reason::revocation_unavailable;
        v.detail = "internal error in the revocation check";
      }
      st->result = std::move(v);
      st->wake.expires_at(steady::time_point::min());
    });
  });
  if (st->wake.expiry() != steady::time_point::min())
    co_await st->wake.async_wait(as_tuple(use_awaitable));
  co_return std::move(st->result);
}

}  // namespace mtlsd::tls::revocation
