// SPDX-License-Identifier: BSD-3-Clause
// The engine's properties in the simulator (docs/testing.md): each
// scenario below is one test, run over the seeds of MTP_SIM_SEEDS, with
// the wire oracles (oracle.h) checking every promise when it is made and
// the harness (harness.cc) checking delivery, failures and coverage at the
// end. A failure prints the seed and the command that reruns exactly it.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <functional>

#include "harness.h"

using namespace mtp;
using namespace mtp::core;
using namespace mtp::sim;

namespace {

link_params lossy(double loss) {
  link_params l;
  l.delay_ns = 5'000'000;
  l.jitter_ns = 2'000'000;
  l.bandwidth_bps = 200'000'000;
  l.loss = loss;
  l.duplicate = 0.01;
  l.corrupt = 0.005;
  return l;
}

link_params clean(uint64_t bps, time_ns delay_ns) {
  link_params l;
  l.delay_ns = delay_ns;
  l.bandwidth_bps = bps;
  return l;
}

using check_fn = std::function<void(const run_result &, uint64_t seed)>;

struct entry {
  scenario sc;
  check_fn check;
};

void run_over_seeds(const std::string &test, const scenario &sc, const check_fn &check) {
  for (uint64_t seed : seeds_from_env()) {
    const run_result r = run_scenario(sc, seed);
    if (std::getenv("MTP_SIM_VERBOSE"))
      std::printf("%s seed %llu: %s at %.3f s simulated, %llu steps, %llu frames retransmitted, %llu fragments "
                  "in place, %llu abandoned\n", test.c_str(),
                  static_cast<unsigned long long>(seed), r.failure.empty() ? "ok" : "FAILED",
                  static_cast<double>(r.finished_ns) / 1e9, static_cast<unsigned long long>(r.steps),
                  static_cast<unsigned long long>(r.retransmitted), static_cast<unsigned long long>(r.fragments_in_place),
                  static_cast<unsigned long long>(r.abandoned));
    ASSERT_TRUE(r.failure.empty()) << test << " seed " << seed << ": " << r.failure
                                   << "\n  rerun: " << rerun_command(test, seed);
    if (check) {
      check(r, seed);
      ASSERT_FALSE(::testing::Test::HasFailure()) << "  rerun: " << rerun_command(test, seed);
    }
  }
}

// The small-table variant of a scenario: messages, ACK ranges and events
// at 16 to 64 entries, and an application that drains its events only
// every 2 ms.
scenario small_tables(scenario s) {
  s.name += "_small_tables";
  s.max_messages = 32;
  s.max_ack_ranges = 16;
  s.max_events = 64;
  s.lazy_app_ns = 2'000'000;
  s.need_would_block = true;
  return s;
}

std::vector<entry> scenarios() {
  std::vector<entry> out;
  auto add = [&](scenario s, check_fn c = {}, bool with_small_tables = true) {
    if (with_small_tables) out.push_back({small_tables(s), {}});
    out.push_back({std::move(s), std::move(c)});
  };

  {
    scenario s;
    s.name = "reliable_fifo_1_to_1";
    s.link = lossy(0.05);
    add(s);
  }
  {
    scenario s;
    s.name = "reliable_fifo_1_to_3";
    s.members = 3;
    s.link = lossy(0.10);
    s.link.burst_enter = 0.01;
    add(s);
  }
  {
    scenario s;
    s.name = "members_send_back";
    s.members = 3;
    s.reverse = true;
    s.link = lossy(0.05);
    add(s);
  }
  {
    scenario s;
    s.name = "threshold_5_of_8_with_crashes";
    s.members = 8;
    s.threshold = 5;
    s.link = lossy(0.10);
    s.crash = {2, 6};
    s.crash_at_ns = 50'000'000;
    s.expect_left = {2, 6};
    s.allow_skips = true;
    add(s);
  }
  {
    scenario s;
    s.name = "more_than_n_minus_t_crash";
    s.members = 5;
    s.threshold = 3;
    s.link = lossy(0.05);
    s.crash = {0, 1, 4};
    s.crash_at_ns = 100'000'000;
    s.expect_left = {0, 1, 4};
    s.expect_error = static_cast<uint64_t>(error_code::threshold_lost);
    add(s);
  }
  {
    scenario s;
    s.name = "partition_shorter_than_member_timeout";
    s.members = 3;
    s.ord = ordering::none;
    s.link = lossy(0.05);
    s.partition_member = 1;
    s.partition_at_ns = 60'000'000;
    s.partition_ns = 1'500'000'000;  // member timeout: 3 s
    s.need_partition_during_transfer = true;
    s.cc = cc_algorithm::newreno;
    add(s);
  }
  {
    scenario s;
    s.name = "partition_longer_than_member_timeout";
    s.members = 3;
    s.link = lossy(0.05);
    s.partition_member = 1;
    s.partition_at_ns = 60'000'000;
    s.partition_ns = 5'000'000'000;
    s.expect_left = {1};
    s.need_partition_during_transfer = true;
    add(s);
  }
  {
    scenario s;
    s.name = "partition_of_the_only_member";
    s.members = 1;
    s.link = lossy(0.02);
    s.partition_member = 0;
    s.partition_at_ns = 60'000'000;
    s.partition_ns = 5'000'000'000;
    s.expect_left = {0};
    s.expect_error = static_cast<uint64_t>(error_code::member_timeout);
    add(s);
  }
  {
    scenario s;
    s.name = "member_restarts";
    s.members = 3;
    s.link = lossy(0.05);
    s.crash = {1};
    s.crash_at_ns = 80'000'000;
    s.restart_after_ns = 200'000'000;
    s.expect_left = {1};
    add(s);
  }
  {
    scenario s;
    s.name = "a_member_leaves";
    s.members = 3;
    s.link = lossy(0.05);
    s.leave_member = 1;
    s.leave_at_ns = 60'000'000;
    s.expect_left = {1};
    add(s);
  }
  {
    scenario s;
    s.name = "client_crashes";
    s.members = 3;
    s.link = lossy(0.05);
    s.client_crash = true;
    s.client_crash_at_ns = 120'000'000;
    add(s, {}, false);
  }
  {
    scenario s;
    s.name = "loss_on_the_ack_path_only";
    s.members = 3;
    s.link = clean(200'000'000, 5'000'000);
    s.back_link = lossy(0.25);
    add(s);
  }
  {
    scenario s;
    s.name = "asymmetric_links";
    s.members = 2;
    s.link = clean(100'000'000, 10'000'000);
    s.link.loss = 0.03;
    s.back_link = clean(5'000'000, 40'000'000);
    s.back_link->loss = 0.03;
    add(s);
  }
  {
    scenario s;
    s.name = "late_duplicates_and_replays";
    s.members = 3;
    s.link = lossy(0.05);
    s.link.duplicate = 0.05;
    s.link.duplicate_delay_ns = 300'000'000;
    s.replay = true;
    add(s);
  }
  {
    scenario s;
    s.name = "multi_bit_corruption_and_truncation";
    s.members = 2;
    s.link = lossy(0.02);
    s.link.corrupt = 0.05;
    s.link.corrupt_bits = 8;
    s.link.truncate = 0.03;
    add(s);
  }
  {
    scenario s;
    s.name = "rtt_and_bandwidth_change_mid_run";
    s.members = 3;
    s.link = lossy(0.02);
    s.change_at_ns = 150'000'000;
    s.changed = clean(20'000'000, 40'000'000);
    s.changed.jitter_ns = 10'000'000;
    s.changed.loss = 0.02;
    add(s);
  }
  {
    scenario s;
    s.name = "datagrams_under_duplication";
    s.members = 3;
    s.datagrams = 200;
    s.link = lossy(0.05);
    s.link.duplicate = 0.2;
    s.link.duplicate_delay_ns = 50'000'000;
    add(s);
  }
  {
    scenario s;
    s.name = "byte_streams_with_fin";
    s.members = 3;
    s.mode = stream_mode::bytes;
    s.fin = true;
    s.stream_buffer = 16384;
    s.link = lossy(0.05);
    add(s);
  }
  {
    scenario s;
    s.name = "partial_messages_with_lifetimes";
    s.members = 3;
    s.rel = reliability::partial;
    s.max_retx = 4;
    s.lifetime_ns = 40'000'000;
    s.max_size = 600;
    s.link = lossy(0.15);
    s.need_expired = true;
    add(s);
  }
  {
    scenario s;
    s.name = "partial_reliability_bound";
    s.members = 3;
    s.rel = reliability::partial;
    s.max_retx = 1;
    s.max_size = 600;
    s.link = lossy(0.10);
    s.need_expired = true;
    add(s);
  }
  {
    scenario s;
    s.name = "unreliable_never_retransmits";
    s.members = 3;
    s.rel = reliability::unreliable;
    s.max_size = 600;
    s.link = lossy(0.10);
    s.need_expired = true;
    add(s);
  }
  {
    scenario s;
    s.name = "graceful_close_under_loss";
    s.members = 3;
    s.link = lossy(0.10);
    s.close = close_kind::graceful;
    add(s);
  }
  {
    scenario s;
    s.name = "abort_under_loss";
    s.members = 3;
    s.link = lossy(0.10);
    s.close = close_kind::abort;
    add(s);
  }
  {
    scenario s;
    s.name = "connection_window_binds";
    s.members = 2;
    s.streams = 6;
    s.stream_buffer = 1u << 15;
    s.connection_window = 1u << 16;
    s.lazy_app_ns = 30'000'000;  // slow readers: credit runs out
    s.link = lossy(0.01);
    s.link.corrupt = 0;
    s.need_connection_credit = true;
    add(s, {}, false);
    // The same in a threshold group with one slow reader: the others go
    // on, and the slow one is still never sent beyond its connection
    // credit (each member's credit is checked, not only the t-th largest).
    s.name = "connection_window_binds_for_one_member_of_a_threshold_group";
    s.members = 3;
    s.threshold = 2;
    s.lazy_member = 2;
    s.allow_skips = true;
    add(s, {}, false);
  }
  {
    scenario s;
    s.name = "tight_memory_budget";
    s.members = 3;
    s.streams = 4;
    s.stream_buffer = 1u << 20;
    // 224 KiB: tight enough, with the ranges open_stream reserves, that
    // senders block on memory and the sent table cannot grow at seeds 0-15.
    s.memory_limit = 224u << 10;
    s.link = lossy(0.05);
    s.need_would_block = true;
    add(s, {}, false);
  }
  {
    scenario s;
    s.name = "receiver_tables_overflow";
    s.members = 2;  // fifo: behind a gap, small messages pile up
    s.min_size = 16;
    s.max_size = 64;
    s.messages = 600;
    s.member_max_messages = 16;  // the sender keeps 4096 in flight
    s.max_ack_ranges = 8;
    s.link = lossy(0.15);
    s.link.jitter_ns = 8'000'000;
    s.need_not_absorbed = true;
    add(s, {}, false);
  }
  {
    scenario s;
    s.name = "forged_packets_claiming_members";
    s.members = 3;
    s.link = lossy(0.02);
    s.spoof = true;
    add(s, {}, false);
  }
  {
    scenario s;
    s.name = "forged_packets_from_a_third_node";
    s.members = 3;
    s.link = lossy(0.02);
    s.third_party = true;
    add(s, {}, false);
  }
  {
    // A bottleneck whose queue is smaller than the bandwidth-delay product:
    // the window must fall after losses, and stay near the path's capacity.
    scenario s;
    s.name = "bottleneck_window_falls_after_loss";
    s.members = 1;
    s.streams = 1;
    s.messages = 1500;
    s.min_size = 1000;
    s.max_size = 1200;
    s.stream_buffer = 1u << 22;
    s.link = clean(20'000'000, 20'000'000);  // BDP 100 KB at 40 ms RTT
    s.link.queue_bytes = 20'000;
    s.check_cwnd_falls = true;
    s.finish_bound_ns = 60'000'000'000ull;
    add(s, {}, false);
  }
  {
    scenario s;
    s.name = "pacing_spreads_packets";
    s.members = 1;
    s.streams = 1;
    s.messages = 3000;
    s.min_size = 1000;
    s.max_size = 1200;
    s.stream_buffer = 1u << 22;
    s.link = clean(1'000'000'000, 20'000'000);
    s.link.queue_bytes = 8u << 20;
    s.check_pacing = true;
    add(s, {}, false);
  }
  {
    // A group without a threshold runs at its slowest member's pace; with
    // t of n, at the t-th fastest: stability (Sent for every message) comes
    // long before the slow member could have carried the data, and the
    // slow member is told to skip what it cannot keep up with.
    scenario s;
    s.name = "slowest_member_paces_the_group";
    s.members = 3;
    s.streams = 1;
    s.messages = 1500;
    s.min_size = 400;
    s.max_size = 1000;
    s.stream_buffer = 1u << 16;
    s.link = lossy(0.0);
    s.link.corrupt = 0;
    s.link.duplicate = 0;
    s.slow_member = 2;
    s.slow_bps = 4'000'000;
    s.finish_bound_ns = 60'000'000'000ull;
    // What the slow member's link needs to carry the workload alone.
    auto slow_transfer_s = [](const run_result &r) { return static_cast<double>(r.bytes) * 8 / 4e6; };
    add(s, [slow_transfer_s](const run_result &r, uint64_t seed) {
      EXPECT_GE(static_cast<double>(r.all_stable_ns) / 1e9, 0.8 * slow_transfer_s(r)) << "seed " << seed;
      EXPECT_EQ(r.skipped, 0u) << seed;
    }, false);
    s.name = "threshold_group_runs_at_the_t_th_fastest";
    s.threshold = 2;
    s.allow_skips = true;
    add(s, [slow_transfer_s](const run_result &r, uint64_t seed) {
      EXPECT_LE(static_cast<double>(r.all_stable_ns) / 1e9, 0.4 * slow_transfer_s(r)) << "seed " << seed;
      EXPECT_GT(r.skipped, 0u) << seed;
    }, false);
  }
  return out;
}

class sim_scenario : public ::testing::Test {
 public:
  explicit sim_scenario(entry e) : e_(std::move(e)) {}
  void TestBody() override { run_over_seeds("sim." + e_.sc.name, e_.sc, e_.check); }

 private:
  entry e_;
};

const bool registered = [] {
  for (entry &e : scenarios()) {
    const std::string name = e.sc.name;
    ::testing::RegisterTest("sim", name.c_str(), nullptr, nullptr, __FILE__, __LINE__,
                            [e]() -> ::testing::Test * { return new sim_scenario(e); });
  }
  return true;
}();

}  // namespace
