// SPDX-License-Identifier: BSD-3-Clause
// Property tests of the engine in the simulator (docs/protocol.md 8):
// every scenario runs over a seed range and checks, per seed, exactly-once
// in-order delivery of reliable data to every live member, the bounds of
// partial and unreliable messages, that corrupted packets never deliver,
// that acknowledged data is never lost, that flow control holds, that the
// sender's memory returns to zero, and that transfers finish within a
// bounded time after the last impairment.
//
// Seeds: MTP_SIM_SEEDS="0-15" (default, CI) or "0-4999" (soak), or one
// seed: MTP_SIM_SEEDS=1234. A failing seed prints the command to rerun it.
// Debugging: MTP_SIM_VERBOSE=1 prints each run and, on failure, every
// endpoint's counters and state; MTP_SIM_DUMP_AT=<ns> dumps sender 0's
// state once simulated time passes <ns>.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string>

#include "sim.h"

using namespace mtp;
using namespace mtp::core;
using namespace mtp::sim;

namespace {

struct scenario {
  std::string name;
  uint32_t senders = 1, members = 1, threshold = 0;
  uint32_t streams = 2;
  uint32_t messages = 300;  ///< per stream per sender
  uint32_t min_size = 16, max_size = 1200;
  stream_mode mode = stream_mode::message;
  ordering ord = ordering::fifo;
  reliability rel = reliability::reliable;
  uint32_t max_retx = 2;
  time_ns lifetime_ns = 0;
  link_params link;
  time_ns calm_after_ns = 20'000'000'000ull;
  std::vector<uint32_t> crash;  ///< member indices that crash
  time_ns crash_at_ns = 0;
  bool partition = false;
  uint32_t stream_buffer = 1u << 18;
  time_ns finish_bound_ns = 15'000'000'000ull;
  cc_algorithm cc = cc_algorithm::cubic;
  int slow_member = -1;               ///< this member's links run at slow_bps
  uint64_t slow_bps = 0;
  bool allow_skips = false;           ///< threshold under pressure: members may be told to skip
};

constexpr uint32_t sender_node(uint32_t i) { return 1000 + i; }
constexpr uint32_t member_node(uint32_t j) { return 1 + j; }

uint32_t msg_size(const scenario &s, uint32_t sender, uint32_t stream, uint64_t seq) {
  rng r(0x5eed ^ (uint64_t{sender} << 40) ^ (uint64_t{stream} << 32) ^ seq);
  return s.min_size + static_cast<uint32_t>(r.below(s.max_size - s.min_size + 1));
}

uint8_t pattern(uint32_t sender, uint32_t stream, uint64_t seq, std::size_t i) {
  return static_cast<uint8_t>((sender * 131 + stream * 31 + seq * 7 + i * 13) & 0xff);
}

void fill(std::vector<std::byte> &b, uint32_t sender, uint32_t stream, uint64_t seq) {
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = static_cast<std::byte>(pattern(sender, stream, seq, i));
  if (b.size() >= 16) {
    std::memcpy(b.data(), &sender, 4);
    std::memcpy(b.data() + 4, &stream, 4);
    std::memcpy(b.data() + 8, &seq, 8);
  }
}

struct receiver_stream {
  std::vector<std::byte> partial;  ///< pieces of a message not yet ended
  uint64_t partial_offset = 0;
  uint64_t next_seq = 0;           ///< fifo: the seq expected next
  std::set<uint64_t> got;
  std::vector<std::byte> bytes;    ///< byte mode: the stream as received
};

struct run_result {
  std::string failure;
  time_ns finished_ns = 0;
  time_ns all_stable_ns = 0;  ///< when the last Sent/Expired arrived
  uint64_t skipped = 0;       ///< messages slow members were told to skip
  uint64_t corrupted = 0;
  uint64_t retransmitted = 0;
};

std::string seed_command(const std::string &test, uint64_t seed) {
  return "MTP_SIM_SEEDS=" + std::to_string(seed) + " build/tests/sim/sim_test --gtest_filter='*" + test + "*'";
}

run_result run(const scenario &sc, uint64_t seed) {
  run_result res;
  network net(seed);
  auto fail = [&](const std::string &why) {
    if (res.failure.empty()) res.failure = why;
  };
  // Links: each sender to each member, both ways.
  for (uint32_t i = 0; i < sc.senders; ++i)
    for (uint32_t j = 0; j < sc.members; ++j) {
      link_params l = sc.link;
      if (static_cast<int>(j) == sc.slow_member) l.bandwidth_bps = sc.slow_bps;
      net.set_link(sender_node(i), member_node(j), l);
    }
  net.calm_after(sc.calm_after_ns);

  connection_config base;
  base.max_streams = 8;
  base.stream_buffer_bytes = sc.stream_buffer;
  base.connection_window_bytes = uint64_t{sc.stream_buffer} * 4;
  base.max_messages = 4096;
  base.max_sent_packets = 2048;
  base.max_events = 8192;
  base.member_timeout_ns = 3'000'000'000ull;
  base.heartbeat_interval_ns = 200'000'000ull;
  base.initial_rtt_ns = 30'000'000;
  base.cc = sc.cc;

  std::vector<connection *> senders, servers;
  std::map<connection *, std::pair<uint32_t, uint32_t>> server_of;  // conn -> (member j, sender i)
  for (uint32_t i = 0; i < sc.senders; ++i) {
    connection_config c = base;
    c.connection_id = 0xc0ffee00 + i;
    c.local_id = sender_node(i);
    c.threshold = sc.threshold;
    std::vector<uint32_t> nodes;
    for (uint32_t j = 0; j < sc.members; ++j) {
      c.members.push_back(member_node(j));
      nodes.push_back(member_node(j));
    }
    auto &ep = net.add(sender_node(i), std::make_unique<connection>(c, 0), nodes);
    senders.push_back(ep.conn.get());
    for (uint32_t k = 0; k < sc.streams; ++k)
      if (ep.conn->open_stream(k, sc.mode, sc.ord) != status::ok) fail("open_stream failed");
  }
  for (uint32_t j = 0; j < sc.members; ++j)
    for (uint32_t i = 0; i < sc.senders; ++i) {
      connection_config c = base;
      c.connection_id = 0xc0ffee00 + i;
      c.local_id = member_node(j);
      c.members = {sender_node(i)};
      c.side = role::server;
      auto &ep = net.add(member_node(j), std::make_unique<connection>(c, 0), {sender_node(i)});
      servers.push_back(ep.conn.get());
      server_of[ep.conn.get()] = {j, i};
    }
  if (sc.partition && sc.members > 1)
    net.partition(sender_node(0), member_node(1), 2'000'000'000ull, 2'400'000'000ull);

  // Wire-level accounting for partial and unreliable messages: how often
  // each message went to each member.
  std::map<std::tuple<uint32_t, uint32_t, uint64_t, uint64_t>, uint32_t> sends;
  const bool trace = std::getenv("MTP_SIM_TRACE") != nullptr;
  if (sc.rel != reliability::reliable || trace) {
    net.set_tap([&](uint32_t from, uint32_t to, std::span<const std::byte> pkt, bool dropped) {
      if (trace) {
        packet_header h;
        std::span<const std::byte> frames;
        if (parse_packet(pkt, h, frames) == parse_status::ok) {
          std::printf("%.6f %u->%u pn %llu%s:", static_cast<double>(net.now()) / 1e9, from, to,
                      static_cast<unsigned long long>(h.packet_number), dropped ? " DROPPED" : "");
          frame_reader rd(frames);
          frame f;
          while (!rd.done() && rd.next(f) == parse_status::ok) {
            if (f.type == frame_type::stream)
              std::printf(" S%llu[%llu,+%zu)", (unsigned long long)f.stream.stream_id, (unsigned long long)f.stream.offset, f.stream.data.size());
            else if (f.type == frame_type::forward)
              std::printf(" F%llu[%llu,+%llu)", (unsigned long long)f.forward.stream_id, (unsigned long long)f.forward.offset, (unsigned long long)f.forward.length);
            else if (f.type == frame_type::ack)
              std::printf(" A%llu", (unsigned long long)f.ack.largest);
            else
              std::printf(" t%d", static_cast<int>(f.type));
          }
          std::printf("\n");
        }
      }
      if (from < 1000) return;
      packet_header h;
      std::span<const std::byte> frames;
      if (parse_packet(pkt, h, frames) != parse_status::ok) return;
      frame_reader rd(frames);
      frame f;
      while (!rd.done() && rd.next(f) == parse_status::ok)
        if (f.type == frame_type::stream) ++sends[{from, to, f.stream.stream_id, f.stream.offset}];
    });
  }

  // Sender application state.
  std::vector<std::vector<uint64_t>> next_seq(sc.senders, std::vector<uint64_t>(sc.streams, 0));
  std::vector<std::map<std::pair<uint64_t, uint64_t>, int>> outcome(sc.senders);  // (stream, msg) -> 1 sent, 2 expired
  std::vector<std::set<uint32_t>> left(sc.senders);
  std::vector<std::map<std::pair<uint64_t, uint64_t>, uint64_t>> msg_start(sc.senders);
  // Receiver application state: [member j][sender i][stream]
  std::vector<std::vector<std::vector<receiver_stream>>> rx(
      sc.members, std::vector<std::vector<receiver_stream>>(sc.senders, std::vector<receiver_stream>(sc.streams)));
  std::vector<std::byte> payload;
  bool crashed = false;

  bool dumped = false;
  auto app = [&]() {
    if (std::getenv("MTP_SIM_DUMP_AT") && !dumped && net.now() > std::stoull(std::getenv("MTP_SIM_DUMP_AT"))) {
      dumped = true;
      senders[0]->dump(stdout);
      const auto &st = senders[0]->stats();
      std::printf("stable %llu skipped %llu\n", (unsigned long long)st.messages_stable, (unsigned long long)st.messages_skipped_by_slow_members);
    }
    if (!crashed && sc.crash_at_ns && net.now() >= sc.crash_at_ns) {
      for (uint32_t j : sc.crash) net.crash(member_node(j));
      crashed = true;
    }
    for (uint32_t i = 0; i < sc.senders; ++i) {
      connection &c = *senders[i];
      event e;
      while (c.poll_event(e)) {
        if (e.type == event_type::sent || e.type == event_type::expired) {
          auto &o = outcome[i][{e.stream_id, e.message_id}];
          if (o != 0) fail("message reported twice");
          res.all_stable_ns = net.now();
          o = e.type == event_type::sent ? 1 : 2;
          if (e.type == event_type::expired && sc.rel == reliability::reliable) fail("a reliable message expired");
        } else if (e.type == event_type::member_left) {
          left[i].insert(e.member);
        } else if (e.type == event_type::connection_error) {
          fail("connection error at the sender: code " + std::to_string(e.error_code));
        }
      }
      bool wrote = false;
      for (uint32_t k = 0; k < sc.streams; ++k) {
        while (next_seq[i][k] < sc.messages) {
          const uint64_t seq = next_seq[i][k];
          payload.resize(msg_size(sc, i, k, seq));
          fill(payload, i, k, seq);
          message_options o;
          o.rel = sc.rel;
          o.max_retransmissions = sc.max_retx;
          o.lifetime_ns = sc.lifetime_ns;
          uint64_t id = 0;
          const status st = c.send(k, payload, o, net.now(), &id);
          if (st == status::would_block) break;
          if (st != status::ok) {
            fail("send failed");
            break;
          }
          if (sc.mode == stream_mode::message && id != seq) fail("message id is not the sequence");
          ++next_seq[i][k];
          wrote = true;
        }
      }
      if (wrote) c.flush();
    }
    for (connection *c : servers) {
      const auto [j, i] = server_of[c];
      event e;
      while (c->poll_event(e)) {
        if (e.type == event_type::connection_error && !crashed) fail("connection error at a member");
        if (e.type != event_type::received) continue;
        receiver_stream &r = rx[j][i][e.stream_id];
        if (sc.mode == stream_mode::bytes) {
          if (e.offset != r.bytes.size()) fail("byte stream delivered out of order");
          r.bytes.insert(r.bytes.end(), e.data.begin(), e.data.end());
          continue;
        }
        if (r.partial.empty()) r.partial_offset = e.offset;
        r.partial.insert(r.partial.end(), e.data.begin(), e.data.end());
        if (!e.end_of_message) continue;
        std::vector<std::byte> m;
        m.swap(r.partial);
        uint64_t seq = 0;
        uint32_t snd = 0, stm = 0;
        if (m.size() < 16) {
          fail("message shorter than its header");
          continue;
        }
        std::memcpy(&snd, m.data(), 4);
        std::memcpy(&stm, m.data() + 4, 4);
        std::memcpy(&seq, m.data() + 8, 8);
        std::vector<std::byte> expect(msg_size(sc, i, static_cast<uint32_t>(e.stream_id), seq));
        fill(expect, i, static_cast<uint32_t>(e.stream_id), seq);
        if (snd != i || stm != e.stream_id || m != expect) {
          fail("delivered message content differs from what was sent (corruption delivered?)");
          continue;
        }
        if (!r.got.insert(seq).second) fail("message delivered twice");
        if (sc.ord == ordering::fifo) {
          if (seq < r.next_seq) fail("fifo order broken");
          if (sc.rel == reliability::reliable && seq != r.next_seq && !sc.allow_skips)
            fail("fifo gap in reliable stream");
          r.next_seq = seq + 1;
        }
      }
    }
  };

  auto done = [&]() {
    if (!res.failure.empty()) return true;
    for (uint32_t i = 0; i < sc.senders; ++i) {
      for (uint32_t k = 0; k < sc.streams; ++k)
        if (next_seq[i][k] < sc.messages) return false;
      if (sc.mode == stream_mode::message && outcome[i].size() < uint64_t{sc.streams} * sc.messages) return false;
      if (senders[i]->send_buffered_bytes() != 0 || senders[i]->packets_in_flight() != 0) return false;
    }
    return true;
  };

  const time_ns limit = 300'000'000'000ull;
  if (!net.run(limit, done, app)) {
    std::ostringstream o;
    o << "did not finish in " << limit / 1'000'000'000ull << " s simulated; sender 0 buffered "
      << senders[0]->send_buffered_bytes() << " B, in flight " << senders[0]->packets_in_flight()
      << ", outcomes " << outcome[0].size();
    fail(o.str());
  }
  res.finished_ns = net.now();
  res.corrupted = net.corrupted();
  for (auto *c : senders) {
    res.retransmitted += c->stats().retransmitted_frames;
    res.skipped += c->stats().messages_skipped_by_slow_members;
  }

  // --- properties ---
  std::set<uint32_t> crashed_set(sc.crash.begin(), sc.crash.end());
  for (uint32_t i = 0; i < sc.senders; ++i) {
    for (uint32_t j : sc.crash)
      if (!left[i].count(member_node(j))) fail("crashed member not reported as MemberLeft");
    if (senders[i]->send_buffered_bytes() != 0) fail("sender memory not back to zero");
  }
  for (connection *c : servers)
    if (c->stats().drops[static_cast<int>(drop_reason::flow_control)]) fail("flow control exceeded");
  for (uint32_t j = 0; j < sc.members; ++j) {
    if (crashed_set.count(j)) continue;
    for (uint32_t i = 0; i < sc.senders; ++i)
      for (uint32_t k = 0; k < sc.streams; ++k) {
        const receiver_stream &r = rx[j][i][k];
        if (sc.mode == stream_mode::bytes) {
          std::vector<std::byte> expect;
          for (uint64_t seq = 0; seq < sc.messages; ++seq) {
            std::vector<std::byte> m(msg_size(sc, i, k, seq));
            fill(m, i, k, seq);
            expect.insert(expect.end(), m.begin(), m.end());
          }
          if (r.bytes != expect) fail("byte stream content differs");
          continue;
        }
        for (uint64_t seq = 0; seq < sc.messages; ++seq) {
          const int o = outcome[i].count({k, seq}) ? outcome[i].at({k, seq}) : 0;
          const bool got = r.got.count(seq);
          if (sc.rel == reliability::reliable && !got && !sc.allow_skips)
            fail("member " + std::to_string(j) + " misses reliable message " + std::to_string(seq) + " of stream " +
                 std::to_string(k));
          if (o == 1 && !got && sc.threshold == 0) {
            uint64_t start = 0;
            for (uint64_t q = 0; q < seq; ++q) start += msg_size(sc, i, k, q);
            fail("acknowledged (Sent) message " + std::to_string(seq) + " of stream " + std::to_string(k) +
                 " (offsets [" + std::to_string(start) + ", " + std::to_string(start + msg_size(sc, i, k, seq)) +
                 ")) lost at live member " + std::to_string(j));
          }
          if (o == 0) fail("message neither Sent nor Expired");
        }
      }
  }
  // A stable message reached at least t members (or all live ones).
  if (sc.mode == stream_mode::message && sc.rel == reliability::reliable)
    for (uint32_t i = 0; i < sc.senders; ++i)
      for (uint32_t k = 0; k < sc.streams; ++k)
        for (uint64_t seq = 0; seq < sc.messages; ++seq) {
          uint32_t holders = 0;
          for (uint32_t j = 0; j < sc.members; ++j)
            if (!crashed_set.count(j) && rx[j][i][k].got.count(seq)) ++holders;
          const uint32_t live = sc.members - static_cast<uint32_t>(crashed_set.size());
          if (holders < (sc.threshold ? std::min(sc.threshold, live) : live))
            fail("stable message " + std::to_string(seq) + " reached only " + std::to_string(holders) + " members");
        }
  for (const auto &[key, n] : sends) {
    const uint32_t to = std::get<1>(key);
    if (crashed_set.count(to - 1)) continue;
    if (sc.rel == reliability::unreliable && n > 1) fail("an unreliable message was retransmitted");
    if (sc.rel == reliability::partial && n > 1 + sc.max_retx)
      fail("a partial message exceeded its retransmission bound: stream " + std::to_string(std::get<2>(key)) +
           " offset " + std::to_string(std::get<3>(key)) + " to node " + std::to_string(to) + " sent " +
           std::to_string(n) + " times");
  }
  time_ns settle = std::max(net.last_impairment(), sc.crash_at_ns);
  if (res.finished_ns > settle && res.finished_ns - settle > sc.finish_bound_ns)
    fail("finished " + std::to_string((res.finished_ns - settle) / 1'000'000) + " ms after the last impairment");
  if (!res.failure.empty() && std::getenv("MTP_SIM_VERBOSE")) {
    for (auto &ep : net.endpoints()) {
      const auto &st = ep->conn->stats();
      std::printf("node %u conn %llx:", ep->node, static_cast<unsigned long long>(ep->conn->id()));
#define MTP_X(name) std::printf(" %s=%llu", #name, static_cast<unsigned long long>(st.name));
      MTP_CONNECTION_COUNTERS(MTP_X)
#undef MTP_X
      std::printf(" buffered=%llu inflight=%llu\n", static_cast<unsigned long long>(ep->conn->send_buffered_bytes()),
                  static_cast<unsigned long long>(ep->conn->packets_in_flight()));
      ep->conn->dump(stdout);
    }
  }
  return res;
}

std::vector<uint64_t> seeds() {
  const char *env = std::getenv("MTP_SIM_SEEDS");
  std::string s = env ? env : "0-15";
  std::vector<uint64_t> out;
  const auto dash = s.find('-');
  if (dash == std::string::npos) {
    out.push_back(std::stoull(s));
  } else {
    for (uint64_t v = std::stoull(s.substr(0, dash)); v <= std::stoull(s.substr(dash + 1)); ++v) out.push_back(v);
  }
  return out;
}

void run_all(const scenario &sc, const std::function<void(const run_result &, uint64_t)> &check = {}) {
  for (uint64_t seed : seeds()) {
    const run_result r = run(sc, seed);
    if (check && r.failure.empty()) check(r, seed);
    if (std::getenv("MTP_SIM_VERBOSE"))
      std::printf("%s seed %llu: finished at %.3f s simulated, %llu frames retransmitted, %llu packets corrupted\n",
                  sc.name.c_str(), static_cast<unsigned long long>(seed), static_cast<double>(r.finished_ns) / 1e9,
                  static_cast<unsigned long long>(r.retransmitted), static_cast<unsigned long long>(r.corrupted));
    ASSERT_TRUE(r.failure.empty()) << sc.name << " seed " << seed << ": " << r.failure
                                   << "\n  rerun: " << seed_command(sc.name, seed);
  }
}

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

}  // namespace

