// SPDX-License-Identifier: BSD-3-Clause
// Engine cost, Google Benchmark: a reliable-fifo message exchange between
// one sender and 1 or 8 receivers, all on one core, packets handed over in
// memory (no I/O). Each iteration sends a batch of messages, moves every
// packet until quiet, and drains every event, so the figure includes
// sending, packetization, parsing, CRC32C both ways, reassembly, delivery,
// ACK generation and processing, and stability (Sent) reporting.
//
//   build/tools/bench/engine_bench --benchmark_counters_tabular=true
//
// Counters: ns_per_msg (whole exchange, sender and all receivers) and
// msgs_per_s (per core); *_sender variants time only the sender's calls.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdio>
#include <vector>

#include "connection.h"
#include "crc32c.h"

using namespace mtp::core;

namespace {

constexpr uint64_t batch = 1024;

connection_config cfg(uint32_t local, std::vector<uint32_t> members) {
  connection_config c;
  c.connection_id = 1;
  c.local_id = local;
  c.members = std::move(members);
  c.max_streams = 2;
  c.stream_buffer_bytes = 1u << 22;
  c.connection_window_bytes = 1ull << 40;
  c.max_messages = 1u << 14;
  c.max_sent_packets = 1u << 14;
  c.max_events = 1u << 12;  // drained every round: sized to a burst, it stays in cache
  c.pacing = false;  // no wire to pace: this measures CPU per message
  c.max_packet_bytes = 1472;  // UDP payload of a 1500 B IPv4 MTU: a 1400 B message fits one packet
  c.initial_rtt_ns = 100'000;
  c.ack_delay_ns = 10'000;
  return c;
}

struct rig {
  std::unique_ptr<connection> client;
  std::vector<std::unique_ptr<connection>> servers;
  std::vector<std::byte> buf = std::vector<std::byte>(2048);
  std::vector<std::byte> msg;
  time_ns now = 1'000'000;
  uint64_t delivered = 0, stable = 0;
  std::chrono::nanoseconds sender_ns{0};

  rig(std::size_t members, std::size_t size) : msg(size, std::byte{0x5a}) {
    std::vector<uint32_t> ids;
    for (uint32_t i = 0; i < members; ++i) ids.push_back(i + 1);
    client = std::make_unique<connection>(cfg(100, ids), now);
    client->open_stream(0, stream_mode::message, ordering::fifo);
    for (uint32_t id : ids) {
      connection_config sc = cfg(id, {100});
      sc.side = role::server;
      servers.push_back(std::make_unique<connection>(sc, now));
    }
    pump(true);
  }

  template <class F>
  void timed_sender(bool time_it, F &&f) {
    if (!time_it) return f();
    const auto t0 = std::chrono::steady_clock::now();
    f();
    sender_ns += std::chrono::steady_clock::now() - t0;
  }

  void pump(bool time_sender) {
    event e;
    for (int round = 0; round < 1000; ++round) {
      bool any = false;
      now += 1000;  // 1 us per round: time moves, so RTTs and timers are real
      for (;;) {
        transmit t;
        timed_sender(time_sender, [&] { t = client->poll_transmit(buf, now); });
        if (!t.bytes) break;
        any = true;
        // Events may point into the packet: each member's application
        // drains them before the buffer is reused.
        for (std::size_t m = 0; m < servers.size(); ++m)
          if (t.member_mask & (1ull << m)) {
            servers[m]->on_packet({buf.data(), t.bytes}, now);
            while (servers[m]->poll_event(e)) delivered += e.type == event_type::received && e.end_of_message;
          }
      }
      for (auto &s : servers) {
        while (s->poll_event(e)) delivered += e.type == event_type::received && e.end_of_message;
        for (transmit t; (t = s->poll_transmit(buf, now)).bytes;) {
          any = true;
          timed_sender(time_sender, [&] { client->on_packet({buf.data(), t.bytes}, now); });
        }
      }
      timed_sender(time_sender, [&] {
        while (client->poll_event(e)) stable += e.type == event_type::sent;
      });
      if (!any) {
        // Quiet: let delayed ACKs fire once, then stop if still quiet.
        now += 20'000;
        for (auto &s : servers) s->on_expiry(now);
        bool more = false;
        for (auto &s : servers)
          for (transmit t; (t = s->poll_transmit(buf, now)).bytes;) {
            more = true;
            timed_sender(time_sender, [&] { client->on_packet({buf.data(), t.bytes}, now); });
          }
        timed_sender(time_sender, [&] {
          while (client->poll_event(e)) stable += e.type == event_type::sent;
        });
        if (!more) return;
      }
    }
  }

