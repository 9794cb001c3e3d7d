// SPDX-License-Identifier: BSD-3-Clause
// The MTP wire codec: packet header, frames, varints, CRC32C trailer.
// docs/protocol.md is normative; section numbers below refer to it.
//
//   0        1        2        3
//   +--------+--------+--------+--------+
//   | version| type   | flags  |reserved|    version 1            (3.1)
//   +--------+--------+--------+--------+
//   |            sender id (32)         |    member id of the sender
//   +-----------------------------------+
//   |         connection id (64)        |
//   +-----------------------------------+
//   |         packet number (64)        |    never reused in a connection
//   +-----------------------------------+
//   |   frames ...                      |    (4)
//   +-----------------------------------+
//   |   CRC32C (32), if flags & 0x01    |    over every byte before it
//   |   or AEAD tag (128), if flags & 0x04|  sealed (9.4): header is AAD
//   +-----------------------------------+
//
// Parsing never allocates and never reads past the view it is given;
// every failure is one parse_status. Building writes into caller memory and
// reports when a frame does not fit. Pure; any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace mtp::core {

inline constexpr uint8_t protocol_version = 1;
/// Version 0 marks a version negotiation packet in every version (3.3).
inline constexpr uint8_t version_negotiation_version = 0;
/// Packet numbers and every varint stay below 2^62 (3.2).
inline constexpr uint64_t max_packet_number = (uint64_t{1} << 62) - 1;
/// Member ids 0 and 2^32-1 are reserved (section 1): never a sender.
inline constexpr uint32_t reserved_member_id_low = 0, reserved_member_id_high = 0xffffffffu;
inline constexpr std::size_t header_size = 24;
inline constexpr std::size_t crc_size = 4;
/// A sealed packet ends with an AES-256-GCM tag instead of the CRC (9.4).
inline constexpr std::size_t tag_size = 16;
inline constexpr uint16_t default_udp_port = 7400;

/// Version 1 defines one packet type; version negotiation is a version-0
/// packet (3.3), read with parse_version_negotiation().
enum class packet_type : uint8_t { data = 0x01 };

inline constexpr uint8_t flag_crc = 0x01;
/// O: a client's first flight (3.1, 5.1); only such a packet opens a connection.
inline constexpr uint8_t flag_opening = 0x02;
/// S: sealed (9.4). The payload is encrypted, the packet ends with a
/// 16-byte AEAD tag, there is no CRC, and byte 3 names the key.
inline constexpr uint8_t flag_sealed = 0x04;
/// E: sealed with the client's early key (9.8): new data of idempotent
/// messages sent to a member before its handshake finished. The engine
/// ignores the bit; the caller chose the key.
inline constexpr uint8_t flag_early = 0x08;
/// How a connection's packets are protected: CRC32C (plaintext, 3.4) or
/// AEAD (9.4). The engine leaves the sealing to its caller: it builds a
/// sealed packet's tag space, and takes a sealed packet only once the
/// caller opened it (verified and decrypted in place).
enum class protection : uint8_t { crc, sealed };
/// Byte 3 of a sealed packet: G (the group key) and the key epoch mod 128.
inline constexpr uint8_t key_byte_group = 0x80;
inline constexpr uint8_t key_byte_epoch_mask = 0x7f;
/// GROUP_KEY frame: the group secret of one epoch (9.6).
inline constexpr std::size_t group_secret_size = 32;

enum class frame_type : uint8_t {
  padding = 0x00,
  ping = 0x01,
  ack = 0x02,
  group_ack = 0x03,
  stream = 0x04,
  datagram = 0x05,
  credit = 0x06,
  heartbeat = 0x07,
  close = 0x08,
  forward = 0x09,
  // Reserved (protocol.md 4.12): defined by later revisions. A receiver
  // that meets one drops the packet and counts unknown_frame.
  join = 0x10,
  leave = 0x11,
  view = 0x12,
  order = 0x13,
  path_challenge = 0x14,
  path_response = 0x15,
  bind = 0x16,
  relay = 0x17,
  telemetry = 0x18,
  /// On sealed connections only (9.6); a plaintext connection drops it as
  /// unknown_frame, as version 1 always did.
  group_key = 0x19,
};

/// Frame types 0x40-0x7f are extensions: type, length(v), body. A receiver
/// that does not know one skips it (protocol.md 4.12).
inline constexpr uint8_t extension_frame_first = 0x40, extension_frame_last = 0x7f;
inline bool is_extension_frame(uint8_t t) { return t >= extension_frame_first && t <= extension_frame_last; }