TEST(sim, reliable_fifo_1_to_1) {
  scenario s;
  s.name = "reliable_fifo_1_to_1";
  s.link = lossy(0.05);
  run_all(s);
}

TEST(sim, reliable_fifo_1_to_3) {
  scenario s;
  s.name = "reliable_fifo_1_to_3";
  s.members = 3;
  s.link = lossy(0.10);
  s.link.burst_enter = 0.01;
  run_all(s);
}

TEST(sim, reliable_fifo_3_to_3) {
  scenario s;
  s.name = "reliable_fifo_3_to_3";
  s.senders = 3;
  s.members = 3;
  s.messages = 150;
  s.link = lossy(0.05);
  run_all(s);
}

TEST(sim, threshold_5_of_8_with_crashes) {
  scenario s;
  s.name = "threshold_5_of_8_with_crashes";
  s.members = 8;
  s.threshold = 5;
  s.messages = 300;
  s.link = lossy(0.10);
  s.crash = {2, 6};
  s.crash_at_ns = 50'000'000ull;
  run_all(s);
}

TEST(sim, reliable_unordered_with_partition) {
  scenario s;
  s.name = "reliable_unordered_with_partition";
  s.members = 3;
  s.ord = ordering::none;
  s.link = lossy(0.05);
  s.partition = true;
  s.cc = cc_algorithm::newreno;
  run_all(s);
}

