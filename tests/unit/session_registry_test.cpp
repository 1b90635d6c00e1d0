// proxy::session_registry::catch_up_with: which runtime a session that finished its handshake is
// judged by again, when reloads and their re-judging cross it.
#include "mtlsd/proxy/session_registry.hpp"

#include <gtest/gtest.h>

#include <memory>

#include "mtlsd/runtime/runtime.hpp"

namespace mtlsd::proxy {
namespace {

struct built {
  std::shared_ptr<runtime::runtime> rt = std::make_shared<runtime::runtime>();
  std::shared_ptr<runtime::listener_runtime> in = std::make_shared<runtime::listener_runtime>();
  explicit built(std::uint64_t generation) {
    rt->generation = in->generation = generation;
    in->cfg.name = "in";
    rt->listeners.push_back(in);
  }
};

// A session of `lr` whose handshake finished (judged() records the listener it runs with).
void finished_under(session_control& s, const runtime::listener_runtime& lr) {
  EXPECT_FALSE(s.judged(nullptr, nullptr, nullptr, &lr));  // not registered: nothing to judge
}

TEST(SessionRegistryCatchUp, ASessionOfAnOlderRuntimeIsJudgedByTheLastRejudgedOne) {
  const built older(1), newer(2);
  session_registry registry;
  registry.rejudge(newer.rt);
  session_control s;
  finished_under(s, *older.in);
  EXPECT_EQ(registry.catch_up_with(s), newer.in.get());
}

TEST(SessionRegistryCatchUp, ASessionOfANewerRuntimeIsNotJudgedByAnOlderRejudge) {
  // Review: a reload publishes its runtime to the listener before its re-judging reaches the
  // worker; a session accepted in between was judged by the previous reload's runtime.
  const built older(1), newer(2);
  session_registry registry;
  registry.rejudge(older.rt);
  session_control s;
  finished_under(s, *newer.in);
  EXPECT_EQ(registry.catch_up_with(s), nullptr);
}

}  // namespace
}  // namespace mtlsd::proxy
