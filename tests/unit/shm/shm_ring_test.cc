// SPDX-License-Identifier: BSD-3-Clause
// SPSC rings in a shared region: order, bursts, wrap-around, a hostile
// other side, and the real thing between two threads and two processes.
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <memory>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "mtp/shm_region.h"
#include "mtp/shm_ring.h"

using namespace mtp::shm;

namespace {

// One ring's memory: indices, then the slots.
struct ring_memory {
  explicit ring_memory(uint32_t capacity) : slots(capacity) {}
  ring_indices idx{};
  std::vector<descriptor> slots;
};

descriptor numbered(uint64_t n) {
  descriptor d{};
  d.message = n;
  d.value = n * 0x9e3779b97f4a7c15ull;  // a check the consumer recomputes
  d.buffer = static_cast<uint32_t>(n);
  return d;
}

bool is_numbered(const descriptor &d, uint64_t n) {
  return d.message == n && d.value == n * 0x9e3779b97f4a7c15ull && d.buffer == static_cast<uint32_t>(n);
}

}  // namespace

TEST(shm_ring, bursts_come_out_in_order_and_fill_exactly_the_capacity) {
  ring_memory m(8);
  ring_producer<descriptor> tx(&m.idx, m.slots.data(), 8);
  ring_consumer<descriptor> rx(&m.idx, m.slots.data(), 8);
  descriptor in[12], out[12];
  for (uint64_t i = 0; i < 12; ++i) in[i] = numbered(i);
  EXPECT_EQ(tx.push_burst(in, 12), 8u) << "only the capacity fits";
  EXPECT_EQ(tx.room(), 0u);
  EXPECT_FALSE(tx.push(in[8]));
  EXPECT_EQ(rx.size(), 8u);
  EXPECT_EQ(rx.pop_burst(out, 3), 3u);
  EXPECT_EQ(tx.room(), 3u);
  EXPECT_EQ(tx.push_burst(in + 8, 4), 3u);
  EXPECT_EQ(rx.pop_burst(out + 3, 12), 8u);
  for (uint64_t i = 0; i < 11; ++i) EXPECT_TRUE(is_numbered(out[i], i)) << i;
  EXPECT_EQ(rx.pop_burst(out, 1), 0u);
  EXPECT_EQ(tx.state(), ring_state::ok);
  EXPECT_EQ(rx.state(), ring_state::ok);
}

// has_room() sees what the consumer freed, and never more than there is.
TEST(shm_ring, has_room_looks_at_the_consumer_only_when_it_must) {
  ring_memory m(8);
  ring_producer<descriptor> tx(&m.idx, m.slots.data(), 8);
  ring_consumer<descriptor> rx(&m.idx, m.slots.data(), 8);
  descriptor in[8], out[8];
  for (uint64_t i = 0; i < 8; ++i) in[i] = numbered(i);
  EXPECT_TRUE(tx.has_room(8));
  EXPECT_FALSE(tx.has_room(9));
  EXPECT_EQ(tx.push_burst(in, 6), 6u);
  EXPECT_TRUE(tx.has_room(2));
  EXPECT_FALSE(tx.has_room(3));
  EXPECT_EQ(rx.pop_burst(out, 4), 4u);
  EXPECT_TRUE(tx.has_room(6)) << "the consumer's tail is looked at when the cached room is short";
  EXPECT_FALSE(tx.has_room(7));
  m.idx.tail.store(100, std::memory_order_release);  // a hostile tail
  EXPECT_FALSE(tx.has_room(7));
  EXPECT_EQ(tx.state(), ring_state::corrupt);
}

// Free-running indices wrap at 2^32 without a hiccup.
TEST(shm_ring, indices_wrap_at_two_to_the_32) {
  ring_memory m(4);
  m.idx.head.store(UINT32_MAX - 5);
  m.idx.tail.store(UINT32_MAX - 5);
  ring_producer<descriptor> tx(&m.idx, m.slots.data(), 4);
  ring_consumer<descriptor> rx(&m.idx, m.slots.data(), 4);
  uint64_t next_in = 0, next_out = 0;
  for (int round = 0; round < 10; ++round) {
    descriptor in[3] = {numbered(next_in), numbered(next_in + 1), numbered(next_in + 2)};
    next_in += tx.push_burst(in, 3);
    descriptor out[4];
    const uint32_t n = rx.pop_burst(out, 4);
    for (uint32_t i = 0; i < n; ++i) EXPECT_TRUE(is_numbered(out[i], next_out++));
  }
  EXPECT_EQ(next_in, 30u);
  EXPECT_EQ(next_out, 30u);
  EXPECT_LT(m.idx.head.load(), 100u) << "the head wrapped";
}

