// SPDX-License-Identifier: BSD-3-Clause
// The sending half of a connection: packetization of new data for the
// group, per-member packets (ACKs, credits, FORWARDs, repairs, probes,
// heartbeats, CLOSE), flow and congestion limits, pacing, and the
// anti-amplification limit toward an unvalidated peer.
#include <cstring>

#include "connection_internal.h"

namespace mtp::core {

connection::message_record *connection::find_message(send_stream &s, uint64_t seq) {
  if (seq < s.msg_head || seq >= s.msg_tail) return nullptr;
  return &s.msgs.at(seq);
}

// ---- flow control ----
//
// The receiver counts, per stream, the highest offset it has seen (data or
// FORWARD) against the stream credit, and their sum against the connection
// credit (6.5). The sender knows an upper bound of both per member:
// stream_member::sent_to and member_state::conn_sent_to. A frame ending at
// `end` may go to a member when `end` is within that member's stream
// credit and the growth of sent_to it causes fits its connection credit;
// a repair below sent_to needs no new credit at all.

namespace {
// The t-th largest of v (every member counts: the smallest).
uint64_t counted_limit(const uint64_t *v, std::size_t n, uint32_t threshold) {
  if (n == 0) return 0;
  if (threshold == 0 || threshold >= n) return *std::min_element(v, v + n);
  uint64_t sorted[connection::max_members];
  std::copy(v, v + n, sorted);
  std::sort(sorted, sorted + n, [](uint64_t a, uint64_t b) { return a > b; });
  return sorted[threshold - 1];
}
}  // namespace

bool connection::member_may_carry(std::size_t mi, uint64_t stream, uint64_t end, uint64_t *conn_growth) const {
  const member_state &m = *members_[mi];
  if (end > m.stream_credit[stream]) return false;
  const stream_member &sm = send_streams_[stream]->per_member[mi];
  const uint64_t growth = end > sm.sent_to ? end - sm.sent_to : 0;
  if (conn_growth != nullptr) *conn_growth = growth;
  return m.conn_sent_to + growth <= m.conn_credit;
}

void connection::note_sent_to(std::size_t mi, uint64_t stream, uint64_t end) {
  stream_member &sm = send_streams_[stream]->per_member[mi];
  if (end <= sm.sent_to) return;
  members_[mi]->conn_sent_to += end - sm.sent_to;
  sm.sent_to = end;
}

uint64_t connection::stream_send_limit(uint64_t id) const {
  uint64_t v[max_members];
  std::size_t n = 0;
  for (const auto &m : members_)
    if (m->live) v[n++] = m->stream_credit[id];
  return counted_limit(v, n, cfg_.threshold);
}

uint64_t connection::connection_send_room() const {
  uint64_t v[max_members];
  std::size_t n = 0;
  for (const auto &m : members_)
    if (m->live) v[n++] = m->conn_credit > m->conn_sent_to ? m->conn_credit - m->conn_sent_to : 0;
  return counted_limit(v, n, cfg_.threshold);
}

// ---- congestion and pacing for the group ----

bool connection::group_may_send(std::size_t bytes) const {
  uint32_t live = 0, room = 0;
  for (const auto &m : members_) {
    if (!m->live) continue;
    ++live;
    room += m->bytes_in_flight + bytes <= m->cc->cwnd();
  }
  // All live members must have room, or t of them in a threshold group: the
  // group runs at the pace of the slowest member that counts.
  const uint32_t need = cfg_.threshold ? std::min(cfg_.threshold, live) : live;
  return live > 0 && room >= need;
}

uint64_t connection::pacing_rate_bytes_per_s() const {
  uint64_t rates[max_members];
  std::size_t n = 0;
  for (const auto &m : members_)
    if (m->live) {
      const time_ns srtt = std::max<time_ns>(m->rtt.smoothed(), 1000);
      rates[n++] = m->cc->cwnd() * 1'000'000'000ull / srtt;
    }
  if (n == 0) return 0;
  const uint64_t r = counted_limit(rates, n, cfg_.threshold);
  return r + r / 4;  // 1.25 x, as RFC 9002 7.7 suggests
}

bool connection::pacer_allows(std::size_t bytes, time_ns now) {
  if (!cfg_.pacing) return true;
  const double burst = 10.0 * cfg_.max_packet_bytes;
  if (now > pacer_last_) {
    pacer_tokens_ += static_cast<double>(pacing_rate_bytes_per_s()) * static_cast<double>(now - pacer_last_) / 1e9;
    pacer_tokens_ = std::min(pacer_tokens_, burst);
    pacer_last_ = now;
  }
  return pacer_tokens_ >= static_cast<double>(bytes);
}

void connection::pacer_on_sent(std::size_t bytes, time_ns) {
  if (cfg_.pacing) pacer_tokens_ -= static_cast<double>(bytes);
}

// ---- what is waiting ----

bool connection::new_data_pending(time_ns now, time_ns *wait_until) const {
  uint64_t pending = 0;
  time_ns oldest = never;
  bool low_latency = flush_requested_;
  const uint64_t conn_room = connection_send_room();
  for (const auto &sp : send_streams_) {
    if (!sp) continue;
    const send_stream &s = *sp;
    // Credit is only looked up for streams with unsent bytes.
    const uint64_t lim = s.write_end > s.sent_end ? std::min(s.write_end, stream_send_limit(s.id)) : s.write_end;
    if (lim > s.sent_end) {
      pending += lim - s.sent_end;
      oldest = std::min(oldest, s.oldest_unsent_ns);
    } else if (s.fin_requested && !s.fin_sent && s.sent_end == s.write_end) {
      low_latency = true;
      pending += 1;
    }
  }
  pending = std::min(pending, conn_room + 1);
  pending += (dgram_tail_ - dgram_head_) * 64;
  if (dgram_tail_ != dgram_head_) low_latency = true;
  if (pending == 0) return false;
  if (low_latency || pending + header_size + trailer_size(cfg_.packet_protection) >= cfg_.max_packet_bytes) {
    *wait_until = 0;
    return true;
  }
  const time_ns deadline = oldest == never ? 0 : oldest + cfg_.coalesce_delay_ns;
  if (now >= deadline) {
    *wait_until = 0;
    return true;
  }
  *wait_until = deadline;
  return false;
}

// ---- packet numbers and tracking ----

// Room to track one more ack-eliciting packet (and one skipped number):
// the sent table, and every live member's repair ring as large as it, so a
// loss can always be queued (a tracked packet is in a ring at most once),
// and the frame ring for one packet's frames. New data also leaves room
// for a repair, so whatever the memory budget, a repair can always be
// built and the packets it repairs can then retire.
bool connection::tracking_room(bool new_data) {
  const uint64_t spare_pns = new_data ? 4 : 2;
  const uint64_t spare_frames = (new_data ? 2 : 1) * max_frames_per_packet;
  if (next_pn_ + spare_pns - sent_head_pn_ > sent_.capacity()) retire_packets();
  uint64_t need = next_pn_ + spare_pns - sent_head_pn_;
  (void)sent_.ensure(need, sent_head_pn_, next_pn_);
  // Still short: the oldest packets may be held only by the repairs owed
  // from them (to a member without credit, or behind a long repair
  // queue). A repair needs a slot of its own, so waiting for it could
  // wait forever: those repairs are kept by range instead.
  while (sent_.capacity() < need && unpin_head()) {
    retire_packets();
    need = next_pn_ + spare_pns - sent_head_pn_;
  }
  if (sent_.capacity() < need) return false;
  for (auto &m : members_) {
    if (!m->live) continue;
    (void)m->lost.ensure(std::min(need + m->lost_tail - m->lost_head, sent_.capacity()), m->lost_head, m->lost_tail);
    if (m->lost.capacity() < need) return false;
  }
  const uint64_t frames_need = frame_tail_ - frame_head_ + spare_frames;
  (void)frames_.ensure(frames_need, frame_head_, frame_tail_);
  return frames_.capacity() >= frames_need;
}

connection::sent_packet *connection::record_packet(uint64_t pn, std::size_t bytes, uint64_t mask, bool ack_eliciting,
                                                   time_ns now) {
  if (!ack_eliciting) return nullptr;  // ACK-only packets need no tracking
  sent_packet &p = sent_.at(pn);
  p = sent_packet{};
  p.pn = pn;
  p.sent_ns = now;
  p.members = mask;
  p.bytes = static_cast<uint32_t>(bytes);
  p.ack_eliciting = true;
  return &p;
}

packet_header connection::next_header(uint64_t mask) const {
  packet_header h;
  h.sender_id = cfg_.local_id;
  h.connection_id = cfg_.connection_id;
  h.packet_number = next_pn_;
  // The client's first flight to a member that has not answered yet opens
  // the connection there (5.1).
  if (cfg_.side == role::client)
    for (std::size_t i = 0; i < members_.size(); ++i)
      if ((mask & member_bit(i)) && !members_[i]->accepted) h.flags |= flag_opening;
  return h;
}

// Toward a member that has not proved its address, at most three times
// the bytes it sent us (3.6): the packet is built into less room, or not
// at all.
std::span<std::byte> connection::amplification_limit(uint64_t mask, std::span<std::byte> out) {
  std::size_t room = out.size();
  for (std::size_t i = 0; i < members_.size(); ++i) {
    if (!(mask & member_bit(i)) || members_[i]->validated) continue;
    const member_state &m = *members_[i];
    const uint64_t allowed = 3 * m.rx_bytes;
    room = std::min<std::size_t>(room, allowed > m.tx_bytes ? allowed - m.tx_bytes : 0);
  }
  if (room < header_size + trailer_size(cfg_.packet_protection) + 8) {
    ++stats_.sends_blocked_by_amplification;
    return {};
  }
  return out.first(room);
}

// After each packet sent, the next number, now and then one more: packet
// numbers are skipped at random (3.2), and a peer that acknowledges one it
// never received is lying (an optimistic ACK).
void connection::on_sent(uint64_t mask, std::size_t bytes) {
  for (std::size_t i = 0; i < members_.size(); ++i)
    if (mask & member_bit(i)) {
      members_[i]->tx_bytes += bytes;
      members_[i]->last_tx_ns = last_now_;
    }
  ++next_pn_;
  if (--pn_until_skip_ == 0) {
    skipped_pns_[skipped_count_++ % skipped_kept] = next_pn_;
    ++next_pn_;
    ++stats_.packet_numbers_skipped;
    pn_until_skip_ = 1 + rng_.below(256);
  }
  ++stats_.packets_sent;
  stats_.bytes_sent += bytes;
}

// ---- per-member packets ----

void connection::resend_credits(std::size_t mi) {
  // The lost packet held the latest credits; which streams it named is not
  // kept, so all are sent again (credit only ever grows).
  member_state &m = *members_[mi];
  m.credit_pending = true;
  for (auto &r : m.recv)
    if (r) r->credit_dirty = true;
}

// @param done_end  repairs from ranges (repair_from_ranges): the frame
//   may be cut to the packet's room and the member's credit; set to the
//   end of what is settled now (built, or needing nothing)
connection::repair_result connection::repair_frame(std::size_t mi, const frame_record &f, packet_builder &b, time_ns now,
                              uint64_t *done_end) {
  const uint64_t hi = f.offset + f.len;
  if (done_end != nullptr) *done_end = hi;
  if (f.kind == frame_record::credit) {
    resend_credits(mi);
    return repair_result::done;
  }
  if (f.kind == frame_record::group_key) {
    // Only the current epoch's secret is worth sending again.
    if (group_key_set_ && f.offset == group_epoch_ && !members_[mi]->key_acked) members_[mi]->key_pending = true;
    return repair_result::done;
  }
  if (f.stream >= send_streams_.size() || !send_streams_[f.stream]) return repair_result::done;
  send_stream &s = *send_streams_[f.stream];
  stream_member &sm = s.per_member[mi];
  if (f.kind == frame_record::forward) {
    // A lost FORWARD is owed again, unless the member acknowledged it since.
    if (sm.acked.contains(f.offset, hi)) return repair_result::done;
    if (!sm.fwd_owed.insert(f.offset, hi)) return repair_result::full;  // wait: retried from the repair queue
    members_[mi]->fwd_pending = true;
    return repair_result::done;
  }
  const uint64_t lo = std::max(f.offset, s.base);
  // A FIN is repaired until acknowledged, with whatever data is left.
  const bool fin_owed = f.fin && !sm.fin_acked;
  if (!fin_owed && (lo >= hi || sm.acked.contains(lo, hi) || sm.skip.overlaps(lo, hi))) return repair_result::done;
  stream_frame sf;
  sf.stream_id = f.stream;
  if (s.mode == stream_mode::message) {
    message_record *r = find_message(s, f.msg_seq);
    if (r == nullptr || r->expired) return repair_result::done;
    if (r->rel == reliability::unreliable) {
      // Never repaired: the member is told to skip the whole message.
      give_up(s, mi, *r);
      return repair_result::done;
    }
    if (r->rel == reliability::partial && !retx_counted(f.stream, f.msg_seq)) {
      const uint8_t count = s.retx.at(f.msg_seq * members_.size() + mi);
      if (count >= r->max_retx || (r->deadline_ns != never && now >= r->deadline_ns)) {
        expire_message(s, f.msg_seq, now);
        return repair_result::done;
      }
    }
    sf.message = true;
    sf.unordered = s.ord == ordering::none;
    sf.msg_start = r->start;
    sf.msg_length = r->end - r->start;
  }
  sf.offset = std::min(lo, hi);
  sf.fin = f.fin && hi == s.write_end;
  std::size_t len = static_cast<std::size_t>(hi - sf.offset);
  if (done_end != nullptr && len > 0) {
    // From ranges, what fits: the member's credit, then the packet.
    const member_state &m = *members_[mi];
    const uint64_t conn_room = m.conn_credit > m.conn_sent_to ? m.conn_credit - m.conn_sent_to : 0;
    const uint64_t max_end = std::min(m.stream_credit[f.stream], std::max(sm.sent_to, sm.sent_to + conn_room));
    if (max_end <= sf.offset) return repair_result::no_credit;
    len = static_cast<std::size_t>(std::min<uint64_t>(len, max_end - sf.offset));
    const std::size_t room = b.stream_room(sf);
    if (room == 0) return repair_result::full;
    len = std::min(len, room);
    if (sf.offset + len < hi) sf.fin = false;
  }
  const uint64_t end = sf.offset + len;
  // Never past the member's credit: wait for its CREDIT (or a skip).
  if (!member_may_carry(mi, f.stream, end, nullptr)) return repair_result::no_credit;
  if (b.stream_room(sf) < len || b.frames() >= max_frames_per_packet) return repair_result::full;
  const std::span<std::byte> dst = b.append_stream_header(sf, len);
  if (dst.size() != len || b.size() == 0) return repair_result::full;
  read_stream(s, sf.offset, dst);
  if (s.mode == stream_mode::message) {
    message_record *r = find_message(s, f.msg_seq);
    if (r && r->rel == reliability::partial && !retx_counted(f.stream, f.msg_seq)) {
      ++s.retx.at(f.msg_seq * members_.size() + mi);
      note_retx_counted(f.stream, f.msg_seq);
    }
  }
  frame_record nf = f;
  nf.offset = sf.offset;
  nf.len = static_cast<uint32_t>(len);
  nf.fin = sf.fin;
  frames_.at(frame_tail_++) = nf;
  b.count_frame();
  note_sent_to(mi, f.stream, end);
  if (done_end != nullptr) *done_end = end;
  ++stats_.retransmitted_frames;
  stats_.stream_bytes_retransmitted += len;
  return repair_result::done;
}

// Partial messages: one retransmission per message per repair packet,
// however many of its segments the packet carries.
bool connection::retx_counted(uint64_t stream, uint64_t seq) const {
  if (counted_pn_ != next_pn_) return false;
  for (std::size_t i = 0; i < counted_n_; ++i)
    if (counted_[i].stream == stream && counted_[i].seq == seq) return true;
  return false;
}

void connection::note_retx_counted(uint64_t stream, uint64_t seq) {
  if (counted_pn_ != next_pn_) {
    counted_pn_ = next_pn_;
    counted_n_ = 0;
  }
  if (counted_n_ < max_frames_per_packet) counted_[counted_n_++] = {stream, seq};
}

// FORWARDs owed to a member, within its credit.
// @return a frame was added
bool connection::add_forwards(std::size_t mi, packet_builder &b) {
  member_state &m = *members_[mi];
  if (!m.fwd_pending) return false;
  bool added = false, owed = false;
  for (auto &sp : send_streams_) {
    if (!sp) continue;
    send_stream &s = *sp;
    stream_member &sm = s.per_member[mi];
    while (!sm.fwd_owed.empty()) {
      const range_set::range r = sm.fwd_owed.front();
      if (sm.acked.contains(r.lo, r.hi)) {
        sm.fwd_owed.erase_below(r.hi);
        continue;
      }
      // Only once every byte of it went out (so no STREAM frame for them
      // follows the FORWARD); cut at the stream credit and connection room.
      if (r.hi > s.sent_end) {
        owed = true;
        break;
      }
      uint64_t end = std::min({r.hi, m.stream_credit[s.id], r.lo + (uint64_t{1} << 30)});
      if (end > sm.sent_to) {
        const uint64_t room = m.conn_credit > m.conn_sent_to ? m.conn_credit - m.conn_sent_to : 0;
        end = std::min(end, sm.sent_to + room);
      }
      if (end <= r.lo || b.frames() >= max_frames_per_packet || !b.append_forward({s.id, r.lo, end - r.lo})) {
        owed = true;
        break;
      }
      frame_record f;
      f.kind = frame_record::forward;
      f.stream = static_cast<uint16_t>(s.id);
      f.offset = r.lo;
      f.len = static_cast<uint32_t>(end - r.lo);
      frames_.at(frame_tail_++) = f;
      b.count_frame();
      note_sent_to(mi, s.id, end);
      sm.fwd_owed.erase_below(end);
      ++stats_.forwards_sent;
      added = true;
    }
  }
  m.fwd_pending = owed;
  return added;
}

transmit connection::build_member_packet(std::size_t mi, std::span<std::byte> out, time_ns now) {
  member_state &m = *members_[mi];
  const bool window_room = m.bytes_in_flight + cfg_.max_packet_bytes <= m.cc->cwnd();
  const bool want_ack = m.ack_pending && (m.ack_now || now >= m.ack_deadline);
  const bool want_repair = m.repairs_queued() && window_room;
  if (!want_ack && !m.credit_pending && !want_repair && !m.fwd_pending && !m.probe_pending && !m.heartbeat_pending &&
      !m.key_pending)
    return {};
  const bool ring_room = tracking_room(false);
  if (!ring_room && !want_ack) return {};
  out = amplification_limit(member_bit(mi), out);
  if (out.empty()) return {};

  const packet_header h = next_header(member_bit(mi));
  packet_builder b(out, h, cfg_.packet_protection);
  const uint64_t frame_first = frame_tail_;
  bool eliciting = false;
  auto add_credits = [&] {
    if (!m.credit_pending || b.frames() >= max_frames_per_packet || !append_credits(mi, b)) return;
    frame_record cf;
    cf.kind = frame_record::credit;
    frames_.at(frame_tail_++) = cf;
    b.count_frame();
    eliciting = true;
  };
  if (want_ack || (m.ack_pending && ring_room)) append_ack(mi, b, now);
  if (ring_room) {
    // The group key first: the member opens nothing of the group without it.
    eliciting |= append_group_key(mi, b);
    add_credits();
    eliciting |= add_forwards(mi, b);
    // Repairs stay within the window; a probe without window room is a
    // PING (below), whose ACK shows what was lost: bytes in flight never
    // exceed the window by more than one packet.
    if (window_room) {
      bool full = false;
      while (!full && m.lost_queued()) {
        const uint64_t pn = m.lost.at(m.lost_head);
        sent_packet &p = sent_.at(pn);
        if (p.pn == pn && (p.repair & member_bit(mi))) {
          for (; m.lost_cursor < p.frame_count; ++m.lost_cursor) {
            const std::size_t before = b.size();
            const repair_result r = repair_frame(mi, frames_.at(p.frame_first + m.lost_cursor), b, now);
            if (r == repair_result::no_credit && repairs_to_ranges(mi, p, m.lost_cursor)) {
              // It waits for credit by range, not at the head of the
              // queue: repairs behind it (of holes the member needs
              // before it can grant more) go on.
              break;
            }
            if (r != repair_result::done) {
              full = true;
              break;
            }
            eliciting |= b.size() != before;
          }
          if (full) break;
          p.repair &= ~member_bit(mi);
        }
        ++m.lost_head;
        m.lost_cursor = 0;
      }
      if (!full && m.resend_pending) (void)repair_from_ranges(mi, b, now, eliciting);
      eliciting |= add_forwards(mi, b);  // repairs may have turned into FORWARDs
      add_credits();                     // or into credits to resend
    }
    if (m.probe_pending && !eliciting && b.append_ping()) eliciting = true;
    if (m.heartbeat_pending && b.append_heartbeat(m.heartbeat_seq)) {
      ++m.heartbeat_seq;
      eliciting = true;
    }
    if (eliciting) {
      m.probe_pending = false;
      m.heartbeat_pending = false;
    }
  }
  if (b.empty()) {
    frame_tail_ = frame_first;
    return {};
  }
  const std::size_t len = b.finish();
  if (sent_packet *p = record_packet(h.packet_number, len, member_bit(mi), eliciting, now)) {
    p->frame_first = frame_first;
    p->frame_count = static_cast<uint32_t>(frame_tail_ - frame_first);
    m.bytes_in_flight += len;
    m.last_ack_eliciting_ns = now;
  } else {
    frame_tail_ = frame_first;
  }
  on_sent(member_bit(mi), len);
  return {len, member_bit(mi)};
}

bool connection::append_group_key(std::size_t mi, packet_builder &b) {
  member_state &m = *members_[mi];
  if (!m.key_pending || b.frames() >= max_frames_per_packet ||
      !b.append_group_key(group_epoch_, {group_secret_, group_secret_size}))
    return false;
  frame_record f;
  f.kind = frame_record::group_key;
  f.offset = group_epoch_;
  frames_.at(frame_tail_++) = f;
  b.count_frame();
  m.key_pending = false;
  ++stats_.group_keys_sent;
  return true;
}

transmit connection::build_close_packet(std::size_t mi, std::span<std::byte> out) {
  member_state &m = *members_[mi];
  m.close_owed = false;
  out = amplification_limit(member_bit(mi), out);
  if (out.empty()) return {};
  packet_builder b(out, next_header(member_bit(mi)), cfg_.packet_protection);
  // The reason is cut to what fits (an amplification-limited reply is short).
  const std::size_t room = b.room() > 12 ? b.room() - 12 : 0;
  const std::string_view reason = std::string_view(close_reason_).substr(0, room);
  if (!b.append_close(static_cast<uint64_t>(m.close_code), reason)) return {};
  sent_close_ = true;
  ++stats_.closes_sent;
  const std::size_t len = b.finish();
  on_sent(member_bit(mi), len);
  return {len, member_bit(mi)};
}

// ---- new data for the whole group ----

void connection::advance_over_expired(send_stream &s) {
  // Messages given up before (all of) their bytes went out are never sent:
  // the members are told to skip them instead.
  while (s.msg_send < s.msg_tail && s.msgs.at(s.msg_send).expired) {
    s.sent_end = std::max(s.sent_end, s.msgs.at(s.msg_send).end);
    ++s.msg_send;
  }
  if (s.sent_end >= s.write_end) s.oldest_unsent_ns = never;
}

transmit connection::build_group_packet(std::span<std::byte> out, time_ns now) {
  time_ns wait = never;
  if (!new_data_pending(now, &wait)) return {};
  // Blocked on tracking room (memory) or on the amplification limit, it
  // waits for an ACK or a packet, not for a timer (next_expiry).
  send_blocked_ = true;
  if (!tracking_room(true)) return {};
  if (!group_may_send(cfg_.max_packet_bytes)) return {};
  uint64_t live_mask = 0;
  for (std::size_t i = 0; i < members_.size(); ++i)
    if (members_[i]->live) live_mask |= member_bit(i);
  out = amplification_limit(live_mask, out);
  if (out.empty()) return {};
  send_blocked_ = false;
  if (!pacer_allows(cfg_.max_packet_bytes, now)) return {};

  const packet_header h = next_header(live_mask);
  packet_builder b(out, h, cfg_.packet_protection);
  const uint64_t frame_first = frame_tail_;
  // With this packet a member's window is within two packets of full:
  // ask for the ACK now (protocol.md 6.2); the data fills the rest.
  bool asked_ack = false;
  if (cfg_.ack_every_packets > 2) {
    for (std::size_t i = 0; i < members_.size() && !asked_ack; ++i) {
      const member_state &m = *members_[i];
      asked_ack = m.live && m.bytes_in_flight + 3 * std::size_t{cfg_.max_packet_bytes} > m.cc->cwnd();
    }
    if (asked_ack) b.append_ping();
  }
  const std::size_t before_data = b.size();

  while (dgram_head_ < dgram_tail_) {
    const queued_datagram &d = dgrams_.at(dgram_head_);
    const std::size_t before = b.size();
    const std::span<std::byte> dst = b.append_datagram_header(d.len);
    if (b.size() == before) break;
    const std::byte *src = d.lent ? d.data : &dgram_bytes_.at(dgram_head_ * dgram_stride_);
    std::memcpy(dst.data(), src, d.len);
    datagrams_gone(dgram_head_ + 1);
  }

  uint64_t conn_room = connection_send_room();
  const std::size_t n_streams = send_streams_.size();
  bool full = false;
  for (std::size_t k = 0; k < n_streams && !full; ++k) {
    const std::size_t id = (next_stream_rr_ + k) % n_streams;
    if (!send_streams_[id]) continue;
    send_stream &s = *send_streams_[id];
    advance_over_expired(s);
    if (s.write_end <= s.sent_end && !(s.fin_requested && !s.fin_sent)) continue;  // nothing to send here
    const uint64_t limit = std::min(s.write_end, stream_send_limit(id));
    while (!full) {
      advance_over_expired(s);
      stream_frame sf;
      sf.stream_id = id;
      sf.offset = s.sent_end;
      uint64_t end = limit;
      uint64_t seq = 0;
      if (s.mode == stream_mode::message) {
        if (s.msg_send >= s.msg_tail) break;
        seq = s.msg_send;
        const message_record &r = s.msgs.at(seq);
        sf.message = true;
        sf.unordered = s.ord == ordering::none;
        sf.msg_start = r.start;
        sf.msg_length = r.end - r.start;
        end = std::min(end, r.end);
      } else if (s.sent_end >= limit) {
        if (s.fin_requested && !s.fin_sent && s.sent_end == s.write_end && b.frames() < max_frames_per_packet) {
          sf.fin = true;
          const std::size_t before = b.size();
          (void)b.append_stream_header(sf, 0);
          if (b.size() == before) break;
          s.fin_sent = true;
          frame_record f;
          f.kind = frame_record::stream_data;
          f.stream = static_cast<uint16_t>(id);
          f.offset = s.sent_end;
          f.fin = true;
          frames_.at(frame_tail_++) = f;
          b.count_frame();
        }
        break;
      }
      if (end <= s.sent_end) break;  // flow control
      uint64_t len = std::min<uint64_t>(end - s.sent_end, conn_room);
      if (len == 0) break;
      const std::size_t room = b.stream_room(sf);
      if (room == 0 || b.frames() >= max_frames_per_packet) {
        full = true;
        break;
      }
      // A message segment shorter than its whole is fine, but avoid slivers:
      // a tiny tail of a packet is better left to the next one.
      if (len > room) {
        if (room < 64 && s.mode == stream_mode::message) {
          full = true;
          break;
        }
        len = room;
        full = true;
      }
      sf.fin = s.mode == stream_mode::bytes && s.fin_requested && s.sent_end + len == s.write_end;
      const std::size_t before = b.size();
      const std::span<std::byte> dst = b.append_stream_header(sf, static_cast<std::size_t>(len));
      if (b.size() == before) {
        full = true;
        break;
      }
      read_stream(s, s.sent_end, dst);
      if (sf.fin) s.fin_sent = true;
      frame_record f;
      f.kind = frame_record::stream_data;
      f.stream = static_cast<uint16_t>(id);
      f.offset = s.sent_end;
      f.len = static_cast<uint32_t>(len);
      f.msg_seq = seq;
      f.fin = sf.fin;
      frames_.at(frame_tail_++) = f;
      b.count_frame();
      s.sent_end += len;
      conn_bytes_sent_ += len;
      conn_room -= len;
      stats_.stream_bytes_sent += len;
      while (s.msg_send < s.msg_tail && s.msgs.at(s.msg_send).end <= s.sent_end) ++s.msg_send;
    }
    s.oldest_unsent_ns = s.sent_end < s.write_end ? now : never;
    if (full) next_stream_rr_ = id;
  }
  if (!full) next_stream_rr_ = (next_stream_rr_ + 1) % n_streams;
  if (b.size() == before_data) {  // no data fitted: no packet (not a lone PING)
    frame_tail_ = frame_first;
    return {};
  }
  // With one live member this copy goes to it alone, so its pending ACK
  // rides along instead of costing a packet of its own (room permitting).
  if (const std::size_t lone = lone_member(); lone < members_.size() && members_[lone]->ack_pending)
    append_ack(lone, b, now);
  // Receivers ACK every ack_every_packets; where the sender would stall
  // waiting for that, it asks for the ACK now with a PING: here when it
  // has nothing more to send (the window case is decided before the data).
  // A full packet means more is waiting: no need to look.
  if (cfg_.ack_every_packets > 2 && !asked_ack && !full) {
    time_ns dummy = never;
    if (!new_data_pending(now, &dummy)) b.append_ping();
  }

  const std::size_t len = b.finish();
  // Who gets this copy: every live member with window and credit for it
  // (all of them without a threshold: the limits above took the smallest).
  // In a threshold group the others get its data by repair, within their
  // own window and credit, or are told to skip it once it is released.
  uint64_t mask = 0, behind = 0;
  for (std::size_t i = 0; i < members_.size(); ++i) {
    const member_state &m = *members_[i];
    if (!m.live) continue;
    bool fits = !cfg_.threshold || m.bytes_in_flight + len <= m.cc->cwnd();
    // Frames of one stream are consecutive and ascending: the growth of
    // each is counted from the end of the one before.
    uint64_t grow = 0, prev_stream = UINT64_MAX, prev_end = 0;
    for (uint64_t k = frame_first; fits && k < frame_tail_; ++k) {
      const frame_record &f = frames_.at(k);
      const uint64_t end = f.offset + f.len;
      const uint64_t from =
          std::max(send_streams_[f.stream]->per_member[i].sent_to, f.stream == prev_stream ? prev_end : 0);
      fits = end <= m.stream_credit[f.stream];
      grow += end > from ? end - from : 0;
      prev_stream = f.stream;
      prev_end = std::max(from, end);
    }
    fits = fits && m.conn_sent_to + grow <= m.conn_credit;
    (fits ? mask : behind) |= member_bit(i);
  }
  sent_packet *p = record_packet(h.packet_number, len, mask, true, now);
  p->frame_first = frame_first;
  p->frame_count = static_cast<uint32_t>(frame_tail_ - frame_first);
  for (std::size_t i = 0; i < members_.size(); ++i) {
    member_state &m = *members_[i];
    if (mask & member_bit(i)) {
      for (uint64_t k = frame_first; k < frame_tail_; ++k) {
        const frame_record &f = frames_.at(k);
        note_sent_to(i, f.stream, f.offset + f.len);
      }
      m.bytes_in_flight += len;
      m.last_ack_eliciting_ns = now;
      m.probe_pending = false;
    } else if (behind & member_bit(i)) {
      // tracking_room() made the ring as large as the sent table.
      p->repair |= member_bit(i);
      m.lost.at(m.lost_tail++) = h.packet_number;
    }
  }
  pacer_on_sent(len, now);
  time_ns dummy = never;
  if (!new_data_pending(now, &dummy) || dummy == never) flush_requested_ = false;
  on_sent(mask, len);
  return {len, mask, true};
}

// ---- repairs held by range ----
//
// A repair is normally built from the lost packet's own frames, which
// keeps the packet in the sent table until it is. When the table is full
// and its oldest packet waits only for such repairs, they move to the
// member's per-stream `resend` ranges and the packet retires
// (unpin_head); repair_from_ranges then builds them like any repair.

uint64_t connection::message_at(const send_stream &s, uint64_t offset) const {
  uint64_t lo = s.msg_head, hi = s.msg_tail;
  while (lo < hi) {
    const uint64_t mid = lo + (hi - lo) / 2;
    if (s.msgs.at(mid).end <= offset)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

bool connection::repairs_to_ranges(std::size_t mi, const sent_packet &p, uint32_t first_frame) {
  member_state &m = *members_[mi];
  for (uint32_t i = first_frame; i < p.frame_count; ++i) {
    const frame_record &f = frames_.at(p.frame_first + i);
    if (f.kind == frame_record::credit) {
      resend_credits(mi);
      continue;
    }
    if (f.kind == frame_record::group_key) {
      if (group_key_set_ && f.offset == group_epoch_ && !m.key_acked) m.key_pending = true;
      continue;
    }
    if (f.stream >= send_streams_.size() || !send_streams_[f.stream]) continue;
    send_stream &s = *send_streams_[f.stream];
    stream_member &sm = s.per_member[mi];
    const uint64_t lo = std::max(f.offset, s.base), hi = f.offset + f.len;
    if (f.kind == frame_record::forward) {
      if (sm.acked.contains(f.offset, hi)) continue;
      if (!sm.fwd_owed.insert(f.offset, hi)) return false;
      m.fwd_pending = true;
      continue;
    }
    if (lo < hi && !sm.settled(lo, hi)) {
      if (!sm.resend.insert(lo, hi)) return false;
      m.resend_pending = true;
    }
    if (f.fin && !sm.fin_acked) {
      sm.fin_resend = true;
      m.resend_pending = true;
    }
  }
  return true;
}

bool connection::unpin_head() {
  if (sent_.capacity() == 0 || sent_head_pn_ >= next_pn_) return false;
  sent_packet &p = sent_.at(sent_head_pn_);
  if (p.pn != sent_head_pn_) return false;
  uint64_t dead = 0;
  for (std::size_t i = 0; i < members_.size(); ++i)
    if (!members_[i]->live) dead |= member_bit(i);
  const uint64_t open = p.members & ~dead;
  // Still in flight to someone: its ACK, its loss or a probe moves it.
  if (((p.acked | p.lost) & open) != open) return false;
  const uint64_t repair_before = p.repair;
  const time_ns lost_ns_before = p.lost_ns;
  for (std::size_t i = 0; i < members_.size(); ++i) {
    const uint64_t b = member_bit(i);
    if (!(p.repair & b) || (dead & b)) continue;
    if (!repairs_to_ranges(i, p)) break;  // ranges full: it stays
    p.repair &= ~b;
  }
  // Nor is it kept for a late ACK: what it carried is owed by range now.
  if (!(p.repair & ~dead)) p.lost_ns = 0;
  return p.repair != repair_before || p.lost_ns != lost_ns_before;
}

// @return false if it stopped for room or credit (more is owed)
bool connection::repair_from_ranges(std::size_t mi, packet_builder &b, time_ns now, bool &eliciting) {
  member_state &m = *members_[mi];
  bool owed = false;
  for (auto &sp : send_streams_) {
    if (!sp) continue;
    send_stream &s = *sp;
    stream_member &sm = s.per_member[mi];
    while (!sm.resend.empty()) {
      const range_set::range r = sm.resend.front();
      const uint64_t lo = std::max(r.lo, s.base);
      if (lo >= r.hi) {
        sm.resend.erase_below(r.hi);
        continue;
      }
      frame_record f;
      f.kind = frame_record::stream_data;
      f.stream = static_cast<uint16_t>(s.id);
      f.offset = lo;
      uint64_t hi = std::min(r.hi, lo + (uint64_t{1} << 30));
      if (s.mode == stream_mode::message) {
        // One message per frame.
        f.msg_seq = message_at(s, lo);
        const message_record *rec = find_message(s, f.msg_seq);
        if (rec == nullptr || rec->start > lo) {  // released, or no message there
          sm.resend.erase_below(rec == nullptr ? r.hi : std::min(r.hi, rec->start));
          continue;
        }
        hi = std::min(hi, rec->end);
      }
      f.len = static_cast<uint32_t>(hi - lo);
      f.fin = sm.fin_resend && s.fin_sent && hi == s.write_end;
      const std::size_t before = b.size();
      uint64_t done = lo;
      const repair_result res = repair_frame(mi, f, b, now, &done);
      if (res == repair_result::full) return false;
      if (res == repair_result::no_credit) break;  // this stream waits; the others may not
      eliciting |= b.size() != before;
      sm.resend.erase_below(done);
      if (f.fin && done == hi) sm.fin_resend = false;
      if (done < hi) {
        if (b.stream_room(stream_frame{}) == 0) return false;  // the packet is full
        break;  // cut at the credit
      }
    }
    if (sm.fin_resend && sm.resend.empty()) {
      frame_record f;
      f.kind = frame_record::stream_data;
      f.stream = static_cast<uint16_t>(s.id);
      f.offset = s.write_end;
      f.fin = true;
      const std::size_t before = b.size();
      if (s.fin_sent && repair_frame(mi, f, b, now) != repair_result::done) return false;
      eliciting |= b.size() != before;
      sm.fin_resend = false;
    }
    if (!sm.resend.empty() || sm.fin_resend) owed = true;
  }
  m.resend_pending = owed;
  return !owed;
}

}  // namespace mtp::core
