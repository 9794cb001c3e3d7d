// SPDX-License-Identifier: BSD-3-Clause
// See congestion.h.
#include "congestion.h"

#include <algorithm>
#include <cmath>

namespace mtp::core {

namespace {

class newreno final : public congestion_control {
 public:
  explicit newreno(uint64_t mss) : mss_(mss), cwnd_(10 * mss), ssthresh_(UINT64_MAX) {}

  void on_acked(uint64_t bytes, time_ns sent_ns, const rtt_estimator &, time_ns) override {
    if (in_recovery(sent_ns)) return;
    if (cwnd_ < ssthresh_) {
      cwnd_ += bytes;
    } else {
      acked_ += bytes;
      if (acked_ >= cwnd_) {
        acked_ -= cwnd_;
        cwnd_ += mss_;
      }
    }
  }
  void on_loss(time_ns sent_ns, time_ns now_ns) override {
    if (in_recovery(sent_ns)) return;
    recovery_start_ = now_ns;
    prior_cwnd_ = cwnd_;
    prior_ssthresh_ = ssthresh_;
    ssthresh_ = std::max(cwnd_ / 2, min_cwnd());
    cwnd_ = ssthresh_;
    acked_ = 0;
  }
  void on_persistent_congestion() override { cwnd_ = min_cwnd(); }
  void on_spurious_loss() override {
    if (prior_cwnd_ == 0) return;
    cwnd_ = std::max(cwnd_, prior_cwnd_);
    ssthresh_ = prior_ssthresh_;
    prior_cwnd_ = 0;
    recovery_start_ = 0;
  }
  uint64_t cwnd() const override { return cwnd_; }
  std::string_view name() const override { return "newreno"; }

 private:
  bool in_recovery(time_ns sent_ns) const { return recovery_start_ != 0 && sent_ns <= recovery_start_; }
  uint64_t min_cwnd() const { return 2 * mss_; }
  uint64_t mss_, cwnd_, ssthresh_;
  uint64_t acked_ = 0;
  uint64_t prior_cwnd_ = 0, prior_ssthresh_ = 0;
  time_ns recovery_start_ = 0;
};

class cubic final : public congestion_control {
 public:
  explicit cubic(uint64_t mss) : mss_(mss), cwnd_(10 * mss), ssthresh_(UINT64_MAX) {}

  void on_acked(uint64_t bytes, time_ns sent_ns, const rtt_estimator &rtt, time_ns now_ns) override {
    if (recovery_start_ != 0 && sent_ns <= recovery_start_) return;
    if (cwnd_ < ssthresh_) {
      cwnd_ += bytes;
      return;
    }
    if (epoch_start_ == 0) {
      epoch_start_ = now_ns;
      const double w = static_cast<double>(cwnd_) / static_cast<double>(mss_);
      if (w_max_ < w) {
        k_ = 0;
        w_max_ = w;
      } else {
        k_ = std::cbrt(w_max_ * (1 - beta) / c);
      }
      w_est_ = w;
    }
    const double t = static_cast<double>(now_ns - epoch_start_ + rtt.min()) / 1e9;
    const double target = c * (t - k_) * (t - k_) * (t - k_) + w_max_;
    // Reno-friendly estimate (RFC 8312 4.2), per acknowledged bytes.
    w_est_ += 3 * (1 - beta) / (1 + beta) * static_cast<double>(bytes) / static_cast<double>(cwnd_);
    const double w = static_cast<double>(cwnd_) / static_cast<double>(mss_);
    double next = std::max(target, w_est_);
    // Grow at most 50% per RTT's worth of acks (RFC 8312 4.1 bounds it too).
    next = std::min(next, w * 1.5);
    if (next > w) cwnd_ += static_cast<uint64_t>((next - w) * static_cast<double>(mss_) * static_cast<double>(bytes) /
                                                 static_cast<double>(cwnd_));
  }
  void on_loss(time_ns sent_ns, time_ns now_ns) override {
    if (recovery_start_ != 0 && sent_ns <= recovery_start_) return;
    recovery_start_ = now_ns;
    prior_cwnd_ = cwnd_;
    prior_ssthresh_ = ssthresh_;
    prior_w_max_ = w_max_;
    epoch_start_ = 0;
    const double w = static_cast<double>(cwnd_) / static_cast<double>(mss_);
    // Fast convergence (RFC 8312 4.6).
    w_max_ = w < w_max_ ? w * (1 + beta) / 2 : w;
    cwnd_ = std::max(static_cast<uint64_t>(static_cast<double>(cwnd_) * beta), 2 * mss_);
    ssthresh_ = cwnd_;
  }
  void on_persistent_congestion() override {
    cwnd_ = 2 * mss_;
    epoch_start_ = 0;
  }
  void on_spurious_loss() override {
    if (prior_cwnd_ == 0) return;
    cwnd_ = std::max(cwnd_, prior_cwnd_);
    ssthresh_ = prior_ssthresh_;
    w_max_ = prior_w_max_;
    prior_cwnd_ = 0;
    recovery_start_ = 0;
    epoch_start_ = 0;
  }
  uint64_t cwnd() const override { return cwnd_; }
  std::string_view name() const override { return "cubic"; }

 private:
  static constexpr double beta = 0.7;
  static constexpr double c = 0.4;
  uint64_t mss_, cwnd_, ssthresh_;
  time_ns recovery_start_ = 0;
  time_ns epoch_start_ = 0;
  double w_max_ = 0, k_ = 0, w_est_ = 0;
  uint64_t prior_cwnd_ = 0, prior_ssthresh_ = 0;
  double prior_w_max_ = 0;
};

}  // namespace

std::unique_ptr<congestion_control> make_congestion_control(cc_algorithm a, uint64_t mss_bytes) {
  if (a == cc_algorithm::newreno) return std::make_unique<newreno>(mss_bytes);
  return std::make_unique<cubic>(mss_bytes);
}

}  // namespace mtp::core