// The other side's index is checked; a broken one stops the ring for good
// and nothing is read from or written to a slot because of it.
TEST(shm_ring, a_hostile_index_makes_the_ring_corrupt_and_still) {
  {  // the producer's head jumps past the capacity
    ring_memory m(8);
    ring_consumer<descriptor> rx(&m.idx, m.slots.data(), 8);
    m.idx.head.store(9);
    descriptor out[16];
    EXPECT_EQ(rx.pop_burst(out, 16), 0u);
    EXPECT_EQ(rx.state(), ring_state::corrupt);
    m.idx.head.store(1);  // "fixed": too late
    EXPECT_EQ(rx.pop_burst(out, 16), 0u);
    EXPECT_EQ(rx.size(), 0u);
    EXPECT_EQ(m.idx.tail.load(), 0u) << "the consumer's index did not move";
  }
  {  // the producer's head moves behind the tail
    ring_memory m(8);
    m.idx.head.store(4);
    m.idx.tail.store(4);
    ring_consumer<descriptor> rx(&m.idx, m.slots.data(), 8);
    m.idx.head.store(3);
    descriptor out;
    EXPECT_FALSE(rx.pop(out));
    EXPECT_EQ(rx.state(), ring_state::corrupt);
  }
  {  // the consumer's tail runs ahead of the head
    ring_memory m(8);
    ring_producer<descriptor> tx(&m.idx, m.slots.data(), 8);
    ASSERT_TRUE(tx.push(numbered(0)));
    m.idx.tail.store(5);
    EXPECT_EQ(tx.room(), 0u);
    EXPECT_FALSE(tx.push(numbered(1)));
    EXPECT_EQ(tx.state(), ring_state::corrupt);
    EXPECT_EQ(m.idx.head.load(), 1u);
  }
  {  // the consumer's tail falls behind by more than the ring
    ring_memory m(8);
    m.idx.head.store(100);
    m.idx.tail.store(100);
    ring_producer<descriptor> tx(&m.idx, m.slots.data(), 8);
    descriptor in[8] = {};
    EXPECT_EQ(tx.push_burst(in, 8), 8u);  // room it knew of: no look at the tail needed
    m.idx.tail.store(50);
    EXPECT_FALSE(tx.push(in[0]));
    EXPECT_EQ(tx.state(), ring_state::corrupt);
    EXPECT_EQ(m.idx.head.load(), 108u);
  }
}

// A side never reads its own index back from the region: the other side
// overwriting it changes nothing about where the next item goes.
TEST(shm_ring, a_side_keeps_its_own_index) {
  ring_memory m(8);
  ring_producer<descriptor> tx(&m.idx, m.slots.data(), 8);
  ring_consumer<descriptor> rx(&m.idx, m.slots.data(), 8);
  ASSERT_TRUE(tx.push(numbered(0)));
  descriptor out;
  ASSERT_TRUE(rx.pop(out));
  m.idx.tail.store(0);  // the consumer's index rewound (within bounds)
  m.idx.head.store(7);  // and the producer's own index scribbled over
  // The consumer now sees head 7 and tail (its own) 1: six slots of garbage,
  // within bounds; the producer writes at its own head, 1.
  ASSERT_TRUE(tx.push(numbered(1)));
  EXPECT_EQ(m.idx.head.load(), 2u) << "the producer stored its own head, not 7 + 1";
  EXPECT_TRUE(is_numbered(m.slots[1], 1));
}

