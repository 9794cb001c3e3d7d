// SPDX-License-Identifier: BSD-3-Clause
// One side of a single-producer single-consumer ring in a shared region
// (shm_layout.h): bursts in and out, no locks, no syscalls, no allocation.
//
// Each side keeps its own index in private memory and only stores it into
// the region; it never loads it back, so the other side cannot move it.
// The other side's index is loaded with acquire and checked against the
// ring's invariant (0 <= head - tail <= capacity). A value outside it
// means the other side is broken or hostile: the ring turns `corrupt`,
// stays so, and moves nothing more, so mtpd can drop the channel and count
// it while the application's garbage never reaches an out-of-range slot.
//
// Ordering: the producer writes slots, then stores head with release; the
// consumer loads head with acquire, reads the slots, then stores tail with
// release; the producer loads tail with acquire before reusing slots.
// Slots are copied by assignment, not memcpy: ThreadSanitizer instruments
// assignments, and with memcpy it missed a deliberately relaxed head store
// (shm_ring_tsan_test catches both relaxed stores this way).
#pragma once

#include <atomic>
#include <cstdint>

#include "mtp/shm_layout.h"

namespace mtp::shm {

enum class ring_state : uint8_t {
  ok,
  corrupt,  ///< the other side's index broke the invariant; nothing moves any more
};

/// The producing side. T is trivially copyable (descriptor).
template <class T>
class ring_producer {
 public:
  ring_producer() = default;
  /// `capacity` is a power of two the caller knows from its own records
  /// (mtpd) or from a checked header (the application); `slots` holds it.
  /// Starts from the region's current indices (a fresh region: 0 and 0).
  ring_producer(ring_indices *idx, T *slots, uint32_t capacity)
      : idx_(idx), slots_(slots), mask_(capacity - 1), head_(idx->head.load(std::memory_order_relaxed)) {
    tail_cache_ = head_ - capacity;  // no room known until the first look at tail
    refresh();
  }

  /// Copies up to n items in. @return how many went in (0 when full or
  /// corrupt).
  uint32_t push_burst(const T *items, uint32_t n) {
    uint32_t room = capacity() - (head_ - tail_cache_);
    if (room < n && !refresh()) return 0;
    room = capacity() - (head_ - tail_cache_);
    const uint32_t k = n < room ? n : room;
    for (uint32_t i = 0; i < k; ++i) slots_[(head_ + i) & mask_] = items[i];
    head_ += k;
    if (k) idx_->head.store(head_, std::memory_order_release);
    return k;
  }

  bool push(const T &item) { return push_burst(&item, 1) == 1; }

  /// At least n free slots? Looks at the consumer's index only when the
  /// last look does not show enough (that load is the one that may miss
  /// the cache: the consumer writes its line).
  bool has_room(uint32_t n) {
    if (capacity() - (head_ - tail_cache_) >= n) return true;
    refresh();
    return capacity() - (head_ - tail_cache_) >= n;
  }

  /// Free slots as of a fresh look at the consumer's index.
  uint32_t room() {
    refresh();
    return capacity() - (head_ - tail_cache_);
  }
  uint32_t capacity() const { return mask_ + 1; }
  ring_state state() const { return state_; }

 private:
  /// Loads the consumer's tail. @return false if corrupt.
  bool refresh() {
    if (state_ != ring_state::ok) return false;
    const uint32_t tail = idx_->tail.load(std::memory_order_acquire);
    if (head_ - tail > capacity()) {  // tail ahead of head, or behind by more than the ring
      state_ = ring_state::corrupt;
      tail_cache_ = head_ - capacity();
      return false;
    }
    tail_cache_ = tail;
    return true;
  }

  ring_indices *idx_ = nullptr;
  T *slots_ = nullptr;
  uint32_t mask_ = 0;
  uint32_t head_ = 0;        ///< ours; the region's copy is never read back
  uint32_t tail_cache_ = 0;  ///< the consumer's, as last checked
  ring_state state_ = ring_state::ok;
};

/// The consuming side.
template <class T>
class ring_consumer {
 public:
  ring_consumer() = default;
  ring_consumer(ring_indices *idx, T *slots, uint32_t capacity)
      : idx_(idx), slots_(slots), mask_(capacity - 1), tail_(idx->tail.load(std::memory_order_relaxed)) {
    head_cache_ = tail_;
  }

  /// Copies up to n items out. @return how many (0 when empty or corrupt).
  /// Items are copied, so the producer cannot change one after it was
  /// taken (validate the copy, not the slot).
  uint32_t pop_burst(T *out, uint32_t n) {
    uint32_t avail = head_cache_ - tail_;
    if (avail < n && refresh()) avail = head_cache_ - tail_;
    if (state_ != ring_state::ok) return 0;
    const uint32_t k = n < avail ? n : avail;
    for (uint32_t i = 0; i < k; ++i) out[i] = slots_[(tail_ + i) & mask_];
    tail_ += k;
    if (k) idx_->tail.store(tail_, std::memory_order_release);
    return k;
  }

  bool pop(T &item) { return pop_burst(&item, 1) == 1; }

  /// Items waiting, as of a fresh look at the producer's index.
  uint32_t size() {
    refresh();
    return state_ == ring_state::ok ? head_cache_ - tail_ : 0;
  }
  uint32_t capacity() const { return mask_ + 1; }
  ring_state state() const { return state_; }

 private:
  bool refresh() {
    if (state_ != ring_state::ok) return false;
    const uint32_t head = idx_->head.load(std::memory_order_acquire);
    if (head - tail_ > capacity()) {  // head behind tail, or ahead by more than the ring
      state_ = ring_state::corrupt;
      return false;
    }
    head_cache_ = head;
    return true;
  }

  ring_indices *idx_ = nullptr;
  T *slots_ = nullptr;
  uint32_t mask_ = 0;
  uint32_t tail_ = 0;        ///< ours
  uint32_t head_cache_ = 0;  ///< the producer's, as last checked
  ring_state state_ = ring_state::ok;
};

}  // namespace mtp::shm
