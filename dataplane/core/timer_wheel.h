// SPDX-License-Identifier: BSD-3-Clause
// A hashed timing wheel (Varghese and Lauck, scheme 6): one timer per
// owner id, armed to an absolute time, fired once when the wheel is
// advanced past it. Each worker keeps one for its sessions, so a loop
// iteration costs the slots the clock crossed, not a scan of every session.
//
// Slots are tick_ns wide; a timer further out than the wheel spans stays in
// its slot and is skipped until its round comes (its `at` is compared, so
// nothing fires early). Arming, re-arming and cancelling are O(1); memory
// is sized at construction; no clock: time is a parameter.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "types.h"

namespace mtp::core {

class timer_wheel {
 public:
  static constexpr uint32_t none = ~uint32_t{0};

  /// @param capacity  ids 0..capacity-1 may hold a timer
  /// @param tick_shift slots are 2^tick_shift ns wide
  /// @param slot_bits  the wheel has 2^slot_bits slots
  explicit timer_wheel(std::size_t capacity, unsigned tick_shift = 14, unsigned slot_bits = 10)
      : shift_(tick_shift), mask_((std::size_t{1} << slot_bits) - 1), heads_(mask_ + 1, none), entries_(capacity) {}

  /// Arms (or moves) the timer of `id` to fire at `at_ns`. `never` cancels.
  void arm(uint32_t id, time_ns at_ns) {
    cancel(id);
    if (at_ns == never) return;
    entry &e = entries_[id];
    e.at = at_ns;
    // A time already behind the cursor goes into the cursor's slot: it
    // fires at the next advance.
    const uint64_t tick = at_ns >> shift_;
    e.slot = static_cast<uint32_t>((tick < cursor_tick_ ? cursor_tick_ : tick) & mask_);
    e.prev = none;
    e.next = heads_[e.slot];
    if (e.next != none) entries_[e.next].prev = id;
    heads_[e.slot] = id;
    e.armed = true;
    ++armed_;
  }

  void cancel(uint32_t id) {
    entry &e = entries_[id];
    if (!e.armed) return;
    if (e.prev != none)
      entries_[e.prev].next = e.next;
    else
      heads_[e.slot] = e.next;
    if (e.next != none) entries_[e.next].prev = e.prev;
    e.armed = false;
    --armed_;
  }

  bool armed(uint32_t id) const { return entries_[id].armed; }
  time_ns at(uint32_t id) const { return entries_[id].armed ? entries_[id].at : never; }
  std::size_t armed_count() const { return armed_; }

  /// Fires every timer due at or before `now_ns`: disarms it, then calls
  /// fire(id), which may arm it again. A timer re-armed to a time already
  /// due lands in the slot the next advance starts from (it may also fire
  /// later in this advance if that slot is still ahead). @return timers fired.
  template <class Fire>
  std::size_t advance(time_ns now_ns, Fire &&fire) {
    const uint64_t now_tick = now_ns >> shift_;
    const uint64_t start = cursor_tick_;
    if (now_tick < start) return 0;  // the clock never goes back; be safe
    cursor_tick_ = now_tick;
    if (armed_ == 0) return 0;
    // A long gap visits each slot once, not once per elapsed tick.
    const uint64_t end = now_tick - start > mask_ ? start + mask_ : now_tick;
    std::size_t fired = 0;
    for (uint64_t tick = start;; ++tick) {
      // Collect first so that fire() re-arming into this slot is safe.
      uint32_t due = none;
      const std::size_t slot = tick & mask_;
      for (uint32_t id = heads_[slot]; id != none;) {
        const uint32_t next = entries_[id].next;
        if (entries_[id].at <= now_ns) {
          cancel(id);
          entries_[id].due_next = due;
          due = id;
        }
        id = next;
      }
      while (due != none) {
        const uint32_t id = due;
        due = entries_[id].due_next;  // fire() may arm any timer, so not `next`
        ++fired;
        fire(id);
      }
      if (tick == end) break;
    }
    return fired;
  }

 private:
  struct entry {
    time_ns at = never;
    uint32_t prev = none, next = none;
    uint32_t due_next = none;  ///< the list of timers firing in this advance
    uint32_t slot = 0;
    bool armed = false;
  };
  unsigned shift_;
  std::size_t mask_;
  uint64_t cursor_tick_ = 0;
  std::size_t armed_ = 0;
  std::vector<uint32_t> heads_;
  std::vector<entry> entries_;
};

}  // namespace mtp::core
