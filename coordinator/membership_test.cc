// Tests for Membership: attach, heartbeats and lease expiry with an explicit clock.
#include "coordinator/membership.h"

#include "gtest/gtest.h"

namespace dsv3::coordinator {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1000);
const absl::Duration kLease = absl::Milliseconds(300);

WorkerRecord Named(const std::string& name, const std::string& node = "n1") {
  WorkerRecord w;
  w.name = name;
  w.node = node;
  return w;
}

TEST(Membership, AWorkerIsAliveUntilThreeLeasesPassWithoutAHeartbeat) {
  Membership m(kLease);
  std::string replaced;
  const std::string id = m.Attach(Named("w1"), kT0, &replaced).id;
  EXPECT_TRUE(m.Expire(kT0 + 3 * kLease).empty()) << "exactly 3 leases is still alive";
  const std::vector<std::string> dead = m.Expire(kT0 + 3 * kLease + absl::Milliseconds(1));
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(dead[0], id);
  EXPECT_FALSE(m.Find(id)->alive);
  EXPECT_NE(m.Find(id)->dead_reason.find("no heartbeat"), std::string::npos);
}

TEST(Membership, HeartbeatsRenewTheLease) {
  Membership m(kLease);
  std::string replaced;
  const std::string id = m.Attach(Named("w1"), kT0, &replaced).id;
  for (int i = 1; i <= 10; ++i) {
    ASSERT_TRUE(m.Heartbeat(id, kT0 + i * kLease));
    ASSERT_TRUE(m.Expire(kT0 + i * kLease + 2 * kLease).empty()) << i;
  }
  EXPECT_EQ(m.Expire(kT0 + 14 * kLease).size(), 1u);
}

TEST(Membership, ADeadWorkerCannotHeartbeatAndIsExpiredOnlyOnce) {
  Membership m(kLease);
  std::string replaced;
  const std::string id = m.Attach(Named("w1"), kT0, &replaced).id;
  ASSERT_EQ(m.Expire(kT0 + absl::Seconds(5)).size(), 1u);
  EXPECT_FALSE(m.Heartbeat(id, kT0 + absl::Seconds(6)));
  EXPECT_TRUE(m.Expire(kT0 + absl::Seconds(10)).empty());
  EXPECT_FALSE(m.Heartbeat("w-unknown", kT0));
}

TEST(Membership, ReattachingUnderTheSameNameReplacesTheOldRecord) {
  Membership m(kLease);
  std::string replaced;
  const std::string first = m.Attach(Named("w1"), kT0, &replaced).id;
  EXPECT_TRUE(replaced.empty());
  const std::string second = m.Attach(Named("w1"), kT0 + absl::Seconds(1), &replaced).id;
  EXPECT_EQ(replaced, first);
  EXPECT_NE(first, second);
  EXPECT_FALSE(m.Find(first)->alive);
  EXPECT_EQ(m.FindLiveByName("w1")->id, second);
}

TEST(Membership, IdleListsLiveWorkersWithoutAJobByName) {
  Membership m(kLease);
  std::string replaced;
  m.Attach(Named("w3"), kT0, &replaced);
  const std::string w1 = m.Attach(Named("w1"), kT0, &replaced).id;
  const std::string w2 = m.Attach(Named("w2"), kT0, &replaced).id;
  m.Find(w2)->job_id = "job-1";
  m.MarkDead(w1, "test");
  std::vector<const WorkerRecord*> idle = m.Idle();
  ASSERT_EQ(idle.size(), 1u);
  EXPECT_EQ(idle[0]->name, "w3");
}

TEST(Membership, DeadWorkersAreForgottenAfterTheCutoff) {
  Membership m(kLease);
  std::string replaced;
  const std::string id = m.Attach(Named("w1"), kT0, &replaced).id;
  m.MarkDead(id, "test");
  m.ForgetDeadBefore(kT0 - absl::Seconds(1));
  EXPECT_NE(m.Find(id), nullptr);
  m.ForgetDeadBefore(kT0 + absl::Seconds(1));
  EXPECT_EQ(m.Find(id), nullptr);
}

}  // namespace
}  // namespace dsv3::coordinator
