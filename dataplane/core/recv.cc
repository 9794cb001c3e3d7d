// SPDX-License-Identifier: BSD-3-Clause
// The receiving half of a connection: packet intake and validation,
// duplicate detection, stream reassembly and delivery (ordering none or
// fifo), FORWARD skips, flow-control credit, CLOSE, and the ACKs we owe.
//
// Every field read from the wire is checked against what its sender may
// legitimately say before it changes any state (protocol.md 3.5): packet
// numbers against a window ahead of the largest received, ACK ranges
// against packets actually sent, STREAM and FORWARD offsets against the
// credit granted and the stream's own history. A packet that fails is
// dropped with one counted reason and never acknowledged.
#include <cstring>

#include "connection_internal.h"

namespace mtp::core {

namespace {
constexpr drop_reason absorbed_ok = drop_reason::count_;
}  // namespace

void connection::on_packet(std::span<const std::byte> packet, time_ns now) {
  begin_call(now);
  in_packet_events_ = 0;
  // In place only while the caller polls at once, or the data can be kept.
  zc_now_ = cfg_.zero_copy_delivery && (!keepable_ || arena_reserve(cfg_.max_packet_bytes));
  if (state_ == state::finished) {
    drop(drop_reason::after_close);
    return;
  }
  if (!packet.empty() && std::to_integer<uint8_t>(packet[0]) == version_negotiation_version) {
    if (state_ >= state::draining) {
      drop(drop_reason::after_close);
      return;
    }
    on_version_negotiation(packet, now);
    return;
  }
  packet_header h;
  std::span<const std::byte> frames;
  if (const parse_status st = parse_packet(packet, h, frames, cfg_.packet_protection); st != parse_status::ok) {
    drop(drop_reason_of(st));
    return;
  }
  const std::size_t mi = member_index(h.sender_id);
  if (mi == members_.size() || h.connection_id != cfg_.connection_id || !members_[mi]->live) {
    drop(drop_reason::unknown_sender);
    return;
  }
  member_state &m = *members_[mi];
  m.rx_bytes += packet.size();
  if (state_ == state::draining) {
    // A member that missed our CLOSE is still talking: say it again
    // (protocol.md 5.1). After a CLOSE from it, or a silent failure, stay quiet.
    if (sent_close_) owe_close(mi, close_code_);
    drop(drop_reason::after_close);
    return;
  }

  const uint64_t pn = h.packet_number;
  if (pn < m.pn_floor || m.received_pns.contains(pn)) {
    drop(drop_reason::duplicate);
    // Our ACK may have been lost: answer at once if it asked for one.
    frame_reader peek(frames, cfg_.packet_protection == protection::sealed);
    frame pf;
    bool asks = false;
    while (!asks && !peek.done() && peek.next(pf) == parse_status::ok) asks = is_ack_eliciting(pf.type);
    if (asks) {
      ++m.ack_pending;
      m.ack_now = true;
    }
    return;
  }
  if (m.has_received && pn > m.largest_received + cfg_.pn_window) {
    drop(drop_reason::pn_out_of_window);
    return;
  }

  // One pass: frames take effect as they parse. Everything they do is
  // idempotent, so a packet that turns out malformed, or that cannot be
  // absorbed whole, is simply not acknowledged and its sender repairs it.
  // A frame that cannot be absorbed does not stop the ones after it: one
  // of them may be the FORWARD or the data that fills the gap the
  // receiver is waiting on (and frees the room the others need).
  drop_reason why = absorbed_ok;
  bool eliciting = false;
  bool ping = false;
  frame_reader rd(frames, cfg_.packet_protection == protection::sealed);
  frame f;
  while (!rd.done()) {
    if (const parse_status st = rd.next(f); st != parse_status::ok) {
      drop(drop_reason_of(st));
      return;
    }
    eliciting |= is_ack_eliciting(f.type);
    bool absorbed = true;
    switch (f.type) {
      case frame_type::ack:
        if (!on_ack_frame(mi, f.ack, now)) {
          drop(drop_reason::protocol_violation);
          if (cfg_.side == role::server) {
            fail_connection(error_code::protocol_violation, true, now);
          } else {
            member_failed(mi, member_left_reason::protocol_violation, now);
            owe_close(mi, error_code::protocol_violation);
          }
          return;
        }
        break;
      case frame_type::stream:
        on_stream_frame(mi, f.stream, absorbed);
        break;
      case frame_type::forward:
        on_forward_frame(mi, f.forward, absorbed);
        break;
      case frame_type::datagram:
        on_datagram_frame(mi, f.datagram);
        break;
      case frame_type::credit:
        if (f.credit.connection) {
          m.conn_credit = std::max(m.conn_credit, f.credit.max_offset);
        } else if (f.credit.stream_id < m.stream_credit.size()) {
          m.stream_credit[f.credit.stream_id] = std::max(m.stream_credit[f.credit.stream_id], f.credit.max_offset);
        } else {
          why = drop_reason::stream_limit;
        }
        break;
      case frame_type::close:
        on_close_frame(mi, f.close, now);
        m.last_rx_ns = now;
        return;
      case frame_type::ping:
        ping = true;  // the sender wants its ACK now (protocol.md 6.2)
        break;
      case frame_type::group_key: {
        // Only the client hands out group keys (9.6).
        if (cfg_.side != role::server) {
          drop(drop_reason::malformed_frame);
          return;
        }
        // Kept in a small ring so the event's span outlives the packet;
        // a repeated epoch (a repair) is reported again, harmlessly.
        std::byte *slot = received_group_keys_[group_keys_received_++ % group_keys_kept];
        std::memcpy(slot, f.group_secret.data(), group_secret_size);
        event e;
        e.type = event_type::group_key;
        e.member = m.id;
        e.message_id = f.key_epoch;
        e.data = {slot, group_secret_size};
        push_event(e);
        ++stats_.group_keys_received;
        break;
      }
      default:
        break;  // heartbeat, padding, group_ack, extensions: nothing beyond the ACK
    }
    if (!absorbed && why == absorbed_ok) why = last_drop_;
    if (state_ >= state::draining) return;
  }
  if (why != absorbed_ok) {
    drop(why);
    return;
  }
  note_received(m, pn);
  send_blocked_ = false;  // what blocked sending may have moved: look again
  m.last_rx_ns = now;
  ++stats_.packets_received;
  if (!m.accepted) {
    m.accepted = true;
    check_ready();
  }
  if (eliciting) {
    ++m.ack_pending;
    // Out of order (a gap, or a late packet), enough packets, or asked
    // for with a PING: ACK now.
    if ((m.has_received && pn != m.largest_received + 1) || m.ack_pending >= cfg_.ack_every_packets || ping)
      m.ack_now = true;
    else if (m.ack_deadline == never)
      m.ack_deadline = now + cfg_.ack_delay_ns;
  }
  if (!m.has_received || pn > m.largest_received) {
    m.largest_received = pn;
    m.largest_received_ns = now;
    m.has_received = true;
  }
}

// A datagram is delivered now or never (it is unreliable): without event
// room or arena space it is shed and counted, and the packet is still
// acknowledged.
void connection::on_datagram_frame(std::size_t mi, std::span<const std::byte> data) {
  event e;
  e.type = event_type::datagram;
  e.member = members_[mi]->id;
  e.data = data;
  if (!data_events_room(1)) {
    ++stats_.datagrams_dropped;
    return;
  }
  if (zc_now_) {
    e.in_packet = true;
    ++in_packet_events_;
  } else if (!data.empty()) {
    // Into the arena, never across a chunk: skip to the next one if need be.
    uint64_t at = arena_tail_;
    const uint64_t chunk = rx_arena_.chunk();
    if ((at & (chunk - 1)) + data.size() > chunk) at = (at + chunk - 1) & ~(chunk - 1);
    if (at + data.size() - arena_released_ > rx_arena_.window() || !rx_arena_.reserve(at, at + data.size())) {
      ++stats_.datagrams_dropped;
      return;
    }
    rx_arena_.write(at, data);
    e.data = rx_arena_.piece(at, at + data.size());
    arena_tail_ = at + data.size();
    e.arena_end = arena_tail_;
    ++held_events_;
  }
  push_data_event(e);
}

// A full table of received ranges forgets its lowest range; packet numbers
// below it count as duplicates from then on (their ACK is never sent, so
// their sender repairs whatever they carried, under new numbers).
void connection::note_received(member_state &m, uint64_t pn) {
  while (!m.received_pns.insert(pn, pn + 1)) {
    if (m.received_pns.empty()) {
      m.pn_floor = std::max(m.pn_floor, pn);
      return;
    }
    m.pn_floor = std::max(m.pn_floor, m.received_pns.front().hi);
    m.received_pns.drop_lowest();
  }
}

bool connection::on_close_frame(std::size_t mi, const close_frame &f, time_ns now) {
  ++stats_.closes_received;
  if (cfg_.side == role::server) {
    // The client closed the connection.
    event e;
    e.type = event_type::closed;
    e.member = members_[mi]->id;
    e.error_code = f.error_code;
    push_event(e);
    closed_reported_ = true;
    close_code_ = static_cast<error_code>(f.error_code);
    enter_draining(now);
    return true;
  }
  // A member left the group (5.2).
  member_failed(mi, member_left_reason::closed, now, f.error_code);
  return true;
}

connection::recv_stream *connection::recv_stream_for(std::size_t mi, uint64_t id, bool &absorbed) {
  member_state &m = *members_[mi];
  if (id >= m.recv.size()) {
    last_drop_ = drop_reason::stream_limit;
    absorbed = false;
    return nullptr;
  }
  if (!m.recv[id]) {
    // At its first frame; its buffer grows with the data that arrives.
    if (!acct_.charge(sizeof(recv_stream))) {
      last_drop_ = drop_reason::not_absorbed;
      absorbed = false;
      return nullptr;
    }
    // A message adds at most one range to each set and one extent.
    m.recv[id] = std::make_unique<recv_stream>(&acct_, cfg_.stream_buffer_bytes, cfg_.max_messages + 1);
    m.recv[id]->advertised = cfg_.stream_buffer_bytes;
  }
  return m.recv[id].get();
}

// Checks a STREAM frame against everything known of its stream first, and
// only then lets it change anything.
void connection::on_stream_frame(std::size_t mi, const stream_frame &f, bool &absorbed) {
  member_state &m = *members_[mi];
  recv_stream *rp = recv_stream_for(mi, f.stream_id, absorbed);
  if (rp == nullptr) return;
  recv_stream &r = *rp;
  auto refuse = [&](drop_reason why) {
    last_drop_ = why;
    absorbed = false;
  };
  const uint64_t off = f.offset, end = f.offset + f.data.size();
  const bool first_frame = r.highest_end == 0 && r.received.empty() && r.extents.empty() && !r.fin_known;
  const stream_mode mode = f.message ? stream_mode::message : stream_mode::bytes;
  if (!first_frame && (mode != r.mode || (f.message && f.unordered != r.unordered))) return refuse(drop_reason::stream_state);
  if (f.message && f.msg_length > r.buf.window()) return refuse(drop_reason::stream_state);
  if (end > r.advertised) return refuse(drop_reason::flow_control);
  const uint64_t grow = end > r.highest_end ? end - r.highest_end : 0;
  if (m.conn_received_end + grow > m.conn_advertised) return refuse(drop_reason::flow_control);
  if (r.fin_known && (end > r.final_size || (f.fin && end != r.final_size))) return refuse(drop_reason::stream_state);
  if (f.fin && end < r.highest_end) return refuse(drop_reason::stream_state);
  // A segment names its message; it must agree with what we know of it.
  std::vector<extent>::iterator ext_pos;
  bool new_extent = false;
  // A fragment of the message coming in place (it has no extent).
  const bool streaming = r.streaming && f.message && f.msg_start == r.stream_start;
  if (streaming) {
    if (f.msg_start + f.msg_length != r.stream_end) return refuse(drop_reason::stream_state);
  } else if (f.message) {
    const uint64_t ms = f.msg_start, me = f.msg_start + f.msg_length;
    if (r.streaming && ms < r.stream_end && me > r.stream_start) return refuse(drop_reason::stream_state);
    auto first = r.extents.begin() + static_cast<long>(r.ext_head);
    ext_pos = std::lower_bound(first, r.extents.end(), ms, [](const extent &e, uint64_t v) { return e.start < v; });
    if (ext_pos != r.extents.end() && ext_pos->start == ms) {
      if (ext_pos->end != me) return refuse(drop_reason::stream_state);
    } else if (ms >= r.released && !r.delivered.contains(ms, me)) {
      if ((ext_pos != r.extents.end() && ext_pos->start < me) || (ext_pos != first && (ext_pos - 1)->end > ms))
        return refuse(drop_reason::stream_state);  // overlaps another message
      new_extent = true;
    }
  }
  if (first_frame) {
    r.mode = mode;
    r.unordered = f.unordered;
  }

  // Zero copy: the event points into the packet, which the caller keeps
  // until its next call (see on_packet); the buffer is not touched.
  auto deliver_in_place = [&](bool eom) {
    if (!r.received.make_room(off, end) || !r.delivered.make_room(off, end)) return false;
    r.received.insert(off, end);
    r.delivered.insert(off, end);
    m.conn_received_end += grow;
    r.highest_end = std::max(r.highest_end, end);
    event e;
    e.type = event_type::received;
    e.member = m.id;
    e.stream_id = f.stream_id;
    e.offset = off;
    e.data = f.data;
    e.end_of_message = eom;
    e.in_packet = true;
    ++in_packet_events_;
    push_data_event(e);
    return true;
  };
  // Fast path: a whole message arriving in order on a fifo stream with
  // nothing pending before it goes straight to delivery.
  if (zc_now_ && f.message && !r.unordered && off == f.msg_start && end == f.msg_start + f.msg_length &&
      r.ext_head == r.extents.size() && off >= r.released && r.delivered.contiguous_end(r.released) == off &&
      data_events_room(1)) {
    if (!deliver_in_place(true)) return refuse(drop_reason::not_absorbed);
    ++stats_.messages_delivered;
    return;
  }
  // A message spanning packets, in order, with nothing after it here yet:
  // each fragment goes straight from its packet (one message at a time
  // per connection, and only as long as the caller asked for).
  if (zc_now_ && f.message && !r.unordered && !f.fin && off >= r.released && r.highest_end <= off &&
      r.delivered.contiguous_end(r.released) == off && data_events_room(1) &&
      (streaming ? off == r.stream_at
                 : streaming_member_ < 0 && off == f.msg_start && end < f.msg_start + f.msg_length &&
                       f.msg_length <= cfg_.in_place_fragments_max_bytes && r.ext_head == r.extents.size())) {
    const uint64_t msg_end = f.msg_start + f.msg_length;
    if (!deliver_in_place(end == msg_end)) return refuse(drop_reason::not_absorbed);
    if (!streaming) {
      r.streaming = true;
      r.stream_start = f.msg_start;
      r.stream_end = msg_end;
      streaming_member_ = static_cast<int>(mi);
      streaming_stream_ = f.stream_id;
    }
    r.stream_at = end;
    ++stats_.fragments_in_place;
    if (end == msg_end) {
      r.streaming = false;
      streaming_member_ = -1;
      ++stats_.messages_delivered;
    }
    return;
  }
  if (f.message && !streaming && f.msg_start < r.released && end > r.released) {
    // The rest of a message whose start was already skipped (a FORWARD for
    // part of it came first): it can never be delivered whole, so it is
    // skipped too.
    const uint64_t lo = r.released;
    if (!r.received.make_room(lo, end) || !r.delivered.make_room(lo, end)) return refuse(drop_reason::not_absorbed);
    r.received.insert(lo, end);
    r.delivered.insert(lo, end);
    m.conn_received_end += grow;
    r.highest_end = std::max(r.highest_end, end);
    deliver(mi, r, f.stream_id);
    return;
  }
  if (end <= r.released || r.received.contains(off, end)) {
    // Nothing new (a repair of what we have); a FIN may be.
    if (f.fin && !r.fin_known) {
      r.fin_known = true;
      r.final_size = end;
      deliver(mi, r, f.stream_id);
    }
    return;
  }
  // Memory and table room before any change: a refusal leaves nothing half
  // done. Chunks are taken in offset order from the released point, so a
  // gap is never left without the memory to fill it (out-of-order data
  // cannot hold what in-order delivery needs).
  const uint64_t lo = std::max(off, r.released);
  if (!r.buf.reserve(r.released, end)) return refuse(drop_reason::not_absorbed);
  // Out of order, a range or an extent must leave one slot free: the one
  // the packet that fills the lowest gap will need.
  const std::size_t keep_ranges = off <= r.received.contiguous_end(r.released) ? 0 : 1;
  if (!r.received.make_room(off, end, keep_ranges)) return refuse(drop_reason::not_absorbed);
  if (new_extent) {
    const std::size_t keep_ext = f.msg_start <= r.delivered.contiguous_end(r.released) ? 0 : 1;
    if (r.extents.size() - r.ext_head + keep_ext >= r.ext_max) return refuse(drop_reason::not_absorbed);
    if (r.extents.size() == r.extents.capacity()) {
      // Reclaim the delivered prefix first; grow only if that is not enough.
      const auto pos = ext_pos - r.extents.begin() - static_cast<long>(r.ext_head);
      r.extents.erase(r.extents.begin(), r.extents.begin() + static_cast<long>(r.ext_head));
      r.ext_head = 0;
      ext_pos = r.extents.begin() + pos;
      if (r.extents.size() == r.extents.capacity()) {
        const std::size_t want = std::min<std::size_t>(r.ext_max, std::max<std::size_t>(8, r.extents.capacity() * 2));
        const uint64_t more = (want - r.extents.capacity()) * sizeof(extent);
        if (!acct_.charge(more)) return refuse(drop_reason::not_absorbed);
        r.ext_charged += more;
        r.extents.reserve(want);
        ext_pos = r.extents.begin() + pos;
      }
    }
  }
  r.received.insert(off, end);
  if (new_extent) r.extents.insert(ext_pos, extent{f.msg_start, f.msg_start + f.msg_length, false});
  m.conn_received_end += grow;
  r.highest_end = std::max(r.highest_end, end);
  if (f.fin) {
    r.fin_known = true;
    r.final_size = end;
  }
  if (end > lo) r.buf.write(lo, f.data.subspan(static_cast<std::size_t>(lo - off)));
  deliver(mi, r, f.stream_id);
}

void connection::on_forward_frame(std::size_t mi, const forward_frame &f, bool &absorbed) {
  member_state &m = *members_[mi];
  recv_stream *rp = recv_stream_for(mi, f.stream_id, absorbed);
  if (rp == nullptr) return;
  recv_stream &r = *rp;
  const uint64_t end = f.offset + f.length;
  // A sender may skip only bytes it could have sent (its credit), and a
  // byte stream is never skipped (it is reliable).
  auto refuse = [&](drop_reason why) {
    last_drop_ = why;
    absorbed = false;
  };
  if (end > r.advertised) return refuse(drop_reason::flow_control);
  const uint64_t grow = end > r.highest_end ? end - r.highest_end : 0;
  if (m.conn_received_end + grow > m.conn_advertised) return refuse(drop_reason::flow_control);
  if (r.fin_known && end > r.final_size) return refuse(drop_reason::stream_state);
  const bool known = r.highest_end != 0 || !r.received.empty();
  if (known && r.mode == stream_mode::bytes) return refuse(drop_reason::stream_state);
  if (end <= r.released) return;
  const uint64_t lo = std::max(f.offset, r.released);
  // Skipped bytes count as received and delivered; they take no buffer.
  if (!r.received.make_room(lo, end, lo <= r.received.contiguous_end(r.released) ? 0 : 1) ||
      !r.delivered.make_room(lo, end, lo <= r.delivered.contiguous_end(r.released) ? 0 : 1))
    return refuse(drop_reason::not_absorbed);
  r.received.insert(lo, end);
  r.delivered.insert(lo, end);
  if (!known) r.mode = stream_mode::message;
  m.conn_received_end += grow;
  r.highest_end = std::max(r.highest_end, end);
  deliver(mi, r, f.stream_id);
}

// @return false (nothing emitted) without room for every piece.
bool connection::emit_data(std::size_t mi, recv_stream &r, uint64_t stream_id, uint64_t start, uint64_t end,
                           bool eom) {
  const uint64_t chunk = r.buf.chunk();
  const std::size_t pieces = static_cast<std::size_t>((end - start + (start & (chunk - 1)) + chunk - 1) / chunk);
  if (!data_events_room(std::max<std::size_t>(pieces, 1))) return false;
  if (!r.delivered.make_room(start, end, start <= r.delivered.contiguous_end(r.released) ? 0 : 1)) return false;
  event e;
  e.type = event_type::received;
  e.member = members_[mi]->id;
  e.stream_id = stream_id;
  for (uint64_t off = start; off < end;) {
    const auto piece = r.buf.piece(off, end);
    e.offset = off;
    e.data = piece;
    off += piece.size();
    e.end_of_message = eom && off == end;
    push_data_event(e);
    ++r.unpolled;
    ++held_events_;
  }
  r.delivered.insert(start, end);
  if (eom && r.mode == stream_mode::message) ++stats_.messages_delivered;
  return true;
}

void connection::deliver(std::size_t mi, recv_stream &r, uint64_t stream_id) {
  r.needs_scan = false;
  if (r.mode == stream_mode::bytes) {
    r.read_offset = std::max(r.read_offset, r.delivered.contiguous_end(r.read_offset));
    const uint64_t avail = r.received.contiguous_end(r.read_offset);
    const bool at_fin = r.fin_known && avail == r.final_size && !r.fin_delivered;
    if (avail > r.read_offset || at_fin) {
      if (avail > r.read_offset) {
        if (!emit_data(mi, r, stream_id, r.read_offset, avail, at_fin)) {
          r.needs_scan = true;
          return;
        }
      } else {
        event e;
        e.type = event_type::received;
        e.member = members_[mi]->id;
        e.stream_id = stream_id;
        e.offset = avail;
        e.end_of_message = true;
        if (!push_data_event(e)) {
          r.needs_scan = true;
          return;
        }
        ++r.unpolled;
        ++held_events_;
      }
      if (at_fin) r.fin_delivered = true;
      r.read_offset = avail;
    }
    return;
  }
  // A message coming in fragments first: its rest, from the buffer, as it
  // becomes contiguous (behind a loss); nothing after it until it is whole.
  if (r.streaming) {
    if (r.delivered.overlaps(r.stream_at, r.stream_end)) {
      if (!abandon_streaming(mi, r, stream_id)) {
        r.needs_scan = true;
        return;
      }
    } else {
      const uint64_t upto = std::min(r.received.contiguous_end(r.stream_at), r.stream_end);
      if (upto > r.stream_at) {
        if (!emit_data(mi, r, stream_id, r.stream_at, upto, upto == r.stream_end)) {
          r.needs_scan = true;
          return;
        }
        r.stream_at = upto;
        if (upto == r.stream_end) {
          r.streaming = false;
          streaming_member_ = -1;
        }
      }
      if (r.streaming) return;
    }
  }
  // Message mode: walk the known extents in offset order. Fifo stops at the
  // first message not yet complete; unordered goes on past it.
  for (std::size_t i = r.ext_head; i < r.extents.size(); ++i) {
    extent &x = r.extents[i];
    if (x.delivered) continue;
    // Skipped by FORWARD, wholly or in part: a message is delivered whole
    // or not at all, so a partly skipped one is skipped.
    if (r.delivered.overlaps(x.start, x.end)) {
      if (!r.delivered.insert(x.start, x.end, x.start <= r.delivered.contiguous_end(r.released) ? 0 : 1)) {
        r.needs_scan = true;
        return;
      }
      x.delivered = true;
      continue;
    }
    if (!r.unordered && r.delivered.contiguous_end(r.released) < x.start) break;
    if (!r.received.contains(x.start, x.end)) {
      if (r.unordered) continue;
      break;
    }
    if (!emit_data(mi, r, stream_id, x.start, x.end, true)) {
      r.needs_scan = true;
      return;
    }
    x.delivered = true;
  }
  while (r.ext_head < r.extents.size() && r.extents[r.ext_head].delivered) ++r.ext_head;
  if (r.ext_head > 256 && r.ext_head * 2 > r.extents.size()) {
    r.extents.erase(r.extents.begin(), r.extents.begin() + static_cast<long>(r.ext_head));
    r.ext_head = 0;
  }
}

// Skipped by a FORWARD in part (a message is delivered whole or not at
// all): the rest counts as delivered, the receiver drops the fragments.
bool connection::abandon_streaming(std::size_t mi, recv_stream &r, uint64_t stream_id) {
  const uint64_t lo = std::max(r.stream_at, r.released);
  if (!data_events_room(1) ||
      (lo < r.stream_end && !r.delivered.insert(lo, r.stream_end, lo <= r.delivered.contiguous_end(r.released) ? 0 : 1)))
    return false;
  event e;
  e.type = event_type::received;
  e.member = members_[mi]->id;
  e.stream_id = stream_id;
  e.offset = r.stream_at;
  e.end_of_message = true;
  e.abandoned = true;
  push_data_event(e);
  ++r.unpolled;
  ++held_events_;
  r.streaming = false;
  streaming_member_ = -1;
  ++stats_.messages_abandoned;
  return true;
}

void connection::release_delivered(std::size_t mi) {
  member_state &m = *members_[mi];
  for (std::size_t id = 0; id < m.recv.size(); ++id) {
    if (!m.recv[id]) continue;
    recv_stream &r = *m.recv[id];
    if (r.needs_scan) deliver(mi, r, id);
    // Without zero copy, space shown in events not yet polled is kept.
    if (!polls_every_call() && r.unpolled) continue;
    const uint64_t rel = r.delivered.contiguous_end(r.released);
    if (rel > r.released) {
      m.conn_released += rel - r.released;
      r.released = rel;
      r.received.erase_below(rel);
      r.delivered.erase_below(rel);
      r.buf.release_below(rel);
    }
    const uint64_t window = r.buf.window();
    if (r.released + window >= r.advertised + window / 4) {
      r.advertised = r.released + window;
      r.credit_dirty = true;
      m.credit_pending = true;
    }
  }
  const uint64_t cwin = cfg_.connection_window_bytes;
  if (m.conn_released + cwin >= m.conn_advertised + cwin / 4) {
    m.conn_advertised = m.conn_released + cwin;
    m.credit_pending = true;
  }
}

bool connection::append_ack(std::size_t mi, packet_builder &b, time_ns now) {
  member_state &m = *members_[mi];
  if (m.received_pns.empty()) {
    m.ack_pending = 0;  // nothing to acknowledge (all forgotten)
    m.ack_now = false;
    m.ack_deadline = never;
    return false;
  }
  uint64_t ranges[2 * 32];
  std::size_t n = std::min<std::size_t>(m.received_pns.size(), 32);
  for (std::size_t i = 0; i < n; ++i) {
    const auto &r = m.received_pns[m.received_pns.size() - 1 - i];
    ranges[2 * i] = r.lo;
    ranges[2 * i + 1] = r.hi - 1;
  }
  const uint64_t delay_us = now > m.largest_received_ns ? (now - m.largest_received_ns) / 1000 : 0;
  while (n > 0 && !b.append_ack({ranges, 2 * n}, delay_us)) n /= 2;
  if (n == 0) return false;
  m.ack_pending = 0;
  m.ack_now = false;
  m.ack_deadline = never;
  ++stats_.acks_sent;
  return true;
}

bool connection::append_credits(std::size_t mi, packet_builder &b) {
  member_state &m = *members_[mi];
  bool any = false, all = true;
  credit_frame c;
  c.connection = true;
  c.max_offset = m.conn_advertised;
  if (b.append_credit(c))
    any = true;
  else
    all = false;
  for (std::size_t id = 0; id < m.recv.size(); ++id) {
    if (!m.recv[id] || !m.recv[id]->credit_dirty) continue;
    credit_frame s;
    s.stream_id = id;
    s.max_offset = m.recv[id]->advertised;
    if (b.append_credit(s)) {
      m.recv[id]->credit_dirty = false;
      any = true;
    } else {
      all = false;
    }
  }
  if (all) m.credit_pending = false;
  return any;
}

}  // namespace mtp::core
