// SPDX-License-Identifier: BSD-3-Clause
// Acknowledgements and what follows from them: ACK validation (no range
// may name a packet this member was never sent), loss detection
// (RACK-style packet and time thresholds, RFC 9002 section 6), giving up
// messages (partial, unreliable, slow members of a threshold group),
// stability (Sent, Expired) and the release of send buffers.
#include "connection_internal.h"

namespace mtp::core {

namespace {
constexpr time_ns timer_granularity_ns = 1'000'000;
}  // namespace

// @return false if the ACK names a packet never sent to this member (a
// packet number not yet used, below our first, one we skipped, or one
// sent to other members only): a protocol violation (3.2, 4.3).
bool connection::on_ack_frame(std::size_t mi, const ack_frame &a, time_ns now) {
  member_state &m = *members_[mi];
  const uint64_t b = member_bit(mi);
  bool newly = false;
  ack_range_iter it(a);
  uint64_t lo, hi;
  while (it.next(lo, hi)) {
    if (hi >= next_pn_ || lo < initial_pn_) return false;
    for (std::size_t k = 0; k < std::min(skipped_count_, skipped_kept); ++k)
      if (skipped_pns_[k] >= lo && skipped_pns_[k] <= hi) return false;
    if (sent_.capacity() == 0) continue;
    for (uint64_t pn = std::max(lo, sent_head_pn_); pn <= hi; ++pn) {
      sent_packet &p = sent_.at(pn);
      if (p.pn != pn) continue;  // ACK-only, or resolved long ago
      if (!(p.members & b)) return false;
      if (p.acked & b) continue;
      // Record what it acknowledges first: a packet whose frames cannot be
      // recorded stays unacknowledged and is repaired (the record is only
      // ever missing, never wrong).
      bool recorded = true;
      for (uint32_t i = 0; i < p.frame_count; ++i) {
        const frame_record &f = frames_.at(p.frame_first + i);
        if (f.kind == frame_record::group_key) {
          if (group_key_set_ && f.offset == group_epoch_) m.key_acked = true;
          continue;
        }
        if (f.kind == frame_record::credit || f.stream >= send_streams_.size() || !send_streams_[f.stream]) continue;
        stream_member &sm = send_streams_[f.stream]->per_member[mi];
        // Out of order, leave one range free for the ACK that fills the gap.
        const std::size_t keep = f.offset <= sm.acked.contiguous_end(send_streams_[f.stream]->base) ? 0 : 1;
        recorded &= sm.acked.insert(f.offset, f.offset + f.len, keep);
        if (f.fin) sm.fin_acked = true;
      }
      if (!recorded) continue;
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
      } else {
        m.bytes_in_flight -= std::min<uint64_t>(m.bytes_in_flight, p.bytes);
        m.cc->on_acked(p.bytes, p.sent_ns, m.rtt, now);
      }
      if (pn == a.largest) {
        const time_ns delay = std::min<time_ns>(a.ack_delay_us * 1000, cfg_.ack_delay_ns);
        if (now > p.sent_ns) m.rtt.on_sample(now - p.sent_ns, delay);
      }
    }
  }
  if (!newly) return true;
  send_blocked_ = false;  // packets retire: room to send may have come back
  // It acknowledged a packet of ours: it receives what we send (3.6).
  m.validated = true;
  if (!m.has_acked || a.largest > m.largest_acked) m.largest_acked = a.largest;
  m.has_acked = true;
  m.pto_count = 0;
  if (!m.accepted) {
    m.accepted = true;
    check_ready();
  }
  detect_losses(mi, now);
  for (auto &s : send_streams_)
    if (s) check_stability(*s, now);
  retire_packets();
  return true;
}

// A lost packet goes on the member's repair queue; what each of its frames
// needs (data again, a FORWARD instead, credits again) is decided when the
// repair is built (repair_frame), within the member's window and credit.
// The queue never overflows (tracking_room()).
bool connection::on_packet_lost(std::size_t mi, sent_packet &p, uint64_t pn) {
  member_state &m = *members_[mi];
  p.lost |= member_bit(mi);
  p.lost_ns = last_now_;
  m.bytes_in_flight -= std::min<uint64_t>(m.bytes_in_flight, p.bytes);
  ++stats_.packets_lost;
  if (p.frame_count == 0) return true;
  if (p.repair & member_bit(mi)) return true;
  p.repair |= member_bit(mi);
  m.lost.at(m.lost_tail++) = pn;
  return true;
}

