// SPDX-License-Identifier: BSD-3-Clause
// The sending half of a connection: packetization of new data for the
// group, per-member repair, ACK processing, loss detection (RACK-style
// packet and time thresholds, RFC 9002 section 6), stability and release.
#include <cstring>

#include "connection_internal.h"

namespace mtp::core {

namespace {

constexpr time_ns timer_granularity_ns = 1'000'000;

inline uint64_t bit(std::size_t m) { return uint64_t{1} << m; }

}  // namespace

connection::message_record *connection::find_message(send_stream &s, uint64_t seq) {
  if (seq < s.msg_head || seq >= s.msg_tail) return nullptr;
  return &s.msg(seq);
}

// Flow-control limits for new group data: the smallest credit of all live
// members, or in a threshold group the t-th largest (members with less are
// left out of the packet and served by repair as their credit grows).
namespace {
uint64_t counted_limit(const uint64_t *v, std::size_t n, uint32_t threshold) {
  if (n == 0) return 0;
  // Every member counts (the common case): the smallest, no sort.
  if (threshold == 0 || threshold >= n) return *std::min_element(v, v + n);
  uint64_t sorted[connection::max_members];
  std::copy(v, v + n, sorted);
  std::sort(sorted, sorted + n, [](uint64_t a, uint64_t b) { return a > b; });
  const std::size_t t = threshold ? std::min<std::size_t>(threshold, n) : n;
  return sorted[t - 1];
}
}  // namespace

uint64_t connection::stream_send_limit(uint64_t id) const {
  uint64_t v[max_members];
  std::size_t n = 0;
  for (const auto &m : members_)
    if (m->live) v[n++] = m->stream_credit[id];
  return counted_limit(v, n, cfg_.threshold);
}

uint64_t connection::connection_send_limit() const {
  uint64_t v[max_members];
  std::size_t n = 0;
  for (const auto &m : members_)
    if (m->live) v[n++] = m->conn_credit;
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
  std::sort(rates, rates + n, [](uint64_t a, uint64_t b) { return a > b; });
  const std::size_t t = cfg_.threshold ? std::min<std::size_t>(cfg_.threshold, n) : n;
  return rates[t - 1] + rates[t - 1] / 4;  // 1.25 x, as RFC 9002 7.7 suggests
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
  const uint64_t conn_room = connection_send_limit() - std::min(connection_send_limit(), conn_bytes_sent_);
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
  if (low_latency || pending + header_size + crc_size >= cfg_.max_packet_bytes) {
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

// ---- sent packet bookkeeping ----

bool connection::frames_room(std::size_t n) const { return frames_.size() - (frame_tail_ - frame_head_) >= n; }

connection::sent_packet *connection::record_packet(uint64_t pn, std::size_t bytes, uint64_t mask, bool ack_eliciting,
                                                   time_ns now) {
  if (!ack_eliciting) return nullptr;  // ACK-only packets need no tracking
  sent_packet &p = sent_[pn & (sent_.size() - 1)];
  p = sent_packet{};
  p.pn = pn;
  p.sent_ns = now;
  p.members = mask;
  p.bytes = static_cast<uint32_t>(bytes);
  p.ack_eliciting = true;
  return &p;
}

void connection::retire_packets() {
  uint64_t dead = 0;
  for (std::size_t i = 0; i < members_.size(); ++i)
    if (!members_[i]->live) dead |= bit(i);
  while (sent_head_pn_ < next_pn_) {
    sent_packet &p = sent_[sent_head_pn_ & (sent_.size() - 1)];
    if (p.pn == sent_head_pn_) {
      const uint64_t open = p.members & ~dead;
      if (((p.acked | p.lost) & open) != open || (p.repair & ~dead)) break;
      frame_head_ = std::max(frame_head_, p.frame_first + p.frame_count);
      p.pn = UINT64_MAX;
    }
    ++sent_head_pn_;
  }
  if (sent_head_pn_ == next_pn_) frame_head_ = frame_tail_;
}

// ---- per-member packets: ACK, credits, repairs, probes, heartbeats ----

void connection::resend_credits(std::size_t mi) {
  // The lost packet held the latest credits; which streams it named is not
  // kept, so all are sent again (credit only ever grows).
  member_state &m = *members_[mi];
  m.credit_pending = true;
  for (auto &r : m.recv)
    if (r) r->credit_dirty = true;
}

bool connection::repair_frame(std::size_t mi, const frame_record &f, packet_builder &b, time_ns now) {
  if (f.kind == frame_record::credit) {
    resend_credits(mi);
    return true;
  }
  if (f.kind == frame_record::forward) {
    members_[mi]->push_forward(f);
    return true;
  }
  if (f.stream >= send_streams_.size() || !send_streams_[f.stream]) return true;
  send_stream &s = *send_streams_[f.stream];
  uint64_t lo = std::max(f.offset, s.base);
  const uint64_t hi = f.offset + f.len;
  if (lo >= hi || s.acked[mi].contains(lo, hi)) return true;  // nothing left to repair
  stream_frame sf;
  sf.stream_id = f.stream;
  if (s.mode == stream_mode::message) {
    message_record *r = find_message(s, f.msg_seq);
    if (r == nullptr || r->expired) return true;
    if (r->rel == reliability::partial) {
      uint8_t &count = s.retx[(f.msg_seq & (s.msgs.size() - 1)) * members_.size() + mi];
      if (count >= r->max_retx || (r->deadline_ns != never && now >= r->deadline_ns)) {
        expire_message(s, f.msg_seq, now);
        return true;
      }
    }
    sf.message = true;
    sf.unordered = s.ord == ordering::none;
    sf.msg_start = r->start;
    sf.msg_length = r->end - r->start;
  }
  sf.offset = lo;
  sf.fin = f.fin && hi == s.write_end;
  const std::size_t len = static_cast<std::size_t>(hi - lo);
  const member_state &m = *members_[mi];
  // Never past the member's credit: wait for its CREDIT (or a skip).
  if (hi > m.stream_credit[f.stream] || conn_bytes_sent_ > m.conn_credit) return false;
  if (b.stream_room(sf) < len || !frames_room(1)) return false;
  // Copy out of the ring (the range may wrap).
  const std::size_t pos = lo & s.mask();
  const std::size_t first = std::min(len, s.buf.size() - pos);
  std::memcpy(scratch_.data(), s.buf.data() + pos, first);
  if (first < len) std::memcpy(scratch_.data() + first, s.buf.data(), len - first);
  sf.data = {scratch_.data(), len};
  b.append_stream(sf);
  if (s.mode == stream_mode::message) {
    message_record *r = find_message(s, f.msg_seq);
    if (r && r->rel == reliability::partial) ++s.retx[(f.msg_seq & (s.msgs.size() - 1)) * members_.size() + mi];
  }
  frame_record nf = f;
  nf.offset = lo;
  nf.len = static_cast<uint32_t>(len);
  frames_[frame_tail_++ & (frames_.size() - 1)] = nf;
  ++stats_.retransmitted_frames;
  stats_.stream_bytes_retransmitted += len;
  return true;
}

packet_header connection::next_header() const {
  packet_header h;
  h.sender_id = cfg_.local_id;
  h.connection_id = cfg_.connection_id;
  h.packet_number = next_pn_;
  return h;
}

transmit connection::build_member_packet(std::size_t mi, std::span<std::byte> out, time_ns now) {
  member_state &m = *members_[mi];
  const bool want_ack = m.ack_pending && (m.ack_now || now >= m.ack_deadline);
  const bool want_repair =
      (m.lost_tail > m.lost_head && m.bytes_in_flight + cfg_.max_packet_bytes <= m.cc->cwnd()) || m.fwd_tail > m.fwd_head;
  if (!want_ack && !m.credit_pending && !want_repair && !m.probe_pending && !m.heartbeat_pending) return {};
  if (next_pn_ - sent_head_pn_ >= sent_.size()) retire_packets();
  const bool ring_room = next_pn_ - sent_head_pn_ < sent_.size() && frames_room(64);
  if (!ring_room && !want_ack) return {};

  const packet_header h = next_header();
  packet_builder b(out, h);
  const uint64_t frame_first = frame_tail_;
  bool eliciting = false;
  auto add_credits = [&] {
    if (!m.credit_pending || !append_credits(mi, b)) return;
    frame_record cf;
    cf.kind = frame_record::credit;
    frames_[frame_tail_++ & (frames_.size() - 1)] = cf;
    eliciting = true;
  };
  auto add_forwards = [&] {
    while (m.fwd_tail > m.fwd_head) {
      const frame_record &f = m.forwards[m.fwd_head & (m.forwards.size() - 1)];
      if (!frames_room(1) || !b.append_forward({f.stream, f.offset, f.len})) break;
      frames_[frame_tail_++ & (frames_.size() - 1)] = f;
      ++m.fwd_head;
      eliciting = true;
    }
  };
  if (want_ack || (m.ack_pending && ring_room)) append_ack(mi, b, now);
  if (ring_room) {
    add_credits();
    add_forwards();
    if (m.bytes_in_flight + cfg_.max_packet_bytes <= m.cc->cwnd() || m.probe_pending) {
      bool full = false;
      while (!full && m.lost_tail > m.lost_head) {
        const uint64_t pn = m.lost[m.lost_head & (m.lost.size() - 1)];
        sent_packet &p = sent_[pn & (sent_.size() - 1)];
        if (p.pn == pn) {
          for (; m.lost_cursor < p.frame_count; ++m.lost_cursor) {
            const std::size_t before = b.size();
            if (!repair_frame(mi, frames_[(p.frame_first + m.lost_cursor) & (frames_.size() - 1)], b, now)) {
              full = true;
              break;
            }
            eliciting |= b.size() != before;
          }
          if (full) break;
          p.repair &= ~bit(mi);
        }
        ++m.lost_head;
        m.lost_cursor = 0;
      }
      add_forwards();  // repairs may have turned into FORWARDs (expired messages)
      add_credits();   // or into credits to resend
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
  if (b.empty()) return {};
  const std::size_t len = b.finish();
  ++next_pn_;
  if (sent_packet *p = record_packet(h.packet_number, len, bit(mi), eliciting, now)) {
    p->frame_first = frame_first;
    p->frame_count = static_cast<uint32_t>(frame_tail_ - frame_first);
    m.bytes_in_flight += len;
    m.last_ack_eliciting_ns = now;
  } else {
    frame_tail_ = frame_first;
  }
  m.last_tx_ns = now;
  ++stats_.packets_sent;
  stats_.bytes_sent += len;
  return {len, bit(mi)};
}

// ---- new data for the whole group ----

transmit connection::build_group_packet(std::span<std::byte> out, time_ns now) {
  time_ns wait = never;
  if (!new_data_pending(now, &wait)) return {};
  if (next_pn_ - sent_head_pn_ >= sent_.size()) retire_packets();
  if (next_pn_ - sent_head_pn_ >= sent_.size() || !frames_room(64)) return {};
  if (!group_may_send(cfg_.max_packet_bytes)) return {};
  if (!pacer_allows(cfg_.max_packet_bytes, now)) return {};

  const packet_header h = next_header();
  packet_builder b(out, h);
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
    const auto [off, len] = dgram_q_[dgram_head_ % dgram_q_.size()];
    if (!b.append_datagram({dgram_buf_.data() + off, len})) break;
    ++dgram_head_;
  }

  uint64_t conn_room = connection_send_limit() - std::min(connection_send_limit(), conn_bytes_sent_);
  const std::size_t n_streams = send_streams_.size();
  bool full = false;
  for (std::size_t k = 0; k < n_streams && !full; ++k) {
    const std::size_t id = (next_stream_rr_ + k) % n_streams;
    if (!send_streams_[id]) continue;
    send_stream &s = *send_streams_[id];
    if (s.write_end <= s.sent_end && !(s.fin_requested && !s.fin_sent)) continue;  // nothing to send here
    const uint64_t limit = std::min(s.write_end, stream_send_limit(id));
    while (!full) {
      stream_frame sf;
      sf.stream_id = id;
      sf.offset = s.sent_end;
      uint64_t end = limit;
      uint64_t seq = 0;
      if (s.mode == stream_mode::message) {
        if (s.msg_send >= s.msg_tail) break;
        seq = s.msg_send;
        message_record &r = s.msg(seq);
        if (r.expired) {  // given up before it went out
          s.sent_end = std::max(s.sent_end, r.end);
          ++s.msg_send;
          continue;
        }
        sf.message = true;
        sf.unordered = s.ord == ordering::none;
        sf.msg_start = r.start;
        sf.msg_length = r.end - r.start;
        end = std::min(end, r.end);
      } else if (s.sent_end >= limit) {
        if (s.fin_requested && !s.fin_sent && s.sent_end == s.write_end) {
          sf.fin = true;
          if (!b.append_stream(sf)) break;
          s.fin_sent = true;
        }
        break;
      }
      if (end <= s.sent_end) break;  // flow control
      uint64_t len = std::min<uint64_t>(end - s.sent_end, conn_room);
      if (len == 0) break;
      const std::size_t room = b.stream_room(sf);
      if (room == 0 || !frames_room(1)) {
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
      const std::size_t pos = s.sent_end & s.mask();
      const std::size_t first = std::min<std::size_t>(len, s.buf.size() - pos);
      if (first < len) {
        std::memcpy(scratch_.data(), s.buf.data() + pos, first);
        std::memcpy(scratch_.data() + first, s.buf.data(), len - first);
        sf.data = {scratch_.data(), static_cast<std::size_t>(len)};
      } else {
        sf.data = {s.buf.data() + pos, static_cast<std::size_t>(len)};
      }
      sf.fin = s.mode == stream_mode::bytes && s.fin_requested && s.sent_end + len == s.write_end;
      b.append_stream(sf);
      if (sf.fin) s.fin_sent = true;
      frame_record f;
      f.kind = frame_record::stream_data;
      f.stream = static_cast<uint16_t>(id);
      f.offset = s.sent_end;
      f.len = static_cast<uint32_t>(len);
      f.msg_seq = seq;
      f.fin = sf.fin;
      frames_[frame_tail_++ & (frames_.size() - 1)] = f;
      s.sent_end += len;
      conn_bytes_sent_ += len;
      conn_room -= len;
      stats_.stream_bytes_sent += len;
      while (s.msg_send < s.msg_tail && s.msg(s.msg_send).end <= s.sent_end) ++s.msg_send;
    }
    s.oldest_unsent_ns = s.sent_end < s.write_end ? now : never;
    if (full) next_stream_rr_ = id;
  }
  if (!full) next_stream_rr_ = (next_stream_rr_ + 1) % n_streams;
  if (b.size() == before_data) return {};  // no data fitted: no packet (not a lone PING)
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
  // Who gets this copy: every live member; in a threshold group only those
  // with window and credit for it. The others get its data by repair,
  // within their own window and credit, or are told to skip it once it is
  // released (check_stability).
  uint64_t mask = 0, behind = 0;
  for (std::size_t i = 0; i < members_.size(); ++i) {
    const member_state &m = *members_[i];
    if (!m.live) continue;
    bool fits = true;
    if (cfg_.threshold) {
      fits = m.bytes_in_flight + len <= m.cc->cwnd() && conn_bytes_sent_ <= m.conn_credit;
      for (uint64_t k = frame_first; fits && k < frame_tail_; ++k) {
        const frame_record &f = frames_[k & (frames_.size() - 1)];
        fits = f.offset + f.len <= m.stream_credit[f.stream];
      }
    }
    (fits ? mask : behind) |= bit(i);
  }
  ++next_pn_;
  sent_packet *p = record_packet(h.packet_number, len, mask, true, now);
  p->frame_first = frame_first;
  p->frame_count = static_cast<uint32_t>(frame_tail_ - frame_first);
  for (std::size_t i = 0; i < members_.size(); ++i) {
    member_state &m = *members_[i];
    if (!(behind & bit(i)) || m.lost_tail - m.lost_head >= m.lost.size()) continue;
    p->repair |= bit(i);
    m.lost[m.lost_tail++ & (m.lost.size() - 1)] = h.packet_number;
  }
  for (std::size_t i = 0; i < members_.size(); ++i) {
    if (!(mask & bit(i))) continue;
    members_[i]->bytes_in_flight += len;
    members_[i]->last_ack_eliciting_ns = now;
    members_[i]->last_tx_ns = now;
    members_[i]->probe_pending = false;
  }
  pacer_on_sent(len, now);
  time_ns dummy = never;
  if (!new_data_pending(now, &dummy) || dummy == never) flush_requested_ = false;
  ++stats_.packets_sent;
  stats_.bytes_sent += len;
  return {len, mask};
}

// ---- acknowledgements and losses ----

void connection::on_ack_frame(std::size_t mi, const ack_frame &a, time_ns now) {
  member_state &m = *members_[mi];
  const uint64_t b = bit(mi);
  bool newly = false;
  bool touched[256] = {};
  ack_range_iter it(a);
  uint64_t lo, hi;
  while (it.next(lo, hi)) {
    if (hi >= next_pn_) continue;  // acknowledges what we never sent: ignore the range
    for (uint64_t pn = std::max(lo, sent_head_pn_); pn <= hi; ++pn) {
      sent_packet &p = sent_[pn & (sent_.size() - 1)];
      if (p.pn != pn || !(p.members & b) || (p.acked & b)) continue;
      const bool was_lost = p.lost & b;
      p.acked |= b;
      newly = true;
      if (was_lost) {
        // Declared lost, yet it arrived: the path reorders more than we
        // allowed. Widen both thresholds (RFC 9002 6.1 allows adapting
        // them; Linux RACK grows its reordering window the same way).
        ++stats_.spurious_losses;
        if (m.has_acked && m.largest_acked > pn)
          m.reorder_packets = std::min<uint64_t>(std::max(m.reorder_packets, m.largest_acked - pn + 1), 256);
        m.reorder_eighths = std::min<uint32_t>(m.reorder_eighths + 2, 32);
        m.cc->on_spurious_loss();
      }
      if (!was_lost) {
        m.bytes_in_flight -= std::min<uint64_t>(m.bytes_in_flight, p.bytes);
        m.cc->on_acked(p.bytes, p.sent_ns, m.rtt, now);
      }
      if (pn == a.largest) {
        const time_ns delay = std::min<time_ns>(a.ack_delay_us * 1000, cfg_.ack_delay_ns);
        if (now > p.sent_ns) m.rtt.on_sample(now - p.sent_ns, delay);
      }
      for (uint32_t i = 0; i < p.frame_count; ++i) {
        const frame_record &f = frames_[(p.frame_first + i) & (frames_.size() - 1)];
        if (f.kind != frame_record::stream_data || f.stream >= send_streams_.size() || !send_streams_[f.stream])
          continue;
        send_stream &s = *send_streams_[f.stream];
        // A full set only loses precision: the member repairs the range.
        s.acked[mi].insert(f.offset, f.offset + f.len);
        if (f.stream < 256) touched[f.stream] = true;
      }
    }
  }
  if (!newly) return;
  if (!m.has_acked || a.largest > m.largest_acked) m.largest_acked = std::min(a.largest, next_pn_ - 1);
  m.has_acked = true;
  m.pto_count = 0;
  if (!m.accepted) {
    m.accepted = true;
    check_ready();
  }
  detect_losses(mi, now);
  for (std::size_t id = 0; id < send_streams_.size(); ++id)
    if (send_streams_[id] && (id >= 256 || touched[id])) check_stability(*send_streams_[id], now);
  retire_packets();
}

void connection::on_packet_lost(std::size_t mi, sent_packet &p, uint64_t pn) {
  member_state &m = *members_[mi];
  p.lost |= bit(mi);
  m.bytes_in_flight -= std::min<uint64_t>(m.bytes_in_flight, p.bytes);
  ++stats_.packets_lost;
  if (p.frame_count == 0) return;
  // Unreliable messages are not repaired: the member is told to skip them.
  bool needs_repair = false;
  for (uint32_t i = 0; i < p.frame_count; ++i) {
    const frame_record &f = frames_[(p.frame_first + i) & (frames_.size() - 1)];
    if (f.kind == frame_record::credit) {
      resend_credits(mi);
      continue;
    }
    if (f.kind == frame_record::forward) {
      m.push_forward(f);  // FORWARD is reliable: send it again
      continue;
    }
    if (f.kind == frame_record::stream_data && f.stream < send_streams_.size() && send_streams_[f.stream] &&
        send_streams_[f.stream]->mode == stream_mode::message) {
      send_stream &s = *send_streams_[f.stream];
      message_record *r = find_message(s, f.msg_seq);
      if (r && r->rel == reliability::unreliable) {
        // Only this member misses it: the others still get the rest of
        // the message, so this is not a global expiry.
        if (!s.acked[mi].contains(r->start, r->end)) {
          s.acked[mi].insert(r->start, r->end);
          ++r->missed;
          frame_record fw;
          fw.kind = frame_record::forward;
          fw.stream = f.stream;
          fw.offset = r->start;
          fw.len = static_cast<uint32_t>(r->end - r->start);
          m.push_forward(fw);
        }
        continue;
      }
    }
    needs_repair = true;
  }
  if (needs_repair && m.lost_tail - m.lost_head < m.lost.size()) {
    p.repair |= bit(mi);
    m.lost[m.lost_tail++ & (m.lost.size() - 1)] = pn;
  }
}

void connection::detect_losses(std::size_t mi, time_ns now) {
  member_state &m = *members_[mi];
  m.loss_time = never;
  if (!m.has_acked) return;
  const uint64_t b = bit(mi);
  const time_ns rtt = std::max(m.rtt.smoothed(), m.rtt.latest());
  const time_ns loss_delay = std::max<time_ns>(rtt * m.reorder_eighths / 8, timer_granularity_ns);
  bool any_lost = false;
  time_ns newest_lost_sent = 0;
  m.loss_scan_pn = std::max(m.loss_scan_pn, sent_head_pn_);
  bool scanning = true;
  for (uint64_t pn = m.loss_scan_pn; pn < m.largest_acked; ++pn) {
    sent_packet &p = sent_[pn & (sent_.size() - 1)];
    const bool resolved = p.pn != pn || !(p.members & b) || ((p.acked | p.lost) & b);
    if (resolved) {
      if (scanning) m.loss_scan_pn = pn + 1;
      continue;
    }
    if (m.largest_acked >= pn + m.reorder_packets || p.sent_ns + loss_delay <= now) {
      on_packet_lost(mi, p, pn);
      any_lost = true;
      newest_lost_sent = std::max(newest_lost_sent, p.sent_ns);
      if (scanning) m.loss_scan_pn = pn + 1;
    } else {
      scanning = false;
      m.loss_time = std::min(m.loss_time, p.sent_ns + loss_delay);
    }
  }
  if (any_lost) m.cc->on_loss(newest_lost_sent, now);
}

// ---- stability, expiry, release ----

void connection::expire_message(send_stream &s, uint64_t seq, time_ns) {
  message_record *r = find_message(s, seq);
  if (r == nullptr || r->stable) return;
  if (!r->expired) ++stats_.messages_expired;
  r->expired = true;
  for (std::size_t mi = 0; mi < members_.size(); ++mi) {
    member_state &m = *members_[mi];
    if (!m.live || s.acked[mi].contains(r->start, r->end)) continue;
    s.acked[mi].insert(r->start, r->end);
    ++r->missed;
    frame_record fw;
    fw.kind = frame_record::forward;
    fw.stream = static_cast<uint16_t>(s.id);
    fw.offset = r->start;
    fw.len = static_cast<uint32_t>(r->end - r->start);
    m.push_forward(fw);
  }
}

void connection::check_lifetimes(time_ns now) {
  next_lifetime_ns_ = never;
  for (auto &sp : send_streams_) {
    if (!sp) continue;
    send_stream &s = *sp;
    for (uint64_t seq = s.msg_stable; seq < s.msg_tail; ++seq) {
      message_record &r = s.msg(seq);
      if (r.deadline_ns == never || r.stable || r.expired) continue;
      if (r.deadline_ns <= now)
        expire_message(s, seq, now);
      else
        next_lifetime_ns_ = std::min(next_lifetime_ns_, r.deadline_ns);
    }
    check_stability(s, now);
  }
}

void connection::check_stability(send_stream &s, time_ns) {
  uint32_t live = 0;
  for (const auto &m : members_) live += m->live;
  const uint32_t need = cfg_.threshold ? std::min(cfg_.threshold, live) : live;
  // What each member holds contiguously from the base answers most
  // questions below with one compare instead of a search.
  uint64_t prefix[max_members];
  for (std::size_t mi = 0; mi < members_.size(); ++mi) prefix[mi] = s.acked[mi].contiguous_end(s.base);
  auto holds = [&](std::size_t mi, const message_record &r) {
    return r.end <= prefix[mi] || s.acked[mi].contains(r.start, r.end);
  };
  // Report stability (Sent) or expiry in message order.
  while (s.msg_stable < s.msg_send) {
    message_record &r = s.msg(s.msg_stable);
    uint32_t have = 0;
    for (std::size_t mi = 0; mi < members_.size(); ++mi)
      if (members_[mi]->live && holds(mi, r)) ++have;
    event e;
    e.stream_id = s.id;
    e.message_id = s.msg_stable;
    if (r.expired || r.missed) {
      if (have < live) break;  // FORWARDs still on their way
      e.type = event_type::expired;
      e.count = r.missed;
    } else {
      if (have < need || live == 0) break;
      e.type = event_type::sent;
      e.count = have;
      ++stats_.messages_stable;
    }
    if (!events_room(1)) break;  // resumed at the next call
    r.stable = true;
    push_event(e);
    ++s.msg_stable;
  }
  // Release what every live member holds (or was told to skip). In a
  // threshold group, a stable message is released under buffer pressure
  // even if slow members lack it: they are told to skip it (FORWARD), so
  // the group runs at the pace of its t-th fastest member, not its slowest.
  const bool pressure = cfg_.threshold != 0 && ((s.write_end - s.base) * 4 > s.buf.size() * 3 ||
                                                (s.msg_tail - s.msg_head) * 4 > s.msgs.size() * 3);
  while (s.msg_head < s.msg_stable) {
    message_record &r = s.msg(s.msg_head);
    bool all = true;
    for (std::size_t mi = 0; mi < members_.size() && all; ++mi)
      if (members_[mi]->live && !holds(mi, r)) all = false;
    if (!all) {
      if (!pressure || r.expired || r.missed) break;
      for (std::size_t mi = 0; mi < members_.size(); ++mi) {
        member_state &m = *members_[mi];
        if (!m.live || holds(mi, r)) continue;
        frame_record fw;
        fw.kind = frame_record::forward;
        fw.stream = static_cast<uint16_t>(s.id);
        fw.offset = r.start;
        fw.len = static_cast<uint32_t>(r.end - r.start);
        if (!m.push_forward(fw)) return;  // no room to tell it: keep the message
        s.acked[mi].insert(r.start, r.end);
        ++stats_.messages_skipped_by_slow_members;
      }
    }
    s.base = r.end;
    ++s.msg_head;
  }
  for (auto &a : s.acked) a.erase_below(s.base);
}

}  // namespace mtp::core
