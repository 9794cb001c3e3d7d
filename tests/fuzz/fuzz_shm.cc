// SPDX-License-Identifier: BSD-3-Clause
// Fuzzes mtpd's side of an application channel against a hostile
// application: the input scripts what the application writes into its
// region (ring indices that jump, descriptors with any content, bytes
// flipped anywhere in the channel) between mtpd's polls, which take
// commands through ring_consumer, check every buffer reference with the
// buffer_ledger, read the data of accepted sends, and post completions and
// received messages through ring_producer. The region is one exact-size
// heap allocation, so ASan catches any access outside it; the ledger must
// stay consistent and a corrupt ring must stay still.
#include <cstring>
#include <deque>
#include <memory>

#include "mtp/shm_ledger.h"
#include "mtp/shm_ring.h"

using namespace mtp::shm;

namespace {

enum : uint16_t { cmd_send = 1, cmd_release = 2, evt_sent = 1, evt_received = 2, evt_error = 3 };

struct input {
  const uint8_t *p;
  size_t n;
  bool take(void *out, size_t k) {
    if (n < k) return false;
    std::memcpy(out, p, k);
    p += k;
    n -= k;
    return true;
  }
  template <class T>
  T get() {
    T v{};
    take(&v, sizeof v);
    return v;
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  region_plan plan;
  plan.channel_count = 1;
  plan.to_daemon_slots = 8;
  plan.to_app_slots = 8;
  plan.buffer_count = 8;
  plan.tx_buffers = 4;
  plan.buffer_bytes = 256;
  plan.buffer_headroom = 64;
  region_layout l;
  if (region_layout_of(plan, l) != nullptr) __builtin_trap();
  // new[] of the exact size: one byte past the last buffer is a heap overflow.
  std::unique_ptr<std::byte[]> region(new std::byte[l.region_bytes]);
  void *base = region.get();
  init_region(base, l, 1, 1);
  channel_header *ch = channel_at(base, l, 0);

  // mtpd's side: its own ring ends and its private ledger.
  ring_consumer<descriptor> commands(to_daemon_indices(ch, l), to_daemon_slots(ch, l), plan.to_daemon_slots);
  ring_producer<descriptor> events(to_app_indices(ch, l), to_app_slots(ch, l), plan.to_app_slots);
  buffer_ledger ledger(l);
  std::deque<uint32_t> in_flight;
  uint64_t sum = 0;

  input in{data, size};
  while (in.n > 0) {
    const uint8_t op = in.get<uint8_t>() % 7;
    switch (op) {
      case 0:  // the application sets the command ring's head to anything
        to_daemon_indices(ch, l)->head.store(in.get<uint32_t>(), std::memory_order_relaxed);
        break;
      case 1: {  // the application writes a descriptor and publishes it
        descriptor d{};
        in.take(&d, sizeof d);
        ring_indices *idx = to_daemon_indices(ch, l);
        const uint32_t h = idx->head.load(std::memory_order_relaxed);
        to_daemon_slots(ch, l)[h & (plan.to_daemon_slots - 1)] = d;
        idx->head.store(h + 1, std::memory_order_release);
        break;
      }
      case 2:  // the application sets the event ring's tail to anything
        to_app_indices(ch, l)->tail.store(in.get<uint32_t>(), std::memory_order_relaxed);
        break;
      case 3: {  // mtpd polls its commands
        descriptor burst[4];
        const uint32_t k = commands.pop_burst(burst, 4);
        for (uint32_t i = 0; i < k; ++i) {
          const descriptor &d = burst[i];
          buffer_check c = buffer_check::bad_buffer_index;
          if (d.type == cmd_send) {
            c = ledger.take_for_send(d);
            if (c == buffer_check::ok) {
              // What the engine would read: exactly the accepted range.
              const std::byte *p = buffer_at(base, l, d.buffer) + d.offset;
              for (uint32_t j = 0; j < d.length; ++j) sum += static_cast<uint8_t>(p[j]);
              in_flight.push_back(d.buffer);
            }
          } else if (d.type == cmd_release) {
            c = ledger.release(d);
          }
          if (c != buffer_check::ok) {
            descriptor e{};
            e.type = evt_error;
            e.reason = static_cast<uint32_t>(c);
            (void)events.push(e);  // a full ring: the error is counted, not queued
          }
        }
        break;
      }
      case 4:  // a send becomes stable: its buffer goes back with the completion
        if (!in_flight.empty()) {
          descriptor e{};
          e.type = evt_sent;
          e.buffer = in_flight.front();
          if (events.push(e)) {
            if (!ledger.complete_send(in_flight.front())) __builtin_trap();
            in_flight.pop_front();
          }
        }
        break;
      case 5: {  // a message arrives: copied into a lent receive buffer
        const uint32_t b = ledger.lend_for_receive();
        if (b == no_buffer) break;
        if (b < plan.tx_buffers || b >= plan.buffer_count) __builtin_trap();
        std::memset(buffer_at(base, l, b), 0x5a, plan.buffer_bytes);
        descriptor e{};
        e.type = evt_received;
        e.buffer = b;
        e.length = plan.buffer_bytes;
        if (!events.push(e)) {
          descriptor back{};
          back.buffer = b;
          if (ledger.release(back) != buffer_check::ok) __builtin_trap();  // not lent after all
        }
        break;
      }
      case 6: {  // the application scribbles over its channel
        const uint32_t at = in.get<uint32_t>() % l.channel_bytes;
        reinterpret_cast<uint8_t *>(ch)[at] ^= in.get<uint8_t>();
        break;
      }
    }
    if (!ledger.consistent()) __builtin_trap();
    if (ledger.daemon_held_send() != in_flight.size()) __builtin_trap();
    // A corrupt ring stays still.
    if (commands.state() == ring_state::corrupt && commands.size() != 0) __builtin_trap();
  }
  return sum == UINT64_MAX;  // keep the reads
}
