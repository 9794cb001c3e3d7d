// SPDX-License-Identifier: BSD-3-Clause
// Replay protection for one sender's packet numbers under one key: a
// sliding bitmap over the last window_pkts numbers (RFC 6479, as IPsec and
// WireGuard do it). The bitmap is a ring of 64-bit blocks; block b holds
// numbers 64b .. 64b+63 and lives in slot b % ring_blocks. Advancing the
// highest number clears only the blocks it enters (at most ring_blocks),
// so check and accept are O(1) whatever the jump.
//
//   slot:   0        1             k = (highest/64) % 65        64
//         +--------+--------+ ... +------------------+ ... +--------+
//         | 64 bit | 64 bit |     | holds `highest`  |     | 64 bit |
//         +--------+--------+ ... +------------------+ ... +--------+
//   window: [highest - 4095, highest]; it spans at most 65 blocks, which is
//   why the ring has 65 (4096 bits would leave a 4033..4095-number window).
//
// Use per packet: check() before opening (cheap rejection without spending
// the AEAD), then accept() only after the AEAD opened it, and drop the
// packet if accept() does not say ok (two copies of one packet in the same
// burst both pass check()). Owned by the worker that owns the session;
// no allocation, no locks; a plain value (copying it copies 528 bytes).
#pragma once

#include <cstdint>

namespace mtp::crypto {

/// What the window says about a packet number.
enum class replay_status : uint8_t {
  ok,        ///< not seen and inside (or ahead of) the window: may be delivered
  replayed,  ///< already accepted: drop (count as a duplicate)
  too_old,   ///< behind the window: cannot tell, so drop
  invalid,   ///< >= 2^62: no packet carries it (the codec cannot produce it): drop
};

class replay_window {
 public:
  static constexpr uint64_t window_pkts = 4096;
  static constexpr uint64_t max_packet_number = (uint64_t{1} << 62) - 1;

  /// Says whether `pn` may be delivered, without changing the window.
  replay_status check(uint64_t pn) const {
    if (pn > max_packet_number) return replay_status::invalid;
    if (next_ == 0 || pn >= next_) return replay_status::ok;  // empty, or ahead
    if (next_ - 1 - pn >= window_pkts) return replay_status::too_old;
    return (ring_[slot(pn)] >> (pn & 63)) & 1 ? replay_status::replayed : replay_status::ok;
  }

  /// Records `pn` (call only after the AEAD authenticated the packet).
  /// A number ahead of the window slides it there, however far.
  /// @return check(pn) as it was before the call; the window changes only
  ///         when that is ok.
  replay_status accept(uint64_t pn);

  /// The highest number accepted; meaningless while empty().
  uint64_t highest() const { return next_ - 1; }
  bool empty() const { return next_ == 0; }

 private:
  static constexpr uint64_t ring_blocks = window_pkts / 64 + 1;
  static uint64_t slot(uint64_t pn) { return (pn >> 6) % ring_blocks; }

  uint64_t next_ = 0;  ///< highest accepted + 1; 0 while nothing was accepted
  uint64_t ring_[ring_blocks] = {};
};

}  // namespace mtp::crypto
