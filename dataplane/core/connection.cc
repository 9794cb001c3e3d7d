// SPDX-License-Identifier: BSD-3-Clause
// Connection set-up, the application calls, events, timers, failure,
// closing and draining. Sending is in send.cc, acknowledgements and loss
// in ack.cc, receiving in recv.cc.
#include <cstring>

#include "connection_internal.h"

namespace mtp::core {

namespace {

uint64_t round_up_pow2(uint64_t v) {
  uint64_t p = 1;
  while (p < v) p <<= 1;
  return p;
}

// What a connection costs before any traffic: the object, its members
// and their fixed tables. Charged at creation (it cannot fail there; the
// owner checks the budget before it creates one).
uint64_t fixed_cost(const connection_config &c, std::size_t member_size) {
  return c.members.size() * (member_size + 160 /* congestion controller */ +
                             c.max_streams * (sizeof(uint64_t) + sizeof(void *)));
}

}  // namespace

connection::connection(const connection_config &cfg, time_ns now)
    : cfg_(cfg),
      own_memory_(cfg.memory == nullptr ? std::make_unique<session_memory>() : nullptr),
      acct_(cfg.memory != nullptr ? cfg.memory : own_memory_.get()),
      rng_(cfg.seed ^ (cfg.connection_id * 0x9e3779b97f4a7c15ull) ^ cfg.local_id) {
  // Sizes must be powers of two for the rings; round up rather than fail.
  cfg_.stream_buffer_bytes = static_cast<uint32_t>(round_up_pow2(std::max<uint32_t>(cfg_.stream_buffer_bytes, 4096)));
  cfg_.max_messages = static_cast<uint32_t>(round_up_pow2(std::max<uint32_t>(cfg_.max_messages, 16)));
  cfg_.max_sent_packets = static_cast<uint32_t>(round_up_pow2(std::max<uint32_t>(cfg_.max_sent_packets, 64)));
  cfg_.max_events = static_cast<uint32_t>(round_up_pow2(std::max<uint32_t>(cfg_.max_events, 16)));
  cfg_.max_datagrams = static_cast<uint32_t>(round_up_pow2(std::max<uint32_t>(cfg_.max_datagrams, 1)));
  cfg_.max_ack_ranges = std::max<uint32_t>(cfg_.max_ack_ranges, 4);
  cfg_.max_packet_bytes = std::max<uint16_t>(cfg_.max_packet_bytes, 256);
  cfg_.max_streams = std::max<uint16_t>(cfg_.max_streams, 1);
  cfg_.pn_window = std::max<uint64_t>(cfg_.pn_window, cfg_.max_sent_packets);
  if (cfg_.members.size() > max_members) cfg_.members.resize(max_members);
  if (cfg_.threshold > cfg_.members.size()) cfg_.threshold = static_cast<uint32_t>(cfg_.members.size());

  acct_.charge_always(sizeof(connection) + fixed_cost(cfg_, sizeof(member_state)));
  // Notifications (Ready, MemberLeft, Closed, ConnectionError) are at most
  // this many over the connection's life beyond what the application
  // drains; data events never take these slots, so none is ever lost.
  notify_reserve_ = cfg_.members.size() + 4;
  events_.bind(&acct_, cfg_.max_events);
  if (!events_.ensure(2 * notify_reserve_, 0, 0)) {
    // Over budget already: take the reserve anyway; it is small and the
    // owner refuses new connections before this point.
    events_.bind(nullptr, cfg_.max_events);
    (void)events_.ensure(2 * notify_reserve_, 0, 0);
    events_.bind(&acct_, cfg_.max_events);
  }
  sent_.bind(&acct_, cfg_.max_sent_packets);
  frames_.bind(&acct_, uint64_t{cfg_.max_sent_packets} * 32);
  dgrams_.bind(&acct_, cfg_.max_datagrams);
  dgram_stride_ = round_up_pow2(cfg_.max_packet_bytes);
  dgram_bytes_.bind(&acct_, uint64_t{cfg_.max_datagrams} * dgram_stride_);
  rx_arena_.init(&acct_, 1u << 18);
  send_streams_.resize(cfg_.max_streams);

  // Packet numbers start at a random value (3.2): an acknowledgement of
  // one of ours then proves the peer received it.
  initial_pn_ = rng_.below(uint64_t{1} << 31);
  next_pn_ = sent_head_pn_ = initial_pn_;
  pn_until_skip_ = 1 + rng_.below(256);

  for (uint32_t id : cfg_.members) {
    auto m = std::make_unique<member_state>(cfg_.initial_rtt_ns, cfg_.max_ack_ranges, &acct_);
    m->id = id;
    // Room to acknowledge, whatever the budget says later.
    (void)m->received_pns.reserve(4, true);
    m->cc = make_congestion_control(cfg_.cc, cfg_.max_packet_bytes);
    m->lost.bind(&acct_, cfg_.max_sent_packets);
    m->conn_credit = cfg_.connection_window_bytes;
    m->stream_credit.assign(cfg_.max_streams, cfg_.stream_buffer_bytes);
    m->conn_advertised = cfg_.connection_window_bytes;
    m->recv.resize(cfg_.max_streams);
    m->last_rx_ns = now;
    m->last_tx_ns = now;
    // A client chose its members; a server learns its client's address
    // from the opening packet and must see it answer first (3.6).
    m->validated = cfg_.side == role::client;
    // Probe every member at once: its first ACK is its acceptance (and,
    // for a server, proves the client's address).
    m->probe_pending = true;
    members_.push_back(std::move(m));
  }
  pacer_last_ = now;
  pacer_tokens_ = 10.0 * cfg_.max_packet_bytes;
  last_now_ = now;
}

connection::~connection() {
  // Containers give their charges back as they go; the fixed part here.
  send_streams_.clear();
  members_.clear();
  acct_.release(sizeof(connection) + fixed_cost(cfg_, sizeof(member_state)));
}

uint32_t connection::member_id(std::size_t i) const { return i < members_.size() ? members_[i]->id : 0; }
std::size_t connection::member_index(uint32_t id) const {
  for (std::size_t i = 0; i < members_.size(); ++i)
    if (members_[i]->id == id) return i;
  return members_.size();
}
bool connection::member_live(std::size_t i) const { return i < members_.size() && members_[i]->live; }
bool connection::member_validated(std::size_t i) const { return i < members_.size() && members_[i]->validated; }
bool connection::member_accepted(std::size_t i) const {
  return i < members_.size() && members_[i]->accepted && members_[i]->live;
}
const rtt_estimator &connection::member_rtt(std::size_t i) const { return members_[i]->rtt; }
uint64_t connection::member_cwnd(std::size_t i) const { return members_[i]->cc->cwnd(); }
uint64_t connection::member_bytes_in_flight(std::size_t i) const { return members_[i]->bytes_in_flight; }

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
  if (sent_.capacity() == 0) return 0;
  for (uint64_t pn = sent_head_pn_; pn < next_pn_; ++pn) {
    const sent_packet &p = sent_.at(pn);
    if (p.pn == pn && p.ack_eliciting) ++n;
  }
  return n;
}

