// SPDX-License-Identifier: BSD-3-Clause
// Congestion controllers by hand: slow start, one reduction per round
// trip, growth after it, and undo of a spurious reduction.
#include "congestion.h"

#include <gtest/gtest.h>

using namespace mtp::core;

namespace {
constexpr uint64_t mss = 1000;
constexpr time_ns ms = 1'000'000;
}  // namespace

TEST(congestion, newreno_slow_start_halving_and_linear_growth) {
  auto cc = make_congestion_control(cc_algorithm::newreno, mss);
  EXPECT_EQ(cc->name(), "newreno");
  rtt_estimator rtt(10 * ms);
  EXPECT_EQ(cc->cwnd(), 10 * mss);
  cc->on_acked(10 * mss, 1 * ms, rtt, 11 * ms);  // slow start: +acked
  EXPECT_EQ(cc->cwnd(), 20 * mss);
  cc->on_loss(12 * ms, 20 * ms);
  EXPECT_EQ(cc->cwnd(), 10 * mss);
  cc->on_loss(13 * ms, 21 * ms);  // sent before the reduction: same event
  EXPECT_EQ(cc->cwnd(), 10 * mss);
  cc->on_acked(5 * mss, 15 * ms, rtt, 25 * ms);  // sent before recovery: no growth
  EXPECT_EQ(cc->cwnd(), 10 * mss);
  cc->on_acked(10 * mss, 30 * ms, rtt, 40 * ms);  // one window acked: +1 MSS
  EXPECT_EQ(cc->cwnd(), 11 * mss);
  cc->on_persistent_congestion();
  EXPECT_EQ(cc->cwnd(), 2 * mss);
}

TEST(congestion, cubic_reduces_to_seven_tenths_and_regrows) {
  auto cc = make_congestion_control(cc_algorithm::cubic, mss);
  EXPECT_EQ(cc->name(), "cubic");
  rtt_estimator rtt(10 * ms);
  rtt.on_sample(10 * ms, 0);
  cc->on_acked(90 * mss, 1 * ms, rtt, 11 * ms);
  EXPECT_EQ(cc->cwnd(), 100 * mss);
  cc->on_loss(12 * ms, 20 * ms);
  EXPECT_EQ(cc->cwnd(), 70 * mss);
  time_ns now = 30 * ms;
  for (int rtt_round = 0; rtt_round < 200; ++rtt_round, now += 10 * ms) cc->on_acked(cc->cwnd(), now - ms, rtt, now);
  EXPECT_GT(cc->cwnd(), 100 * mss) << "CUBIC regains and passes W_max within 2 s";
}

TEST(congestion, spurious_loss_undoes_the_reduction) {
  for (auto a : {cc_algorithm::newreno, cc_algorithm::cubic}) {
    auto cc = make_congestion_control(a, mss);
    rtt_estimator rtt(10 * ms);
    cc->on_acked(30 * mss, 1 * ms, rtt, 11 * ms);
    const uint64_t before = cc->cwnd();
    cc->on_loss(12 * ms, 20 * ms);
    EXPECT_LT(cc->cwnd(), before);
    cc->on_spurious_loss();
    EXPECT_EQ(cc->cwnd(), before) << cc->name();
    cc->on_spurious_loss();  // only once
    EXPECT_EQ(cc->cwnd(), before) << cc->name();
  }
}
