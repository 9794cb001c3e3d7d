// SPDX-License-Identifier: BSD-3-Clause
// See oracle.h.
#include "oracle.h"

#include <sstream>

namespace mtp::sim {

using namespace mtp::core;

// ---- interval_set ----

void interval_set::add(uint64_t lo, uint64_t hi) {
  if (lo >= hi) return;
  auto it = m_.upper_bound(lo);
  if (it != m_.begin()) {
    auto prev = std::prev(it);
    if (prev->second >= lo) {
      lo = prev->first;
      hi = std::max(hi, prev->second);
      it = m_.erase(prev);
    }
  }
  while (it != m_.end() && it->first <= hi) {
    hi = std::max(hi, it->second);
    it = m_.erase(it);
  }
  m_[lo] = hi;
}

bool interval_set::covers(uint64_t lo, uint64_t hi) const {
  if (lo >= hi) return true;
  auto it = m_.upper_bound(lo);
  if (it == m_.begin()) return false;
  --it;
  return it->first <= lo && it->second >= hi;
}

bool interval_set::overlaps(uint64_t lo, uint64_t hi) const {
  if (lo >= hi) return false;
  auto it = m_.upper_bound(lo);
  if (it != m_.begin() && std::prev(it)->second > lo) return true;
  return it != m_.end() && it->first < hi;
}

uint64_t interval_set::first_gap(uint64_t lo, uint64_t hi) const {
  while (lo < hi) {
    auto it = m_.upper_bound(lo);
    if (it == m_.begin()) return lo;
    --it;
    if (it->second <= lo) return lo;
    lo = it->second;
  }
  return hi;
}

// ---- the oracle ----

wire_oracle::flow &wire_oracle::flow_of(uint32_t a, uint32_t b, uint64_t cid) {
  auto [it, fresh] = flows_.try_emplace({a, b, cid});
  if (fresh) it->second.conn_credit = cfg_.connection_window;
  return it->second;
}

const wire_oracle::flow *wire_oracle::find(uint32_t a, uint32_t b, uint64_t cid) const {
  auto it = flows_.find({a, b, cid});
  return it == flows_.end() ? nullptr : &it->second;
}

void wire_oracle::fail(const std::string &why) {
  if (failures_.size() < 20) failures_.push_back(why);
}

void wire_oracle::on_wire(const wire_packet &p, time_ns now) {
  if (p.bytes.empty() || std::to_integer<uint8_t>(p.bytes[0]) == version_negotiation_version) return;
  packet_header h;
  std::span<const std::byte> frames;
  if (parse_packet(p.bytes, h, frames) != parse_status::ok) return;  // corrupted: no engine takes it
  if (p.delivered) {
    on_delivered_packet(p, h.connection_id, h.packet_number, frames);
    return;
  }
  // The adversary's packets are not an engine's: never checked as sent;
  // delivered, they may still move the engine, which the Sent check watches.
  if (!p.injected) on_sent_packet(p, h.connection_id, h.packet_number, frames, now);
}

void wire_oracle::on_sent_packet(const wire_packet &p, uint64_t cid, uint64_t pn, std::span<const std::byte> frames,
                                 time_ns now) {
  ++packets_checked_;
  flow &f = flow_of(p.from, p.to, cid);
  sent_record rec;
  rec.bytes = static_cast<uint32_t>(p.bytes.size());
  bool data = false;
  frame_reader rd(frames);
  frame fr;
  while (!rd.done() && rd.next(fr) == parse_status::ok) {
    rec.eliciting |= is_ack_eliciting(fr.type);
    if (fr.type == frame_type::ack) {
      // Everything B acknowledges must have reached it intact: the flow
      // acknowledged is the reverse one (B's packets to A... here the
      // sender of this packet acknowledges its peer's packets).
      flow &rev = flow_of(p.to, p.from, cid);
      ack_range_iter it(fr.ack);
      uint64_t lo, hi;
      while (it.next(lo, hi)) {
        const uint64_t gap = rev.delivered.first_gap(rev.ack_verified.first_gap(lo, hi + 1), hi + 1);
        if (gap <= hi) {
          std::ostringstream o;
          o << "ack_of_unreceived: node " << p.from << " acknowledges packet " << gap << " of node " << p.to
            << " (connection " << std::hex << cid << std::dec << ") that never reached it intact";
          fail(o.str());
          break;
        }
        rev.ack_verified.add(lo, hi + 1);
      }
      continue;
    }
    if (fr.type != frame_type::stream && fr.type != frame_type::forward) continue;
    const bool fwd = fr.type == frame_type::forward;
    const uint64_t stream = fwd ? fr.forward.stream_id : fr.stream.stream_id;
    const uint64_t lo = fwd ? fr.forward.offset : fr.stream.offset;
    const uint64_t hi = fwd ? lo + fr.forward.length : lo + fr.stream.data.size();
    rec.frames.push_back({fwd, stream, lo, hi});
    if (!fwd) {
      data = true;
      if (f.skipped[stream].overlaps(lo, hi)) {
        std::ostringstream o;
        o << "stream_after_skip: node " << p.from << " sends STREAM [" << lo << ", " << hi << ") of stream " << stream
          << " to node " << p.to << " after a FORWARD covering some of it";
        fail(o.str());
      }
    } else {
      f.skipped[stream].add(lo, hi);
    }
    // Flow control: the credit the receiver granted, as the sender knew it.
    const uint64_t credit = f.stream_credit.count(stream) ? f.stream_credit[stream] : cfg_.stream_window;
    if (hi > credit) {
      std::ostringstream o;
      o << "over_credit: node " << p.from << " sends bytes up to " << hi << " of stream " << stream << " to node "
        << p.to << " whose credit is " << credit;
      fail(o.str());
    }
    if (hi == credit) ++credit_limited_sends_;
    uint64_t &to = f.sent_to[stream];
    if (hi > to) {
      f.conn_sent_to += hi - to;
      to = hi;
    }
    if (f.conn_sent_to > f.conn_credit) {
      std::ostringstream o;
      o << "over_credit: node " << p.from << " has sent " << f.conn_sent_to << " bytes over all streams to node "
        << p.to << " whose connection credit is " << f.conn_credit;
      fail(o.str());
    }
    if (f.conn_credit) max_conn_use_ = std::max(max_conn_use_, static_cast<double>(f.conn_sent_to) / f.conn_credit);
  }
  if (rec.eliciting) f.in_flight += rec.bytes;
  if (data && cfg_.cwnd_of) {
    const uint64_t cwnd = cfg_.cwnd_of(p.from, p.to, cid);
    if (cwnd && f.in_flight > cwnd + cfg_.max_packet_bytes) {
      std::ostringstream o;
      o << "over_window: node " << p.from << " has " << f.in_flight << " bytes in flight to node " << p.to
        << " with a congestion window of " << cwnd;
      fail(o.str());
    }
  }
  if (data && cfg_.check_pacing) {
    if (f.burst_at == now) {
      if (++f.burst_count > cfg_.pacing_burst_packets + 1) {
        std::ostringstream o;
        o << "burst: node " << p.from << " sends " << f.burst_count << " data packets to node " << p.to
          << " at one instant (pacer burst " << cfg_.pacing_burst_packets << ")";
        fail(o.str());
      }
    } else {
      f.burst_at = now;
      f.burst_count = 1;
    }
  }
  f.sent[pn] = std::move(rec);
}

void wire_oracle::on_delivered_packet(const wire_packet &p, uint64_t cid, uint64_t pn,
                                      std::span<const std::byte> frames) {
  // As data from p.from to p.to: it arrived intact.
  flow &fwd = flow_of(p.from, p.to, cid);
  const bool duplicate = fwd.delivered.covers(pn, pn + 1);
  fwd.delivered.add(pn, pn + 1);
  // The engine ignores a duplicate whole; otherwise its ACK and CREDIT
  // frames act on the reverse flow: p.to's packets to p.from.
  if (duplicate) return;
  flow &rev = flow_of(p.to, p.from, cid);
  bool acked_any = false;
  frame_reader rd(frames);
  frame fr;
  while (!rd.done() && rd.next(fr) == parse_status::ok) {
    if (fr.type == frame_type::credit) {
      if (fr.credit.connection) {
        rev.conn_credit = std::max(rev.conn_credit, fr.credit.max_offset);
      } else {
        uint64_t &c = rev.stream_credit.try_emplace(fr.credit.stream_id, cfg_.stream_window).first->second;
        c = std::max(c, fr.credit.max_offset);
      }
      continue;
    }
    if (fr.type != frame_type::ack) continue;
    ack_range_iter it(fr.ack);
    uint64_t lo, hi;
    while (it.next(lo, hi)) {
      for (auto s = rev.sent.lower_bound(lo); s != rev.sent.end() && s->first <= hi; ++s) {
        if (rev.acked.covers(s->first, s->first + 1)) continue;
        rev.acked.add(s->first, s->first + 1);
        acked_any = true;
        for (const sent_frame &sf : s->second.frames)
          if (!sf.forward) rev.held[sf.stream].add(sf.lo, sf.hi);
      }
      if (!rev.any_acked || hi > rev.largest_acked) rev.largest_acked = hi;
      rev.any_acked = true;
    }
  }
  if (acked_any) resolve(rev);
}

// A packet leaves flight when acknowledged or when a later one was (eager:
// the engine waits for a reordering threshold, so its own count is never
// below this one).
void wire_oracle::resolve(flow &f) {
  for (auto it = f.sent.lower_bound(f.resolved_below); it != f.sent.end() && it->first <= f.largest_acked; ++it) {
    sent_record &r = it->second;
    if (r.resolved) continue;
    r.resolved = true;
    if (r.eliciting) f.in_flight -= std::min<uint64_t>(f.in_flight, r.bytes);
    f.resolved_below = it->first;
  }
}

void wire_oracle::on_sent_event(uint32_t a, uint64_t cid, uint64_t stream, uint64_t lo, uint64_t hi, uint32_t count,
                                const std::vector<uint32_t> &live_members, uint32_t threshold) {
  uint32_t holders = 0;
  for (uint32_t b : live_members)
    if (held(a, b, cid, stream, lo, hi)) ++holders;
  const uint32_t live = static_cast<uint32_t>(live_members.size());
  const uint32_t need = threshold ? std::min(threshold, live) : live;
  const bool count_ok = cfg_.exact_sent_count ? count == holders : count <= holders;
  if (!count_ok || count < need || live == 0) {
    std::ostringstream o;
    o << "sent_count: node " << a << " reports Sent for bytes [" << lo << ", " << hi << ") of stream " << stream
      << " with count " << count << "; the wire shows " << holders << " of " << live
      << " live members acknowledged it (at least " << need << " needed)";
    fail(o.str());
  }
}

void wire_oracle::on_expired_event(uint32_t a, uint64_t cid, uint32_t count, std::size_t live) {
  if (count == 0 || count > live) {
    std::ostringstream o;
    o << "expired_count: node " << a << " (connection " << std::hex << cid << std::dec << ") reports Expired with count "
      << count << " and " << live << " live members";
    fail(o.str());
  }
}

bool wire_oracle::held(uint32_t a, uint32_t b, uint64_t cid, uint64_t stream, uint64_t lo, uint64_t hi) const {
  const flow *f = find(a, b, cid);
  if (f == nullptr) return false;
  auto it = f->held.find(stream);
  return it != f->held.end() && it->second.covers(lo, hi);
}

bool wire_oracle::forwarded(uint32_t a, uint32_t b, uint64_t cid, uint64_t stream, uint64_t lo, uint64_t hi) const {
  const flow *f = find(a, b, cid);
  if (f == nullptr) return false;
  auto it = f->skipped.find(stream);
  return it != f->skipped.end() && it->second.overlaps(lo, hi);
}

uint32_t wire_oracle::forwarded_count(uint32_t a, uint64_t cid, uint64_t stream, uint64_t lo, uint64_t hi) const {
  uint32_t n = 0;
  for (const auto &[key, f] : flows_) {
    if (std::get<0>(key) != a || std::get<2>(key) != cid) continue;
    auto it = f.skipped.find(stream);
    if (it != f.skipped.end() && it->second.overlaps(lo, hi)) ++n;
  }
  return n;
}

}  // namespace mtp::sim