// Two threads, one each side, a million items through a small ring.
TEST(shm_ring, two_threads_move_a_million_items_in_order) {
  constexpr uint64_t total = 1 << 20;
  ring_memory m(64);
  ring_producer<descriptor> tx(&m.idx, m.slots.data(), 64);
  ring_consumer<descriptor> rx(&m.idx, m.slots.data(), 64);
  std::thread producer([&] {
    uint64_t next = 0;
    descriptor burst[16];
    while (next < total) {
      const uint32_t want = static_cast<uint32_t>(std::min<uint64_t>(16, total - next));
      for (uint32_t i = 0; i < want; ++i) burst[i] = numbered(next + i);
      const uint32_t n = tx.push_burst(burst, want);
      next += n;
      if (n == 0) sched_yield();
    }
  });
  uint64_t expect = 0, wrong = 0;
  descriptor burst[32];
  while (expect < total) {
    const uint32_t n = rx.pop_burst(burst, 32);
    for (uint32_t i = 0; i < n; ++i) wrong += !is_numbered(burst[i], expect++);
    if (n == 0) sched_yield();
  }
  producer.join();
  EXPECT_EQ(wrong, 0u);
  EXPECT_EQ(expect, total);
  EXPECT_EQ(tx.state(), ring_state::ok);
  EXPECT_EQ(rx.state(), ring_state::ok);
}

// Two processes over a real memfd region, as mtpd and an application: the
// child attaches the descriptor anew and plays the application, sending a
// million commands and receiving a million events, both checked in order.
TEST(shm_ring, two_processes_exchange_a_million_descriptors_each_way) {
  constexpr uint64_t total = 1 << 20;
  region_plan p;
  p.to_daemon_slots = 128;
  p.to_app_slots = 64;
  p.buffer_count = 16;
  p.tx_buffers = 8;
  mapped_region daemon;
  ASSERT_EQ(daemon.create(p, static_cast<uint64_t>(getpid()), 1, true), "");
  const int app_fd = dup(daemon.fd());
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    mapped_region app;
    if (!app.attach(app_fd).empty()) _exit(2);
    const region_layout &l = app.layout();
    channel_header *ch = channel_at(app.base(), l, 0);
    ring_producer<descriptor> commands(to_daemon_indices(ch, l), to_daemon_slots(ch, l), l.plan.to_daemon_slots);
    ring_consumer<descriptor> events(to_app_indices(ch, l), to_app_slots(ch, l), l.plan.to_app_slots);
    uint64_t sent = 0, got = 0, wrong = 0;
    descriptor burst[32];
    while (sent < total || got < total) {
      const uint32_t want = static_cast<uint32_t>(std::min<uint64_t>(32, total - sent));
      for (uint32_t i = 0; i < want; ++i) burst[i] = numbered(sent + i);
      const uint32_t s = want ? commands.push_burst(burst, want) : 0;
      sent += s;
      const uint32_t g = events.pop_burst(burst, 32);
      for (uint32_t i = 0; i < g; ++i) wrong += !is_numbered(burst[i], ~(got++));
      if (s == 0 && g == 0) sched_yield();
      ch->app_heartbeat.fetch_add(1, std::memory_order_relaxed);
    }
    _exit(wrong == 0 && commands.state() == ring_state::ok && events.state() == ring_state::ok ? 0 : 1);
  }
  close(app_fd);
  const region_layout &l = daemon.layout();
  channel_header *ch = channel_at(daemon.base(), l, 0);
  ring_consumer<descriptor> commands(to_daemon_indices(ch, l), to_daemon_slots(ch, l), p.to_daemon_slots);
  ring_producer<descriptor> events(to_app_indices(ch, l), to_app_slots(ch, l), p.to_app_slots);
  uint64_t got = 0, sent = 0, wrong = 0;
  descriptor burst[32];
  while (got < total || sent < total) {
    const uint32_t g = commands.pop_burst(burst, 32);
    for (uint32_t i = 0; i < g; ++i) wrong += !is_numbered(burst[i], got++);
    const uint32_t want = static_cast<uint32_t>(std::min<uint64_t>(32, total - sent));
    for (uint32_t i = 0; i < want; ++i) burst[i] = numbered(~(sent + i));
    const uint32_t s = want ? events.push_burst(burst, want) : 0;
    sent += s;
    if (g == 0 && s == 0) sched_yield();
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "the application side saw an event out of order, or failed to attach";
  EXPECT_EQ(wrong, 0u);
  EXPECT_EQ(commands.state(), ring_state::ok);
  EXPECT_GT(ch->app_heartbeat.load(), 0u);
}
