// SPDX-License-Identifier: BSD-3-Clause
// Oracles for the simulator: what each engine promises, checked from the
// wire at the moment it is promised, by code that shares nothing with the
// engine but the packet codec (itself checked differentially by the
// fuzzers). The oracle sees every packet put on a link and every packet
// delivered, keeps its own model of each directed flow (sender A to
// receiver B on a connection) and fails on:
//
//   ack_of_unreceived  B acknowledges a packet that never reached it intact
//   sent_count         a Sent event whose count is not the number of live
//                      members whose (delivered) ACKs cover the message, or
//                      below min(t, live)
//   expired_count      an Expired count of 0 or above the live members
//   over_credit        a STREAM or FORWARD frame beyond the stream or
//                      connection credit B granted (initial window, or
//                      CREDIT frames delivered to A before it was sent)
//   stream_after_skip  a STREAM frame for bytes A already told B to skip
//   over_window        bytes in flight to B above A's congestion window
//                      plus one packet (in flight: ack-eliciting, not
//                      acknowledged, no later packet to B acknowledged: an
//                      eager view, so never above the engine's own)
//   burst              more packets with data leaving A for B at one
//                      instant than the pacer's burst allows (pacing on)
//
// Scenario-level checks (delivery, lifetimes, liveness) live in harness.cc
// and use the per-flow facts kept here (what B acknowledged, what was
// FORWARDed to it).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "sim.h"

namespace mtp::sim {

/// A set of disjoint [lo, hi) intervals: std::map, obviously correct.
class interval_set {
 public:
  void add(uint64_t lo, uint64_t hi);
  bool covers(uint64_t lo, uint64_t hi) const;
  bool overlaps(uint64_t lo, uint64_t hi) const;
  /// The first value in [lo, hi) not in the set, or hi.
  uint64_t first_gap(uint64_t lo, uint64_t hi) const;
  bool empty() const { return m_.empty(); }

 private:
  std::map<uint64_t, uint64_t> m_;  // lo -> hi
};

struct oracle_config {
  uint64_t stream_window = 0;       ///< initial stream credit (transport parameter)
  uint64_t connection_window = 0;   ///< initial connection credit
  uint32_t max_packet_bytes = 1400;
  bool check_pacing = false;
  uint32_t pacing_burst_packets = 10;
  bool adversary = false;           ///< injected packets may move engines
  bool exact_sent_count = true;     ///< false: a Sent count may be below what the wire shows now
  /// The engine's congestion window toward a member node, read when a
  /// packet is sent (0: unknown, not checked).
  std::function<uint64_t(uint32_t from, uint32_t to, uint64_t cid)> cwnd_of;
};

class wire_oracle {
 public:
  explicit wire_oracle(oracle_config c) : cfg_(std::move(c)) {}

  /// Feed every tapped packet here (network::set_tap).
  void on_wire(const wire_packet &p, time_ns now);

  /// A Sent event at sender node `a` for bytes [lo, hi) of `stream`.
  /// @param live_members the member nodes the sender application knows live
  void on_sent_event(uint32_t a, uint64_t cid, uint64_t stream, uint64_t lo, uint64_t hi, uint32_t count,
                     const std::vector<uint32_t> &live_members, uint32_t threshold);
  void on_expired_event(uint32_t a, uint64_t cid, uint32_t count, std::size_t live);

  /// B acknowledged (by STREAM frames, in ACKs delivered to A) every byte of [lo, hi).
  bool held(uint32_t a, uint32_t b, uint64_t cid, uint64_t stream, uint64_t lo, uint64_t hi) const;
  /// A sent B a FORWARD overlapping [lo, hi).
  bool forwarded(uint32_t a, uint32_t b, uint64_t cid, uint64_t stream, uint64_t lo, uint64_t hi) const;
  /// Nodes A sent a FORWARD overlapping [lo, hi) of `stream`.
  uint32_t forwarded_count(uint32_t a, uint64_t cid, uint64_t stream, uint64_t lo, uint64_t hi) const;

  const std::vector<std::string> &failures() const { return failures_; }
  /// Coverage: the highest fraction of the connection credit a flow used.
  double max_connection_credit_use() const { return max_conn_use_; }
  uint64_t max_stream_credit_waits() const { return credit_limited_sends_; }
  uint64_t packets_checked() const { return packets_checked_; }

 private:
  struct sent_frame {
    bool forward;
    uint64_t stream, lo, hi;
  };
  struct sent_record {
    std::vector<sent_frame> frames;
    uint32_t bytes = 0;
    bool eliciting = false;
    bool resolved = false;  ///< acknowledged, or a later packet was (eager loss)
  };
  /// A to B on one connection, as seen from the wire.
  struct flow {
    std::map<uint64_t, sent_record> sent;  ///< pn -> what it carried to B
    interval_set delivered;      ///< pns that reached B intact
    interval_set ack_verified;   ///< pns B acknowledged, checked against `delivered`
    interval_set acked;          ///< pns whose ACK from B reached A
    std::set<uint64_t> acks_seen_from_b;  ///< pns of B's packets delivered to A (duplicates skipped)
    std::map<uint64_t, interval_set> held;       ///< stream -> bytes acked by STREAM frames
    std::map<uint64_t, interval_set> skipped;    ///< stream -> bytes FORWARDed to B
    std::map<uint64_t, uint64_t> stream_credit;  ///< granted by B, known at A
    uint64_t conn_credit = 0;
    std::map<uint64_t, uint64_t> sent_to;        ///< stream -> highest end sent to B
    uint64_t conn_sent_to = 0;
    uint64_t largest_acked = 0;
    bool any_acked = false;
    uint64_t in_flight = 0;
    uint64_t resolved_below = 0;  ///< pns below are resolved
    time_ns burst_at = core::never;
    uint32_t burst_count = 0;
  };
  flow &flow_of(uint32_t a, uint32_t b, uint64_t cid);
  const flow *find(uint32_t a, uint32_t b, uint64_t cid) const;
  void fail(const std::string &why);
  void on_sent_packet(const wire_packet &p, uint64_t cid, uint64_t pn, std::span<const std::byte> frames, time_ns now);
  void on_delivered_packet(const wire_packet &p, uint64_t cid, uint64_t pn, std::span<const std::byte> frames);
  void resolve(flow &f);

  oracle_config cfg_;
  std::map<std::tuple<uint32_t, uint32_t, uint64_t>, flow> flows_;
  std::vector<std::string> failures_;
  double max_conn_use_ = 0;
  uint64_t credit_limited_sends_ = 0;
  uint64_t packets_checked_ = 0;
};

}  // namespace mtp::sim
