// SPDX-License-Identifier: BSD-3-Clause
// The application-to-daemon path's floor: 64 B descriptors through one
// shm ring (shm_ring.h) between two processes on two cores, in bursts,
// next to the same messages through a unix SOCK_SEQPACKET socket pair
// (one message per send, as a kernel-mediated channel would move them).
// Each iteration moves `messages` items; the consumer checks every
// sequence number, so a lost or reordered item fails the run.
#include <sched.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <benchmark/benchmark.h>

#include "mtp/shm_region.h"
#include "mtp/shm_ring.h"

using namespace mtp::shm;

namespace {

constexpr uint64_t messages = 1 << 20;

void pin(int cpu) {
  cpu_set_t s;
  CPU_ZERO(&s);
  CPU_SET(cpu, &s);
  sched_setaffinity(0, sizeof s, &s);
}

// Producer in a child process on CPU 0, consumer here on CPU 1.
void ring(benchmark::State &state) {
  const uint32_t burst = static_cast<uint32_t>(state.range(0));
  region_plan p;
  p.to_daemon_slots = 1024;
  p.to_app_slots = 2;
  p.buffer_count = 1;
  p.tx_buffers = 0;
  uint64_t wrong = 0;
  for (auto _ : state) {
    mapped_region r;
    if (!r.create(p, 0, 0, false).empty()) {
      state.SkipWithError("no region");
      return;
    }
    const region_layout &l = r.layout();
    channel_header *ch = channel_at(r.base(), l, 0);
    const pid_t child = fork();
    if (child == 0) {
      pin(0);
      ring_producer<descriptor> tx(to_daemon_indices(ch, l), to_daemon_slots(ch, l), p.to_daemon_slots);
      descriptor b[64] = {};
      for (uint64_t next = 0; next < messages;) {
        const uint32_t want = static_cast<uint32_t>(std::min<uint64_t>(burst, messages - next));
        for (uint32_t i = 0; i < want; ++i) b[i].message = next + i;
        next += tx.push_burst(b, want);
      }
      _exit(0);
    }
    pin(1);
    ring_consumer<descriptor> rx(to_daemon_indices(ch, l), to_daemon_slots(ch, l), p.to_daemon_slots);
    descriptor b[64];
    for (uint64_t got = 0; got < messages;) {
      const uint32_t n = rx.pop_burst(b, burst);
      for (uint32_t i = 0; i < n; ++i) wrong += b[i].message != got++;
    }
    waitpid(child, nullptr, 0);
  }
  if (wrong) state.SkipWithError("items lost or out of order");
  state.counters["msgs_per_s"] =
      benchmark::Counter(static_cast<double>(state.iterations() * messages), benchmark::Counter::kIsRate);
  state.counters["ns_per_msg"] = benchmark::Counter(static_cast<double>(state.iterations() * messages),
                                                    benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(ring)->Arg(1)->Arg(32)->Unit(benchmark::kMillisecond)->UseRealTime();

void unix_seqpacket(benchmark::State &state) {
  constexpr uint64_t n_msgs = messages / 8;  // the kernel path is slower: keep iterations short
  uint64_t wrong = 0;
  for (auto _ : state) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) != 0) {
      state.SkipWithError("socketpair");
      return;
    }
    const pid_t child = fork();
    if (child == 0) {
      pin(0);
      close(sv[1]);
      descriptor d{};
      for (uint64_t i = 0; i < n_msgs; ++i) {
        d.message = i;
        if (send(sv[0], &d, sizeof d, 0) != sizeof d) _exit(1);
      }
      _exit(0);
    }
    pin(1);
    close(sv[0]);
    descriptor d;
    for (uint64_t i = 0; i < n_msgs; ++i) {
      if (recv(sv[1], &d, sizeof d, 0) != sizeof d || d.message != i) ++wrong;
    }
    close(sv[1]);
    waitpid(child, nullptr, 0);
  }
  if (wrong) state.SkipWithError("messages lost or out of order");
  state.counters["msgs_per_s"] =
      benchmark::Counter(static_cast<double>(state.iterations() * n_msgs), benchmark::Counter::kIsRate);
  state.counters["ns_per_msg"] = benchmark::Counter(static_cast<double>(state.iterations() * n_msgs),
                                                    benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(unix_seqpacket)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