/// Why a packet was not accepted; one list gives enum and counter names.
/// The failures are also the first drop reasons (MTP_DROP_REASONS).
#define MTP_PARSE_FAILURES(X)                                                  \
  X(too_short, "shorter than the header and trailer")                          \
  X(bad_version, "version is not 1 (answered by version negotiation)")         \
  X(bad_type, "unknown packet type")                                           \
  X(bad_crc, "CRC32C does not match (corrupted)")                              \
  X(no_crc, "unencrypted packet without the CRC flag")                         \
  X(bad_packet_number, "packet number at or above 2^62")                       \
  X(bad_sender_id, "sender id 0 or 2^32-1 (reserved)")                         \
  X(malformed_frame, "a frame runs past the packet or breaks its own rules")   \
  X(unknown_frame, "a reserved or unknown frame type")                         \
  X(not_sealed, "a plaintext packet on a secured connection (a downgrade)")
#define MTP_PARSE_STATUSES(X) X(ok, "parsed") MTP_PARSE_FAILURES(X)

enum class parse_status : uint8_t {
#define MTP_X(name, text) name,
  MTP_PARSE_STATUSES(MTP_X)
#undef MTP_X
      count_
};
inline constexpr std::size_t parse_status_count = static_cast<std::size_t>(parse_status::count_);
std::string_view parse_status_name(parse_status s);

/// Why a connection dropped a received packet, one counter each; the names
/// are protocol.md's (section 3.5). The parse failures come first, in the
/// order of parse_status. Every drop bumps exactly one.
#define MTP_DROP_REASONS(X)                                                    \
  MTP_PARSE_FAILURES(X)                                                        \
  X(unknown_sender, "sender or connection id not of this connection, or a member that left") \
  X(pn_out_of_window, "packet number too far ahead of the largest received")  \
  X(duplicate, "packet number already received, or below those remembered")  \
  X(stream_limit, "a stream id at or above max_streams")                      \
  X(flow_control, "data or a FORWARD beyond the credit granted")              \
  X(stream_state, "contradicts the stream: mode, message bounds or final size") \
  X(not_absorbed, "no buffer, table or memory to take it whole (repaired later)") \
  X(protocol_violation, "acknowledges a packet never sent to this member")    \
  X(after_close, "arrived while the connection was closing or draining")

enum class drop_reason : uint8_t {
#define MTP_X(name, text) name,
  MTP_DROP_REASONS(MTP_X)
#undef MTP_X
      count_
};
inline constexpr std::size_t drop_reason_count = static_cast<std::size_t>(drop_reason::count_);
std::string_view drop_reason_name(drop_reason r);
/// The drop reason of a parse failure (same name).
inline drop_reason drop_reason_of(parse_status s) { return static_cast<drop_reason>(static_cast<uint8_t>(s) - 1); }

struct packet_header {
  uint8_t version = protocol_version;
  packet_type type = packet_type::data;
  uint8_t flags = flag_crc;
  uint32_t sender_id = 0;
  uint64_t connection_id = 0;
  uint64_t packet_number = 0;
};

// ---- varints (QUIC, RFC 9000 section 16): 1, 2, 4 or 8 bytes ----

inline constexpr uint64_t varint_max = (uint64_t{1} << 62) - 1;
constexpr std::size_t varint_size(uint64_t v) { return v < 64 ? 1 : v < 16384 ? 2 : v < (1u << 30) ? 4 : 8; }

/// Reads a varint at `pos`, advancing it. @return false if it runs past the end.
inline bool read_varint(std::span<const std::byte> in, std::size_t &pos, uint64_t &out) {
  if (pos >= in.size()) return false;
  const auto first = std::to_integer<uint8_t>(in[pos]);
  const std::size_t len = std::size_t{1} << (first >> 6);
  if (in.size() - pos < len) return false;
  uint64_t v = first & 0x3f;
  for (std::size_t i = 1; i < len; ++i) v = (v << 8) | std::to_integer<uint64_t>(in[pos + i]);
  pos += len;
  out = v;
  return true;
}

