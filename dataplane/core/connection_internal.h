// SPDX-License-Identifier: BSD-3-Clause
// The connection's private state, shared by connection.cc, send.cc and
// recv.cc. Not part of the core's interface.
#pragma once

#include <algorithm>

#include "connection.h"

namespace mtp::core {

/// A frame whose loss must be repaired: stream data or a FORWARD.
struct connection::frame_record {
  enum kind_t : uint8_t { stream_data, forward, credit };
  uint64_t offset = 0;
  uint64_t msg_seq = 0;  ///< message record of the data (message mode)
  uint32_t len = 0;
  uint16_t stream = 0;
  kind_t kind = stream_data;
  bool fin = false;
};

struct connection::sent_packet {
  uint64_t pn = UINT64_MAX;
  time_ns sent_ns = 0;
  uint64_t members = 0;  ///< sent to
  uint64_t acked = 0;
  uint64_t lost = 0;
  uint64_t frame_first = 0;
  uint32_t frame_count = 0;
  uint64_t repair = 0;  ///< members whose repair of this packet is still queued
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

struct connection::send_stream {
  uint64_t id = 0;
  stream_mode mode = stream_mode::message;
  ordering ord = ordering::fifo;
  std::vector<std::byte> buf;  ///< ring; offset o lives at o & (size-1)
  uint64_t base = 0;           ///< lowest offset still held
  uint64_t write_end = 0;      ///< end of what the application queued
  uint64_t sent_end = 0;       ///< end of what was sent at least once
  bool fin_requested = false;
  bool fin_sent = false;
  std::vector<message_record> msgs;  ///< ring indexed by seq & (size-1)
  uint64_t msg_head = 0, msg_tail = 0;  ///< [head, tail) retained
  uint64_t msg_send = 0;   ///< first message not fully sent
  uint64_t msg_stable = 0; ///< first message not yet reported stable/expired
  std::vector<range_set> acked;  ///< per member: offsets it acknowledged (or gave up)
  std::vector<uint8_t> retx;     ///< partial messages: [slot * members + m]
  time_ns oldest_unsent_ns = never;

  uint64_t mask() const { return buf.size() - 1; }
  message_record &msg(uint64_t seq) { return msgs[seq & (msgs.size() - 1)]; }
};

/// A known message extent on a receive stream (message mode).
struct extent {
  uint64_t start, end;
  bool delivered;
};

struct connection::recv_stream {
  stream_mode mode = stream_mode::bytes;
  bool mode_known = false;
  std::vector<std::byte> buf;
  range_set received;   ///< offsets received or skipped by FORWARD
  range_set delivered;  ///< offsets delivered or skipped
  std::vector<extent> extents;  ///< sorted by start; [ext_head, size) live
  std::size_t ext_head = 0;
  std::size_t ext_cap = 0;
  uint64_t read_offset = 0;     ///< fifo: next offset to deliver
  uint64_t released = 0;        ///< buffer space below this is free
  uint64_t pending_release = 0; ///< becomes `released` at the next call
  uint64_t advertised = 0;      ///< credit granted to the sender
  bool fin_known = false;
  uint64_t final_size = 0;
  bool fin_delivered = false;
  bool needs_scan = false;      ///< deliveries left for lack of event room
  bool unordered = false;       ///< message mode, ordering none
  bool credit_dirty = false;
  uint64_t highest_end = 0;     ///< highest offset + length seen
  recv_stream(std::size_t window, std::size_t ranges)
      : buf(window), received(ranges), delivered(ranges), ext_cap(ranges) {
    extents.reserve(ranges);
  }
  uint64_t mask() const { return buf.size() - 1; }
};

struct connection::member_state {
  uint32_t id = 0;
  bool live = true;
  bool accepted = false;
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
  std::vector<uint64_t> lost;  ///< ring of lost packet numbers whose frames to repair
  uint64_t lost_head = 0, lost_tail = 0;
  uint32_t lost_cursor = 0;    ///< next frame of the packet at lost_head
  std::vector<frame_record> forwards;  ///< ring of FORWARDs to send
  uint64_t fwd_head = 0, fwd_tail = 0;
  bool probe_pending = false;
  bool heartbeat_pending = false;
  uint64_t heartbeat_seq = 0;
  // Flow control this member granted us.
  uint64_t conn_credit = 0;
  std::vector<uint64_t> stream_credit;
  // Receiving from this member.
  range_set received_pns;
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

  member_state(time_ns initial_rtt, std::size_t ack_ranges) : rtt(initial_rtt), received_pns(ack_ranges) {}
  std::size_t retx_size() const { return static_cast<std::size_t>(lost_tail - lost_head + fwd_tail - fwd_head); }
  bool push_forward(const frame_record &f) {
    if (fwd_tail - fwd_head >= forwards.size()) return false;
    forwards[fwd_tail++ & (forwards.size() - 1)] = f;
    return true;
  }
};

}  // namespace mtp::core