bool connection::owes_members() const {
  for (std::size_t mi = 0; mi < members_.size(); ++mi) {
    const member_state &m = *members_[mi];
    if (!m.live) continue;
    if (m.repairs_queued()) return true;
    for (const auto &sp : send_streams_)
      if (sp && !sp->per_member[mi].fwd_owed.empty()) return true;
  }
  return false;
}

std::size_t connection::max_datagram_bytes() const {
  // Header, CRC, the frame type and a length varint of up to 2 bytes.
  return cfg_.max_packet_bytes - header_size - trailer_size(cfg_.packet_protection) - 1 - 2;
}

void connection::dump(FILE *out) const {
  std::fprintf(out,
               "connection %llx state %d pn [%llu, %llu) of %llu frames [%llu, %llu) of %llu send_blocked %d now %llu "
               "memory %llu\n",
               static_cast<unsigned long long>(cfg_.connection_id), static_cast<int>(state_),
               static_cast<unsigned long long>(sent_head_pn_), static_cast<unsigned long long>(next_pn_),
               static_cast<unsigned long long>(sent_.capacity()), static_cast<unsigned long long>(frame_head_),
               static_cast<unsigned long long>(frame_tail_), static_cast<unsigned long long>(frames_.capacity()),
               send_blocked_, static_cast<unsigned long long>(last_now_), static_cast<unsigned long long>(acct_.used()));
  if (sent_head_pn_ < next_pn_ && sent_.capacity() > 0) {
    const sent_packet &p = sent_.at(sent_head_pn_);
    std::fprintf(out, "  head packet pn %llu members %llx acked %llx lost %llx repair %llx frames %u sent %llu\n",
                 static_cast<unsigned long long>(p.pn), static_cast<unsigned long long>(p.members),
                 static_cast<unsigned long long>(p.acked), static_cast<unsigned long long>(p.lost),
                 static_cast<unsigned long long>(p.repair), p.frame_count, static_cast<unsigned long long>(p.sent_ns));
  }
  for (std::size_t mi = 0; mi < members_.size(); ++mi) {
    const member_state &m = *members_[mi];
    std::fprintf(out,
                 "  member %u live %d validated %d inflight %llu cwnd %llu srtt %llu largest_acked %llu scan %llu "
                 "lost_q %llu fwd %d pto %u probe %d loss_time %llu credit conn %llu sent_to %llu\n",
                 m.id, m.live, m.validated, static_cast<unsigned long long>(m.bytes_in_flight),
                 static_cast<unsigned long long>(m.cc->cwnd()), static_cast<unsigned long long>(m.rtt.smoothed()),
                 static_cast<unsigned long long>(m.largest_acked), static_cast<unsigned long long>(m.loss_scan_pn),
                 static_cast<unsigned long long>(m.lost_tail - m.lost_head), m.fwd_pending, m.pto_count,
                 m.probe_pending, static_cast<unsigned long long>(m.loss_time),
                 static_cast<unsigned long long>(m.conn_credit), static_cast<unsigned long long>(m.conn_sent_to));
    for (std::size_t id = 0; id < m.recv.size(); ++id) {
      if (!m.recv[id]) continue;
      const recv_stream &r = *m.recv[id];
      std::fprintf(out, "    recv %zu released %llu advertised %llu read %llu ranges %zu highest %llu chunks %zu\n", id,
                   static_cast<unsigned long long>(r.released), static_cast<unsigned long long>(r.advertised),
                   static_cast<unsigned long long>(r.read_offset), r.received.size(),
                   static_cast<unsigned long long>(r.highest_end), r.buf.chunks_held());
      for (std::size_t i = r.ext_head; i < r.extents.size() && i < r.ext_head + 4; ++i)
        std::fprintf(out, "      extent [%llu, %llu) delivered %d\n", static_cast<unsigned long long>(r.extents[i].start),
                     static_cast<unsigned long long>(r.extents[i].end), r.extents[i].delivered);
      for (std::size_t i = 0; i < r.received.size() && i < 4; ++i)
        std::fprintf(out, "      received [%llu, %llu)\n", static_cast<unsigned long long>(r.received[i].lo),
                     static_cast<unsigned long long>(r.received[i].hi));
    }
    for (const auto &sp : send_streams_) {
      if (!sp || mi >= sp->per_member.size()) continue;
      const stream_member &sm = sp->per_member[mi];
      std::fprintf(out, "    send %llu: acked %zu ranges to %llu, skip %zu, fwd owed %zu, sent_to %llu\n",
                   static_cast<unsigned long long>(sp->id), sm.acked.size(),
                   static_cast<unsigned long long>(sm.acked.contiguous_end(sp->base)), sm.skip.size(),
                   sm.fwd_owed.size(), static_cast<unsigned long long>(sm.sent_to));
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
//
// Data events (Received, Datagram, Sent, Expired, SendError) go in only
// while notify_reserve_ slots stay free; work they cannot report waits
// and resumes at the next call (begin_call). Notifications use the
// reserve, which is sized for every one a connection can raise.

bool connection::data_events_room(std::size_t n) {
  const uint64_t need = event_tail_ - event_head_ + n + notify_reserve_;
  return need <= events_.capacity() || events_.ensure(need, event_head_, event_tail_);
}

bool connection::push_data_event(const event &e) {
  if (!data_events_room(1)) return false;
  events_.at(event_tail_++) = e;
  return true;
}

bool connection::push_event(const event &e) {
  if (event_tail_ - event_head_ >= events_.capacity() &&
      !events_.ensure(event_tail_ - event_head_ + 1, event_head_, event_tail_))
    return false;  // cannot happen: the reserve covers every notification
  events_.at(event_tail_++) = e;
  return true;
}

bool connection::poll_event(event &out) {
  if (event_head_ == event_tail_) return false;
  out = events_.at(event_head_++);
  if (out.type != event_type::received && out.type != event_type::datagram) return true;
  // What the application has seen may be released at its next call.
  if (out.arena_end != 0) {
    arena_polled_ = std::max(arena_polled_, out.arena_end);
    --held_events_;
  } else if (out.type == event_type::received && !out.in_packet) {
    --held_events_;
    const std::size_t mi = member_index(out.member);
    if (mi < members_.size() && out.stream_id < members_[mi]->recv.size() && members_[mi]->recv[out.stream_id]) {
      recv_stream &r = *members_[mi]->recv[out.stream_id];
      if (r.unpolled) --r.unpolled;
    }
  }
  return true;
}

// Arena room for `bytes` more, placed as keep_packet_data() and datagrams
// place them (never across a chunk: a piece may skip to the next one).
bool connection::arena_reserve(std::size_t bytes) {
  const uint64_t want = arena_tail_ + 2 * bytes;
  return want - arena_released_ <= rx_arena_.window() && rx_arena_.reserve(arena_tail_, want);
}

void connection::keep_packet_data() {
  if (in_packet_events_ == 0) return;
  in_packet_events_ = 0;
  const uint64_t chunk = rx_arena_.chunk();
  for (uint64_t i = event_head_; i < event_tail_; ++i) {
    event &e = events_.at(i);
    if (!e.in_packet) continue;
    e.in_packet = false;
    ++held_events_;
    if (e.data.empty()) continue;
    uint64_t at = arena_tail_;
    if ((at & (chunk - 1)) + e.data.size() > chunk) at = (at + chunk - 1) & ~(chunk - 1);
    // Reserved by arena_reserve() before the packet was taken.
    rx_arena_.write(at, e.data);
    e.data = rx_arena_.piece(at, at + e.data.size());
    arena_tail_ = at + e.data.size();
    e.arena_end = arena_tail_;
  }
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
// call, so the spans stay valid until then; work left undone for lack of
// event room resumes here.
void connection::begin_call(time_ns now) {
  last_now_ = now;
  if (state_ >= state::draining) {
    // Without zero copy, Received events not yet polled point into the
    // receive buffers: they stay until the application took them all (a
    // slow application still gets every byte that arrived before CLOSE).
    if (!recv_released_ && (polls_every_call() || held_events_ == 0)) {
      recv_released_ = true;
      for (auto &m : members_)
        for (auto &r : m->recv) r.reset();
      trim_memory();
    }
    report_send_errors();
    return;
  }
  for (std::size_t m = 0; m < members_.size(); ++m) release_delivered(m);
  if (arena_polled_ > arena_released_) {
    arena_released_ = arena_polled_;
    rx_arena_.release_below(arena_released_);
  }
  for (auto &s : send_streams_)
    if (s && s->msg_stable < s->msg_send) check_stability(*s, now);
}

void connection::report_send_errors() {
  if (!send_errors_pending_) return;
  for (std::size_t id = 0; id < send_streams_.size(); ++id) {
    auto &s = send_streams_[id];
    if (!s) continue;
    while (s->msg_stable < s->msg_tail) {
      event e;
      e.type = event_type::send_error;
      e.stream_id = id;
      e.message_id = s->msg_stable;
      e.error_code = static_cast<uint64_t>(close_code_);
      if (!push_data_event(e)) return;  // resumed at the next call
      ++s->msg_stable;
    }
  }
  send_errors_pending_ = false;
  if (state_ >= state::draining && !closed_reported_) {
    // Closed comes after the last SendError.
    closed_reported_ = true;
    event e;
    e.type = event_type::closed;
    e.error_code = static_cast<uint64_t>(close_code_);
    push_event(e);
  }
}

void connection::member_failed(std::size_t mi, member_left_reason reason, time_ns now, uint64_t code) {
  member_state &m = *members_[mi];
  if (!m.live) return;
  m.live = false;
  m.bytes_in_flight = 0;
  m.lost_head = m.lost_tail;
  m.lost_cursor = 0;
  m.fwd_pending = false;
  m.probe_pending = m.heartbeat_pending = false;
  m.ack_pending = 0;
  m.credit_pending = false;
  for (auto &s : send_streams_)
    if (s) s->per_member[mi].fwd_owed.clear();
  if (streaming_member_ == static_cast<int>(mi)) {
    // Its message in fragments will not be finished. Without event room
    // the receiver is not told; it drops the fragments with the connection.
    recv_stream &r = *m.recv[streaming_stream_];
    if (!abandon_streaming(mi, r, streaming_stream_)) {
      r.streaming = false;
      streaming_member_ = -1;
    }
  }
  ++stats_.members_left;
  event e;
  e.type = event_type::member_left;
  e.member = m.id;
  e.reason = static_cast<uint32_t>(reason);
  e.error_code = code;
  push_event(e);
  if (state_ >= state::draining) return;
  // Its outstanding data no longer holds anything back.
  for (auto &s : send_streams_)
    if (s) check_stability(*s, now);
  retire_packets();
  const uint32_t need = cfg_.threshold ? cfg_.threshold : 1u;
  if (live_members() < need) {
    const error_code code =
        cfg_.threshold ? error_code::threshold_lost
                       : (reason == member_left_reason::version_mismatch ? error_code::version_mismatch
                                                                         : error_code::member_timeout);
    fail_connection(code, true, now);
  }
}

void connection::fail_connection(error_code code, bool tell_members, time_ns now) {
  if (state_ >= state::draining) return;
  event ce;
  ce.type = event_type::connection_error;
  ce.error_code = static_cast<uint64_t>(code);
  push_event(ce);
  close_code_ = code;
  close_reason_.clear();
  closed_reported_ = true;  // ConnectionError says it all
  send_errors_pending_ = true;
  if (tell_members)
    for (std::size_t i = 0; i < members_.size(); ++i)
      if (members_[i]->live) owe_close(i, code);
  enter_draining(now);
  report_send_errors();
}

// Draining (protocol.md 5.1): nothing new is sent or delivered; a closer
// answers a member that still talks with its CLOSE again; the state goes
// after three probe timeouts (at least two heartbeat intervals, so a
// member that missed the CLOSE has sent something to answer).
void connection::enter_draining(time_ns now) {
  if (state_ >= state::draining) return;
  state_ = state::draining;
  time_ns pto = 0;
  for (const auto &m : members_) pto = std::max(pto, m->rtt.pto(cfg_.ack_delay_ns));
  drain_until_ = now + std::max(3 * pto, 2 * cfg_.heartbeat_interval_ns);
  next_close_copy_ns_ = now + pto;
  // What is left will never be sent or delivered: give the memory back.
  for (auto &s : send_streams_) {
    if (!s) continue;
    s->buf.clear();
    s->base = s->write_end;
    release_pieces_below(*s);
    for (auto &pm : s->per_member) {
      pm.acked.clear();
      pm.skip.clear();
      pm.fwd_owed.clear();
      pm.acked.trim();
      pm.skip.trim();
      pm.fwd_owed.trim();
    }
  }
  // Receive buffers go at the next call: Received events of this one may
  // still point into them.
  for (auto &m : members_) {
    m->lost_head = m->lost_tail;
    m->bytes_in_flight = 0;
  }
  datagrams_gone(dgram_tail_);
  frame_head_ = frame_tail_;
  sent_head_pn_ = next_pn_;
  trim_memory();
}

// ---- application calls ----

status connection::open_stream(uint64_t id, stream_mode mode, ordering ord) {
  if (state_ != state::open) return status::closed;
  if (id >= send_streams_.size()) return status::bad_stream;
  if (ord != ordering::none && ord != ordering::fifo) return status::unsupported;
  if (send_streams_[id]) return status::invalid;
  const uint64_t cost = sizeof(send_stream) + members_.size() * sizeof(stream_member);
  // A sender always keeps the machinery to move a small window of packets
  // (tracked packets, their frames, each member's repair queue), so that
  // data the application queued can never take the memory its own
  // retransmission needs.
  if (!sent_.ensure(min_tracked_packets, sent_head_pn_, next_pn_) ||
      !frames_.ensure(4 * max_frames_per_packet, frame_head_, frame_tail_))
    return status::would_block;
  for (auto &m : members_)
    if (!m->lost.ensure(min_tracked_packets, m->lost_head, m->lost_tail)) return status::would_block;
  if (!acct_.charge(cost)) return status::would_block;
  auto s = std::make_unique<send_stream>(&acct_, cost);
  s->id = id;
  s->mode = mode;
  s->ord = ord;
  s->buf.init(&acct_, cfg_.stream_buffer_bytes);
  s->msgs.bind(&acct_, cfg_.max_messages);
  s->retx.bind(&acct_, uint64_t{cfg_.max_messages} * members_.size());
  s->ext.bind(&acct_, cfg_.max_messages);
  s->per_member.reserve(members_.size());
  // A message adds at most one disjoint range to each set.
  for (std::size_t m = 0; m < members_.size(); ++m) {
    s->per_member.emplace_back(cfg_.max_messages + 1, &acct_);
    // Repairs moved to ranges (unpin_head) need their room most when
    // memory is short: it is taken now.
    stream_member &sm = s->per_member.back();
    if (!sm.acked.reserve(8) || !sm.resend.reserve(8) || !sm.fwd_owed.reserve(8)) return status::would_block;
  }
  send_streams_[id] = std::move(s);
  return status::ok;
}

// Everything a message needs in its stream's tables is taken here, or
// nothing: the rest of its life never finds a table full.
status connection::prepare_send(uint64_t stream_id, uint64_t size, const message_options &opt, send_stream **out) {
  if (state_ != state::open) return status::closed;
  if (stream_id >= send_streams_.size() || !send_streams_[stream_id]) return status::bad_stream;
  send_stream &s = *send_streams_[stream_id];
  if (s.fin_requested) return status::bad_stream;
  if (s.mode == stream_mode::bytes && opt.rel != reliability::reliable) return status::invalid;
  if (size > cfg_.stream_buffer_bytes) return status::too_large;
  if (s.mode == stream_mode::message && size == 0) return status::invalid;
  if (s.write_end + size - s.base > cfg_.stream_buffer_bytes) return status::would_block;
  const uint64_t live = s.msg_tail - s.msg_head;
  if (!s.msgs.ensure(live + 1, s.msg_head, s.msg_tail)) return status::would_block;
  if (opt.rel == reliability::partial &&
      !s.retx.ensure((live + 1) * members_.size(), s.msg_head * members_.size(), s.msg_tail * members_.size()))
    return status::would_block;
  *out = &s;
  return status::ok;
}

void connection::commit_message(send_stream &s, uint64_t size, const message_options &opt, time_ns now,
                                uint64_t *message_id) {
  const uint64_t start = s.write_end;
  s.write_end += size;
  const uint64_t seq = s.msg_tail++;
  message_record &r = s.msgs.at(seq);
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
    for (std::size_t m = 0; m < members_.size(); ++m) s.retx.at(seq * members_.size() + m) = 0;
  if (s.oldest_unsent_ns == never) s.oldest_unsent_ns = now;
  if (opt.low_latency) flush_requested_ = true;
  if (message_id) *message_id = seq;
}

status connection::send(uint64_t stream_id, std::span<const std::byte> data, const message_options &opt,
                        time_ns now, uint64_t *message_id) {
  send_stream *sp = nullptr;
  if (const status st = prepare_send(stream_id, data.size(), opt, &sp); st != status::ok) return st;
  send_stream &s = *sp;
  if (!s.buf.reserve(s.write_end, s.write_end + data.size())) return status::would_block;
  s.buf.write(s.write_end, data);
  commit_message(s, data.size(), opt, now, message_id);
  return status::ok;
}

status connection::send_pieces(uint64_t stream_id, std::span<const send_piece> pieces, const message_options &opt,
                               time_ns now, uint64_t *message_id) {
  uint64_t size = 0;
  const std::size_t count = pieces.size();  // empty ones too: every token comes back
  for (const send_piece &p : pieces) {
    if (p.data.size() > cfg_.stream_buffer_bytes) return status::too_large;
    size += p.data.size();
  }
  send_stream *sp = nullptr;
  if (const status st = prepare_send(stream_id, size, opt, &sp); st != status::ok) return st;
  send_stream &s = *sp;
  if (count > s.ext.max_capacity()) return status::too_large;
  if (!s.ext.ensure(s.ext_tail - s.ext_head + count, s.ext_head, s.ext_tail)) return status::would_block;
  uint64_t at = s.write_end;
  for (const send_piece &p : pieces) {
    send_stream::piece &e = s.ext.at(s.ext_tail++);
    e.start = at;
    e.data = p.data.data();
    e.len = static_cast<uint32_t>(p.data.size());
    e.token = p.token;
    at += p.data.size();
  }
  commit_message(s, size, opt, now, message_id);
  return status::ok;
}

// Pieces wholly below the base are read no more: their tokens go back.
void connection::release_pieces_below(send_stream &s) {
  const uint64_t before = s.ext_released;
  while (s.ext_released < s.ext_tail) {
    const send_stream::piece &p = s.ext.at(s.ext_released);
    if (p.start + p.len > s.base) break;
    ++s.ext_released;
  }
  pieces_released_ += s.ext_released - before;
}

std::size_t connection::poll_released(std::span<uint64_t> out) {
  std::size_t n = 0;
  for (auto &sp : send_streams_) {
    if (!sp) continue;
    send_stream &s = *sp;
    while (s.ext_head < s.ext_released && n < out.size()) {
      out[n++] = s.ext.at(s.ext_head++).token;
      --pieces_released_;
    }
    if (n == out.size()) break;
  }
  while (dgram_polled_ < dgram_head_ && n < out.size()) {
    const queued_datagram &d = dgrams_.at(dgram_polled_++);
    if (!d.lent) continue;
    out[n++] = d.token;
    --pieces_released_;
  }
  return n;
}

void connection::release_all_pieces(time_ns now) {
  if (state_ < state::draining) abort(error_code::internal, "connection removed", now);
  for (auto &sp : send_streams_)
    if (sp) release_pieces_below(*sp);
}

void connection::read_stream(const send_stream &s, uint64_t off, std::span<std::byte> out) const {
  std::size_t done = 0;
  uint64_t i = std::max(s.ext_cursor, s.ext_released);
  if (i >= s.ext_tail || s.ext.at(i).start > off) i = s.ext_released;
  while (done < out.size()) {
    const uint64_t at = off + done;
    // The piece holding `at`, or the first one after it.
    while (i < s.ext_tail && s.ext.at(i).start + s.ext.at(i).len <= at) ++i;
    std::size_t n = out.size() - done;
    if (i < s.ext_tail && s.ext.at(i).start <= at) {
      const send_stream::piece &p = s.ext.at(i);
      const uint64_t in = at - p.start;
      n = std::min<std::size_t>(n, static_cast<std::size_t>(p.len - in));
      std::memcpy(out.data() + done, p.data + in, n);
      s.ext_cursor = i;
    } else {
      if (i < s.ext_tail) n = std::min<std::size_t>(n, static_cast<std::size_t>(s.ext.at(i).start - at));
      s.buf.read(at, out.subspan(done, n));
    }
    done += n;
  }
}

status connection::finish_stream(uint64_t stream_id) {
  if (state_ != state::open) return status::closed;
  if (stream_id >= send_streams_.size() || !send_streams_[stream_id]) return status::bad_stream;
  send_stream &s = *send_streams_[stream_id];
  if (s.mode != stream_mode::bytes) return status::bad_stream;
  s.fin_requested = true;
  return status::ok;
}

status connection::send_datagram(std::span<const std::byte> data, time_ns) { return queue_datagram(data, nullptr); }

status connection::send_datagram_piece(const send_piece &piece, time_ns) { return queue_datagram(piece.data, &piece); }

status connection::queue_datagram(std::span<const std::byte> data, const send_piece *lent) {
  if (state_ != state::open) return status::closed;
  if (data.size() > max_datagram_bytes()) return status::too_large;
  const uint64_t queued = dgram_tail_ - dgram_head_;
  const uint64_t mp = dgram_stride_;
  // Sent ones whose tokens wait to be polled keep their slots.
  if (queued >= cfg_.max_datagrams || !dgrams_.ensure(dgram_tail_ - dgram_polled_ + 1, dgram_polled_, dgram_tail_))
    return status::would_block;
  queued_datagram &d = dgrams_.at(dgram_tail_);
  d.len = static_cast<uint16_t>(data.size());
  d.lent = lent != nullptr;
  d.token = lent != nullptr ? lent->token : 0;
  d.data = lent != nullptr ? data.data() : nullptr;  // a copy is found by its number (the ring may move)
  if (lent == nullptr) {
    if (!dgram_bytes_.ensure((queued + 1) * mp, dgram_head_ * mp, dgram_tail_ * mp)) return status::would_block;
    std::memcpy(&dgram_bytes_.at(dgram_tail_ * mp), data.data(), data.size());
  }
  ++dgram_tail_;
  return status::ok;
}

// Datagrams up to `to` went (or were dropped): their tokens are due.
void connection::datagrams_gone(uint64_t to) {
  for (; dgram_head_ < to; ++dgram_head_) pieces_released_ += dgrams_.at(dgram_head_).lent;
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
  if (state_ >= state::draining) return;
  close_code_ = code;
  close_reason_ = std::string(reason.substr(0, 200));
  abort_ = true;
  close_pending_ = false;
  send_errors_pending_ = true;
  for (std::size_t i = 0; i < members_.size(); ++i)
    if (members_[i]->live) owe_close(i, code);
  enter_draining(now);
  report_send_errors();
}

void connection::owe_close(std::size_t mi, error_code code) {
  members_[mi]->close_owed = true;
  members_[mi]->close_code = code;
}

void connection::on_version_negotiation(std::span<const std::byte> packet, time_ns now) {
  uint32_t sender = 0;
  uint64_t cid = 0;
  version_list v;
  const parse_status st = parse_version_negotiation(packet, sender, cid, v);
  if (st != parse_status::ok) {
    drop(drop_reason_of(st));
    return;
  }
  const std::size_t mi = member_index(sender);
  // Only a client asks; only a member that never answered may say it
  // does not speak our version (afterwards it evidently does).
  if (cid != cfg_.connection_id || mi == members_.size() || !members_[mi]->live || cfg_.side != role::client ||
      members_[mi]->accepted || v.lists(protocol_version)) {
    drop(drop_reason::unknown_sender);
    return;
  }
  member_failed(mi, member_left_reason::version_mismatch, now);
}

// Tables that grew in a burst shrink back when they empty.
void connection::trim_memory() {
  if (event_head_ == event_tail_ && events_.capacity() > 4 * notify_reserve_) {
    events_.reset();
    (void)events_.ensure(2 * notify_reserve_, 0, 0);
  }
  // A sender keeps its minimum machinery (open_stream); the rest goes.
  bool sending = false;
  for (auto &s : send_streams_) sending |= s != nullptr;
  if (sent_head_pn_ == next_pn_ && sent_.capacity() > min_tracked_packets) {
    sent_.reset();
    if (sending) (void)sent_.ensure(min_tracked_packets, sent_head_pn_, next_pn_);
  }
  if (frame_head_ == frame_tail_ && frames_.capacity() > 4 * max_frames_per_packet) {
    frames_.reset();
    if (sending) (void)frames_.ensure(4 * max_frames_per_packet, frame_head_, frame_tail_);
  }
  if (dgram_polled_ == dgram_tail_ && dgrams_.capacity() > 0) {
    dgrams_.reset();
    dgram_bytes_.reset();
  }
  for (auto &m : members_) {
    if (m->lost_head == m->lost_tail && m->lost.capacity() > min_tracked_packets && sent_.capacity() <= min_tracked_packets) {
      m->lost.reset();
      if (sending) (void)m->lost.ensure(min_tracked_packets, m->lost_head, m->lost_tail);
    }
    for (auto &r : m->recv)
      if (r) r->buf.trim();
  }
  for (auto &s : send_streams_) {
    if (!s) continue;
    if (s->base == s->write_end) s->buf.clear();  // all released: the last chunk too
    s->buf.trim();
    if (s->msg_head == s->msg_tail && s->msgs.capacity() > 64) {
      s->msgs.reset();
      s->retx.reset();
    }
    if (s->ext_head == s->ext_tail && s->ext.capacity() > 64) s->ext.reset();
  }
}

// ---- timers ----

time_ns connection::close_copy_interval() const {
  time_ns pto = 0;
  for (const auto &m : members_) pto = std::max(pto, m->rtt.pto(cfg_.ack_delay_ns));
  return pto;
}

time_ns connection::next_expiry() const {
  if (state_ == state::finished) return never;
  if (state_ == state::draining)
    return sent_close_ && close_copies_ < max_close_copies ? std::min(drain_until_, next_close_copy_ns_) : drain_until_;
  time_ns t = never;
  for (const auto &mp : members_) {
    const member_state &m = *mp;
    if (!m.live) continue;
    if (m.ack_pending) t = std::min(t, m.ack_deadline);
    t = std::min(t, m.loss_time);
    if (m.bytes_in_flight > 0 || m.repairs_queued())
      t = std::min(t, m.last_ack_eliciting_ns + (m.rtt.pto(cfg_.ack_delay_ns) << std::min<uint32_t>(m.pto_count, 16)));
    if (!m.heartbeat_pending) t = std::min(t, m.last_tx_ns + cfg_.heartbeat_interval_ns);
    t = std::min(t, m.last_rx_ns + cfg_.member_timeout_ns);
  }
  t = std::min(t, next_lifetime_ns_);
  // New data: a coalescing deadline, or the pacer's next release. Data held
  // back by congestion windows or flow control waits for ACKs or credit,
  // which arrive as packets, so it sets no timer.
  time_ns wait = never;
  if (send_blocked_) return t;  // an ACK or a packet unblocks it, not time
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
  if (state_ == state::finished) return;
  if (state_ == state::draining) {
    if (now >= drain_until_) {
      state_ = state::finished;
      trim_memory();
      return;
    }
    if (sent_close_ && now >= next_close_copy_ns_ && close_copies_ < max_close_copies) {
      // CLOSE is not acknowledged: a few more copies, backing off from a
      // probe timeout, to the members still live, beside the answers to
      // what they send (5.1).
      ++close_copies_;
      for (std::size_t i = 0; i < members_.size(); ++i)
        if (members_[i]->live) owe_close(i, members_[i]->close_code == error_code::no_error ? close_code_ : members_[i]->close_code);
      next_close_copy_ns_ = now + (close_copy_interval() << close_copies_);  // PTO, 2 PTO, 4 PTO
    }
    return;
  }
  for (std::size_t i = 0; i < members_.size(); ++i) {
    member_state &m = *members_[i];
    if (!m.live) continue;
    if (now >= m.last_rx_ns + cfg_.member_timeout_ns) {
      member_failed(i, member_left_reason::timeout, now);
      if (state_ >= state::draining) return;
      continue;
    }
    if (m.ack_pending && now >= m.ack_deadline) m.ack_now = true;
    if (m.loss_time != never && now >= m.loss_time) detect_losses(i, now);
    if ((m.bytes_in_flight > 0 || m.repairs_queued()) &&
        now >= m.last_ack_eliciting_ns + (m.rtt.pto(cfg_.ack_delay_ns) << std::min<uint32_t>(m.pto_count, 16))) {
      ++m.pto_count;
      m.probe_pending = true;
      m.last_ack_eliciting_ns = now;  // back-off counts from here
      ++stats_.pto_probes;
    }
    if (now >= m.last_tx_ns + cfg_.heartbeat_interval_ns) m.heartbeat_pending = true;
  }
  if (now >= next_lifetime_ns_) check_lifetimes(now);
  if (send_buffered_bytes() == 0 && sent_head_pn_ == next_pn_) trim_memory();
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
  return m.ack_pending && !m.credit_pending && !m.probe_pending && !m.heartbeat_pending && !m.repairs_queued() &&
         !m.fwd_pending && !m.key_pending;
}

status connection::set_group_key(uint64_t epoch, std::span<const std::byte> secret) {
  if (cfg_.side != role::client || cfg_.packet_protection != protection::sealed ||
      secret.size() != group_secret_size || (group_key_set_ && epoch <= group_epoch_) || epoch > varint_max)
    return status::invalid;
  group_key_set_ = true;
  group_epoch_ = epoch;
  std::memcpy(group_secret_, secret.data(), group_secret_size);
  for (auto &m : members_) {
    m->key_acked = false;
    m->key_pending = m->live;
  }
  return status::ok;
}

bool connection::member_has_group_key(std::size_t index) const {
  return index < members_.size() && members_[index]->key_acked;
}

transmit connection::poll_transmit(std::span<std::byte> out, time_ns now) {
  begin_call(now);
  if (state_ == state::finished || out.size() < cfg_.max_packet_bytes) return {};
  out = out.first(cfg_.max_packet_bytes);
  // CLOSE owed to anyone: a member expelled for a protocol violation, or
  // every member while draining.
  for (std::size_t m = 0; m < members_.size(); ++m)
    if (members_[m]->close_owed) return build_close_packet(m, out);
  if (state_ == state::draining) return {};
  if (close_pending_ && send_buffered_bytes() == 0 && dgram_head_ == dgram_tail_ && (retire_packets(), sent_head_pn_ == next_pn_)) {
    // Everything is stable and nothing is in flight: CLOSE to every live
    // member, then drain.
    close_pending_ = false;
    for (std::size_t i = 0; i < members_.size(); ++i)
      if (members_[i]->live) owe_close(i, close_code_);
    if (!closed_reported_) {
      closed_reported_ = true;
      event e;
      e.type = event_type::closed;
      e.error_code = static_cast<uint64_t>(close_code_);
      push_event(e);
    }
    enter_draining(now);
    for (std::size_t m = 0; m < members_.size(); ++m)
      if (members_[m]->close_owed) return build_close_packet(m, out);
    return {};
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
