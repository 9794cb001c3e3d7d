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
inline constexpr std::size_t header_size = 24;
inline constexpr std::size_t crc_size = 4;
inline constexpr uint16_t default_udp_port = 7400;

enum class packet_type : uint8_t { data = 0x01, version_negotiation = 0x02 };

inline constexpr uint8_t flag_crc = 0x01;

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
  handshake = 0x19,
};

/// Why a packet was not accepted; one list gives enum and counter names.
#define MTP_PARSE_STATUSES(X)                                                  \
  X(ok, "parsed")                                                              \
  X(too_short, "shorter than the header and trailer")                          \
  X(bad_version, "version is not 1 (answered by version negotiation)")         \
  X(bad_type, "unknown packet type")                                           \
  X(bad_crc, "CRC32C does not match (corrupted)")                              \
  X(no_crc, "unencrypted packet without the CRC flag")                         \
  X(malformed_frame, "a frame runs past the packet or breaks its own rules")   \
  X(unknown_frame, "a reserved or unknown frame type")

enum class parse_status : uint8_t {
#define MTP_X(name, text) name,
  MTP_PARSE_STATUSES(MTP_X)
#undef MTP_X
      count_
};
inline constexpr std::size_t parse_status_count = static_cast<std::size_t>(parse_status::count_);
std::string_view parse_status_name(parse_status s);

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
};

/// Parses and checks the header and trailer.
/// @param packet  the UDP payload
/// @param frames  set to the frame bytes (between header and CRC) on ok
parse_status parse_packet(std::span<const std::byte> packet, packet_header &hdr, std::span<const std::byte> &frames);

/// Reads the sender and connection ids of a packet without verifying it
/// (no CRC): enough to find its session, which then parses it fully.
/// @return false if it is too short or not version 1.
inline bool peek_ids(std::span<const std::byte> packet, uint32_t &sender_id, uint64_t &connection_id) {
  if (packet.size() < header_size + crc_size || std::to_integer<uint8_t>(packet[0]) != protocol_version) return false;
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
  explicit frame_reader(std::span<const std::byte> frames) : in_(frames) {}
  bool done() const { return pos_ >= in_.size(); }
  /// Parses the next frame. After an error the reader stays at it.
  parse_status next(frame &f);

 private:
  std::span<const std::byte> in_;
  std::size_t pos_ = 0;
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
  packet_builder(std::span<std::byte> out, const packet_header &hdr);

  bool append_ping();
  bool append_heartbeat(uint64_t seq);
  /// ACK of `ranges` ([lo, hi] pairs, highest first, disjoint, non-adjacent).
  bool append_ack(std::span<const uint64_t> ranges_lo_hi, uint64_t ack_delay_us);
  bool append_group_ack(const group_ack_frame &g);
  /// STREAM frame; the data is copied in.
  bool append_stream(const stream_frame &s);
  /// How many data bytes a STREAM frame with these fields could carry now.
  std::size_t stream_room(const stream_frame &s) const;
  bool append_datagram(std::span<const std::byte> data);
  bool append_credit(const credit_frame &c);
  bool append_close(uint64_t error_code, std::string_view reason);
  bool append_forward(const forward_frame &f);

  std::size_t size() const { return pos_; }
  std::size_t room() const { return limit_ > pos_ ? limit_ - pos_ : 0; }
  bool empty() const { return pos_ == header_size; }
  /// Writes the CRC trailer. @return the packet's length.
  std::size_t finish();

 private:
  bool put_u8(uint8_t v);
  std::span<std::byte> out_;
  std::size_t pos_ = 0;
  std::size_t limit_ = 0;  ///< out_.size() less the trailer
};

/// Builds a version negotiation packet listing the versions we speak.
std::size_t build_version_negotiation(std::span<std::byte> out, uint64_t connection_id, uint32_t sender_id);

}  // namespace mtp::core
