// SPDX-License-Identifier: BSD-3-Clause
// Idle strategies for poll loops, after Aeron's BackoffIdleStrategy.
//
// `busy` spins with rte_pause() forever: lowest latency, one CPU per lcore.
// `adaptive` spins `spin_loops` empty loops, then yields a few times, then
// sleeps with exponential back-off up to `max_sleep_us`, and snaps back to
// spinning on the first loop that did work. That lets several daemons (and
// their tests) share a 2-core machine. Owned by one lcore; not thread-safe.
#pragma once

#include <rte_pause.h>
#include <sched.h>
#include <time.h>

#include <algorithm>
#include <cstdint>

#include "config.h"

namespace mtp::dp {

struct idle_counters {
  uint64_t idle_loops = 0;
  uint64_t sleeps = 0;
};

/// Who sleeps instead of nanosleep, when the lcore has something that may
/// wake it early (a worker serving applications: their eventfds). Called
/// only on the sleeping path, never while busy.
struct idle_sleeper {
  void *ctx = nullptr;
  /// Sleeps at most ns; @return false if it did not sleep (work is waiting).
  bool (*sleep)(void *ctx, uint64_t ns) = nullptr;
};

class idle_strategy {
 public:
  explicit idle_strategy(const cfg::idle_config &c)
      : busy_(c.policy == cfg::idle_policy::busy),
        spin_loops_(c.spin_loops),
        max_sleep_ns_(uint64_t{c.max_sleep_us} * 1000) {}

  /// Called once per loop with the work that loop did.
  void idle(unsigned work, idle_counters &n, const idle_sleeper *sleeper = nullptr) {
    if (work) {
      empty_ = 0;
      sleep_ns_ = min_sleep_ns;
      return;
    }
    ++n.idle_loops;
    if (busy_ || empty_ < spin_loops_) {
      ++empty_;
      rte_pause();
      return;
    }
    if (empty_ < spin_loops_ + yield_loops) {
      ++empty_;
      sched_yield();
      return;
    }
    if (sleeper != nullptr && sleeper->sleep != nullptr) {
      if (!sleeper->sleep(sleeper->ctx, sleep_ns_)) {
        empty_ = 0;  // work arrived as it was about to sleep
        return;
      }
    } else {
      const timespec ts{0, static_cast<long>(sleep_ns_)};
      nanosleep(&ts, nullptr);
    }
    ++n.sleeps;
    sleep_ns_ = std::min(sleep_ns_ * 2, max_sleep_ns_);
  }

 private:
  static constexpr uint64_t min_sleep_ns = 1000;
  static constexpr uint32_t yield_loops = 16;
  bool busy_;
  uint32_t spin_loops_;
  uint64_t max_sleep_ns_;
  uint32_t empty_ = 0;
  uint64_t sleep_ns_ = min_sleep_ns;
};

}  // namespace mtp::dp
