// SPDX-License-Identifier: BSD-3-Clause
// Connection set-up, the application calls, events, timers and failure
// handling. Sending is in send.cc, receiving in recv.cc.
#include <cstring>

#include "connection_internal.h"

namespace mtp::core {

connection::connection(const connection_config &cfg, time_ns now) : cfg_(cfg) {
  // Sizes must be powers of two for the rings; round up rather than fail.
  auto round_up = [](uint64_t v) {
    uint64_t p = 1;
    while (p < v) p <<= 1;
    return p;
  };
  cfg_.stream_buffer_bytes = static_cast<uint32_t>(round_up(std::max<uint32_t>(cfg_.stream_buffer_bytes, 4096)));
  cfg_.max_messages = static_cast<uint32_t>(round_up(std::max<uint32_t>(cfg_.max_messages, 16)));
  cfg_.max_sent_packets = static_cast<uint32_t>(round_up(std::max<uint32_t>(cfg_.max_sent_packets, 64)));
  cfg_.max_packet_bytes = std::max<uint16_t>(cfg_.max_packet_bytes, 256);
  if (cfg_.members.size() > max_members) cfg_.members.resize(max_members);
  if (cfg_.threshold > cfg_.members.size()) cfg_.threshold = static_cast<uint32_t>(cfg_.members.size());

  cfg_.max_events = static_cast<uint32_t>(round_up(std::max<uint32_t>(cfg_.max_events, 64)));
  events_.resize(cfg_.max_events);
  event_mask_ = cfg_.max_events - 1;
  sent_.resize(cfg_.max_sent_packets);
  // A packet carries at most this many repairable frames (64 B messages in
  // a 1400 B packet): size the frame ring to match every tracked packet.
  frames_.resize(std::size_t{cfg_.max_sent_packets} * 32);
  dgram_q_.resize(std::max<uint32_t>(cfg_.max_datagrams, 1));
  dgram_buf_.resize(std::size_t{dgram_q_.size()} * cfg_.max_packet_bytes);
  scratch_.resize(cfg_.max_packet_bytes);
  send_streams_.resize(cfg_.max_streams);

  for (uint32_t id : cfg_.members) {
    auto m = std::make_unique<member_state>(cfg_.initial_rtt_ns, cfg_.max_ack_ranges);
    m->id = id;
    m->cc = make_congestion_control(cfg_.cc, cfg_.max_packet_bytes);
    m->lost.resize(cfg_.max_sent_packets);
    m->forwards.resize(cfg_.max_messages);
    m->conn_credit = cfg_.connection_window_bytes;
    m->stream_credit.assign(cfg_.max_streams, cfg_.stream_buffer_bytes);
    m->conn_advertised = cfg_.connection_window_bytes;
    m->recv.resize(cfg_.max_streams);
    m->last_rx_ns = now;
    m->last_tx_ns = now;
    // Probe every member at once: its first ACK is its acceptance.
    m->probe_pending = true;
    members_.push_back(std::move(m));
  }
  pacer_last_ = now;
  pacer_tokens_ = 10.0 * cfg_.max_packet_bytes;
}

connection::~connection() = default;

uint32_t connection::member_id(std::size_t i) const { return i < members_.size() ? members_[i]->id : 0; }
bool connection::member_live(std::size_t i) const { return i < members_.size() && members_[i]->live; }
const rtt_estimator &connection::member_rtt(std::size_t i) const { return members_[i]->rtt; }
uint64_t connection::member_cwnd(std::size_t i) const { return members_[i]->cc->cwnd(); }

uint32_t connection::needed_members() const {
  return cfg_.threshold ? cfg_.threshold : static_cast<uint32_t>(members_.size());
}

uint32_t connection::live_members() const {
  uint32_t n = 0;
  for (const auto &m : members_) n += m->live;
  return n;
}

uint64_t connection::send_buffered_bytes() const {
  uint64_t n = 0;
  for (const auto &s : send_streams_)
    if (s) n += s->write_end - s->base;
  return n;
}

uint64_t connection::packets_in_flight() const {
  uint64_t n = 0;
  for (uint64_t pn = sent_head_pn_; pn < next_pn_; ++pn) {
    const sent_packet &p = sent_[pn & (sent_.size() - 1)];
    if (p.pn == pn && p.ack_eliciting) ++n;
  }
  return n;
}

void connection::dump(FILE *out) const {
  std::fprintf(out, "connection %llx state %d pn [%llu, %llu) frames [%llu, %llu) now %llu\n",
               static_cast<unsigned long long>(cfg_.connection_id), static_cast<int>(state_),
               static_cast<unsigned long long>(sent_head_pn_), static_cast<unsigned long long>(next_pn_),
               static_cast<unsigned long long>(frame_head_), static_cast<unsigned long long>(frame_tail_),
               static_cast<unsigned long long>(last_now_));
  if (sent_head_pn_ < next_pn_) {
    const sent_packet &p = sent_[sent_head_pn_ & (sent_.size() - 1)];
    std::fprintf(out, "  head packet pn %llu members %llx acked %llx lost %llx repair %llx frames %u sent %llu\n",
                 static_cast<unsigned long long>(p.pn), static_cast<unsigned long long>(p.members),
                 static_cast<unsigned long long>(p.acked), static_cast<unsigned long long>(p.lost),
                 static_cast<unsigned long long>(p.repair), p.frame_count, static_cast<unsigned long long>(p.sent_ns));
  }
  for (const auto &mp : members_) {
    const member_state &m = *mp;
    std::fprintf(out,
                 "  member %u live %d inflight %llu cwnd %llu srtt %llu largest_acked %llu scan %llu lost_q %llu "
                 "fwd_q %llu pto %u probe %d loss_time %llu credit conn %llu\n",
                 m.id, m.live, static_cast<unsigned long long>(m.bytes_in_flight),
                 static_cast<unsigned long long>(m.cc->cwnd()), static_cast<unsigned long long>(m.rtt.smoothed()),
                 static_cast<unsigned long long>(m.largest_acked), static_cast<unsigned long long>(m.loss_scan_pn),
                 static_cast<unsigned long long>(m.lost_tail - m.lost_head),
                 static_cast<unsigned long long>(m.fwd_tail - m.fwd_head), m.pto_count, m.probe_pending,
                 static_cast<unsigned long long>(m.loss_time), static_cast<unsigned long long>(m.conn_credit));
    for (std::size_t id = 0; id < m.recv.size(); ++id)
      if (m.recv[id])
        std::fprintf(out, "    recv %zu released %llu advertised %llu read %llu ranges %zu highest %llu\n", id,
                     static_cast<unsigned long long>(m.recv[id]->released),
                     static_cast<unsigned long long>(m.recv[id]->advertised),
                     static_cast<unsigned long long>(m.recv[id]->read_offset), m.recv[id]->received.size(),
                     static_cast<unsigned long long>(m.recv[id]->highest_end));
    for (std::size_t id = 0; id < m.recv.size(); ++id) {
      if (!m.recv[id]) continue;
      const recv_stream &r = *m.recv[id];
      for (std::size_t i = r.ext_head; i < r.extents.size() && i < r.ext_head + 4; ++i)
        std::fprintf(out, "      extent [%llu, %llu) delivered %d\n", static_cast<unsigned long long>(r.extents[i].start),
                     static_cast<unsigned long long>(r.extents[i].end), r.extents[i].delivered);
      for (std::size_t i = 0; i < r.received.size() && i < 4; ++i)
        std::fprintf(out, "      received [%llu, %llu)\n", static_cast<unsigned long long>(r.received[i].lo),
                     static_cast<unsigned long long>(r.received[i].hi));
      for (std::size_t i = 0; i < r.delivered.size() && i < 4; ++i)
        std::fprintf(out, "      delivered [%llu, %llu)\n", static_cast<unsigned long long>(r.delivered[i].lo),
                     static_cast<unsigned long long>(r.delivered[i].hi));
    }
  }
  for (const auto &sp : send_streams_)
    if (sp)
      std::fprintf(out, "  send %llu base %llu sent %llu write %llu msgs head %llu stable %llu send %llu tail %llu\n",
                   static_cast<unsigned long long>(sp->id), static_cast<unsigned long long>(sp->base),
                   static_cast<unsigned long long>(sp->sent_end), static_cast<unsigned long long>(sp->write_end),
                   static_cast<unsigned long long>(sp->msg_head), static_cast<unsigned long long>(sp->msg_stable),
                   static_cast<unsigned long long>(sp->msg_send), static_cast<unsigned long long>(sp->msg_tail));
}

// ---- events ----

void connection::push_event(const event &e) {
  // Callers check events_room first where losing an event would lose data;
  // the rest (notifications) overwrite nothing: they are dropped if full.
  if (!events_room(1)) return;
  events_[event_tail_++ & event_mask_] = e;
}

bool connection::poll_event(event &out) {
  if (event_head_ == event_tail_) return false;
  out = events_[event_head_++ & event_mask_];
  return true;
}

void connection::check_ready() {
  if (ready_reported_) return;
  uint32_t accepted = 0;
  for (const auto &m : members_) accepted += m->accepted;
  if (accepted >= needed_members()) {
    ready_reported_ = true;
    event e;
    e.type = event_type::ready;
    e.count = accepted;
    push_event(e);
  }
}

// Space handed out in Received events is released at the start of the next
// call, so the spans stay valid until then.
void connection::begin_call(time_ns now) {
  last_now_ = now;
  for (std::size_t m = 0; m < members_.size(); ++m) release_delivered(m);
  // Work left undone for lack of event room resumes here.
  for (auto &s : send_streams_)
    if (s && s->msg_stable < s->msg_send) check_stability(*s, now);
}

void connection::member_failed(std::size_t mi, uint32_t reason, time_ns now) {
  member_state &m = *members_[mi];
  if (!m.live) return;
  m.live = false;
  m.bytes_in_flight = 0;
  m.lost_head = m.lost_tail;
  m.lost_cursor = 0;
  m.fwd_head = m.fwd_tail;
  event e;
  e.type = event_type::member_left;
  e.member = m.id;
  e.reason = reason;
  push_event(e);
  // Its outstanding data no longer holds anything back.
  for (auto &s : send_streams_)
    if (s) check_stability(*s, now);
  retire_packets();
  if (state_ == state::open && live_members() < (cfg_.threshold ? cfg_.threshold : 1u)) {
    event ce;
    ce.type = event_type::connection_error;
    ce.error_code = static_cast<uint64_t>(cfg_.threshold ? error_code::threshold_lost : error_code::member_timeout);
    push_event(ce);
    state_ = state::closed;
  }
}

// ---- application calls ----

status connection::open_stream(uint64_t id, stream_mode mode, ordering ord) {
  if (state_ != state::open) return status::closed;
  if (id >= send_streams_.size()) return status::bad_stream;
  if (ord != ordering::none && ord != ordering::fifo) return status::unsupported;
  if (send_streams_[id]) return status::invalid;
  auto s = std::make_unique<send_stream>();
  s->id = id;
  s->mode = mode;
  s->ord = ord;
  s->buf.resize(cfg_.stream_buffer_bytes);
  s->msgs.resize(cfg_.max_messages);
  for (std::size_t m = 0; m < members_.size(); ++m) s->acked.emplace_back(cfg_.max_messages);
  s->retx.assign(std::size_t{cfg_.max_messages} * members_.size(), 0);
  send_streams_[id] = std::move(s);
  return status::ok;
}

status connection::send(uint64_t stream_id, std::span<const std::byte> data, const message_options &opt,
                        time_ns now, uint64_t *message_id) {
  if (state_ != state::open) return status::closed;
  if (stream_id >= send_streams_.size() || !send_streams_[stream_id]) return status::bad_stream;
  send_stream &s = *send_streams_[stream_id];
  if (s.fin_requested) return status::bad_stream;
  if (s.mode == stream_mode::bytes && opt.rel != reliability::reliable) return status::invalid;
  if (data.size() > s.buf.size()) return status::too_large;
  if (s.mode == stream_mode::message && data.empty()) return status::invalid;
  if (s.write_end + data.size() - s.base > s.buf.size()) return status::would_block;
  if (s.msg_tail - s.msg_head >= s.msgs.size()) return status::would_block;

  const uint64_t start = s.write_end;
  const std::size_t pos = start & s.mask();
  const std::size_t first = std::min(data.size(), s.buf.size() - pos);
  std::memcpy(s.buf.data() + pos, data.data(), first);
  if (first < data.size()) std::memcpy(s.buf.data(), data.data() + first, data.size() - first);
  s.write_end += data.size();

  const uint64_t seq = s.msg_tail++;
  message_record &r = s.msg(seq);
  r = message_record{};
  r.start = start;
  r.end = s.write_end;
  r.rel = opt.rel;
  r.max_retx = opt.max_retransmissions;
  r.low_latency = opt.low_latency;
  r.queued_ns = now;
  if (opt.rel == reliability::partial && opt.lifetime_ns) {
    r.deadline_ns = now + opt.lifetime_ns;
    next_lifetime_ns_ = std::min(next_lifetime_ns_, r.deadline_ns);
  }
  if (opt.rel == reliability::partial)
    std::fill_n(s.retx.begin() + static_cast<long>((seq & (s.msgs.size() - 1)) * members_.size()), members_.size(), 0);
  if (s.oldest_unsent_ns == never) s.oldest_unsent_ns = now;
  if (opt.low_latency) flush_requested_ = true;
  if (message_id) *message_id = seq;
  return status::ok;
}

status connection::finish_stream(uint64_t stream_id) {
  if (stream_id >= send_streams_.size() || !send_streams_[stream_id]) return status::bad_stream;
  send_stream &s = *send_streams_[stream_id];
  if (s.mode != stream_mode::bytes) return status::bad_stream;
  s.fin_requested = true;
  return status::ok;
}

status connection::send_datagram(std::span<const std::byte> data, time_ns) {
  if (state_ != state::open) return status::closed;
  // Frame header (type + length varint) must fit with the packet header.
  if (data.size() + header_size + crc_size + 1 + varint_size(data.size()) > cfg_.max_packet_bytes)
    return status::too_large;
  if (dgram_tail_ - dgram_head_ >= dgram_q_.size()) return status::would_block;
  const std::size_t slot = dgram_tail_ % dgram_q_.size();
  const uint32_t off = static_cast<uint32_t>(slot * cfg_.max_packet_bytes);
  std::memcpy(dgram_buf_.data() + off, data.data(), data.size());
  dgram_q_[slot] = {off, static_cast<uint32_t>(data.size())};
  ++dgram_tail_;
  return status::ok;
}

void connection::close(error_code code, std::string_view reason, time_ns) {
  if (state_ != state::open) return;
  // Graceful: no new data; what is queued still goes out and is repaired
  // until stable, then CLOSE (poll_transmit).
  state_ = state::closing;
  close_pending_ = true;
  close_code_ = code;
  close_reason_ = std::string(reason.substr(0, 200));
}

void connection::abort(error_code code, std::string_view reason, time_ns now) {
  if (state_ == state::closed) return;
  close(code, reason, now);
  state_ = state::closing;
  close_pending_ = true;
  abort_ = true;
  // Messages that never became stable will not now.
  for (std::size_t id = 0; id < send_streams_.size(); ++id) {
    auto &s = send_streams_[id];
    if (!s) continue;
    for (uint64_t seq = s->msg_stable; seq < s->msg_tail; ++seq) {
      event e;
      e.type = event_type::send_error;
      e.stream_id = id;
      e.message_id = seq;
      e.error_code = static_cast<uint64_t>(code);
      push_event(e);
    }
    s->msg_stable = s->msg_tail;
  }
}

// ---- timers ----

time_ns connection::next_expiry() const {
  if (state_ == state::closed) return never;
  time_ns t = never;
  for (const auto &mp : members_) {
    const member_state &m = *mp;
    if (!m.live) continue;
    if (m.ack_pending) t = std::min(t, m.ack_deadline);
    t = std::min(t, m.loss_time);
    if (m.bytes_in_flight > 0 || m.retx_size() > 0)
      t = std::min(t, m.last_ack_eliciting_ns + (m.rtt.pto(cfg_.ack_delay_ns) << std::min<uint32_t>(m.pto_count, 16)));
    if (!m.heartbeat_pending) t = std::min(t, m.last_tx_ns + cfg_.heartbeat_interval_ns);
    t = std::min(t, m.last_rx_ns + cfg_.member_timeout_ns);
  }
  t = std::min(t, next_lifetime_ns_);
  // New data: a coalescing deadline, or the pacer's next release. Data held
  // back by congestion windows or flow control waits for ACKs or credit,
  // which arrive as packets, so it sets no timer.
  time_ns wait = never;
  if (!new_data_pending(last_now_, &wait)) return std::min(t, wait);
  if (cfg_.pacing && group_may_send(cfg_.max_packet_bytes) && pacer_tokens_ < cfg_.max_packet_bytes) {
    const uint64_t rate = std::max<uint64_t>(pacing_rate_bytes_per_s(), 1);
    const double need = static_cast<double>(cfg_.max_packet_bytes) - pacer_tokens_;
    t = std::min(t, pacer_last_ + static_cast<time_ns>(need * 1e9 / static_cast<double>(rate)) + 1);
  }
  return t;
}

void connection::on_expiry(time_ns now) {
  begin_call(now);
  if (state_ == state::closed) return;
  for (std::size_t i = 0; i < members_.size(); ++i) {
    member_state &m = *members_[i];
    if (!m.live) continue;
    if (now >= m.last_rx_ns + cfg_.member_timeout_ns) {
      member_failed(i, 1, now);
      if (state_ == state::closed) return;
      continue;
    }
    if (m.ack_pending && now >= m.ack_deadline) m.ack_now = true;
    if (m.loss_time != never && now >= m.loss_time) detect_losses(i, now);
    if ((m.bytes_in_flight > 0 || m.retx_size() > 0) &&
        now >= m.last_ack_eliciting_ns + (m.rtt.pto(cfg_.ack_delay_ns) << std::min<uint32_t>(m.pto_count, 16))) {
      ++m.pto_count;
      m.probe_pending = true;
      m.last_ack_eliciting_ns = now;  // back-off counts from here
      ++stats_.pto_probes;
    }
    if (now >= m.last_tx_ns + cfg_.heartbeat_interval_ns) m.heartbeat_pending = true;
  }
  if (now >= next_lifetime_ns_) check_lifetimes(now);
}

std::size_t connection::lone_member() const {
  std::size_t lone = members_.size();
  for (std::size_t i = 0; i < members_.size(); ++i) {
    if (!members_[i]->live) continue;
    if (lone != members_.size()) return members_.size();
    lone = i;
  }
  return lone;
}

bool connection::only_ack_owed(const member_state &m) const {
  return m.ack_pending && !m.credit_pending && !m.probe_pending && !m.heartbeat_pending && m.lost_tail == m.lost_head &&
         m.fwd_tail == m.fwd_head;
}

transmit connection::poll_transmit(std::span<std::byte> out, time_ns now) {
  begin_call(now);
  if (state_ == state::closed || out.size() < cfg_.max_packet_bytes) return {};
  out = out.first(cfg_.max_packet_bytes);
  if (close_pending_ && (abort_ || (send_buffered_bytes() == 0 && dgram_head_ == dgram_tail_))) {
    close_pending_ = false;
    packet_builder b(out, next_header());
    ++next_pn_;
    b.append_close(static_cast<uint64_t>(close_code_), close_reason_);
    uint64_t mask = 0;
    for (std::size_t i = 0; i < members_.size(); ++i)
      if (members_[i]->live) mask |= uint64_t{1} << i;
    state_ = state::closed;
    event e;
    e.type = event_type::closed;
    e.error_code = static_cast<uint64_t>(close_code_);
    push_event(e);
    ++stats_.packets_sent;
    return {b.finish(), mask};
  }
  // A lone member owed nothing but an ACK gets it with the next new data
  // (ping-pong and request-response: one packet per message, not two).
  if (const std::size_t lone = lone_member(); lone < members_.size() && only_ack_owed(*members_[lone])) {
    const transmit t = build_group_packet(out, now);
    if (t.bytes) return t;
  }
  // Per-member packets first (ACKs, repairs, probes), round robin so one
  // member's losses do not starve the others; then new data for the group.
  for (std::size_t k = 0; k < members_.size(); ++k) {
    const std::size_t m = (next_member_rr_ + k) % members_.size();
    if (!members_[m]->live) continue;
    transmit t = build_member_packet(m, out, now);
    if (t.bytes) {
      next_member_rr_ = m + 1;
      return t;
    }
  }
  return build_group_packet(out, now);
}

}  // namespace mtp::core
