// SPDX-License-Identifier: BSD-3-Clause
// The receiving half of a connection: packet intake, duplicate detection,
// stream reassembly and delivery (ordering none or fifo), FORWARD skips,
// flow-control credit, and the ACKs we owe each member.
#include <cstring>

#include "connection_internal.h"

namespace mtp::core {

namespace {

bool ack_eliciting(frame_type t) { return t != frame_type::ack && t != frame_type::padding && t != frame_type::close; }

}  // namespace

void connection::on_packet(std::span<const std::byte> packet, time_ns now) {
  begin_call(now);
  if (state_ == state::closed) return;
  packet_header h;
  std::span<const std::byte> frames;
  if (parse_packet(packet, h, frames) != parse_status::ok || h.type != packet_type::data) {
    ++stats_.dropped_parse;
    return;
  }
  std::size_t mi = members_.size();
  for (std::size_t i = 0; i < members_.size(); ++i)
    if (members_[i]->id == h.sender_id) mi = i;
  if (mi == members_.size() || h.connection_id != cfg_.connection_id || !members_[mi]->live) {
    ++stats_.dropped_unknown_sender;
    return;
  }
  member_state &m = *members_[mi];

  const uint64_t pn = h.packet_number;
  if (m.received_pns.contains(pn)) {
    ++stats_.duplicate_packets;
    // Our ACK may have been lost: answer at once if it asked for one.
    frame_reader peek(frames);
    frame pf;
    bool asks = false;
    while (!asks && !peek.done() && peek.next(pf) == parse_status::ok) asks = ack_eliciting(pf.type);
    if (asks) {
      ++m.ack_pending;
      m.ack_now = true;
    }
    return;
  }

  // One pass: frames take effect as they parse. Everything they do is
  // idempotent, so a packet that turns out malformed, or that cannot be
  // absorbed whole, is simply not acknowledged and its sender repairs it.
  bool absorbed = true;
  bool eliciting = false;
  bool ping = false;
  frame_reader rd(frames);
  frame f;
  while (absorbed && !rd.done()) {
    if (rd.next(f) != parse_status::ok) {
      ++stats_.dropped_parse;
      return;
    }
    eliciting |= ack_eliciting(f.type);
    switch (f.type) {
      case frame_type::ack:
        on_ack_frame(mi, f.ack, now);
        break;
      case frame_type::stream:
        on_stream_frame(mi, f.stream, now, absorbed);
        break;
      case frame_type::forward:
        on_forward_frame(mi, f.forward, absorbed);
        break;
      case frame_type::datagram:
        if (events_room(1)) {
          event e;
          e.type = event_type::datagram;
          e.member = m.id;
          e.data = f.datagram;
          push_event(e);
        }
        break;
      case frame_type::credit:
        if (f.credit.connection)
          m.conn_credit = std::max(m.conn_credit, f.credit.max_offset);
        else if (f.credit.stream_id < m.stream_credit.size())
          m.stream_credit[f.credit.stream_id] = std::max(m.stream_credit[f.credit.stream_id], f.credit.max_offset);
        break;
      case frame_type::close: {
        if (members_.size() == 1) {
          event e;
          e.type = event_type::closed;
          e.member = m.id;
          e.error_code = f.close.error_code;
          push_event(e);
          state_ = state::closed;
        } else {
          member_failed(mi, 2, now);
        }
        return;
      }
      case frame_type::ping:
        ping = true;  // the sender wants its ACK now (protocol.md 6.2)
        break;
      default:
        break;  // heartbeat, padding, group_ack: nothing beyond the ACK
    }
    if (state_ == state::closed) return;
  }
  if (!absorbed) {
    ++stats_.dropped_not_absorbed;
    return;
  }
  if (m.received_pns.full() && !m.received_pns.contains(pn)) m.received_pns.drop_lowest();
  m.received_pns.insert(pn, pn + 1);
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

connection::recv_stream *connection::recv_stream_for(std::size_t mi, uint64_t id) {
  member_state &m = *members_[mi];
  if (id >= m.recv.size()) return nullptr;
  if (!m.recv[id]) {
    // Once per stream, at its first frame: the buffer is the window.
    m.recv[id] = std::make_unique<recv_stream>(cfg_.stream_buffer_bytes, cfg_.max_messages);
    m.recv[id]->advertised = cfg_.stream_buffer_bytes;
  }
  return m.recv[id].get();
}

void connection::on_stream_frame(std::size_t mi, const stream_frame &f, time_ns, bool &absorbed) {
  member_state &m = *members_[mi];
  recv_stream *rp = recv_stream_for(mi, f.stream_id);
  if (rp == nullptr) {
    absorbed = false;
    ++stats_.flow_control_violations;
    return;
  }
  recv_stream &r = *rp;
  if (!r.mode_known) {
    r.mode = f.message ? stream_mode::message : stream_mode::bytes;
    r.unordered = f.unordered;
    r.mode_known = true;
  }
  const uint64_t off = f.offset, end = f.offset + f.data.size();
  if (end > r.advertised) {
    ++stats_.flow_control_violations;
    absorbed = false;
    return;
  }
  if (end > r.highest_end) {
    const uint64_t grow = end - r.highest_end;
    if (m.conn_received_end + grow > m.conn_advertised) {
      ++stats_.flow_control_violations;
      absorbed = false;
      return;
    }
    m.conn_received_end += grow;
    r.highest_end = end;
  }
  if (f.fin) {
    r.fin_known = true;
    r.final_size = end;
  }
  if (end <= r.released || r.received.contains(off, end)) {
    if (f.fin) deliver(mi, r, f.stream_id);
    return;  // a duplicate: nothing new
  }
  // Fast path: a whole message arriving in order on a fifo stream with
  // nothing pending before it goes straight to delivery.
  if (f.message && !r.unordered && off == f.msg_start && end == f.msg_start + f.msg_length &&
      r.ext_head == r.extents.size() && off >= r.released && r.delivered.contiguous_end(r.released) == off &&
      events_room(2)) {
    // Zero copy: the event points into the packet, which the caller keeps
    // until its next call (see on_packet); the ring is not touched.
    if (!r.received.insert(off, end) || !r.delivered.insert(off, end)) {
      absorbed = false;
      return;
    }
    event e;
    e.type = event_type::received;
    e.member = m.id;
    e.stream_id = f.stream_id;
    e.offset = off;
    e.data = f.data;
    e.end_of_message = true;
    push_event(e);
    ++stats_.messages_delivered;
    return;
  }
  if (f.message) {
    const uint64_t ms = f.msg_start, me = f.msg_start + f.msg_length;
    if (ms >= r.released && !r.delivered.contains(ms, me)) {
      auto first = r.extents.begin() + static_cast<long>(r.ext_head);
      auto it = std::lower_bound(first, r.extents.end(), ms, [](const extent &e, uint64_t v) { return e.start < v; });
      if (it == r.extents.end() || it->start != ms) {
        if (r.extents.size() - r.ext_head >= r.ext_cap) {
          absorbed = false;
          return;
        }
        if (r.extents.size() == r.extents.capacity()) {
          // Reclaim the delivered prefix rather than let the vector grow.
          const auto dead = static_cast<long>(r.ext_head);
          const auto pos = it - r.extents.begin() - dead;
          r.extents.erase(r.extents.begin(), r.extents.begin() + dead);
          r.ext_head = 0;
          it = r.extents.begin() + pos;
        }
        r.extents.insert(it, extent{ms, me, false});
      }
    }
  }
  // Copy what lies above the released mark into the ring.
  const uint64_t lo = std::max(off, r.released);
  if (end > lo) {
    const std::size_t len = static_cast<std::size_t>(end - lo);
    const std::byte *src = f.data.data() + (lo - off);
    const std::size_t pos = lo & r.mask();
    const std::size_t first = std::min(len, r.buf.size() - pos);
    std::memcpy(r.buf.data() + pos, src, first);
    if (first < len) std::memcpy(r.buf.data(), src + first, len - first);
  }
  if (!r.received.insert(off, end)) {
    absorbed = false;
    return;
  }
  deliver(mi, r, f.stream_id);
}

void connection::on_forward_frame(std::size_t mi, const forward_frame &f, bool &absorbed) {
  member_state &m = *members_[mi];
  recv_stream *rp = recv_stream_for(mi, f.stream_id);
  if (rp == nullptr) {
    absorbed = false;
    return;
  }
  recv_stream &r = *rp;
  const uint64_t end = f.offset + f.length;
  if (end <= r.released) return;
  const uint64_t lo = std::max(f.offset, r.released);
  // Skipped bytes count as received and delivered; they take no buffer, so
  // no credit is checked for them.
  if (!r.received.insert(lo, end) || !r.delivered.insert(lo, end)) {
    absorbed = false;
    return;
  }
  if (end > r.highest_end) {
    m.conn_received_end += end - r.highest_end;
    r.highest_end = end;
  }
  deliver(mi, r, f.stream_id);
}

void connection::emit_data(std::size_t mi, recv_stream &r, uint64_t stream_id, uint64_t start, uint64_t end,
                           bool eom) {
  const std::size_t len = static_cast<std::size_t>(end - start);
  const std::size_t pos = start & r.mask();
  const std::size_t first = std::min(len, r.buf.size() - pos);
  event e;
  e.type = event_type::received;
  e.member = members_[mi]->id;
  e.stream_id = stream_id;
  e.offset = start;
  e.data = {r.buf.data() + pos, first};
  e.end_of_message = eom && first == len;
  push_event(e);
  if (first < len) {
    e.offset = start + first;
    e.data = {r.buf.data(), len - first};
    e.end_of_message = eom;
    push_event(e);
  }
  r.delivered.insert(start, end);
  if (eom && r.mode == stream_mode::message) ++stats_.messages_delivered;
}

void connection::deliver(std::size_t mi, recv_stream &r, uint64_t stream_id) {
  r.needs_scan = false;
  if (r.mode == stream_mode::bytes) {
    r.read_offset = std::max(r.read_offset, r.delivered.contiguous_end(r.read_offset));
    const uint64_t avail = r.received.contiguous_end(r.read_offset);
    const bool at_fin = r.fin_known && avail == r.final_size && !r.fin_delivered;
    if (avail > r.read_offset || at_fin) {
      if (!events_room(2)) {
        r.needs_scan = true;
        return;
      }
      if (avail > r.read_offset) {
        emit_data(mi, r, stream_id, r.read_offset, avail, at_fin);
      } else {
        event e;
        e.type = event_type::received;
        e.member = members_[mi]->id;
        e.stream_id = stream_id;
        e.offset = avail;
        e.end_of_message = true;
        push_event(e);
      }
      if (at_fin) r.fin_delivered = true;
      r.read_offset = avail;
    }
    return;
  }
  // Message mode: walk the known extents in offset order. Fifo stops at the
  // first message not yet complete; unordered goes on past it.
  for (std::size_t i = r.ext_head; i < r.extents.size(); ++i) {
    extent &x = r.extents[i];
    if (x.delivered) continue;
    if (r.delivered.contains(x.start, x.end)) {  // skipped by FORWARD
      x.delivered = true;
      continue;
    }
    if (!r.unordered && r.delivered.contiguous_end(r.released) < x.start) break;
    if (!r.received.contains(x.start, x.end)) {
      if (r.unordered) continue;
      break;
    }
    if (!events_room(2)) {
      r.needs_scan = true;
      return;
    }
    emit_data(mi, r, stream_id, x.start, x.end, true);
    x.delivered = true;
  }
  while (r.ext_head < r.extents.size() && r.extents[r.ext_head].delivered) ++r.ext_head;
  if (r.ext_head > 256 && r.ext_head * 2 > r.extents.size()) {
    r.extents.erase(r.extents.begin(), r.extents.begin() + static_cast<long>(r.ext_head));
    r.ext_head = 0;
  }
}

void connection::release_delivered(std::size_t mi) {
  member_state &m = *members_[mi];
  for (std::size_t id = 0; id < m.recv.size(); ++id) {
    if (!m.recv[id]) continue;
    recv_stream &r = *m.recv[id];
    if (r.needs_scan) deliver(mi, r, id);
    const uint64_t rel = r.delivered.contiguous_end(r.released);
    if (rel > r.released) {
      m.conn_released += rel - r.released;
      r.released = rel;
      r.received.erase_below(rel);
      r.delivered.erase_below(rel);
    }
    const uint64_t window = r.buf.size();
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
  if (m.received_pns.empty()) return false;
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
