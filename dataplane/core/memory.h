// SPDX-License-Identifier: BSD-3-Clause
// What sessions may spend, and the containers that spend it.
//
// A connection's memory grows with its traffic and shrinks when it idles
// (docs/operations.md "Session memory"): stream data lives in fixed-size
// chunks taken when bytes arrive or are queued and given back as soon as
// they are released; tables (events, packets in flight, message records,
// ranges) start small and double up to their configured maximum. Every
// byte is charged to one session_memory, a per-worker budget sized from
// the config: when it refuses, the container reports itself full and the
// engine waits, sheds with a counter, or fails the call (never pretends).
//
//   session_memory   the budget plus a free list of data chunks
//   seq_ring<T>      a power-of-two ring indexed by a free-running number
//   stream_buffer    a window of stream bytes held in chunks
//
// Owned by one thread (a worker, or a test); no locks.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <span>
#include <utility>
#include <vector>

namespace mtp::core {

/// A byte budget with its peak and refusal count.
class memory_budget {
 public:
  explicit memory_budget(uint64_t limit_bytes = UINT64_MAX) : limit_(limit_bytes) {}

  /// Takes `bytes` from the budget. @return false (and counts a refusal)
  /// when that would pass the limit; nothing is taken then.
  [[nodiscard]] bool charge(uint64_t bytes) {
    if (bytes > limit_ - used_) {
      ++refusals_;
      return false;
    }
    used_ += bytes;
    peak_ = std::max(peak_, used_);
    return true;
  }
  void release(uint64_t bytes) { used_ -= std::min(used_, bytes); }
  /// Takes `bytes` even past the limit: for what cannot be refused (a
  /// connection's fixed part, once its owner decided to create it).
  void force(uint64_t bytes) {
    used_ += bytes;
    peak_ = std::max(peak_, used_);
  }

  uint64_t used() const { return used_; }
  uint64_t peak() const { return peak_; }
  uint64_t limit() const { return limit_; }
  uint64_t refusals() const { return refusals_; }

 private:
  uint64_t limit_;
  uint64_t used_ = 0;
  uint64_t peak_ = 0;
  uint64_t refusals_ = 0;
};

/// The memory of every session of one owner (a worker): the budget and a
/// free list of data chunks, so a steady flow of data allocates nothing.
/// Chunks on the free list are not charged; at most `max_free_chunks`
/// are kept, the rest go back to the heap.
class session_memory {
 public:
  static constexpr std::size_t chunk_bytes = 16384;

  explicit session_memory(uint64_t limit_bytes = UINT64_MAX, std::size_t max_free_chunks = 64)
      : budget(limit_bytes), max_free_(max_free_chunks) {
    free_.reserve(max_free_chunks);
  }
  ~session_memory() {
    for (std::byte *c : free_) ::operator delete(c, std::align_val_t{64});
  }
  session_memory(const session_memory &) = delete;
  session_memory &operator=(const session_memory &) = delete;

  /// @return a chunk of chunk_bytes, or nullptr when the budget refuses.
  std::byte *get_chunk() {
    if (!budget.charge(chunk_bytes)) return nullptr;
    ++chunks_out_;
    if (!free_.empty()) {
      std::byte *c = free_.back();
      free_.pop_back();
      return c;
    }
    return static_cast<std::byte *>(::operator new(chunk_bytes, std::align_val_t{64}));
  }
  void put_chunk(std::byte *c) {
    budget.release(chunk_bytes);
    --chunks_out_;
    if (free_.size() < max_free_)
      free_.push_back(c);
    else
      ::operator delete(c, std::align_val_t{64});
  }
  uint64_t chunks_out() const { return chunks_out_; }

  memory_budget budget;

