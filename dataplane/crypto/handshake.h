// SPDX-License-Identifier: BSD-3-Clause
// The MTP handshake: Noise_IKpsk2_25519_AESGCM_SHA256 (Noise rev. 34) in
// three packet types (INITIATION, RESPONSE, COOKIE_REPLY), with WireGuard's
// mac1/mac2 cookie scheme for denial-of-service resistance. docs/protocol.md
// (section 9.2, 9.3) is normative; this header follows it.
//
// Sans-I/O: no sockets, clocks, threads or heap. Callers own fixed-size
// state structs; time (`now_ns`, a monotonic clock) and the wall clock
// (`wall_clock_ns`, for the replay timestamp) are parameters. Functions
// return an hs_error whose name is also the drop counter to bump.
//
// Thread-safety: a state struct (initiator_state, responder_state,
// cookie_checker) belongs to one thread at a time; hs_identity is read-only
// after make_identity and may be shared. Nothing else is shared.
//
//   initiator                                    responder
//   initiator_init(st, remote key, psk, cid)
//   create_initiation(st, wall, now) ---INITIATION-->  consume_initiation
//                                                         (under load, no
//   consume_cookie_reply(st, now) <--COOKIE_REPLY----     valid mac2: bad_mac2,
//   create_initiation (now with mac2) -INITIATION-->      make_cookie_reply)
//                                                      create_response
//   consume_response(st) -> keys <----RESPONSE-------   -> keys
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "keyfile.h"
#include "primitives.h"