/// Writes `v` (<= varint_max) at `pos`, advancing it. @return false if no room.
inline bool write_varint(std::span<std::byte> out, std::size_t &pos, uint64_t v) {
  if (v > varint_max) return false;
  const std::size_t len = varint_size(v);
  if (pos > out.size() || out.size() - pos < len) return false;
  const uint64_t prefix = len == 1 ? 0 : len == 2 ? 1 : len == 4 ? 2 : 3;
  v |= prefix << (len * 8 - 2);
  for (std::size_t i = len; i-- > 0;) {
    out[pos + i] = static_cast<std::byte>(v & 0xff);
    v >>= 8;
  }
  pos += len;
  return true;
}

// ---- frames as parsed (views into the packet) ----

/// ACK ranges in wire form; iterate with ack_range_iter.
struct ack_frame {
  uint64_t largest = 0;
  uint64_t ack_delay_us = 0;
  uint64_t range_count = 0;  ///< ranges after the first
  uint64_t first_range = 0;  ///< pns acknowledged below `largest`, contiguous
  std::span<const std::byte> ranges;  ///< range_count (gap, length) pairs
};

struct stream_frame {
  uint64_t stream_id = 0;
  uint64_t offset = 0;
  bool fin = false;
  bool message = false;     ///< message mode: msg_start/msg_length valid
  bool unordered = false;   ///< message mode: deliver when complete, in any order
  uint64_t msg_start = 0;   ///< offset where the message this segment belongs to starts
  uint64_t msg_length = 0;  ///< whole message length
  std::span<const std::byte> data;
};

struct group_ack_frame {
  uint64_t stream_id = 0, stable_offset = 0, acked_members = 0, total_members = 0;
};
struct credit_frame {
  bool connection = false;  ///< connection-level if true, else stream_id
  uint64_t stream_id = 0, max_offset = 0;
};
struct close_frame {
  uint64_t error_code = 0;
  std::string_view reason;
};
/// Bytes [offset, offset + length) of a stream will never be sent: skip them.
struct forward_frame {
  uint64_t stream_id = 0, offset = 0, length = 0;
};

struct frame {
  frame_type type = frame_type::padding;
  ack_frame ack;
  stream_frame stream;
  group_ack_frame group_ack;
  credit_frame credit;
  close_frame close;
  forward_frame forward;
  uint64_t heartbeat_seq = 0;
  std::span<const std::byte> datagram;
  std::span<const std::byte> extension;  ///< body of an extension frame (0x40-0x7f)
  uint64_t key_epoch = 0;                ///< GROUP_KEY
  std::span<const std::byte> group_secret;  ///< GROUP_KEY: group_secret_size bytes
};

/// Parses and checks the header and trailer.
/// @param packet  the UDP payload
/// @param frames  set to the frame bytes (between header and trailer) on ok
/// @param p  crc: the CRC flag and CRC are checked (3.4). sealed: the
///   caller opened the packet (9.4); the S flag is required (not_sealed
///   otherwise) and the tag is skipped.
parse_status parse_packet(std::span<const std::byte> packet, packet_header &hdr, std::span<const std::byte> &frames,
                          protection p = protection::crc);
/// Bytes after the header: the CRC or the tag.
constexpr std::size_t trailer_size(protection p) { return p == protection::sealed ? tag_size : crc_size; }

/// Reads the sender and connection ids of a packet without verifying it
/// (no CRC): enough to find its session, which then parses it fully. The
/// ids sit at the same place in every version (the invariants, 3.3).
/// @return false if it is too short to hold them.
inline bool peek_ids(std::span<const std::byte> packet, uint32_t &sender_id, uint64_t &connection_id) {
  if (packet.size() < 16) return false;
  uint64_t v = 0;
  for (std::size_t i = 4; i < 8; ++i) v = (v << 8) | std::to_integer<uint64_t>(packet[i]);
  sender_id = static_cast<uint32_t>(v);
  v = 0;
  for (std::size_t i = 8; i < 16; ++i) v = (v << 8) | std::to_integer<uint64_t>(packet[i]);
  connection_id = v;
  return true;
}

/// Walks the frames of a packet one at a time.
class frame_reader {
 public:
  /// @param sealed  GROUP_KEY frames are known (a sealed connection's)
  explicit frame_reader(std::span<const std::byte> frames, bool sealed = false) : in_(frames), sealed_(sealed) {}
  bool done() const { return pos_ >= in_.size(); }
  /// Parses the next frame. After an error the reader stays at it.
  parse_status next(frame &f);

 private:
  std::span<const std::byte> in_;
  std::size_t pos_ = 0;
  bool sealed_ = false;
};