 private:
  std::vector<std::byte *> free_;
  std::size_t max_free_;
  uint64_t chunks_out_ = 0;
};

/// Bytes charged by one owner (a connection), so it can report its own
/// footprint and give everything back when it goes.
class memory_account {
 public:
  explicit memory_account(session_memory *m = nullptr) : mem_(m) {}
  session_memory *memory() const { return mem_; }
  [[nodiscard]] bool charge(uint64_t bytes) {
    if (mem_ != nullptr && !mem_->budget.charge(bytes)) return false;
    used_ += bytes;
    return true;
  }
  void release(uint64_t bytes) {
    if (mem_ != nullptr) mem_->budget.release(bytes);
    used_ -= std::min(used_, bytes);
  }
  /// Charges past the limit if need be (see memory_budget::force).
  void charge_always(uint64_t bytes) {
    if (mem_ != nullptr) mem_->budget.force(bytes);
    used_ += bytes;
  }
  /// Records bytes charged to the budget elsewhere (data chunks).
  void note(uint64_t bytes) { used_ += bytes; }
  void unnote(uint64_t bytes) { used_ -= std::min(used_, bytes); }
  uint64_t used() const { return used_; }

 private:
  session_memory *mem_;
  uint64_t used_ = 0;
};

/// A ring of T indexed by a free-running 64-bit number: element i lives at
/// i & (capacity - 1). The owner keeps the live interval [lo, hi) itself
/// (a head and a tail, or packet numbers); the ring only stores. It starts
/// empty and grows by doubling, moving the live interval, up to a maximum;
/// growth is charged to the owner's account.
template <class T>
class seq_ring {
 public:
  seq_ring() = default;
  ~seq_ring() { reset(); }
  seq_ring(const seq_ring &) = delete;
  seq_ring &operator=(const seq_ring &) = delete;

  /// @param max_capacity rounded up to a power of two
  void bind(memory_account *acct, uint64_t max_capacity) {
    acct_ = acct;
    max_ = 1;
    while (max_ < max_capacity) max_ <<= 1;
  }
  uint64_t capacity() const { return v_.size(); }
  uint64_t max_capacity() const { return max_; }
  T &at(uint64_t i) { return v_[i & mask_]; }
  const T &at(uint64_t i) const { return v_[i & mask_]; }

  /// Makes room for `n` live elements (power-of-two capacity, at most the
  /// maximum), keeping the live interval [lo, hi) at the same numbers.
  /// @return false if n is above the maximum or the budget refuses; the
  /// ring is unchanged then.
  bool ensure(uint64_t n, uint64_t lo, uint64_t hi) {
    if (n <= v_.size()) return true;
    if (n > max_) return false;
    uint64_t cap = std::max<uint64_t>(v_.size(), 8);
    while (cap < n) cap <<= 1;
    cap = std::min(cap, max_);
    if (acct_ != nullptr && !acct_->charge((cap - v_.size()) * sizeof(T))) return false;
    std::vector<T> nv(cap);
    const uint64_t nmask = cap - 1;
    if (!v_.empty())
      for (uint64_t i = lo; i < hi; ++i) nv[i & nmask] = std::move(v_[i & mask_]);
    v_.swap(nv);
    mask_ = nmask;
    return true;
  }
  /// Gives the storage back (the owner's interval must be empty).
  void reset() {
    if (acct_ != nullptr) acct_->release(v_.size() * sizeof(T));
    std::vector<T>().swap(v_);
    mask_ = 0;
  }

 private:
  std::vector<T> v_;
  uint64_t mask_ = 0;
  uint64_t max_ = 0;
  memory_account *acct_ = nullptr;
};

/// A window of stream bytes [base, base + window) held in chunks taken as
/// bytes are written and given back as the base moves past them. The slot
/// table has one entry more than window / chunk, so a window that does
/// not start on a chunk boundary never needs one slot twice.
class stream_buffer {
 public:
  stream_buffer() = default;
  ~stream_buffer() { clear(); }
  stream_buffer(const stream_buffer &) = delete;
  stream_buffer &operator=(const stream_buffer &) = delete;

  /// @param window_bytes a power of two
  void init(memory_account *acct, uint64_t window_bytes) {
    acct_ = acct;
    window_ = window_bytes;
    chunk_ = std::min<uint64_t>(session_memory::chunk_bytes, window_bytes);
    shift_ = static_cast<unsigned>(__builtin_ctzll(chunk_));
  }
  uint64_t window() const { return window_; }
  uint64_t chunk() const { return chunk_; }

