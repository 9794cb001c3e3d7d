// SPDX-License-Identifier: BSD-3-Clause
// A deterministic network simulator for MTP engines: nodes joined by
// directed links with delay, jitter, bandwidth, Bernoulli and burst
// (Gilbert-Elliott) loss, duplication, reordering (via jitter), bit
// corruption, partitions and node crashes, all drawn from one seeded rng.
// Time is simulated; the same seed replays the same run bit for bit.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <queue>
#include <vector>

#include "connection.h"

namespace mtp::sim {

using core::time_ns;

struct link_params {
  time_ns delay_ns = 5'000'000;
  time_ns jitter_ns = 0;         ///< uniform extra delay in [0, jitter); reorders packets
  uint64_t bandwidth_bps = 1'000'000'000;
  double loss = 0;               ///< Bernoulli loss probability
  double burst_enter = 0;        ///< Gilbert-Elliott: good -> bad per packet
  double burst_exit = 0.3;       ///< bad -> good per packet
  double burst_loss = 0.5;       ///< loss probability while bad
  double duplicate = 0;
  double corrupt = 0;            ///< flip one random bit
  std::size_t queue_bytes = 1 << 20;  ///< tail drop beyond this backlog
};

/// One engine endpoint in the simulation: a connection at a node.
struct endpoint {
  uint32_t node = 0;
  std::unique_ptr<core::connection> conn;
  std::vector<uint32_t> member_nodes;  ///< member index -> node
};

/// Observes every packet put on a link (for wire-level properties).
using tap_fn = std::function<void(uint32_t from, uint32_t to, std::span<const std::byte> pkt, bool dropped)>;

class network {
 public:
  explicit network(uint64_t seed) : rng_(seed) {}

  /// Sets the parameters of the link from -> to (both directions if `both`).
  void set_link(uint32_t from, uint32_t to, const link_params &p, bool both = true);
  /// Adds an endpoint; packets for (node, connection id) reach it.
  endpoint &add(uint32_t node, std::unique_ptr<core::connection> c, std::vector<uint32_t> member_nodes);
  /// The node stops: drops what arrives, sends nothing, runs no timers.
  void crash(uint32_t node) { crashed_[node] = true; }
  /// Drops everything between a and b (both ways) during [from, to).
  void partition(uint32_t a, uint32_t b, time_ns from, time_ns to);
  /// Ends all impairment (loss, dup, corruption) from time t on.
  void calm_after(time_ns t) { calm_after_ = t; }

  time_ns now() const { return now_; }
  /// Runs until `done()` or `limit`; the app hook runs after every step.
  /// @return true if done() became true.
  bool run(time_ns limit, const std::function<bool()> &done, const std::function<void()> &app);

  /// Sends what every live endpoint has to send now.
  void pump();

  std::vector<std::unique_ptr<endpoint>> &endpoints() { return eps_; }
  void set_tap(tap_fn t) { tap_ = std::move(t); }
  time_ns last_impairment() const { return last_impairment_; }
  uint64_t dropped() const { return dropped_; }
  uint64_t corrupted() const { return corrupted_; }

 private:
  struct in_flight {
    time_ns at;
    uint64_t seq;
    uint32_t from, to;
    uint64_t conn_id;
    std::vector<std::byte> bytes;
    bool operator>(const in_flight &o) const { return at != o.at ? at > o.at : seq > o.seq; }
  };
  struct link_state {
    link_params p;
    bool bad = false;
    time_ns busy_until = 0;
  };
  void send(uint32_t from, uint32_t to, uint64_t conn_id, std::span<const std::byte> pkt);
  bool partitioned(uint32_t a, uint32_t b) const;

  core::rng rng_;
  time_ns now_ = 0;
  uint64_t seq_ = 0;
  std::vector<std::unique_ptr<endpoint>> eps_;
  std::map<std::pair<uint32_t, uint32_t>, link_state> links_;
  std::map<uint32_t, bool> crashed_;
  struct cut {
    uint32_t a, b;
    time_ns from, to;
  };
  std::vector<cut> cuts_;
  std::priority_queue<in_flight, std::vector<in_flight>, std::greater<>> q_;
  time_ns calm_after_ = core::never;
  time_ns last_impairment_ = 0;
  uint64_t dropped_ = 0, corrupted_ = 0;
  tap_fn tap_;
  std::vector<std::byte> buf_ = std::vector<std::byte>(65536);
};

}  // namespace mtp::sim
