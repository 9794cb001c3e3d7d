// SPDX-License-Identifier: BSD-3-Clause
// replay_window (dataplane/crypto/replay_window.h): in order, reordered,
// duplicates, too old, jumps, the window's exact edges, the top of the
// packet number space, and a seeded property test against a std::set
// model over 100k numbers.
#include "replay_window.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>
#include <vector>

using namespace mtp::crypto;

namespace {

constexpr uint64_t W = replay_window::window_pkts;
constexpr auto ok = replay_status::ok;
constexpr auto replayed = replay_status::replayed;
constexpr auto too_old = replay_status::too_old;

TEST(replay_window, empty_accepts_anything_valid) {
  replay_window w;
  EXPECT_TRUE(w.empty());
  EXPECT_EQ(w.check(0), ok);
  EXPECT_EQ(w.check(123456789), ok);
  EXPECT_EQ(w.check(replay_window::max_packet_number), ok);
  EXPECT_EQ(w.check(replay_window::max_packet_number + 1), replay_status::invalid);
  EXPECT_EQ(w.accept(~uint64_t{0}), replay_status::invalid);
  EXPECT_TRUE(w.empty());
}

TEST(replay_window, in_order_then_duplicates) {
  replay_window w;
  for (uint64_t pn = 0; pn < 3 * W; ++pn) {
    ASSERT_EQ(w.check(pn), ok) << pn;
    ASSERT_EQ(w.accept(pn), ok) << pn;
    ASSERT_EQ(w.check(pn), replayed) << pn;
    ASSERT_EQ(w.accept(pn), replayed) << pn;
  }
  EXPECT_EQ(w.highest(), 3 * W - 1);
  for (uint64_t pn = 2 * W; pn < 3 * W; ++pn) EXPECT_EQ(w.check(pn), replayed) << pn;
  for (uint64_t pn = 0; pn < 2 * W; ++pn) EXPECT_EQ(w.check(pn), too_old) << pn;
}

TEST(replay_window, check_does_not_change_state) {
  replay_window w;
  ASSERT_EQ(w.accept(100), ok);
  EXPECT_EQ(w.check(50), ok);
  EXPECT_EQ(w.check(5000), ok);
  EXPECT_EQ(w.highest(), 100u);
  EXPECT_EQ(w.check(50), ok);
  EXPECT_EQ(w.accept(50), ok);
  EXPECT_EQ(w.check(50), replayed);
}

TEST(replay_window, reordered_within_the_window) {
  replay_window w;
  const uint64_t base = 1'000'000;
  ASSERT_EQ(w.accept(base + W - 1), ok);
  for (uint64_t pn = base + W - 2;; --pn) {  // every number below, newest first
    ASSERT_EQ(w.accept(pn), ok) << pn;
    if (pn == base) break;
  }
  for (uint64_t pn = base; pn < base + W; ++pn) EXPECT_EQ(w.check(pn), replayed) << pn;
  EXPECT_EQ(w.check(base - 1), too_old);
  EXPECT_EQ(w.check(base + W), ok);
}

// The window is exactly [highest - (W - 1), highest] for every alignment
// of highest against the 64-bit blocks.
TEST(replay_window, exact_edges) {
  for (uint64_t highest : {2 * W - 1, W, W + 1, 2 * W + 31, 2 * W + 63, 2 * W + 64, 5 * W + 17}) {
    replay_window w;
    ASSERT_EQ(w.accept(highest), ok);
    const uint64_t lowest = highest - (W - 1);
    EXPECT_EQ(w.check(lowest - 1), too_old) << highest;
    EXPECT_EQ(w.check(lowest), ok) << highest;
    EXPECT_EQ(w.accept(lowest), ok) << highest;
    EXPECT_EQ(w.check(lowest), replayed) << highest;
    EXPECT_EQ(w.accept(lowest - 1), too_old) << highest;
    // One step forward pushes `lowest` out: now too old, not replayed.
    ASSERT_EQ(w.accept(highest + 1), ok);
    EXPECT_EQ(w.check(lowest), too_old) << highest;
    EXPECT_EQ(w.check(lowest + 1), ok) << highest;
    EXPECT_EQ(w.check(highest), replayed) << highest;
  }
}

TEST(replay_window, first_packet_anywhere_and_numbers_below_it) {
  replay_window w;
  ASSERT_EQ(w.accept(10'000), ok);
  EXPECT_EQ(w.check(10'000 - (W - 1)), ok);
  EXPECT_EQ(w.check(10'000 - W), too_old);
  EXPECT_EQ(w.accept(9'999), ok);
  EXPECT_EQ(w.check(9'999), replayed);

  replay_window low;
  ASSERT_EQ(low.accept(3), ok);
  for (uint64_t pn = 0; pn < 3; ++pn) EXPECT_EQ(low.check(pn), ok);
  EXPECT_EQ(low.accept(0), ok);
  EXPECT_EQ(low.check(0), replayed);
}

TEST(replay_window, top_of_the_number_space) {
  const uint64_t top = replay_window::max_packet_number;  // 2^62 - 1
  replay_window w;
  ASSERT_EQ(w.accept(top), ok);
  EXPECT_EQ(w.highest(), top);
  EXPECT_EQ(w.check(top), replayed);
  EXPECT_EQ(w.check(top - 1), ok);
  EXPECT_EQ(w.check(top - (W - 1)), ok);
  EXPECT_EQ(w.check(top - W), too_old);
  EXPECT_EQ(w.check(top + 1), replay_status::invalid);
  EXPECT_EQ(w.accept(top - 100), ok);
  EXPECT_EQ(w.check(top - 100), replayed);

  replay_window v;  // climbing to the top from below
  ASSERT_EQ(v.accept(top - 10), ok);
  ASSERT_EQ(v.accept(top), ok);
  EXPECT_EQ(v.check(top - 10), replayed);
  EXPECT_EQ(v.check(top - 9), ok);
}

TEST(replay_window, jumps_ahead_clear_the_bits_they_pass) {
  for (uint64_t jump : {uint64_t{1}, uint64_t{63}, uint64_t{64}, W - 1, W, W + 1, W + 64, 10 * W + 5,
                        uint64_t{1} << 40}) {
    replay_window w;
    const uint64_t start = 5 * W + 7;
    for (uint64_t pn = start - W + 1; pn <= start; ++pn) ASSERT_EQ(w.accept(pn), ok);  // a full window
    ASSERT_EQ(w.accept(start + jump), ok) << jump;
    // Every number in the new window: replayed if accepted before, else ok.
    const uint64_t top = start + jump;
    for (uint64_t pn = top - (W - 1); pn <= top; ++pn) {
      const bool seen = (pn >= start - W + 1 && pn <= start) || pn == top;
      ASSERT_EQ(w.check(pn), seen ? replayed : ok) << "jump " << jump << " pn " << pn;
    }
    EXPECT_EQ(w.check(top - W), too_old);
  }
}

TEST(replay_window, copies_are_independent) {
  replay_window a;
  ASSERT_EQ(a.accept(7), ok);
  replay_window b = a;
  ASSERT_EQ(b.accept(8), ok);
  EXPECT_EQ(a.check(8), ok);
  EXPECT_EQ(b.check(8), replayed);
  EXPECT_EQ(b.check(7), replayed);
}

// A reference model: the set of accepted numbers and the highest one. A
// number is too old if highest - pn >= W, replayed if in the set.
struct model {
  std::set<uint64_t> seen;
  replay_status check(uint64_t pn) const {
    if (seen.empty() || pn > *seen.rbegin()) return ok;
    if (*seen.rbegin() - pn >= W) return too_old;
    return seen.count(pn) ? replayed : ok;
  }
};

// 100k numbers from a random start, each sent once or twice, shuffled
// locally (displacements up to about 1.5 windows, so some arrive too late),
// with occasional big jumps ahead. Fixed seed; the failing step is printed.
TEST(replay_window, random_shuffle_against_a_set) {
  for (uint64_t seed : {1u, 2u, 3u}) {
    std::mt19937_64 rng(seed);
    const uint64_t start = rng() >> 3;  // well below 2^62
    std::vector<std::pair<uint64_t, uint64_t>> arrivals;  // (arrival key, pn)
    uint64_t pn = start;
    for (int i = 0; i < 100'000; ++i) {
      if (rng() % 5000 == 0) pn += W + rng() % (4 * W);  // a gap: sender skipped numbers
      const uint64_t at = pn * 4 + rng() % (6 * W);       // local displacement
      arrivals.emplace_back(at, pn);
      if (rng() % 10 == 0) arrivals.emplace_back(at + rng() % (8 * W), pn);  // a duplicate, later
      ++pn;
    }
    std::sort(arrivals.begin(), arrivals.end());
    replay_window w;
    model m;
    std::size_t counts[3] = {};
    for (std::size_t i = 0; i < arrivals.size(); ++i) {
      const uint64_t p = arrivals[i].second;
      const replay_status expect = m.check(p);
      ASSERT_EQ(w.check(p), expect) << "seed " << seed << " step " << i << " pn " << p;
      ASSERT_EQ(w.accept(p), expect) << "seed " << seed << " step " << i << " pn " << p;
      if (expect == ok) m.seen.insert(p);
      ++counts[static_cast<int>(expect)];
    }
    // The mix exercised every outcome.
    EXPECT_GT(counts[0], 50'000u);
    EXPECT_GT(counts[1], 1'000u);
    EXPECT_GT(counts[2], 1'000u);
  }
}

}  // namespace
