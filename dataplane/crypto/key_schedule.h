// SPDX-License-Identifier: BSD-3-Clause
// The data path's key schedule: from one direction's 32-byte traffic
// secret (the handshake's output for that direction, or a group secret) to
// AES-256-GCM packet keys, epoch by epoch, without another handshake.
//
// Derivations (normative; docs/protocol.md repeats them). HKDF-Expand is
// RFC 5869 section 2.3 with SHA-256, the secret used directly as the PRK
// (no Extract), the info string being exactly the ASCII bytes shown (no
// length prefix, no label framing, no terminating NUL):
//
//   key(n)      = HKDF-Expand(secret(n), "mtp1 key", 32)   AES-256 key
//   iv(n)       = HKDF-Expand(secret(n), "mtp1 iv",  12)   nonce base (aead.h)
//   secret(n+1) = HKDF-Expand(secret(n), "mtp1 ku",  32)   the key update
//
// Epoch 0 uses secret(0) = the traffic secret. Once secret(n+1) is derived,
// secret(n) is wiped: a stolen epoch-n state reveals no earlier epoch.
// Packets carry the epoch modulo 2^7 (epoch_wire_bits); match_epoch() maps
// a received value to the current, previous or next epoch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "aead.h"

namespace mtp::crypto {

inline constexpr std::size_t traffic_secret_bytes = 32;
inline constexpr unsigned epoch_wire_bits = 7;
inline constexpr uint32_t epoch_wire_mask = (1u << epoch_wire_bits) - 1;

/// The info strings of the derivations above (ASCII, no NUL).
inline constexpr char label_key[] = "mtp1 key";
inline constexpr char label_iv[] = "mtp1 iv";
inline constexpr char label_key_update[] = "mtp1 ku";

/// key(n) and iv(n) from secret(n).
void derive_packet_key(std::span<const uint8_t, traffic_secret_bytes> secret, std::span<uint8_t, aead_key_bytes> key,
                       std::span<uint8_t, aead_iv_bytes> iv);
/// secret(n+1) from secret(n).
void derive_next_secret(std::span<const uint8_t, traffic_secret_bytes> secret,
                        std::span<uint8_t, traffic_secret_bytes> next);

/// The epoch a packet's 7-bit epoch field names, relative to the receiver.
enum class epoch_match : uint8_t {
  current,   ///< open with the current key
  previous,  ///< open with the previous key (a packet sent before the roll)
  next,      ///< the peer rolled: roll() (after the policy allows it) and retry
  unknown,   ///< no key: drop
};

/// The 7 bits a packet of `epoch` carries.
constexpr uint8_t epoch_on_wire(uint32_t epoch) { return static_cast<uint8_t>(epoch & epoch_wire_mask); }

/// Maps a received 7-bit epoch to the receiver's epochs (bit 7 of
/// `wire_epoch` is ignored). `previous` is reported only when the receiver
/// still holds a previous key, so never at epoch 0.
constexpr epoch_match match_epoch(uint32_t current_epoch, bool have_previous, uint8_t wire_epoch) {
  const uint32_t wire = wire_epoch & epoch_wire_mask;
  if (wire == (current_epoch & epoch_wire_mask)) return epoch_match::current;
  if (have_previous && current_epoch > 0 && wire == ((current_epoch - 1) & epoch_wire_mask))
    return epoch_match::previous;
  if (wire == ((current_epoch + 1) & epoch_wire_mask)) return epoch_match::next;
  return epoch_match::unknown;
}

/// One direction's keys: the current epoch's packet key, optionally the
/// previous epoch's (so packets in flight across a roll still open), and
/// the next epoch's secret (so roll() needs no handshake). Holds no
/// current or older secret. Slow path for start/roll (HKDF and key
/// expansion, a few microseconds); the accessors are cheap. Owned by one
/// thread at a time; not copyable (secrets are not duplicated); a move
/// wipes the source.
class traffic_keys {
 public:
  traffic_keys() = default;
  ~traffic_keys() { clear(); }
  traffic_keys(const traffic_keys &) = delete;
  traffic_keys &operator=(const traffic_keys &) = delete;
  traffic_keys(traffic_keys &&other) noexcept { take(other); }
  traffic_keys &operator=(traffic_keys &&other) noexcept {
    if (this != &other) {
      clear();
      take(other);
    }
    return *this;
  }

  /// Derives epoch `epoch`'s key from secret(epoch) (normally the
  /// handshake's traffic secret at epoch 0) and secret(epoch + 1); any
  /// earlier state is wiped. The caller wipes its copy of `secret`.
  /// @param arch the ipsec-mb path the keys are for (aead_key_init).
  /// @return false if the key could not be expanded (aead_key_init), and
  ///         then holds nothing (started() is false).
  bool start(std::span<const uint8_t, traffic_secret_bytes> secret, uint32_t epoch = 0,
             aead_arch arch = aead_arch::detect);

  /// Moves to the next epoch: the current key becomes the previous one
  /// (an older previous key is wiped), the next secret gives the new key
  /// and the secret after it, and is wiped.
  /// @return false, changing nothing, if not started or the epoch counter
  ///         would wrap (2^32 - 1 epochs).
  bool roll();

  /// Wipes the previous epoch's key (the caller decides when packets of
  /// that epoch can no longer arrive, e.g. three PTOs after the roll).
  void drop_previous();

  /// Wipes everything; started() becomes false.
  void clear();

  bool started() const { return started_; }
  uint32_t epoch() const { return epoch_; }
  const aead_key &current() const { return current_; }
  /// @return the previous epoch's key, or null if dropped or never held.
  const aead_key *previous() const { return have_previous_ ? &previous_ : nullptr; }

  /// match_epoch() against this state.
  epoch_match match(uint8_t wire_epoch) const {
    return started_ ? match_epoch(epoch_, have_previous_, wire_epoch) : epoch_match::unknown;
  }
  /// The key that opens a packet carrying `wire_epoch`: current or
  /// previous, else null (next or unknown; see epoch_match).
  /// The next epoch's key, derived from the stored next secret without
  /// moving on: a receiver tries it on a packet that names the next epoch
  /// and calls roll() only if that packet opened, so a forged packet
  /// cannot move it. Kept (and used by roll()) until then.
  /// @return null if not started, at the last epoch, or expansion failed.
  const aead_key *peek_next();
  const aead_key *key_for(uint8_t wire_epoch) const {
    switch (match(wire_epoch)) {
      case epoch_match::current: return &current_;
      case epoch_match::previous: return &previous_;
      default: return nullptr;
    }
  }

 private:
  void take(traffic_keys &other);

  aead_key current_{};
  aead_key previous_{};
  aead_key next_{};  ///< peek_next()'s, while have_next_
  uint8_t next_secret_[traffic_secret_bytes] = {};
  uint32_t epoch_ = 0;
  aead_arch arch_ = aead_arch::detect;
  bool started_ = false;
  bool have_previous_ = false;
  bool have_next_ = false;
};

}  // namespace mtp::crypto
