// SPDX-License-Identifier: BSD-3-Clause
// The simulator's test harness: a scenario (group, workload, network,
// failures, tables, application behaviour, adversary, expectations), run
// for one seed with the wire oracles attached, and the properties checked
// at the end. Each scenario is one GoogleTest test (sim_test.cc), so the
// rerun command a failure prints runs exactly it.
//
// Seeds: MTP_SIM_SEEDS="0-15" (default), "0-4999", "7" or lists joined by
// commas ("0-15,40213-40220"). A seed is mixed through a hash with the
// scenario's name before it seeds anything; the workload (message count
// and sizes, which messages are low latency, datagram times) is drawn from
// it as well as the network. MTP_SIM_VERBOSE=1 prints each run and, on a
// failure, every endpoint's counters and state; MTP_SIM_TRACE=1 prints
// every packet.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "sim.h"

namespace mtp::sim {

enum class close_kind { none, graceful, abort };

struct scenario {
  std::string name;
  // The group.
  uint32_t members = 1, threshold = 0;
  // The workload, per sender stream (counts and sizes drawn per seed).
  uint32_t streams = 2;
  uint32_t messages = 300;  ///< at most; each stream draws from [messages/2, messages]
  uint32_t min_size = 16, max_size = 1200;
  core::stream_mode mode = core::stream_mode::message;
  core::ordering ord = core::ordering::fifo;
  core::reliability rel = core::reliability::reliable;
  uint32_t max_retx = 2;
  core::time_ns lifetime_ns = 0;
  uint32_t datagrams = 0;  ///< sent by the client over the run
  bool fin = false;        ///< byte streams end with finish_stream()
  bool reverse = false;    ///< every member sends messages back to the client
  // The network.
  link_params link;                       ///< client -> member
  std::optional<link_params> back_link;   ///< member -> client (default: the same)
  core::time_ns calm_after_ns = 20'000'000'000ull;
  int slow_member = -1;                   ///< this member's links run at slow_bps
  uint64_t slow_bps = 0;
  core::time_ns change_at_ns = 0;         ///< the links become `changed` then
  link_params changed;
  bool check_cwnd_falls = false;          ///< a bottleneck: the window must fall after loss
  bool check_pacing = false;
  // Failures.
  std::vector<uint32_t> crash;            ///< member indices that crash
  core::time_ns crash_at_ns = 0;
  core::time_ns restart_after_ns = 0;     ///< crashed members come back (empty) this much later
  bool client_crash = false;
  core::time_ns client_crash_at_ns = 0;
  int leave_member = -1;                  ///< this member leaves (its application closes) at leave_at_ns
  core::time_ns leave_at_ns = 0;
  int partition_member = -1;
  core::time_ns partition_at_ns = 0, partition_ns = 0;
  // The engines.
  uint32_t max_messages = 4096, max_ack_ranges = 256, max_events = 8192;
  uint32_t member_max_messages = 0;       ///< the members' own limit, if smaller (receive tables)
  uint32_t stream_buffer = 1u << 18;
  uint64_t connection_window = 0;         ///< 0: 4 x stream_buffer
  uint64_t memory_limit = 0;              ///< per node's session_memory; 0: none
  core::time_ns member_timeout_ns = 3'000'000'000ull;
  core::time_ns heartbeat_ns = 200'000'000ull;
  core::cc_algorithm cc = core::cc_algorithm::cubic;
  bool pacing = true;
  // The applications.
  core::time_ns lazy_app_ns = 0;          ///< events drained only this often
  int lazy_member = -1;                   ///< with lazy_app_ns: only this member is lazy (-1: every node)
  close_kind close = close_kind::none;    ///< after everything is queued
  // The adversary.
  bool replay = false;                    ///< replays old packets of every flow, late
  bool spoof = false;                     ///< forges packets that claim a member's address
  bool third_party = false;               ///< forges packets from a node outside the group
  // What must happen.
  std::set<uint32_t> expect_left;         ///< member indices reported MemberLeft, no others; the
                                          ///< reason must be `closed` for leave_member, `timeout` else
  uint64_t expect_error = 0;              ///< ConnectionError code at the client (0: none)
  bool allow_skips = false;               ///< members may be told to skip reliable data (threshold)
  core::time_ns finish_bound_ns = 15'000'000'000ull;
  // Coverage: the run must have exercised these paths (no vacuous pass).
  bool need_would_block = false;          ///< send() refused for a full table or buffer
  bool need_not_absorbed = false;         ///< a receiver dropped a packet it could not absorb
  bool need_connection_credit = false;    ///< the connection window was the binding limit
  bool need_expired = false;
  bool need_partition_during_transfer = false;
};

struct run_result {
  std::string failure;
  core::time_ns finished_ns = 0;
  core::time_ns all_stable_ns = 0;  ///< when the last Sent/Expired arrived
  uint64_t skipped = 0;             ///< messages slow members were told to skip
  uint64_t corrupted = 0;
  uint64_t retransmitted = 0;
  uint64_t steps = 0;
  uint64_t bytes = 0;               ///< the client's workload, all streams
  uint64_t fragments_in_place = 0;  ///< message fragments delivered from their packets, all endpoints
  uint64_t abandoned = 0;           ///< messages in fragments abandoned (skipped), all endpoints
};

/// Runs one scenario for one seed and checks every property.
run_result run_scenario(const scenario &sc, uint64_t seed);

/// The seeds to run (MTP_SIM_SEEDS).
std::vector<uint64_t> seeds_from_env();

/// The command that reruns exactly this test with this seed.
std::string rerun_command(const std::string &test_name, uint64_t seed);

}  // namespace mtp::sim