TEST(sim, partial_reliability_bound) {
  scenario s;
  s.name = "partial_reliability_bound";
  s.members = 3;
  s.rel = reliability::partial;
  s.max_retx = 1;
  s.max_size = 600;
  s.link = lossy(0.10);
  run_all(s);
}

TEST(sim, unreliable_never_retransmits) {
  scenario s;
  s.name = "unreliable_never_retransmits";
  s.members = 3;
  s.rel = reliability::unreliable;
  s.max_size = 600;
  s.link = lossy(0.10);
  run_all(s);
}

TEST(sim, byte_stream_small_window) {
  scenario s;
  s.name = "byte_stream_small_window";
  s.members = 3;
  s.mode = stream_mode::bytes;
  s.stream_buffer = 16384;
  s.link = lossy(0.05);
  run_all(s);
}

// A group without a threshold runs at its slowest member's pace; with t of
// n, at the t-th fastest: stability (Sent for every message) comes long
// before the slow member could have carried the data, and the slow member
// is told to skip what it cannot keep up with, in order, with no duplicate.
TEST(sim, slowest_member_paces_the_group_unless_a_threshold_counts) {
  scenario s;
  s.name = "slowest_member_paces_the_group_unless_a_threshold_counts";
  s.members = 3;
  s.streams = 1;
  s.messages = 1500;
  s.min_size = 400;
  s.max_size = 1000;  // about 1 MB in all
  s.stream_buffer = 1u << 16;
  s.link = lossy(0.0);
  s.link.corrupt = 0;
  s.link.duplicate = 0;
  s.slow_member = 2;
  s.slow_bps = 4'000'000;  // 1 MB takes about 2 s at 4 Mbit/s
  s.finish_bound_ns = 60'000'000'000ull;
  const double slow_transfer_s = 1500.0 * 700 * 8 / 4e6;
  run_all(s, [&](const run_result &r, uint64_t seed) {
    EXPECT_GE(static_cast<double>(r.all_stable_ns) / 1e9, 0.8 * slow_transfer_s) << "all-members group, seed " << seed;
    EXPECT_EQ(r.skipped, 0u) << seed;
  });
  s.name += "_threshold";
  s.threshold = 2;
  s.allow_skips = true;
  run_all(s, [&](const run_result &r, uint64_t seed) {
    EXPECT_LE(static_cast<double>(r.all_stable_ns) / 1e9, 0.4 * slow_transfer_s) << "2-of-3 group, seed " << seed;
    EXPECT_GT(r.skipped, 0u) << seed;
  });
}
