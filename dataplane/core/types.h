// SPDX-License-Identifier: BSD-3-Clause
// Basic types of the sans-I/O core. Time is a parameter: every entry point
// takes `now` in nanoseconds from an arbitrary epoch chosen by the caller
// (TSC-derived in the DPDK binding, simulated in tests).
#pragma once

#include <cstdint>

namespace mtp::core {

using time_ns = uint64_t;
inline constexpr time_ns never = UINT64_MAX;

/// A small, fast, seedable generator (xorshift64*), injected into engines
/// so runs are reproducible.
class rng {
 public:
  explicit rng(uint64_t seed) : s_(seed ? seed : 0x9e3779b97f4a7c15ull) {}
  uint64_t next() {
    s_ ^= s_ >> 12;
    s_ ^= s_ << 25;
    s_ ^= s_ >> 27;
    return s_ * 0x2545f4914f6cdd1dull;
  }
  /// Uniform in [0, 1).
  double uniform() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }
  uint64_t below(uint64_t n) { return n ? next() % n : 0; }

 private:
  uint64_t s_;
};

}  // namespace mtp::core
