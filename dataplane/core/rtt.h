// SPDX-License-Identifier: BSD-3-Clause
// RTT estimation per member (RFC 9002 section 5): smoothed RTT, variance,
// minimum; ack delay subtracted when it does not go below the minimum.
#pragma once

#include <algorithm>
#include <cstdint>

#include "types.h"

namespace mtp::core {

class rtt_estimator {
 public:
  explicit rtt_estimator(time_ns initial_rtt_ns) : smoothed_(initial_rtt_ns), var_(initial_rtt_ns / 2) {}

  void on_sample(time_ns latest_ns, time_ns ack_delay_ns) {
    latest_ = latest_ns;
    if (!has_sample_) {
      min_ = smoothed_ = latest_ns;
      var_ = latest_ns / 2;
      has_sample_ = true;
      return;
    }
    min_ = std::min(min_, latest_ns);
    time_ns adjusted = latest_ns;
    if (latest_ns >= min_ + ack_delay_ns) adjusted -= ack_delay_ns;
    const time_ns diff = smoothed_ > adjusted ? smoothed_ - adjusted : adjusted - smoothed_;
    var_ = (3 * var_ + diff) / 4;
    smoothed_ = (7 * smoothed_ + adjusted) / 8;
  }

  time_ns smoothed() const { return smoothed_; }
  time_ns variance() const { return var_; }
  time_ns latest() const { return latest_; }
  time_ns min() const { return min_; }
  bool has_sample() const { return has_sample_; }

  /// Probe timeout before back-off: srtt + max(4 rttvar, 1 ms granularity) + max ack delay.
  time_ns pto(time_ns max_ack_delay_ns) const {
    return smoothed_ + std::max<time_ns>(4 * var_, 1'000'000) + max_ack_delay_ns;
  }

 private:
  time_ns smoothed_;
  time_ns var_;
  time_ns latest_ = 0;
  time_ns min_ = 0;
  bool has_sample_ = false;
};

}  // namespace mtp::core