  void run_batch(bool time_sender) {
    timed_sender(time_sender, [&] {
      for (uint64_t i = 0; i < batch; ++i) client->send(0, msg, {}, now);
      client->flush();
    });
    pump(time_sender);
  }
};

void exchange(benchmark::State &state, std::size_t members, std::size_t size, bool sender_only) {
  rig r(members, size);
  for (auto _ : state) r.run_batch(sender_only);
  const double msgs = static_cast<double>(state.iterations() * batch);
  if (r.stable != static_cast<uint64_t>(msgs) || r.delivered != static_cast<uint64_t>(msgs) * members) {
    std::fprintf(stderr, "sent %.0f stable %llu delivered %llu\n", msgs, static_cast<unsigned long long>(r.stable),
                 static_cast<unsigned long long>(r.delivered));
    r.client->dump(stderr);
    state.SkipWithError("not every message was delivered and acknowledged");
    return;
  }
  state.SetItemsProcessed(static_cast<int64_t>(msgs));
  state.SetBytesProcessed(static_cast<int64_t>(msgs * static_cast<double>(size)));
  if (sender_only) {
    const double ns = static_cast<double>(r.sender_ns.count()) / msgs;
    state.counters["sender_ns_per_msg"] = ns;
    state.counters["sender_msgs_per_s"] = 1e9 / ns;
  } else {
    state.counters["ns_per_msg"] = benchmark::Counter(msgs, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
    state.counters["msgs_per_s"] = benchmark::Counter(msgs, benchmark::Counter::kIsRate);
  }
  state.counters["pkts_per_msg"] = static_cast<double>(r.client->stats().packets_sent) / msgs;
}

}  // namespace

BENCHMARK_CAPTURE(exchange, 1to1_64B, 1, 64, false)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(exchange, 1to8_64B, 8, 64, false)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(exchange, 1to1_1400B, 1, 1400, false)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(exchange, 1to8_1400B, 8, 1400, false)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(exchange, 1to1_64B_sender, 1, 64, true)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(exchange, 1to8_64B_sender, 8, 64, true)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(exchange, 1to1_1400B_sender, 1, 1400, true)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(exchange, 1to8_1400B_sender, 8, 1400, true)->Unit(benchmark::kMillisecond);

// What a stranger's opening packet costs a worker (protocol.md 5.1,
// operations.md "Session memory"): create a server connection with mtpd's
// table limits, take the opener, answer it, and destroy it; ns per session
// and the memory it held at its peak.
void session_open(benchmark::State &state) {
  session_memory memory(uint64_t{1} << 30);
  connection_config c;
  c.connection_id = 9;
  c.local_id = 2;
  c.side = role::server;
  c.members = {100};
  c.stream_buffer_bytes = 4u << 20;  // mtpd's sink default
  c.connection_window_bytes = uint64_t{64} << 20;
  c.max_messages = 1u << 14;
  c.max_sent_packets = 1u << 13;
  c.max_events = 1u << 13;
  c.memory = &memory;
  std::vector<std::byte> opener(64), buf(1500);
  packet_header h;
  h.sender_id = 100;
  h.connection_id = 9;
  h.packet_number = 12345;
  h.flags = flag_crc | flag_opening;
  packet_builder b(opener, h);
  b.append_ping();
  opener.resize(b.finish());
  time_ns now = 1'000'000;
  uint64_t answers = 0, peak = 0;
  for (auto _ : state) {
    connection conn(c, now);
    conn.on_packet(opener, now);
    event e;
    while (conn.poll_event(e)) {
    }
    for (transmit t; (t = conn.poll_transmit(buf, now)).bytes;) ++answers;
    peak = std::max(peak, memory.budget.used());
    now += 1000;
  }
  if (answers == 0) state.SkipWithError("the opener was not answered");
  state.counters["ns_per_session"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["bytes_per_session"] = static_cast<double>(peak);
}
BENCHMARK(session_open);

// CRC32C of a packet: the hardware path against the byte-table reference,
// at the size of a full 1500 B-MTU MTP packet and of a small one.
void crc(benchmark::State &state, bool hardware) {
  std::vector<std::byte> buf(static_cast<std::size_t>(state.range(0)));
  for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<std::byte>(i * 7 + 3);
  for (auto _ : state) {
    buf[0] = static_cast<std::byte>(state.iterations());
    benchmark::DoNotOptimize(hardware ? mtp::core::crc32c(buf) : mtp::core::crc32c_portable(buf));
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
}
BENCHMARK_CAPTURE(crc, crc32c, true)->Arg(1454)->Arg(96);
BENCHMARK_CAPTURE(crc, crc32c_portable, false)->Arg(1454);

BENCHMARK_MAIN();
