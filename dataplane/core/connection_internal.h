// SPDX-License-Identifier: BSD-3-Clause
// The connection's private state, shared by connection.cc, send.cc,
// ack.cc and recv.cc. Not part of the core's interface.
#pragma once

#include <algorithm>

#include "connection.h"

namespace mtp::core {

inline uint64_t member_bit(std::size_t m) { return uint64_t{1} << m; }

/// A frame whose loss must be repaired: stream data, a FORWARD or credits.
struct connection::frame_record {
  enum kind_t : uint8_t { stream_data, forward, credit, group_key };  // group_key: offset is the epoch
  uint64_t offset = 0;
  uint64_t msg_seq = 0;  ///< message record of the data (message mode)
  uint32_t len = 0;
  uint16_t stream = 0;
  kind_t kind = stream_data;
  bool fin = false;
};

struct connection::sent_packet {
  uint64_t pn = UINT64_MAX;  ///< UINT64_MAX: no packet tracked in this slot
  time_ns sent_ns = 0;
  uint64_t members = 0;  ///< sent to
  uint64_t acked = 0;
  uint64_t lost = 0;
  uint64_t frame_first = 0;
  uint32_t frame_count = 0;
  uint64_t repair = 0;  ///< members whose repair of this packet is still queued
  time_ns lost_ns = 0;  ///< when a loss was last declared: kept a while for a late ACK
  uint32_t bytes = 0;
  bool ack_eliciting = false;
};

struct connection::message_record {
  uint64_t start = 0, end = 0;  ///< stream offsets [start, end)
  time_ns deadline_ns = never;
  uint32_t max_retx = 0;
  reliability rel = reliability::reliable;
  bool low_latency = false;
  bool stable = false;   ///< Sent or Expired reported
  bool expired = false;  ///< given up for every member that lacks it (partial)
  uint32_t missed = 0;   ///< members that will not get it (told by FORWARD)
  time_ns queued_ns = 0;
};

/// A send stream as seen by one member.
///
/// Invariants: `skip` only grows while the message it covers is retained;
/// no STREAM frame for bytes in `skip` is built for this member after the
/// range entered it; `fwd_owed` is within `skip`; `sent_to` is the highest
/// offset any frame sent to this member reached (the member's view of the
/// stream cannot be beyond it, so new credit is needed only above it).
struct connection::stream_member {
  range_set acked;     ///< bytes it acknowledged (by STREAM or FORWARD)
  range_set skip;      ///< bytes given up for it: it is owed a FORWARD, never data
  range_set fwd_owed;  ///< the part of `skip` whose FORWARD is to be (re)sent
  /// Bytes owed as repair, held by range once the packets that carried
  /// them left the sent table (see connection::unpin_head).
  range_set resend;
  uint64_t sent_to = 0;
  bool fin_acked = false;  ///< byte stream: it acknowledged the FIN
  bool fin_resend = false;  ///< its FIN is owed as repair (with `resend`)
  stream_member(std::size_t ranges, memory_account *acct)
      : acked(ranges, acct), skip(ranges, acct), fwd_owed(ranges, acct), resend(ranges, acct) {}
  /// Holds or was told to skip [lo, hi): the sender needs the bytes no more.
  bool settled(uint64_t lo, uint64_t hi) const { return acked.contains(lo, hi) || skip.contains(lo, hi); }
};

struct connection::send_stream {
  explicit send_stream(memory_account *a, uint64_t cost) : acct(a), charged(cost) {}
  ~send_stream() { acct->release(charged); }
  memory_account *acct;
  uint64_t charged;  ///< the fixed part, charged at open_stream
  uint64_t id = 0;
  stream_mode mode = stream_mode::message;
  ordering ord = ordering::fifo;
  stream_buffer buf;       ///< [base, write_end), chunked
  uint64_t base = 0;       ///< lowest offset still held
  uint64_t write_end = 0;  ///< end of what the application queued
  uint64_t sent_end = 0;   ///< end of what was sent at least once (or skipped before it went)
  bool fin_requested = false;
  bool fin_sent = false;
  seq_ring<message_record> msgs;  ///< [msg_head, msg_tail) retained
  uint64_t msg_head = 0, msg_tail = 0;
  uint64_t msg_send = 0;    ///< first message not fully sent
  uint64_t msg_stable = 0;  ///< first message not yet reported stable/expired
  std::vector<stream_member> per_member;
  /// Partial messages: retransmissions per (message, member), element
  /// seq * members + m, live for [msg_head, msg_tail).
  seq_ring<uint8_t> retx;
  time_ns oldest_unsent_ns = never;
  /// Bytes the caller keeps (send_pieces), by offset: [ext_head,
  /// ext_released) lie below `base` and wait for poll_released();
  /// [ext_released, ext_tail) may still be read. Offsets increase with the
  /// index; bytes of the stream in no piece are in `buf`.
  struct piece {
    uint64_t start = 0;
    const std::byte *data = nullptr;
    uint32_t len = 0;
    uint64_t token = 0;
  };
  seq_ring<piece> ext;
  uint64_t ext_head = 0, ext_released = 0, ext_tail = 0;
  mutable uint64_t ext_cursor = 0;  ///< the piece the last read began in (reads mostly go forward)
};

/// A known message extent on a receive stream (message mode).
struct extent {
  uint64_t start, end;
  bool delivered;
};

struct connection::recv_stream {
  stream_mode mode = stream_mode::bytes;
  bool unordered = false;     ///< message mode, ordering none
  stream_buffer buf;          ///< [released, released + window)
  range_set received;         ///< offsets received or skipped by FORWARD
  range_set delivered;        ///< offsets delivered or skipped
  std::vector<extent> extents;  ///< sorted by start; [ext_head, size) live
  std::size_t ext_head = 0;
  std::size_t ext_max = 0;
  uint64_t ext_charged = 0;   ///< bytes of extents' capacity charged
  uint64_t read_offset = 0;     ///< bytes mode: next offset to deliver
  uint64_t released = 0;        ///< buffer space below this is free
  uint64_t advertised = 0;      ///< credit granted to the sender
  bool fin_known = false;
  uint64_t final_size = 0;
  bool fin_delivered = false;
  bool needs_scan = false;      ///< deliveries left for lack of event room
  uint32_t unpolled = 0;        ///< Received events not yet polled: the space they show is kept
  bool credit_dirty = false;
  uint64_t highest_end = 0;     ///< highest offset + length seen
  /// A message coming in fragments, in place (connection::
  /// streaming_member_): [stream_start, stream_end), delivered up to
  /// stream_at. It has no extent; delivered bytes in [stream_at,
  /// stream_end) can only have been skipped by a FORWARD.
  bool streaming = false;
  uint64_t stream_start = 0, stream_at = 0, stream_end = 0;
  memory_account *acct;
  recv_stream(memory_account *a, uint64_t window, std::size_t ranges)
      : received(ranges, a), delivered(ranges, a), ext_max(ranges), acct(a) {
    buf.init(a, window);
  }
  ~recv_stream() { acct->release(sizeof(recv_stream) + ext_charged); }
};

struct connection::member_state {
  uint32_t id = 0;
  bool live = true;
  bool accepted = false;
  /// It proved it receives our packets (acknowledged one we sent; a
  /// client's members are the ones it chose). Until then we send it at
  /// most three times what it sent us (3.6).
  bool validated = false;
  uint64_t rx_bytes = 0, tx_bytes = 0;  ///< for the amplification limit
  rtt_estimator rtt;
  std::unique_ptr<congestion_control> cc;
  uint64_t bytes_in_flight = 0;
  bool has_acked = false;
  uint64_t largest_acked = 0;
  uint64_t loss_scan_pn = 0;   ///< packets below are resolved for this member
  uint64_t reorder_packets = 3;  ///< packet-threshold loss; grows on spurious losses
  uint32_t reorder_eighths = 9;  ///< time threshold in eighths of an RTT; grows likewise
  time_ns loss_time = never;   ///< earliest time-threshold loss
  time_ns last_ack_eliciting_ns = 0;
  uint32_t pto_count = 0;
  time_ns last_rx_ns = 0;
  time_ns last_tx_ns = 0;
  /// Packet numbers whose frames to repair for this member, [lost_head,
  /// lost_tail). Each tracked packet is here at most once and stays
  /// tracked until processed, so the ring never needs more than the sent
  /// table; it grows with it.
  seq_ring<uint64_t> lost;
  uint64_t lost_head = 0, lost_tail = 0;
  uint32_t lost_cursor = 0;    ///< next frame of the packet at lost_head
  bool resend_pending = false; ///< some stream's `resend` ranges are owed to it
  bool fwd_pending = false;    ///< some stream may owe it a FORWARD
  bool probe_pending = false;
  bool heartbeat_pending = false;
  uint64_t heartbeat_seq = 0;
  bool close_owed = false;     ///< a CLOSE is to be sent to it, with close_code
  error_code close_code = error_code::no_error;
  // Flow control this member granted us.
  uint64_t conn_credit = 0;
  uint64_t conn_sent_to = 0;   ///< sum over streams of stream_member::sent_to
  std::vector<uint64_t> stream_credit;
  // Receiving from this member.
  range_set received_pns;
  uint64_t pn_floor = 0;       ///< packet numbers below were forgotten: duplicates
  uint32_t ack_pending = 0;
  bool ack_now = false;
  time_ns ack_deadline = never;
  uint64_t largest_received = 0;
  bool has_received = false;
  time_ns largest_received_ns = 0;
  std::vector<std::unique_ptr<recv_stream>> recv;
  uint64_t conn_received_end = 0;  ///< sum over streams of highest offset + len
  uint64_t conn_released = 0;      ///< sum over streams of released bytes
  uint64_t conn_advertised = 0;
  bool credit_pending = false;
  bool key_pending = false;       ///< the current GROUP_KEY is owed to it
  bool key_acked = false;         ///< it acknowledged the current GROUP_KEY

  member_state(time_ns initial_rtt, std::size_t ack_ranges, memory_account *acct)
      : rtt(initial_rtt), received_pns(ack_ranges, acct) {}
  bool lost_queued() const { return lost_tail > lost_head; }
  bool repairs_queued() const { return lost_queued() || resend_pending; }
};

}  // namespace mtp::core