namespace mtp::crypto {

/// @name Wire constants (docs/protocol.md, handshake section)
/// @{
inline constexpr uint8_t hs_version = 1;
enum class hs_type : uint8_t { initiation = 0x02, response = 0x03, cookie_reply = 0x04 };

inline constexpr std::size_t hs_header_bytes = 24;
inline constexpr std::size_t hs_mac_bytes = 16;
inline constexpr std::size_t hs_tag_bytes = 16;
inline constexpr std::size_t hs_timestamp_bytes = 12;  ///< TAI64N
inline constexpr std::size_t hs_cookie_bytes = 16;
inline constexpr std::size_t hs_cookie_nonce_bytes = 12;

/// Each type has exactly one valid length.
inline constexpr std::size_t initiation_bytes = 164;
inline constexpr std::size_t response_bytes = 104;
inline constexpr std::size_t cookie_reply_bytes = 68;

/// Field offsets. INITIATION:
///   0 header(24) | 24 ephemeral(32) | 56 encrypted static(32+16)
///   | 104 encrypted timestamp(12+16) | 132 mac1(16) | 148 mac2(16) | 164
/// RESPONSE:
///   0 header(24) | 24 ephemeral(32) | 56 encrypted empty(0+16)
///   | 72 mac1(16) | 88 mac2(16) | 104
/// COOKIE_REPLY:
///   0 header(24) | 24 nonce(12) | 36 encrypted cookie(16+16) | 68
inline constexpr std::size_t hs_ephemeral_at = 24;
inline constexpr std::size_t init_static_at = 56, init_timestamp_at = 104, init_mac1_at = 132, init_mac2_at = 148;
inline constexpr std::size_t resp_empty_at = 56, resp_mac1_at = 72, resp_mac2_at = 88;
inline constexpr std::size_t cookie_nonce_at = 24, cookie_sealed_at = 36;

/// The responder's cookie secret is replaced every 120 s; an initiator uses
/// a cookie for 5 s less, so that it stops before the secret it was made
/// from is gone (WireGuard's COOKIE_SECRET_MAX_AGE - COOKIE_SECRET_LATENCY).
inline constexpr uint64_t cookie_secret_lifetime_ns = 120'000'000'000ull;
inline constexpr uint64_t cookie_use_lifetime_ns = 115'000'000'000ull;
/// @}

/// Why a handshake packet was refused: one drop counter each. What the
/// caller does for each value is in brackets.
#define MTP_HS_ERRORS(X)                                                                                  \
  X(ok, "accepted [go on]")                                                                               \
  X(too_short, "shorter than the header or than its type's one length [drop]")                           \
  X(too_long, "longer than its type's one length [drop]")                                                 \
  X(bad_version, "version byte is not 1 [drop; version negotiation is the wire layer's]")                \
  X(bad_type, "not a handshake type, or not the type this function takes [drop]")                       \
  X(bad_header, "flags, reserved or packet-number bytes not zero, or a reserved sender id [drop]")        \
  X(bad_mac1, "mac1 does not match: not made for our static key [drop; no DH was spent]")                 \
  X(bad_mac2, "under load and mac2 is not from this source's cookie [answer make_cookie_reply, keep no state]") \
  X(decrypt_failed, "an AEAD tag did not verify: other keys, another psk, or tampering [drop]")          \
  X(unknown_peer, "the initiator's static key is not in the allowed-peer table [drop]")                  \
  X(replayed, "timestamp not above the greatest accepted from that peer [drop]")                         \
  X(bad_key, "an X25519 result was all zeros: a low-order public key [drop]")                            \
  X(unexpected, "no pending state for it, or another connection or sender [drop]")                      \
  X(internal, "the CSPRNG or OpenSSL failed, or the call broke its contract [drop; log once]")

enum class hs_error : uint8_t {
#define MTP_X(name, text) name,
  MTP_HS_ERRORS(MTP_X)
#undef MTP_X
      count_
};
inline constexpr std::size_t hs_error_count = static_cast<std::size_t>(hs_error::count_);

/// The drop-counter name ("bad_mac1"); "?" for a value outside the enum.
const char *to_string(hs_error e);
/// One line for logs and `mtpctl` help.
const char *describe(hs_error e);

/// A handshake packet's fields, as spans into the packet. Spans of fields
/// the type does not have are empty.
struct handshake_view {
  hs_type type{};
  uint32_t sender_id = 0;
  uint64_t connection_id = 0;
  std::span<const uint8_t> packet;
  std::span<const uint8_t> ephemeral;          ///< INITIATION, RESPONSE
  std::span<const uint8_t> encrypted_static;   ///< INITIATION
  std::span<const uint8_t> encrypted_payload;  ///< INITIATION (timestamp), RESPONSE (empty)
  std::span<const uint8_t> mac1, mac2;         ///< INITIATION, RESPONSE
  std::span<const uint8_t> nonce;              ///< COOKIE_REPLY
  std::span<const uint8_t> encrypted_cookie;   ///< COOKIE_REPLY
};

/// Layout only: checks the length (against the type's one length), the
/// version, type and header fields, and fills `out`. No cryptography.
/// @return ok, too_short, too_long, bad_version, bad_type or bad_header;
/// `out` is meaningful only on ok. Thread-safety: pure.
hs_error parse_handshake(std::span<const uint8_t> packet, handshake_view &out);

/// A local endpoint's identity and the two keys derived from its public key,
/// computed once: mac1_key = SHA-256("mac1----" || pub) checks the mac1 of
/// packets sent to us; cookie_key = SHA-256("cookie--" || pub) seals the
/// cookie replies we send.
struct hs_identity {
  static_keypair keys{};
  uint32_t member_id = 0;
  uint8_t mac1_key[hash_bytes]{};
  uint8_t cookie_key[hash_bytes]{};
  ~hs_identity() { wipe(&keys, sizeof keys); }
};

/// @return false if member_id is reserved (0 or 2^32-1).
bool make_identity(const static_keypair &keys, uint32_t member_id, hs_identity &out);

/// What a finished handshake gives both sides. send/recv are the Noise
/// Split() outputs: the initiator's send is the responder's recv and vice
/// versa. The caller wipes this struct once the key schedule has them.
struct hs_session_keys {
  uint8_t send[key_bytes]{};
  uint8_t recv[key_bytes]{};
  uint8_t peer_static[key_bytes]{};  ///< the other side's static public key: its identity
  uint32_t peer_member_id = 0;
  uint64_t connection_id = 0;
  uint32_t peer_index = 0;  ///< responder: the lookup's index; initiator: 0
};

// ---------------------------------------------------------------- initiator

/// One initiator's handshake with one responder for one connection. Treat
/// the fields as private; they are public only so the struct stays a plain
/// fixed-size value the caller can place anywhere.
struct initiator_state {
  enum class phase : uint8_t { unset, idle, sent, done };
  // Fixed by initiator_init.
  uint8_t remote_static[key_bytes]{};
  uint8_t remote_mac1_key[hash_bytes]{};    ///< mac1 of what we send
  uint8_t remote_cookie_key[hash_bytes]{};  ///< opens its cookie replies
  uint8_t psk[key_bytes]{};
  uint64_t connection_id = 0;
  uint32_t local_id = 0, remote_id = 0;
  // The latest cookie, kept across initiations.
  uint8_t cookie[hs_cookie_bytes]{};
  uint64_t cookie_received_ns = 0;
  bool has_cookie = false;
  // The mac1 of the last initiation: a cookie reply's associated data. One
  // cookie reply per initiation is taken.
  uint8_t last_mac1[hs_mac_bytes]{};
  bool has_last_mac1 = false;
  // The pending handshake (secrets; wiped when done).
  uint8_t h[hash_bytes]{}, ck[hash_bytes]{};
  uint8_t ephemeral_priv[key_bytes]{};
  uint8_t ephemeral_pub[key_bytes]{};
  phase state = phase::unset;
  ~initiator_state() { wipe(this, sizeof *this); }
};

/// Sets up `st` for a handshake with `remote_static` (member
/// `remote_member_id`) on connection `connection_id`. psk: 32 bytes, or
/// nullptr for none (32 zero bytes). Forgets any earlier cookie.
/// @return false if a member id is reserved (`st` is then unset).
bool initiator_init(initiator_state &st, const hs_identity &local, const uint8_t remote_static[key_bytes],
                    uint32_t remote_member_id, const uint8_t *psk, uint64_t connection_id);

/// Builds an INITIATION into `out` and makes `st` pending; a pending or
/// finished handshake in `st` is replaced (a retry uses a new ephemeral).
/// mac2 is set when `st` holds a cookie received less than
/// cookie_use_lifetime_ns before `now_ns`.
/// @param wall_clock_ns ns since the Unix epoch (the TAI64N timestamp);
///        each initiation to a responder needs a greater one than the last.
/// @param fixed_ephemeral_priv test vectors only: 32 bytes, else nullptr
///        (a fresh random ephemeral).
/// @return ok; bad_key (the responder's static key is low-order); internal
///        (CSPRNG, OpenSSL, or `st` not initialized). On error `st` is
///        not pending and `out` must not be sent.
hs_error create_initiation(initiator_state &st, const hs_identity &local, uint64_t wall_clock_ns, uint64_t now_ns,
                           std::span<uint8_t, initiation_bytes> out, const uint8_t *fixed_ephemeral_priv = nullptr);

/// Takes a COOKIE_REPLY to our last initiation: the cookie is kept (from
/// `now_ns`) for the next initiation's mac2. The pending handshake stays
/// pending (the responder kept nothing: send a new initiation when the
/// retry timer says so).
/// @return ok; a parse error; bad_type; unexpected (no initiation awaiting
/// a cookie, another connection or sender); decrypt_failed (not sealed for
/// our last mac1 by that responder).
hs_error consume_cookie_reply(initiator_state &st, std::span<const uint8_t> packet, uint64_t now_ns);

/// Finishes the handshake with a RESPONSE: on ok, `keys` holds the traffic
/// secrets and `st` is done (its secrets wiped; another response is
/// `unexpected`). On any error `st` is unchanged, so a forged response does
/// not end a genuine handshake.
/// @return ok; a parse error; bad_type; unexpected (not pending, another
/// connection or sender); bad_mac1; bad_key; decrypt_failed (also: the two
/// sides hold different psks; the initiation cannot tell, the psk enters
/// Noise only in the response).
hs_error consume_response(initiator_state &st, const hs_identity &local, std::span<const uint8_t> packet,
                          hs_session_keys &keys);

// ---------------------------------------------------------------- responder

/// The caller's allowed-peer table, asked once per initiation whose static
/// key decrypted. Fill `out` and return true for an allowed peer.
struct hs_peer_entry {
  const uint8_t *psk = nullptr;          ///< 32 bytes, or nullptr for none
  uint8_t *greatest_timestamp = nullptr;  ///< 12 bytes (TAI64N), owned by the caller; zeros at first
  uint32_t peer_index = 0;                ///< opaque, handed back in responder_state and hs_session_keys
  /// DH(our static private, its static public), computed once per peer
  /// (as WireGuard does), or nullptr: the initiation's `ss` token then
  /// costs no X25519. 32 bytes, never all zero (the caller checked).
  const uint8_t *static_static = nullptr;
};
using hs_peer_lookup_fn = bool (*)(void *ctx, const uint8_t static_pub[key_bytes], uint32_t sender_member_id,
                                   hs_peer_entry &out);
struct hs_peer_table {
  hs_peer_lookup_fn lookup = nullptr;
  void *ctx = nullptr;
};

class cookie_checker;

/// Whether to demand a valid mac2, and the cookie checker and packet source
/// to check it against (needed only when under_load).
struct hs_load {
  bool under_load = false;
  const cookie_checker *cookies = nullptr;
  std::span<const uint8_t> source;  ///< opaque: the source IP bytes || port
  uint64_t now_ns = 0;
};

/// A responder's handshake between consume_initiation and create_response.
/// Fields are private but for the four the caller may read after ok.
struct responder_state {
  uint8_t remote_static[key_bytes]{};  ///< read: the initiator's identity
  uint64_t connection_id = 0;          ///< read
  uint32_t remote_id = 0;              ///< read: the initiator's member id
  uint32_t peer_index = 0;             ///< read: from the lookup
  uint32_t local_id = 0;
  uint8_t h[hash_bytes]{}, ck[hash_bytes]{};
  uint8_t remote_ephemeral[key_bytes]{};
  uint8_t psk[key_bytes]{};
  bool pending = false;
  ~responder_state() { wipe(this, sizeof *this); }
};

/// Checks an INITIATION in the order the protocol fixes (the cheap checks
/// first): layout, mac1, mac2 (only under load), then Noise: es, the
/// static key (decrypt, then the peer table), ss, the timestamp. On ok
/// `st` is pending and the peer's greatest timestamp has been raised; on
/// any error `st` is not pending and nothing was changed.
/// @return ok; too_short; too_long; bad_version; bad_type; bad_header;
/// bad_mac1; bad_mac2 (answer with cookie_checker::make_cookie_reply);
/// bad_key; decrypt_failed; unknown_peer; replayed; internal (under load
/// without a cookie checker).
hs_error consume_initiation(responder_state &st, const hs_identity &local, std::span<const uint8_t> packet,
                            const hs_peer_table &peers, const hs_load &load);

/// The early secret of an initiation (protocol.md 9.8): HKDF-Expand(ck,
/// "mtp1 early", 32), ck being the chaining key after the initiation's
/// `ss` token. The initiator has it once create_initiation made the
/// initiation (a retry, with a new ephemeral, gives a new one); the
/// responder once consume_initiation accepted it, until create_response.
/// It authenticates both static keys but is not forward secret and the
/// initiation can be replayed to a responder that lost its timestamps:
/// only for data whose replay is harmless (idempotent).
/// @return false if the state holds no such initiation.
bool early_secret(const initiator_state &st, uint8_t out[key_bytes]);
bool early_secret(const responder_state &st, uint8_t out[key_bytes]);

/// Builds the RESPONSE to the initiation `st` holds and derives the keys;
/// `st` is then wiped (not pending).
/// @param fixed_ephemeral_priv test vectors only, else nullptr.
/// @return ok; unexpected (`st` not pending); bad_key (the initiator's
/// ephemeral or static key is low-order); internal.
hs_error create_response(responder_state &st, std::span<uint8_t, response_bytes> out, hs_session_keys &keys,
                         const uint8_t *fixed_ephemeral_priv = nullptr);

/// The responder's cookie secret and mac2 checks. The secret is 32 random
/// bytes, replaced every cookie_secret_lifetime_ns; a cookie is the first
/// 16 bytes of HMAC-SHA-256(secret, source address bytes), so it proves the
/// initiator receives at that address, and the responder keeps no state per
/// source. One owner thread (in mtpd, each worker has its own).
class cookie_checker {
 public:
  /// Draws the first secret. If the CSPRNG fails, no mac2 passes until a
  /// rotate() succeeds.
  cookie_checker(const hs_identity &local, uint64_t now_ns);
  ~cookie_checker();
  cookie_checker(const cookie_checker &) = delete;
  cookie_checker &operator=(const cookie_checker &) = delete;

