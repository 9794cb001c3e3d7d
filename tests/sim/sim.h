// SPDX-License-Identifier: BSD-3-Clause
// A deterministic network simulator for MTP engines: nodes joined by
// directed links with delay, jitter, bandwidth and a tail-drop queue,
// Bernoulli and burst (Gilbert-Elliott) loss, duplication (late copies
// too), reordering (via jitter), multi-bit corruption and truncation;
// partitions, node crashes and restarts, link changes at scheduled times,
// and packets injected by an adversary. All drawn from one seeded rng:
// the same seed replays the same run bit for bit.
//
// It plays the daemon's part around the engines: packets reach the
// connection of their (node, connection id) only from the node bound to
// the sender id (address binding); a node with an acceptor creates a
// server connection for an opening packet (protocol.md 5.1) and forgets
// connections once they are finished.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <queue>
#include <string>
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
  time_ns duplicate_delay_ns = 0;  ///< a duplicate arrives up to this much later (late copies)
  double corrupt = 0;            ///< flip 1 to corrupt_bits random bits
  uint32_t corrupt_bits = 1;
  double truncate = 0;           ///< cut the packet at a random length
  std::size_t queue_bytes = 1 << 20;  ///< tail drop beyond this backlog
};

/// One engine endpoint in the simulation: a connection at a node.
struct endpoint {
  uint32_t node = 0;
  std::unique_ptr<core::connection> conn;
  std::vector<uint32_t> member_nodes;  ///< member index -> node
  bool removed = false;                ///< finished and forgotten (or lost in a crash)
};

/// A packet seen on the wire: when it is sent (perhaps `dropped` by the
/// link: loss, a full queue, a partition) and when it is delivered.
struct wire_packet {
  uint32_t from, to;
  std::span<const std::byte> bytes;
  bool delivered;  ///< false: being sent; true: arriving (possibly corrupted)
  bool dropped;    ///< sent, but the link drops it
  bool injected;   ///< put there by the adversary, not an engine
};
using tap_fn = std::function<void(const wire_packet &)>;
/// Creates the server connection for an opening packet to `node` from
/// `from` (the daemon's accept); null refuses.
using acceptor_fn = std::function<std::unique_ptr<core::connection>(uint32_t node, uint32_t from,
                                                                    std::span<const std::byte> pkt, time_ns now)>;

/// Why run() stopped.
enum class run_end { done, time_limit, quiet, stalled };

class network {
 public:
  explicit network(uint64_t seed) : rng_(seed) {}

  /// Sets the parameters of the link from -> to (both directions if `both`).
  void set_link(uint32_t from, uint32_t to, const link_params &p, bool both = true);
  /// Runs `fn` at simulated time `at` (link changes, crashes, restarts).
  void at(time_ns t, std::function<void()> fn);
  /// Adds an endpoint; packets for (node, connection id) reach it.
  endpoint &add(uint32_t node, std::unique_ptr<core::connection> c, std::vector<uint32_t> member_nodes);
  void set_acceptor(uint32_t node, acceptor_fn a) { acceptors_[node] = std::move(a); }
  /// The node stops: its connections are lost, it drops what arrives.
  void crash(uint32_t node);
  /// A crashed node runs again, with no connections (its acceptor takes
  /// opening packets).
  void restart(uint32_t node) { crashed_[node] = false; }
  bool crashed(uint32_t node) const;
  /// Drops everything between a and b (both ways) during [from, to).
  void partition(uint32_t a, uint32_t b, time_ns from, time_ns to);
  /// Ends all random impairment (loss, dup, corruption) from time t on.
  void calm_after(time_ns t) { calm_after_ = t; }
  /// Puts a packet on the wire from `from` to `to` now (the adversary:
  /// a spoofer claims `from`; the link's impairments apply).
  void inject(uint32_t from, uint32_t to, std::span<const std::byte> pkt);

  time_ns now() const { return now_; }
  /// Runs until `done()`, `limit`, nothing left to happen (quiet), or a
  /// stall: more than `max_steps` steps, or `stall_ns` of simulated time
  /// in which `progress()` did not change. The app hook runs after every
  /// step.
  run_end run(time_ns limit, const std::function<bool()> &done, const std::function<void()> &app,
              const std::function<uint64_t()> &progress, time_ns stall_ns, uint64_t max_steps = 20'000'000);

  /// Sends what every live endpoint has to send now.
  void pump();

  std::vector<std::unique_ptr<endpoint>> &endpoints() { return eps_; }
  void set_tap(tap_fn t) { tap_ = std::move(t); }
  time_ns last_impairment() const { return last_impairment_; }
  uint64_t dropped() const { return dropped_; }
  uint64_t corrupted() const { return corrupted_; }
  uint64_t wrong_address() const { return wrong_address_; }
  uint64_t steps() const { return steps_; }

 private:
  struct in_flight {
    time_ns at;
    uint64_t seq;
    uint32_t from, to;
    bool injected;
    std::vector<std::byte> bytes;
    bool operator>(const in_flight &o) const { return at != o.at ? at > o.at : seq > o.seq; }
  };
  struct link_state {
    link_params p;
    bool bad = false;
    time_ns busy_until = 0;
  };
  struct scheduled {
    time_ns at;
    uint64_t seq;
    std::function<void()> fn;
    bool operator>(const scheduled &o) const { return at != o.at ? at > o.at : seq > o.seq; }
  };
  void send(uint32_t from, uint32_t to, std::span<const std::byte> pkt, bool injected);
  void deliver(in_flight &f);
  bool partitioned(uint32_t a, uint32_t b) const;
  void forget_finished();

  core::rng rng_;
  time_ns now_ = 0;
  uint64_t seq_ = 0;
  uint64_t steps_ = 0;
  std::vector<std::unique_ptr<endpoint>> eps_;
  std::map<std::pair<uint32_t, uint32_t>, link_state> links_;
  std::map<uint32_t, bool> crashed_;
  std::map<uint32_t, acceptor_fn> acceptors_;
  struct cut {
    uint32_t a, b;
    time_ns from, to;
  };
  std::vector<cut> cuts_;
  std::priority_queue<in_flight, std::vector<in_flight>, std::greater<>> q_;
  std::priority_queue<scheduled, std::vector<scheduled>, std::greater<>> timeline_;
  time_ns calm_after_ = core::never;
  time_ns last_impairment_ = 0;
  uint64_t dropped_ = 0, corrupted_ = 0, wrong_address_ = 0;
  tap_fn tap_;
  std::vector<std::byte> buf_ = std::vector<std::byte>(65536);
};

}  // namespace mtp::sim