/// Iterates the acknowledged ranges of an ACK frame, highest first.
/// Each step yields [lo, hi] inclusive. Stops with error() set if the
/// ranges underflow packet number 0 or run past the frame.
class ack_range_iter {
 public:
  explicit ack_range_iter(const ack_frame &a);
  /// @return false at the end or on error.
  bool next(uint64_t &lo, uint64_t &hi);
  bool error() const { return error_; }

 private:
  const ack_frame &a_;
  std::size_t pos_ = 0;
  uint64_t index_ = 0;
  uint64_t next_hi_ = 0;
  bool error_ = false;
};

/// Writes frames into one packet. Every append_* returns false (and writes
/// nothing) if the frame does not fit before the trailer.
class packet_builder {
 public:
  /// Starts a packet in `out` (its size is the most the packet may take).
  /// A sealed packet gets the S flag and room for the tag, which finish()
  /// leaves zero for the caller's AEAD.
  packet_builder(std::span<std::byte> out, const packet_header &hdr, protection p = protection::crc);

  bool append_ping();
  bool append_heartbeat(uint64_t seq);
  /// ACK of `ranges` ([lo, hi] pairs, highest first, disjoint, non-adjacent).
  bool append_ack(std::span<const uint64_t> ranges_lo_hi, uint64_t ack_delay_us);
  bool append_group_ack(const group_ack_frame &g);
  /// STREAM frame; the data is copied in.
  bool append_stream(const stream_frame &s);
  /// STREAM frame whose `len` data bytes the caller writes into the span
  /// returned (s.data is ignored). @return an empty span if it does not fit.
  std::span<std::byte> append_stream_header(const stream_frame &s, std::size_t len);
  /// DATAGRAM frame of `len` bytes the caller writes; empty if no room.
  std::span<std::byte> append_datagram_header(std::size_t len);
  /// An extension frame (0x40-0x7f) with its body.
  bool append_extension(uint8_t type, std::span<const std::byte> body);
  /// How many data bytes a STREAM frame with these fields could carry now.
  std::size_t stream_room(const stream_frame &s) const;
  bool append_datagram(std::span<const std::byte> data);
  bool append_credit(const credit_frame &c);
  bool append_close(uint64_t error_code, std::string_view reason);
  bool append_forward(const forward_frame &f);
  /// GROUP_KEY (sealed connections only, 9.6).
  bool append_group_key(uint64_t epoch, std::span<const std::byte> secret);

  std::size_t size() const { return pos_; }
  std::size_t room() const { return limit_ > pos_ ? limit_ - pos_ : 0; }
  /// Repairable frames the caller recorded for this packet (its own count).
  std::size_t frames() const { return frames_; }
  void count_frame() { ++frames_; }
  bool empty() const { return pos_ == header_size; }
  /// Writes the CRC trailer (or zeroes the tag's room). @return the packet's length.
  std::size_t finish();

 private:
  bool put_u8(uint8_t v);
  std::span<std::byte> out_;
  protection protection_ = protection::crc;
  std::size_t pos_ = 0;
  std::size_t limit_ = 0;  ///< out_.size() less the trailer
  std::size_t frames_ = 0;
};

/// Builds a version negotiation packet listing the versions we speak
/// (3.3): version 0, our id as sender, the connection id echoed.
/// @return its length, 0 if `out` is too small.
std::size_t build_version_negotiation(std::span<std::byte> out, uint64_t connection_id, uint32_t sender_id);

/// What a received version negotiation packet says.
struct version_list {
  std::span<const std::byte> versions;  ///< 4 bytes each
  bool lists(uint32_t v) const;
};
/// Parses a version negotiation packet (version 0). @return ok, too_short,
/// bad_version (not version 0), bad_crc or malformed_frame (the list is
/// not whole 32-bit entries).
parse_status parse_version_negotiation(std::span<const std::byte> packet, uint32_t &sender_id, uint64_t &connection_id,
                                       version_list &out);

/// Does this verified packet open a connection (5.1)? A DATA packet with
/// the O flag and at least one ack-eliciting frame, every frame well formed.
/// A sealed packet is asked about once opened (protection::sealed).
bool is_opening_packet(std::span<const std::byte> packet, protection p = protection::crc);

/// Ack-eliciting: every frame but ACK, PADDING and CLOSE (4).
inline bool is_ack_eliciting(frame_type t) {
  return t != frame_type::ack && t != frame_type::padding && t != frame_type::close;
}

}  // namespace mtp::core