  /// Replaces the secret if it is cookie_secret_lifetime_ns old (or none
  /// is held). Call from a timer; make_cookie_reply also calls it.
  /// @return false if the CSPRNG failed.
  bool rotate(uint64_t now_ns);

  /// @return true if `packet` (an INITIATION or RESPONSE that passed
  /// parse_handshake) carries the mac2 of the cookie for `source`, made
  /// from a secret younger than cookie_secret_lifetime_ns.
  bool check_mac2(std::span<const uint8_t> packet, std::span<const uint8_t> source, uint64_t now_ns) const;

  /// Builds the COOKIE_REPLY answering `answered` (an INITIATION or
  /// RESPONSE from `source`): the cookie sealed with AES-256-GCM under
  /// SHA-256("cookie--" || our public key), a random nonce, and the
  /// answered packet's mac1 as associated data.
  /// @param fixed_nonce test vectors only: 12 bytes, else nullptr.
  /// @return ok; a parse error or bad_type for `answered`; internal.
  hs_error make_cookie_reply(std::span<const uint8_t> answered, std::span<const uint8_t> source, uint64_t now_ns,
                             std::span<uint8_t, cookie_reply_bytes> out, const uint8_t *fixed_nonce = nullptr);

  /// Test vectors only: sets the secret as if drawn at now_ns.
  void set_secret_for_test(const uint8_t secret[key_bytes], uint64_t now_ns);

 private:
  void cookie_for(std::span<const uint8_t> source, uint8_t out[hs_cookie_bytes]) const;

  uint8_t secret_[key_bytes]{};
  uint64_t secret_born_ns_ = 0;
  bool has_secret_ = false;
  uint8_t cookie_key_[key_bytes]{};
  uint32_t member_id_ = 0;
};

/// TAI64N of a wall-clock time: 2^62 + seconds since the Unix epoch (BE,
/// 8 bytes), then the nanoseconds (BE, 4 bytes). Exposed for the tests.
void tai64n(uint64_t wall_clock_ns, uint8_t out[hs_timestamp_bytes]);

}  // namespace mtp::crypto
