// SPDX-License-Identifier: BSD-3-Clause
// The data path's AEAD: AES-256-GCM through Intel ipsec-mb, in bursts.
//
// A sealed MTP packet, in one contiguous buffer:
//
//   +--------------------+---------------------------+-------------+
//   | header (AAD)       | payload (encrypted        | tag         |
//   | header_bytes, 24   |  in place) payload_bytes  | 16 bytes    |
//   +--------------------+---------------------------+-------------+
//   ^ data
//
// The nonce is the key's 12-byte IV XOR (4 zero bytes || the packet number
// as a 64-bit big-endian integer), as QUIC does (RFC 9001 section 5.3):
// unique per packet as long as a packet number is never reused under one
// key, which the engine guarantees (packet numbers only grow, per path and
// key epoch).
//
// aead_key is filled on the slow path (key_schedule.h, at a handshake or a
// roll, on the worker that owns the session) and read by
// workers; aead_engine is one per worker thread (it owns an ipsec-mb
// manager and scratch state) and never allocates, locks, throws or enters
// the kernel after create().
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

// Without this, intel-ipsec-mb.h defines macros named GCM, ENCRYPT, SHA1...
// for API 0.53 compatibility, and they would leak into every includer.
#ifndef NO_COMPAT_IMB_API_053
#define NO_COMPAT_IMB_API_053
#endif
#include <intel-ipsec-mb.h>

namespace mtp::crypto {

inline constexpr std::size_t aead_key_bytes = 32;  ///< AES-256
inline constexpr std::size_t aead_iv_bytes = 12;
inline constexpr std::size_t aead_tag_bytes = 16;
inline constexpr uint32_t aead_header_bytes = 24;  ///< the MTP header, authenticated, not encrypted

/// The ipsec-mb code path (its "arch"). The expanded key layout differs
/// between paths (the VAES/AVX-512 path keeps 48 GHASH key powers, SSE 8),
/// so a key must be expanded by the path of the engine that uses it; keys
/// and engines created with `detect` on one machine always agree.
enum class aead_arch : uint8_t {
  detect = 0,  ///< a request only: the fastest path this CPU supports
  sse,
  avx,
  avx2,
  avx512,  ///< includes the VAES + VPCLMULQDQ code where the CPU has it
};

/// "sse", "avx", "avx2", "avx512" ("detect" for the request value).
const char *aead_arch_name(aead_arch arch);

/// One direction's data-path key: the AES-256 round keys and GHASH key
/// powers as ipsec-mb expands them, and the 12-byte IV. A plain value
/// (copyable into per-worker tables); it holds key material, so wipe it
/// with aead_key_wipe() when it is dropped.
struct aead_key {
  // intel-ipsec-mb.h aligns gcm_key_data only when the includer defines
  // LINUX; the VAES code wants it on a cache line, so align it here.
  alignas(64) struct gcm_key_data gcm;
  uint8_t iv[aead_iv_bytes];
  aead_arch arch;  ///< the path that expanded `gcm`
};
static_assert(alignof(aead_key) == 64);

/// Expands a 32-byte AES-256 key and records the IV. Slow path (about a
/// microsecond; uses a process-wide ipsec-mb manager created on first use).
/// @param arch which ipsec-mb path the key is for; `detect` matches engines
///             created with `detect`.
/// @return false if ipsec-mb cannot run that path on this CPU (`out` is
///         then wiped). Thread-safety: may be called from any thread.
bool aead_key_init(aead_key &out, std::span<const uint8_t, aead_key_bytes> key,
                   std::span<const uint8_t, aead_iv_bytes> iv, aead_arch arch = aead_arch::detect);

/// Overwrites the key material (not optimized away).
void aead_key_wipe(aead_key &k);

/// The packet's nonce: iv XOR (0^32 || big-endian packet_number).
void aead_nonce(const aead_key &k, uint64_t packet_number, uint8_t out[aead_iv_bytes]);

/// One packet of a burst. `data` points at the header; the payload follows
/// it and the tag follows the payload, so the buffer holds
/// header_bytes + payload_bytes + aead_tag_bytes bytes.
struct aead_packet {
  uint8_t *data;
  uint32_t header_bytes;   ///< associated data, normally aead_header_bytes
  uint32_t payload_bytes;  ///< may be 0 (the tag then covers the header only)
  const aead_key *key;
  uint64_t packet_number;
  bool ok;  ///< out: sealed, or opened and authentic
};

/// Seals and opens bursts of packets in place. One per worker thread.
class aead_engine {
 public:
  /// Creates an engine on the requested ipsec-mb path. Slow path
  /// (allocates the manager).
  /// @param error set to the reason when the result is null: no AES-NI
  ///        (ipsec-mb would fall back to a software AES, too slow for the
  ///        data path), the CPU lacks the requested path, or no memory.
  /// @return the engine, or null.
  static std::unique_ptr<aead_engine> create(std::string &error, aead_arch arch = aead_arch::detect);

  ~aead_engine();
  aead_engine(const aead_engine &) = delete;
  aead_engine &operator=(const aead_engine &) = delete;

  /// The path ipsec-mb runs (never `detect`).
  aead_arch arch() const { return arch_; }

  /// Encrypts each packet's payload in place and writes the tag after it;
  /// sets ok. A packet fails (ok = false, buffer untouched) only when its
  /// key was expanded for another path or wiped: a programming error,
  /// which the caller counts and drops. Any burst size; no limit on
  /// payload_bytes beyond GCM's (the data path uses 0 .. 9000).
  /// @return the number of packets sealed.
  /// Thread-safety: only the owning thread.
  uint32_t seal_burst(std::span<aead_packet> pkts);

  /// Verifies each packet's tag (compared in constant time) and decrypts
  /// its payload in place; sets ok. When ok is false (bad tag, wrong key or
  /// packet number, or a key for another path or wiped) the payload bytes
  /// are garbage (decrypted under a failed tag): the caller must drop the
  /// packet and must not read, deliver or forward any of it.
  /// @return the number of packets that opened (ok == true).
  /// Thread-safety: only the owning thread.
  uint32_t open_burst(std::span<aead_packet> pkts);

 private:
  /// Bursts are processed in chunks of this many packets (any burst size
  /// is accepted).
  static constexpr uint32_t chunk_pkts = 32;

  aead_engine(IMB_MGR *mgr, aead_arch arch) : mgr_(mgr), arch_(arch) {}

  IMB_MGR *mgr_;
  aead_arch arch_;
  // Per-packet GCM state for the direct API; reused, never shared.
  alignas(64) struct gcm_context_data ctx_ {};
  // A chunk's nonces (12 bytes used of 16) and computed tags, written in
  // one pass before (nonces) or read in one pass after (tags) the AES
  // pass: see the store-forwarding note in aead.cc.
  alignas(64) uint8_t nonces_[chunk_pkts][16] {};
  alignas(64) uint8_t tags_[chunk_pkts][aead_tag_bytes] {};
};

}  // namespace mtp::crypto
