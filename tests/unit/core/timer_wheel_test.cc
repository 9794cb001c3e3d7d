// SPDX-License-Identifier: BSD-3-Clause
#include "timer_wheel.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <vector>

namespace mtp::core {
namespace {

std::vector<uint32_t> advance(timer_wheel &w, time_ns now) {
  std::vector<uint32_t> fired;
  w.advance(now, [&](uint32_t id) { fired.push_back(id); });
  return fired;
}

TEST(TimerWheel, FiresOnceAtOrAfterItsTimeNeverBefore) {
  timer_wheel w(8, 10, 4);  // 1024 ns slots, 16 slots
  w.arm(3, 5000);
  EXPECT_TRUE(advance(w, 4999).empty());
  EXPECT_EQ(advance(w, 5000), std::vector<uint32_t>{3});
  EXPECT_TRUE(advance(w, 6000).empty());
  EXPECT_FALSE(w.armed(3));
  EXPECT_EQ(w.armed_count(), 0u);
}

TEST(TimerWheel, RearmMovesAndCancelRemoves) {
  timer_wheel w(8, 10, 4);
  w.arm(1, 3000);
  w.arm(2, 3000);
  w.arm(1, 9000);  // moved later
  w.cancel(2);
  EXPECT_TRUE(advance(w, 8000).empty());
  EXPECT_EQ(w.at(1), 9000u);
  EXPECT_EQ(advance(w, 9500), std::vector<uint32_t>{1});
  w.arm(4, never);  // never is no timer
  EXPECT_FALSE(w.armed(4));
}

TEST(TimerWheel, TimersBeyondOneTurnWaitForTheirRound) {
  timer_wheel w(4, 10, 4);  // the wheel spans 16384 ns
  w.arm(0, 100'000);        // six turns out
  for (time_ns t = 1000; t < 100'000; t += 700) ASSERT_TRUE(advance(w, t).empty()) << t;
  EXPECT_EQ(advance(w, 100'000), std::vector<uint32_t>{0});
}

TEST(TimerWheel, ALongGapFiresEverythingDue) {
  timer_wheel w(64, 10, 4);
  for (uint32_t i = 0; i < 64; ++i) w.arm(i, 1000 + i * 977);
  auto fired = advance(w, 1'000'000);
  EXPECT_EQ(fired.size(), 64u);
  EXPECT_EQ(w.armed_count(), 0u);
}

TEST(TimerWheel, ATimeInThePastFiresAtTheNextAdvance) {
  timer_wheel w(4, 10, 4);
  EXPECT_TRUE(advance(w, 50'000).empty());
  w.arm(2, 10);
  EXPECT_EQ(advance(w, 50'001), std::vector<uint32_t>{2});
}

TEST(TimerWheel, FireMayRearmItselfAndOthers) {
  timer_wheel w(4, 10, 4);
  w.arm(0, 2000);
  w.arm(1, 2100);
  std::vector<uint32_t> fired;
  w.advance(3000, [&](uint32_t id) {
    fired.push_back(id);
    w.arm(id, 2500);             // already due: not lost
    if (id == 0) w.arm(1, 50'000);  // moves a timer that is due in this slot
  });
  EXPECT_FALSE(fired.empty());
  auto again = advance(w, 3001);
  EXPECT_FALSE(again.empty());
  // Every id still armed fires at its time, and none is lost.
  std::size_t total = 0;
  w.advance(60'000, [&](uint32_t) { ++total; });
  EXPECT_EQ(w.armed_count(), 0u);
}

// Against a reference: random arms, cancels and advances; every timer
// fires exactly when the reference says it is due.
TEST(TimerWheel, MatchesAReferenceUnderRandomUse) {
  constexpr uint32_t ids = 200;
  timer_wheel w(ids, 8, 5);  // small wheel: many rounds
  std::map<uint32_t, time_ns> ref;
  rng r(7);
  time_ns now = 0;
  for (int step = 0; step < 20000; ++step) {
    const uint32_t id = static_cast<uint32_t>(r.below(ids));
    const uint64_t op = r.below(10);
    if (op < 5) {
      const time_ns at = now + r.below(op < 4 ? 20'000 : 2'000'000);
      w.arm(id, at);
      ref[id] = at;
    } else if (op < 6) {
      w.cancel(id);
      ref.erase(id);
    } else {
      now += r.below(op < 9 ? 3000 : 200'000);
      std::vector<uint32_t> fired;
      w.advance(now, [&](uint32_t f) { fired.push_back(f); });
      std::vector<uint32_t> want;
      for (auto it = ref.begin(); it != ref.end();) {
        if (it->second <= now) {
          want.push_back(it->first);
          it = ref.erase(it);
        } else {
          ++it;
        }
      }
      std::sort(fired.begin(), fired.end());
      ASSERT_EQ(fired, want) << "step " << step << " now " << now;
    }
    ASSERT_EQ(w.armed_count(), ref.size());
  }
}

}  // namespace
}  // namespace mtp::core