void connection::detect_losses(std::size_t mi, time_ns now) {
  member_state &m = *members_[mi];
  m.loss_time = never;
  if (!m.has_acked || sent_.capacity() == 0) return;
  const uint64_t b = member_bit(mi);
  const time_ns rtt = std::max(m.rtt.smoothed(), m.rtt.latest());
  const time_ns loss_delay = std::max<time_ns>(rtt * m.reorder_eighths / 8, timer_granularity_ns);
  bool any_lost = false;
  time_ns newest_lost_sent = 0;
  m.loss_scan_pn = std::max(m.loss_scan_pn, sent_head_pn_);
  bool scanning = true;
  for (uint64_t pn = m.loss_scan_pn; pn < m.largest_acked; ++pn) {
    sent_packet &p = sent_.at(pn);
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

void connection::retire_packets() {
  if (sent_.capacity() == 0) {
    sent_head_pn_ = next_pn_;
    frame_head_ = frame_tail_;
    return;
  }
  uint64_t dead = 0;
  time_ns srtt = 0;
  for (std::size_t i = 0; i < members_.size(); ++i) {
    if (!members_[i]->live) dead |= member_bit(i);
    srtt = std::max(srtt, members_[i]->rtt.smoothed());
  }
  // A packet declared lost is kept two round trips more: an ACK that was
  // only late (reordering) still counts the member as holding its data.
  const time_ns grace = 2 * srtt;
  while (sent_head_pn_ < next_pn_) {
    sent_packet &p = sent_.at(sent_head_pn_);
    if (p.pn == sent_head_pn_) {
      const uint64_t open = p.members & ~dead;
      if (((p.acked | p.lost) & open) != open || (p.repair & ~dead)) break;
      if ((p.lost & open & ~p.acked) && last_now_ < p.lost_ns + grace) break;
      frame_head_ = std::max(frame_head_, p.frame_first + p.frame_count);
      p.pn = UINT64_MAX;
    }
    ++sent_head_pn_;
  }
  if (sent_head_pn_ == next_pn_) frame_head_ = frame_tail_;
}

// ---- giving up, stability, release ----

// Member `mi` will not get message `r`: it is owed a FORWARD for the whole
// message instead, and no data of it is sent to it again. The sets were
// sized for one range per retained message when the message was queued.
void connection::give_up(send_stream &s, std::size_t mi, message_record &r) {
  stream_member &sm = s.per_member[mi];
  if (sm.skip.contains(r.start, r.end) || sm.acked.contains(r.start, r.end)) return;
  sm.skip.insert(r.start, r.end);
  sm.fwd_owed.insert(r.start, r.end);
  members_[mi]->fwd_pending = true;
  ++r.missed;
}

void connection::expire_message(send_stream &s, uint64_t seq, time_ns) {
  message_record *r = find_message(s, seq);
  if (r == nullptr || r->stable) return;
  if (!r->expired) ++stats_.messages_expired;
  r->expired = true;
  for (std::size_t mi = 0; mi < members_.size(); ++mi)
    if (members_[mi]->live) give_up(s, mi, *r);
  advance_over_expired(s);
}

void connection::check_lifetimes(time_ns now) {
  next_lifetime_ns_ = never;
  for (auto &sp : send_streams_) {
    if (!sp) continue;
    send_stream &s = *sp;
    for (uint64_t seq = s.msg_stable; seq < s.msg_tail; ++seq) {
      message_record &r = s.msgs.at(seq);
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
  if (state_ >= state::draining) return;
  uint32_t live = 0;
  for (const auto &m : members_) live += m->live;
  const uint32_t need = cfg_.threshold ? std::min(cfg_.threshold, live) : live;
  // What each member acknowledged contiguously from the base answers most
  // questions below with one compare instead of a search.
  uint64_t prefix[max_members];
  for (std::size_t mi = 0; mi < members_.size(); ++mi) prefix[mi] = s.per_member[mi].acked.contiguous_end(s.base);
  auto has = [&](std::size_t mi, const message_record &r) {
    return r.end <= prefix[mi] || s.per_member[mi].acked.contains(r.start, r.end);
  };
  auto settled = [&](std::size_t mi, const message_record &r) {
    return has(mi, r) || s.per_member[mi].skip.contains(r.start, r.end);
  };
  // Report stability (Sent) or expiry in message order, with the true count.
  while (s.msg_stable < s.msg_send) {
    message_record &r = s.msgs.at(s.msg_stable);
    uint32_t holders = 0, done = 0;
    for (std::size_t mi = 0; mi < members_.size(); ++mi) {
      if (!members_[mi]->live) continue;
      if (has(mi, r)) {
        ++holders;
        ++done;
      } else if (s.per_member[mi].skip.contains(r.start, r.end)) {
        ++done;
      }
    }
    event e;
    e.stream_id = s.id;
    e.message_id = s.msg_stable;
    if (r.missed) {
      // Given up for some members: Expired, once every live member holds
      // it or was told to skip it. (An expired message that every member
      // already held is simply Sent.)
      if (done < live) break;
      e.type = event_type::expired;
      e.count = r.missed;
    } else {
      if (holders < need || live == 0) break;
      e.type = event_type::sent;
      e.count = holders;
    }
    if (!push_data_event(e)) break;  // resumed at the next call
    if (e.type == event_type::sent) ++stats_.messages_stable;
    r.stable = true;
    ++s.msg_stable;
  }
  // Release what every live member holds (or was told to skip). In a
  // threshold group, a stable message is released under buffer pressure
  // even if slow members lack it: they are told to skip it (FORWARD), so
  // the group runs at the pace of its t-th fastest member, not its slowest.
  const uint64_t window = cfg_.stream_buffer_bytes;
  const bool pressure = cfg_.threshold != 0 && ((s.write_end - s.base) * 4 > window * 3 ||
                                                (s.msg_tail - s.msg_head) * 4 > uint64_t{cfg_.max_messages} * 3);
  const uint64_t base_before = s.base;
  while (s.msg_head < s.msg_stable) {
    message_record &r = s.msgs.at(s.msg_head);
    bool all = true;
    for (std::size_t mi = 0; mi < members_.size() && all; ++mi)
      if (members_[mi]->live && !settled(mi, r)) all = false;
    if (!all) {
      if (!pressure || r.expired || r.missed) break;
      for (std::size_t mi = 0; mi < members_.size(); ++mi) {
        if (!members_[mi]->live || settled(mi, r)) continue;
        give_up(s, mi, r);
        ++stats_.messages_skipped_by_slow_members;
      }
    }
    s.base = r.end;
    ++s.msg_head;
  }
  if (s.base == base_before) return;
  s.buf.release_below(s.base);
  release_pieces_below(s);
  for (auto &pm : s.per_member) {
    pm.acked.erase_below(s.base);
    pm.skip.erase_below(s.base);
    pm.resend.erase_below(s.base);
  }
}

}  // namespace mtp::core