  /// Takes the chunks for [lo, hi). @return false if a chunk or the slot
  /// table was refused (chunks already taken stay for a later try).
  bool reserve(uint64_t lo, uint64_t hi) {
    if (lo >= hi) return true;
    if (slots_.empty()) {
      const std::size_t n = static_cast<std::size_t>(window_ / chunk_) + 1;
      if (acct_ != nullptr && !acct_->charge(n * sizeof(std::byte *))) return false;
      slots_.assign(n, nullptr);
    }
    for (uint64_t c = lo >> shift_; c <= (hi - 1) >> shift_; ++c) {
      std::byte *&s = slots_[c % slots_.size()];
      if (s != nullptr) continue;
      session_memory *m = acct_ != nullptr ? acct_->memory() : nullptr;
      if (m != nullptr) {
        s = m->get_chunk();
        if (s == nullptr) return false;
      } else {
        s = static_cast<std::byte *>(::operator new(session_memory::chunk_bytes, std::align_val_t{64}));
      }
      chunk_acct(+1);
      ++held_;
    }
    return true;
  }
  /// Copies `data` to offset `off`; the chunks must be reserved.
  void write(uint64_t off, std::span<const std::byte> data) {
    while (!data.empty()) {
      const std::span<std::byte> dst = piece_mut(off, off + data.size());
      std::memcpy(dst.data(), data.data(), dst.size());
      off += dst.size();
      data = data.subspan(dst.size());
    }
  }
  /// The contiguous bytes from `off`, up to `end` or the chunk's end.
  std::span<const std::byte> piece(uint64_t off, uint64_t end) const {
    const uint64_t in = off & (chunk_ - 1);
    const uint64_t n = std::min(end - off, chunk_ - in);
    return {slots_[(off >> shift_) % slots_.size()] + in, static_cast<std::size_t>(n)};
  }
  /// Copies [off, off + out.size()) out (it may span chunks).
  void read(uint64_t off, std::span<std::byte> out) const {
    std::size_t done = 0;
    while (done < out.size()) {
      const auto p = piece(off + done, off + out.size());
      std::memcpy(out.data() + done, p.data(), p.size());
      done += p.size();
    }
  }
  /// Gives back every chunk wholly below `off`.
  void release_below(uint64_t off) {
    if (slots_.empty()) {
      low_ = std::max(low_, off);
      return;
    }
    for (uint64_t c = low_ >> shift_; c < off >> shift_; ++c) free_slot(c);
    low_ = std::max(low_, off);
  }
  /// Gives back every chunk and the slot table.
  void clear() {
    for (std::size_t i = 0; i < slots_.size(); ++i) free_index(i);
    if (acct_ != nullptr && !slots_.empty()) acct_->release(slots_.size() * sizeof(std::byte *));
    std::vector<std::byte *>().swap(slots_);
  }
  /// Gives back the slot table when no chunk is held (an idle stream).
  void trim() {
    if (held_ == 0 && !slots_.empty()) clear();
  }
  std::size_t chunks_held() const { return held_; }

 private:
  std::span<std::byte> piece_mut(uint64_t off, uint64_t end) {
    const uint64_t in = off & (chunk_ - 1);
    const uint64_t n = std::min(end - off, chunk_ - in);
    return {slots_[(off >> shift_) % slots_.size()] + in, static_cast<std::size_t>(n)};
  }
  void free_slot(uint64_t c) { free_index(static_cast<std::size_t>(c % slots_.size())); }
  void free_index(std::size_t i) {
    std::byte *&s = slots_[i];
    if (s == nullptr) return;
    session_memory *m = acct_ != nullptr ? acct_->memory() : nullptr;
    if (m != nullptr)
      m->put_chunk(s);
    else
      ::operator delete(s, std::align_val_t{64});
    s = nullptr;
    chunk_acct(-1);
    --held_;
  }
  void chunk_acct(int dir) {
    // The chunk itself is charged to the budget by session_memory; the
    // account only records it, so the connection can report its size.
    if (acct_ == nullptr) return;
    if (dir > 0)
      acct_->note(session_memory::chunk_bytes);
    else
      acct_->unnote(session_memory::chunk_bytes);
  }

  std::vector<std::byte *> slots_;
  memory_account *acct_ = nullptr;
  uint64_t window_ = 0, chunk_ = 1, low_ = 0;
  unsigned shift_ = 0;
  std::size_t held_ = 0;
};

}  // namespace mtp::core
