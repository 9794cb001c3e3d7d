// SPDX-License-Identifier: BSD-3-Clause
// See harness.h.
#include "harness.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <sstream>

#include "oracle.h"

namespace mtp::sim {

using namespace mtp::core;

namespace {

constexpr uint32_t client_node = 1000;
constexpr uint32_t adversary_node = 999;
constexpr uint64_t connection_id = 0xc0ffee00;
uint32_t member_node(uint32_t j) { return 1 + j; }

uint64_t mix(uint64_t x) {  // splitmix64
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t hash_name(const std::string &s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (char c : s) h = (h ^ static_cast<uint8_t>(c)) * 0x100000001b3ull;
  return h;
}

uint8_t pattern(uint32_t sender, uint64_t stream, uint64_t seq, std::size_t i) {
  return static_cast<uint8_t>((sender * 131 + stream * 31 + seq * 7 + i * 13) & 0xff);
}

void fill(std::vector<std::byte> &b, uint32_t sender, uint64_t stream, uint64_t seq) {
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = static_cast<std::byte>(pattern(sender, stream, seq, i));
  if (b.size() >= 16) {
    std::memcpy(b.data(), &sender, 4);
    const auto st = static_cast<uint32_t>(stream);
    std::memcpy(b.data() + 4, &st, 4);
    std::memcpy(b.data() + 8, &seq, 8);
  }
}

// ---- the applications ----

struct planned_message {
  uint64_t start = 0, end = 0;
  time_ns queued_ns = never;  ///< never: not queued yet
  int outcome = 0;            ///< 0 none, 1 Sent, 2 Expired, 3 SendError
  uint32_t count = 0;
};

/// One sending application: the client, or a member sending back.
struct sender_app {
  uint32_t node = 0;
  connection *conn = nullptr;
  std::vector<std::vector<planned_message>> streams;  ///< planned sizes become offsets as queued
  std::vector<std::vector<uint32_t>> sizes;
  std::vector<std::size_t> next;      ///< per stream: next message to queue
  std::vector<uint64_t> written;      ///< per stream: bytes queued
  std::vector<bool> finished;         ///< byte streams: finish_stream() called
  std::set<uint32_t> left;            ///< member nodes reported MemberLeft
  std::map<uint32_t, uint32_t> left_reason;
  std::map<uint32_t, uint64_t> left_code;
  std::vector<uint32_t> member_nodes;
  uint64_t connection_error = 0;
  bool closed = false, close_called = false;
  uint32_t datagrams_sent = 0;
  std::vector<time_ns> datagram_times;
  uint64_t would_block = 0;
  time_ns last_drain_ns = 0;
  bool dead = false;  ///< crashed: no more calls
  /// Bytes lent to the connection (send_pieces), by token, until it hands
  /// them back; poisoned then, so a read after the release corrupts what
  /// the receivers check.
  std::map<uint64_t, std::vector<std::byte>> lent;
  uint64_t next_token = 0;
  bool all_queued() const {
    for (std::size_t k = 0; k < streams.size(); ++k)
      if (next[k] < sizes[k].size()) return false;
    return true;
  }
};

/// What one receiving application got from one sender.
struct in_stream {
  std::vector<std::byte> partial;
  uint64_t partial_next = 0;  ///< the offset the next piece of `partial` must start at
  uint64_t next_seq = 0;
  std::set<uint64_t> got;
  std::vector<std::byte> bytes;
  bool fin = false;
};
struct receiver_app {
  uint32_t node = 0;
  std::map<std::pair<uint32_t, uint64_t>, in_stream> in;  ///< (sender node, stream)
  std::set<std::string> datagrams;  ///< contents (a string: GCC 12 warns falsely on sets of byte vectors)
  uint64_t duplicate_datagrams = 0;
  uint64_t connection_error = 0;
  bool closed = false;
  uint64_t closed_code = 0;
  time_ns last_drain_ns = 0;
};

class run_state {
 public:
  run_state(const scenario &sc, uint64_t seed)
      : sc_(sc),
        seed_(mix(seed ^ hash_name(sc.name))),
        lend_((seed & 1) != 0),
        in_place_((seed & 2) != 0),
        net_(seed_),
        work_(mix(seed_ ^ 0x5eed)),
        oracle_(oracle_cfg()) {}

  run_result run();

 private:
  oracle_config oracle_cfg();
  connection_config base_config(uint32_t local, role side) const;
  void build();
  void plan(sender_app &a, uint32_t streams, uint32_t messages);
  void app_step();
  void drive_sender(sender_app &a);
  void take_back(sender_app &a);
  void drain_sender(sender_app &a);
  void drain_receiver(connection &c, receiver_app &r, bool is_member);
  void on_received(receiver_app &r, const event &e, uint32_t sender_node);
  sender_app *app_of(connection *c);
  bool done();
  void final_poll();
  bool final_poll_ = false;  ///< every application polls now, lazy or not
  time_ns dump_at_ns_ = std::getenv("MTP_SIM_DUMP_AT") ? std::strtoull(std::getenv("MTP_SIM_DUMP_AT"), nullptr, 10) : never;
  uint64_t progress() const { return progress_; }
  void fail(const std::string &why) {
    if (res_.failure.empty()) res_.failure = why;
  }
  void check_end();
  void check_lifetimes();
  void adversary_tap(const wire_packet &p);
  void forge(uint32_t victim_node, uint32_t claimed_node);
  void dump();

  const scenario &sc_;
  uint64_t seed_;
  /// Odd seeds lend every other message and datagram to the connection
  /// (send_pieces, send_datagram_piece); even seeds copy all, so the
  /// memory pressure of the copying path is what they test.
  bool lend_ = false;
  /// Seeds with bit 1 set: messages spanning packets come in place, in
  /// fragments (connection_config::in_place_fragments_max_bytes).
  bool in_place_ = false;
  // The nodes' session memory outlives the connections charged to it.
  std::vector<std::unique_ptr<session_memory>> memories_;
  std::map<uint32_t, session_memory *> memory_of_;
  network net_;
  rng work_;
  wire_oracle oracle_;
  run_result res_;
  sender_app client_;
  std::map<connection *, sender_app> member_senders_;  ///< reverse traffic, per server connection
  receiver_app client_rx_;
  std::map<uint32_t, receiver_app> member_rx_;        ///< per member node
  std::map<connection *, uint32_t> member_of_;         ///< server connection -> member index
  std::set<uint32_t> dead_;                            ///< member indices crashed (or restarted)
  bool client_crashed_ = false;
  uint64_t progress_ = 0;
  // The adversary's stock of packets to replay.
  struct captured {
    uint32_t from, to;
    std::vector<std::byte> bytes;
  };
  std::vector<captured> replay_stock_;
  uint64_t injected_ = 0;
  // Copies of each STREAM frame's bytes the client put on the wire, per
  // (member node, stream, offset): the retransmission bounds.
  std::map<std::tuple<uint32_t, uint64_t, uint64_t>, uint32_t> stream_sends_;
  // The client's window toward member 0 over time (bottleneck, pacing).
  uint64_t cwnd_max_ = 0, cwnd_peak_before_fall_ = 0;
  bool cwnd_fell_ = false;
};

oracle_config run_state::oracle_cfg() {
  oracle_config c;
  c.stream_window = sc_.stream_buffer;
  c.connection_window = sc_.connection_window ? sc_.connection_window : uint64_t{sc_.stream_buffer} * 4;
  c.check_pacing = sc_.check_pacing && sc_.pacing;
  c.adversary = sc_.spoof;
  // A lazy application sees a Sent event some time after it was raised:
  // the count is then checked between the minimum and what the wire shows.
  c.exact_sent_count = sc_.lazy_app_ns == 0 && !sc_.spoof;
  c.cwnd_of = [this](uint32_t from, uint32_t to, uint64_t cid) -> uint64_t {
    for (auto &e : net_.endpoints()) {
      if (e->removed || e->node != from || e->conn->id() != cid) continue;
      for (std::size_t i = 0; i < e->member_nodes.size(); ++i)
        if (e->member_nodes[i] == to) return e->conn->member_cwnd(i);
    }
    return 0;
  };
  return c;
}

connection_config run_state::base_config(uint32_t local, role side) const {
  connection_config c;
  c.connection_id = connection_id;
  c.local_id = local;
  c.side = side;
  c.max_streams = 8;
  c.stream_buffer_bytes = sc_.stream_buffer;
  c.connection_window_bytes = sc_.connection_window ? sc_.connection_window : uint64_t{sc_.stream_buffer} * 4;
  c.max_messages = sc_.max_messages;
  c.max_ack_ranges = sc_.max_ack_ranges;
  c.max_sent_packets = 2048;
  c.max_events = sc_.max_events;
  c.member_timeout_ns = sc_.member_timeout_ns;
  c.heartbeat_interval_ns = sc_.heartbeat_ns;
  c.initial_rtt_ns = 30'000'000;
  c.cc = sc_.cc;
  c.pacing = sc_.pacing;
  // A lazy application polls across calls: no spans into packets then.
  c.zero_copy_delivery = sc_.lazy_app_ns == 0;
  c.in_place_fragments_max_bytes = in_place_ ? 1u << 16 : 0;
  c.seed = mix(seed_ ^ (uint64_t{local} << 32));
  auto it = memory_of_.find(local);
  c.memory = it == memory_of_.end() ? nullptr : it->second;
  return c;
}

void run_state::plan(sender_app &a, uint32_t streams, uint32_t messages) {
  a.streams.assign(streams, {});
  a.sizes.assign(streams, {});
  a.next.assign(streams, 0);
  a.written.assign(streams, 0);
  a.finished.assign(streams, false);
  for (uint32_t k = 0; k < streams; ++k) {
    const uint32_t n = messages / 2 + static_cast<uint32_t>(work_.below(messages - messages / 2 + 1));
    for (uint32_t i = 0; i < n; ++i)
      a.sizes[k].push_back(sc_.min_size + static_cast<uint32_t>(work_.below(sc_.max_size - sc_.min_size + 1)));
    a.streams[k].resize(n);
  }
}

void run_state::build() {
  // Links: the client to each member; the way back may differ.
  for (uint32_t j = 0; j < sc_.members; ++j) {
    link_params out = sc_.link, back = sc_.back_link.value_or(sc_.link);
    if (static_cast<int>(j) == sc_.slow_member) out.bandwidth_bps = back.bandwidth_bps = sc_.slow_bps;
    net_.set_link(client_node, member_node(j), out, false);
    net_.set_link(member_node(j), client_node, back, false);
    net_.set_link(adversary_node, member_node(j), sc_.link, true);
  }
  net_.set_link(adversary_node, client_node, sc_.link, true);
  net_.calm_after(sc_.calm_after_ns);
  if (sc_.memory_limit) {
    for (uint32_t n : {client_node}) {
      memories_.push_back(std::make_unique<session_memory>(sc_.memory_limit));
      memory_of_[n] = memories_.back().get();
    }
    for (uint32_t j = 0; j < sc_.members; ++j) {
      memories_.push_back(std::make_unique<session_memory>(sc_.memory_limit));
      memory_of_[member_node(j)] = memories_.back().get();
    }
  }

  connection_config c = base_config(client_node, role::client);
  c.threshold = sc_.threshold;
  for (uint32_t j = 0; j < sc_.members; ++j) {
    c.members.push_back(member_node(j));
    client_.member_nodes.push_back(member_node(j));
  }
  endpoint &ep = net_.add(client_node, std::make_unique<connection>(c, 0), client_.member_nodes);
  client_.node = client_node;
  client_.conn = ep.conn.get();
  plan(client_, sc_.streams, sc_.messages);
  for (uint32_t k = 0; k < sc_.streams; ++k)
    if (client_.conn->open_stream(k, sc_.mode, sc_.ord) != status::ok) fail("open_stream failed");
  for (uint32_t d = 0; d < sc_.datagrams; ++d) client_.datagram_times.push_back(work_.below(400'000'000));
  std::sort(client_.datagram_times.begin(), client_.datagram_times.end());

  // Members accept the client's opening packet, as the daemon does.
  for (uint32_t j = 0; j < sc_.members; ++j) {
    const uint32_t node = member_node(j);
    member_rx_[node].node = node;
    net_.set_acceptor(node, [this, j](uint32_t n, uint32_t from, std::span<const std::byte>, time_ns now) {
      connection_config s = base_config(n, role::server);
      s.members = {from};
      if (sc_.member_max_messages) s.max_messages = sc_.member_max_messages;
      auto conn = std::make_unique<connection>(s, now);
      member_of_[conn.get()] = j;
      if (sc_.reverse) {
        sender_app &a = member_senders_[conn.get()];
        a.node = n;
        a.conn = conn.get();
        a.member_nodes = {from};
        plan(a, 1, std::max<uint32_t>(sc_.messages / 4, 8));
        if (conn->open_stream(0, stream_mode::message, ordering::fifo) != status::ok) fail("member open_stream failed");
      }
      return conn;
    });
  }

  // Failures and changes on the timeline.
  if (!sc_.crash.empty()) {
    net_.at(sc_.crash_at_ns, [this] {
      for (uint32_t j : sc_.crash) {
        net_.crash(member_node(j));
        dead_.insert(j);
      }
    });
    if (sc_.restart_after_ns)
      net_.at(sc_.crash_at_ns + sc_.restart_after_ns, [this] {
        for (uint32_t j : sc_.crash) net_.restart(member_node(j));
      });
  }
  if (sc_.leave_member >= 0)
    net_.at(sc_.leave_at_ns, [this] {
      // The member's application closes its side: it leaves the group.
      for (auto &e : net_.endpoints())
        if (!e->removed && e->node == member_node(static_cast<uint32_t>(sc_.leave_member)))
          e->conn->close(error_code::application, "leaving", net_.now());
    });
  if (sc_.client_crash)
    net_.at(sc_.client_crash_at_ns, [this] {
      net_.crash(client_node);
      client_crashed_ = true;
      client_.dead = true;
    });
  if (sc_.partition_member >= 0)
    net_.partition(client_node, member_node(static_cast<uint32_t>(sc_.partition_member)), sc_.partition_at_ns,
                   sc_.partition_at_ns + sc_.partition_ns);
  if (sc_.change_at_ns)
    net_.at(sc_.change_at_ns, [this] {
      for (uint32_t j = 0; j < sc_.members; ++j) net_.set_link(client_node, member_node(j), sc_.changed, true);
    });
  if (sc_.spoof || sc_.third_party) {
    // Forged packets every 100 ms of the transfer's first second.
    for (time_ns t = 20'000'000; t < 1'000'000'000; t += 100'000'000)
      net_.at(t, [this] {
        const uint32_t j = static_cast<uint32_t>(work_.below(sc_.members));
        if (sc_.spoof) {
          forge(client_node, member_node(j));  // claims to be member j
          forge(member_node(j), client_node);  // claims to be the client
        }
        if (sc_.third_party) {
          forge(client_node, adversary_node);
          forge(member_node(j), adversary_node);
        }
      });
  }

  net_.set_tap([this](const wire_packet &p) {
    oracle_.on_wire(p, net_.now());
    if (sc_.replay) adversary_tap(p);
    if (!p.delivered && !p.injected && p.from == client_node && sc_.rel != reliability::reliable) {
      packet_header h;
      std::span<const std::byte> frames;
      if (parse_packet(p.bytes, h, frames) == parse_status::ok) {
        frame_reader rd(frames);
        frame f;
        while (!rd.done() && rd.next(f) == parse_status::ok)
          if (f.type == frame_type::stream) ++stream_sends_[{p.to, f.stream.stream_id, f.stream.offset}];
      }
    }
    if (std::getenv("MTP_SIM_TRACE")) {
      packet_header h;
      std::span<const std::byte> frames;
      if (parse_packet(p.bytes, h, frames) != parse_status::ok) return;
      std::printf("%.6f %u->%u pn %llu%s%s%s:", static_cast<double>(net_.now()) / 1e9, p.from, p.to,
                  static_cast<unsigned long long>(h.packet_number), p.delivered ? " arrives" : "",
                  p.dropped ? " DROPPED" : "", p.injected ? " FORGED" : "");
      frame_reader rd(frames);
      frame f;
      while (!rd.done() && rd.next(f) == parse_status::ok) {
        if (f.type == frame_type::stream)
          std::printf(" S%llu[%llu,+%zu)%s", static_cast<unsigned long long>(f.stream.stream_id),
                      static_cast<unsigned long long>(f.stream.offset), f.stream.data.size(), f.stream.fin ? "fin" : "");
        else if (f.type == frame_type::forward)
          std::printf(" F%llu[%llu,+%llu)", static_cast<unsigned long long>(f.forward.stream_id),
                      static_cast<unsigned long long>(f.forward.offset),
                      static_cast<unsigned long long>(f.forward.length));
        else if (f.type == frame_type::ack)
          std::printf(" A%llu", static_cast<unsigned long long>(f.ack.largest));
        else if (f.type == frame_type::credit)
          std::printf(" C%llu:%llu", static_cast<unsigned long long>(f.credit.connection ? 0 : f.credit.stream_id + 1),
                      static_cast<unsigned long long>(f.credit.max_offset));
        else
          std::printf(" t%d", static_cast<int>(f.type));
      }
      std::printf("\n");
    }
  });
}

// ---- the adversary ----

void run_state::adversary_tap(const wire_packet &p) {
  // Keeps a copy of some delivered engine packets and plays each back
  // once, later (0.1 to 0.6 s), as if from its sender: late duplicates.
  if (!p.delivered || p.injected || work_.below(64) != 0 || replay_stock_.size() >= 256) return;
  replay_stock_.push_back({p.from, p.to, {p.bytes.begin(), p.bytes.end()}});
  const std::size_t idx = replay_stock_.size() - 1;
  net_.at(net_.now() + 100'000'000 + work_.below(500'000'000), [this, idx] {
    const captured &c = replay_stock_[idx];
    ++injected_;
    net_.inject(c.from, c.to, c.bytes);
  });
}

// A forged packet to `victim` claiming to come from `claimed`: CRC-valid,
// with the right connection and sender ids, but one thing no engine may
// accept: a packet number far ahead, an ACK of packets never sent, a
// FORWARD or STREAM beyond any credit, or a STREAM contradicting its
// stream. (Forged CLOSE and well-formed data within credit need keys to
// stop: the security revision.)
void run_state::forge(uint32_t victim, uint32_t claimed) {
  packet_header h;
  h.sender_id = claimed == adversary_node ? (victim == client_node ? member_node(0) : client_node) : claimed;
  h.connection_id = connection_id;
  std::vector<std::byte> out(1400);
  const uint64_t kind = work_.below(4);
  // A packet number far ahead of anything sent, or a plausible one.
  h.packet_number = kind == 0 ? (uint64_t{1} << 40) + work_.below(1000) : (uint64_t{1} << 31) + work_.below(1u << 20);
  packet_builder b(out, h);
  switch (kind) {
    case 0:
      b.append_ping();
      break;
    case 1: {
      // An optimistic ACK: everything up to far beyond what was sent.
      const uint64_t r[2] = {0, (uint64_t{1} << 33)};
      b.append_ack(r, 0);
      break;
    }
    case 2:
      b.append_forward({0, 0, varint_max / 2});
      break;
    default: {
      std::vector<std::byte> data(64, std::byte{0xee});
      stream_frame s;
      s.stream_id = 1;
      s.offset = uint64_t{1} << 40;  // beyond any credit
      s.message = true;
      s.msg_start = s.offset;
      s.msg_length = data.size();
      s.data = data;
      b.append_stream(s);
      break;
    }
  }
  const std::size_t len = b.finish();
  ++injected_;
  net_.inject(claimed, victim, {out.data(), len});
}

// ---- driving the applications ----

sender_app *run_state::app_of(connection *c) {
  if (c == client_.conn) return &client_;
  auto it = member_senders_.find(c);
  return it == member_senders_.end() ? nullptr : &it->second;
}

// What the connection hands back must be what it borrowed, each once, in
// the order lent (per stream; the harness lends on one stream at a time
// in message order, so a stream's tokens are increasing).
void run_state::take_back(sender_app &a) {
  if (a.dead) return;
  uint64_t tokens[64];
  for (std::size_t n; (n = a.conn->poll_released(tokens)) != 0;)
    for (std::size_t i = 0; i < n; ++i) {
      auto it = a.lent.find(tokens[i]);
      if (it == a.lent.end()) {
        fail("a piece handed back twice, or never lent: token " + std::to_string(tokens[i]));
        return;
      }
      std::fill(it->second.begin(), it->second.end(), std::byte{0xdd});
      a.lent.erase(it);
    }
  if (a.conn->is_closed() && !a.lent.empty())
    fail(std::to_string(a.lent.size()) + " piece(s) still lent after the connection closed");
}

void run_state::drive_sender(sender_app &a) {
  take_back(a);
  if (a.dead || a.conn->is_closed() || a.close_called) return;
  connection &c = *a.conn;
  bool wrote = false;
  std::vector<std::byte> payload;
  for (std::size_t k = 0; k < a.streams.size(); ++k) {
    while (a.next[k] < a.sizes[k].size()) {
      const std::size_t seq = a.next[k];
      payload.resize(a.sizes[k][seq]);
      fill(payload, a.node, k, seq);
      message_options o;
      o.rel = a.node == client_node ? sc_.rel : reliability::reliable;
      o.max_retransmissions = sc_.max_retx;
      o.lifetime_ns = a.node == client_node ? sc_.lifetime_ns : 0;
      o.low_latency = work_.below(16) == 0;
      uint64_t id = 0;
      const stream_mode mode = a.node == client_node ? sc_.mode : stream_mode::message;
      // Every other message is lent in up to three pieces (send_pieces),
      // the rest copied: both paths, and streams that mix them.
      status st;
      if (!lend_ || seq % 2 == 0 || payload.size() < 3) {
        st = c.send(k, payload, o, net_.now(), &id);
      } else {
        const std::size_t cut1 = payload.size() / 3, cut2 = payload.size() - (seq % 7);
        const std::size_t cuts[4] = {0, cut1, std::max(cut1, cut2), payload.size()};
        connection::send_piece pieces[3];
        std::vector<uint64_t> tokens;
        for (int j = 0; j < 3; ++j) {
          const uint64_t t = a.next_token++;
          a.lent[t].assign(payload.begin() + static_cast<long>(cuts[j]), payload.begin() + static_cast<long>(cuts[j + 1]));
          pieces[j] = {a.lent[t], t};
          tokens.push_back(t);
        }
        st = c.send_pieces(k, pieces, o, net_.now(), &id);
        if (st != status::ok)
          for (uint64_t t : tokens) a.lent.erase(t);  // not referenced
      }
      if (st == status::would_block) {
        ++a.would_block;
        break;
      }
      if (st != status::ok) {
        fail("send failed: status " + std::to_string(static_cast<int>(st)));
        break;
      }
      if (mode == stream_mode::message && id != seq) fail("message id is not the sequence");
      planned_message &m = a.streams[k][seq];
      m.start = a.written[k];
      m.end = m.start + payload.size();
      m.queued_ns = net_.now();
      a.written[k] = m.end;
      ++a.next[k];
      ++progress_;
      wrote = true;
    }
    if (sc_.fin && sc_.mode == stream_mode::bytes && a.node == client_node && a.next[k] == a.sizes[k].size() &&
        !a.finished[k]) {
      if (c.finish_stream(k) != status::ok) fail("finish_stream failed");
      a.finished[k] = true;
    }
  }
  while (a.node == client_node && a.datagrams_sent < a.datagram_times.size() &&
         a.datagram_times[a.datagrams_sent] <= net_.now()) {
    payload.assign(16 + a.datagrams_sent % 200, std::byte{0});
    fill(payload, a.node, 99, a.datagrams_sent);
    // Every other datagram lent in place (send_datagram_piece).
    status st;
    if (!lend_ || a.datagrams_sent % 2 == 0) {
      st = c.send_datagram(payload, net_.now());
    } else {
      const uint64_t t = a.next_token++;
      a.lent[t] = payload;
      st = c.send_datagram_piece({a.lent[t], t}, net_.now());
      if (st != status::ok) a.lent.erase(t);
    }
    if (st == status::would_block) break;
    if (st != status::ok) fail("send_datagram failed");
    ++a.datagrams_sent;
    wrote = true;
  }
  if (wrote) c.flush();
  if (sc_.close != close_kind::none && a.node == client_node && a.all_queued() &&
      a.datagrams_sent == a.datagram_times.size()) {
    a.close_called = true;
    if (sc_.close == close_kind::graceful)
      c.close(error_code::application, "done", net_.now());
    else
      c.abort(error_code::application, "abort", net_.now());
  }
}

void run_state::drain_sender(sender_app &a) {
  connection &c = *a.conn;
  event e;
  while (c.poll_event(e)) {
    ++progress_;
    switch (e.type) {
      case event_type::sent:
      case event_type::expired:
      case event_type::send_error: {
        if (e.stream_id >= a.streams.size() || e.message_id >= a.streams[e.stream_id].size()) {
          fail("event for a message never sent");
          break;
        }
        planned_message &m = a.streams[e.stream_id][e.message_id];
        if (m.outcome != 0) fail("message reported twice");
        if (m.queued_ns == never) fail("event for a message not queued yet");
        m.outcome = e.type == event_type::sent ? 1 : e.type == event_type::expired ? 2 : 3;
        m.count = e.count;
        res_.all_stable_ns = net_.now();
        std::vector<uint32_t> live;
        for (uint32_t n : a.member_nodes)
          if (!a.left.count(n)) live.push_back(n);
        if (std::getenv("MTP_SIM_TRACE"))
          std::printf("%.6f node %u event %s stream %llu message %llu [%llu, %llu) count %u\n",
                      static_cast<double>(net_.now()) / 1e9, a.node,
                      e.type == event_type::sent ? "Sent" : e.type == event_type::expired ? "Expired" : "SendError",
                      static_cast<unsigned long long>(e.stream_id), static_cast<unsigned long long>(e.message_id),
                      static_cast<unsigned long long>(m.start), static_cast<unsigned long long>(m.end), e.count);
        if (e.type == event_type::sent) {
          oracle_.on_sent_event(a.node, c.id(), e.stream_id, m.start, m.end, e.count, live,
                                a.node == client_node ? sc_.threshold : 0);
        } else if (e.type == event_type::expired) {
          if (sc_.rel == reliability::reliable && a.node == client_node) fail("a reliable message expired");
          oracle_.on_expired_event(a.node, c.id(), e.count, live.size());
        } else if (sc_.close != close_kind::abort && !sc_.expect_error && !sc_.client_crash && a.node == client_node) {
          fail("SendError without an abort or a failure");
        }
        break;
      }
      case event_type::member_left:
        a.left.insert(e.member);
        a.left_reason[e.member] = e.reason;
        a.left_code[e.member] = e.error_code;
        break;
      case event_type::connection_error:
        a.connection_error = e.error_code;
        break;
      case event_type::closed:
        a.closed = true;
        break;
      case event_type::received:
      case event_type::datagram:
        if (a.node == client_node) {
          // Reverse traffic from a member.
          if (e.type == event_type::received)
            on_received(client_rx_, e, e.member);
        }
        break;
      default:
        break;
    }
  }
}

void run_state::on_received(receiver_app &r, const event &e, uint32_t sender_node) {
  in_stream &s = r.in[{sender_node, e.stream_id}];
  const bool bytes_mode = sender_node == client_node && sc_.mode == stream_mode::bytes;
  if (bytes_mode) {
    if (e.offset != s.bytes.size()) fail("byte stream delivered out of order");
    s.bytes.insert(s.bytes.end(), e.data.begin(), e.data.end());
    if (e.end_of_message && sc_.fin) {
      if (s.fin) fail("FIN delivered twice");
      s.fin = true;
    }
    return;
  }
  if (e.abandoned) {
    // The rest of a message that came in fragments was skipped.
    if (!e.data.empty() || !e.end_of_message || s.partial.empty() || e.offset != s.partial_next)
      fail("abandoned event for no message in fragments");
    s.partial.clear();
    return;
  }
  if (!s.partial.empty() && e.offset != s.partial_next) fail("the pieces of a message are not contiguous");
  s.partial.insert(s.partial.end(), e.data.begin(), e.data.end());
  s.partial_next = e.offset + e.data.size();
  if (!e.end_of_message) return;
  std::vector<std::byte> m;
  m.swap(s.partial);
  if (m.size() < 16) {
    fail("message shorter than its header");
    return;
  }
  uint32_t snd = 0, stm = 0;
  uint64_t seq = 0;
  std::memcpy(&snd, m.data(), 4);
  std::memcpy(&stm, m.data() + 4, 4);
  std::memcpy(&seq, m.data() + 8, 8);
  std::vector<std::byte> expect(m.size());
  fill(expect, sender_node, e.stream_id, seq);
  if (snd != sender_node || stm != e.stream_id || m != expect) {
    fail("delivered message content differs from what was sent (corruption delivered?)");
    return;
  }
  if (!s.got.insert(seq).second) fail("message delivered twice");
  const bool ordered = sender_node != client_node || sc_.ord == ordering::fifo;
  if (ordered && seq < s.next_seq) fail("fifo order broken");
  s.next_seq = std::max(s.next_seq, seq + 1);
}

void run_state::drain_receiver(connection &c, receiver_app &r, bool) {
  event e;
  while (c.poll_event(e)) {
    ++progress_;
    switch (e.type) {
      case event_type::received:
        on_received(r, e, e.member);
        break;
      case event_type::datagram: {
        const std::string d(reinterpret_cast<const char *>(e.data.data()), e.data.size());
        if (!r.datagrams.insert(d).second) ++r.duplicate_datagrams;
        break;
      }
      case event_type::connection_error:
        r.connection_error = e.error_code;
        break;
      case event_type::closed:
        r.closed = true;
        r.closed_code = e.error_code;
        break;
      case event_type::member_left:
        // Its client left (timeout): a ConnectionError follows.
        break;
      case event_type::sent:
      case event_type::expired:
      case event_type::send_error: {
        // The member's own sending (reverse traffic).
        auto it = member_senders_.find(&c);
        if (it == member_senders_.end()) {
          fail("a sending event at a member that sends nothing");
          break;
        }
        sender_app &a = it->second;
        if (e.stream_id >= a.streams.size() || e.message_id >= a.streams[e.stream_id].size()) {
          fail("member event for a message never sent");
          break;
        }
        planned_message &m = a.streams[e.stream_id][e.message_id];
        if (m.outcome != 0) fail("member message reported twice");
        m.outcome = e.type == event_type::sent ? 1 : e.type == event_type::expired ? 2 : 3;
        if (e.type == event_type::sent)
          oracle_.on_sent_event(a.node, c.id(), e.stream_id, m.start, m.end, e.count, {client_node}, 0);
        break;
      }
      default:
        break;
    }
  }
}

void run_state::app_step() {
  const time_ns now = net_.now();
  // MTP_SIM_DUMP_AT=<ns>: every endpoint's state once, at that time.
  if (dump_at_ns_ != never && now >= dump_at_ns_) {
    std::printf("state at %llu ns:\n", static_cast<unsigned long long>(now));
    dump();
    dump_at_ns_ = never;
  }
  const bool lazy = sc_.lazy_app_ns != 0 && !final_poll_;
  const bool client_lazy = lazy && sc_.lazy_member < 0;
  if (!client_.dead) {
    if (!client_lazy || now >= client_.last_drain_ns + sc_.lazy_app_ns) {
      drain_sender(client_);
      client_.last_drain_ns = now;
    }
    drive_sender(client_);
  }
  for (auto &e : net_.endpoints()) {
    if (e->removed || e->node == client_node) continue;
    receiver_app &r = member_rx_[e->node];
    const bool member_lazy =
        lazy && (sc_.lazy_member < 0 || e->node == member_node(static_cast<uint32_t>(sc_.lazy_member)));
    if (member_lazy && now < r.last_drain_ns + sc_.lazy_app_ns) continue;
    r.last_drain_ns = now;
    drain_receiver(*e->conn, r, true);
    if (sender_app *a = app_of(e->conn.get())) drive_sender(*a);
  }
  check_lifetimes();
  if ((sc_.check_cwnd_falls || sc_.check_pacing) && !client_.dead && client_.conn->member_live(0)) {
    const uint64_t w = client_.conn->member_cwnd(0);
    if (w < cwnd_max_ * 8 / 10) cwnd_fell_ = true;
    if (!cwnd_fell_) cwnd_peak_before_fall_ = std::max(cwnd_peak_before_fall_, w);
    cwnd_max_ = std::max(cwnd_max_, w);
  }
}

void run_state::check_lifetimes() {
  if (!sc_.lifetime_ns || client_.dead || client_.connection_error) return;
  // Every message gets its outcome within its lifetime plus a slack: the
  // timer granularity and the application's polling.
  const time_ns slack = 5'000'000 + 2 * sc_.lazy_app_ns;
  for (auto &s : client_.streams)
    for (auto &m : s)
      if (m.queued_ns != never && m.outcome == 0 && net_.now() > m.queued_ns + sc_.lifetime_ns + slack) {
        fail("a message outlived its lifetime: queued at " + std::to_string(m.queued_ns) + " ns, no outcome at " +
             std::to_string(net_.now()) + " ns");
        return;
      }
}

bool run_state::done() {
  if (!res_.failure.empty() || !oracle_.failures().empty()) return true;
  const auto settled = [](const sender_app &a) {
    if (!a.all_queued()) return false;
    for (const auto &s : a.streams)
      for (const auto &m : s)
        if (m.outcome == 0) return false;
    return a.conn->send_buffered_bytes() == 0 && a.conn->packets_in_flight() == 0 && !a.conn->owes_members();
  };
  // Forgers may kill the connection (they cannot be told apart without
  // keys); it must then end cleanly, with nothing false on the way.
  const bool failing = sc_.expect_error != 0 || sc_.client_crash || (sc_.spoof && client_.connection_error);
  // Members expected to leave must have been reported before the end.
  if (!sc_.client_crash)
    for (uint32_t j : sc_.expect_left)
      if (!client_.left.count(member_node(j))) return false;
  if (!failing) {
    if (!settled(client_) || client_.datagrams_sent < client_.datagram_times.size()) return false;
    for (auto &[conn, a] : member_senders_) {
      if (a.dead) continue;
      const auto it = member_of_.find(conn);
      if (it != member_of_.end() && dead_.count(it->second)) continue;
      if (!settled(a)) return false;
    }
  }
  // Closing and failing connections must also end: every endpoint drained
  // and forgotten.
  if (sc_.close != close_kind::none || failing) {
    for (auto &e : net_.endpoints())
      if (!e->removed) return false;
  }
  if (failing && !client_crashed_ && client_.connection_error == 0 && !sc_.spoof) return false;
  return true;
}

void run_state::dump() {
  for (auto &ep : net_.endpoints()) {
    const auto &st = ep->conn->stats();
    std::printf("node %u%s:", ep->node, ep->removed ? " (removed)" : "");
#define MTP_X(name) std::printf(" %s=%llu", #name, static_cast<unsigned long long>(st.name));
    MTP_CONNECTION_COUNTERS(MTP_X)
#undef MTP_X
    for (std::size_t d = 0; d < drop_reason_count; ++d)
      if (st.drops[d])
        std::printf(" drop_%s=%llu", drop_reason_name(static_cast<drop_reason>(d)).data(),
                    static_cast<unsigned long long>(st.drops[d]));
    std::printf("\n");
    ep->conn->dump(stdout);
  }
}

run_result run_state::run() {
  build();
  const auto wall_start = std::chrono::steady_clock::now();
  const time_ns limit = 120'000'000'000ull;
  const run_end end = net_.run(
      limit, [this] { return done(); },
      [this, wall_start] {
        app_step();
        if (std::chrono::steady_clock::now() - wall_start > std::chrono::seconds(120))
          fail("took over 120 s of wall time (a livelock?)");
      },
      [this] { return progress(); }, 20'000'000'000ull);
  res_.finished_ns = net_.now();
  res_.steps = net_.steps();
  if (res_.failure.empty() && oracle_.failures().empty()) {
    switch (end) {
      case run_end::done:
        break;
      case run_end::time_limit:
        fail("did not finish in " + std::to_string(limit / 1'000'000'000ull) + " s simulated");
        break;
      case run_end::quiet:
        fail("stopped: nothing left to happen, yet not done");
        break;
      case run_end::stalled:
        fail("stalled: no progress for 20 s simulated (or too many steps) at " + std::to_string(net_.now()) + " ns");
        break;
    }
  }
  if (res_.failure.empty() && !oracle_.failures().empty()) res_.failure = "oracle: " + oracle_.failures().front();
  if (res_.failure.empty()) {
    final_poll();
    take_back(client_);
    for (auto &[conn, app] : member_senders_) take_back(app);
    check_end();
  }
  res_.corrupted = net_.corrupted();
  res_.retransmitted = client_.conn->stats().retransmitted_frames;
  res_.skipped = client_.conn->stats().messages_skipped_by_slow_members;
  for (auto &e : net_.endpoints()) {
    res_.fragments_in_place += e->conn->stats().fragments_in_place;
    res_.abandoned += e->conn->stats().messages_abandoned;
  }
  for (const auto &sizes : client_.sizes)
    for (uint32_t n : sizes) res_.bytes += n;
  if (!res_.failure.empty() && std::getenv("MTP_SIM_VERBOSE")) dump();
  return res_;
}

// The end can come between two polls of a lazy member: what it was
// delivered waits in its events. It polls once more, as it would.
void run_state::final_poll() {
  if (sc_.lazy_app_ns == 0) return;
  final_poll_ = true;
  app_step();
}

void run_state::check_end() {
  const bool failing = sc_.expect_error != 0 || sc_.client_crash || (sc_.spoof && client_.connection_error);
  // Who left, and why.
  std::set<uint32_t> expected;
  for (uint32_t j : sc_.expect_left) expected.insert(member_node(j));
  if (!sc_.client_crash) {
    for (uint32_t n : client_.left)
      // Forged packets may make the client expel a member (reason 3) or a
      // member close on the client it thinks lied (reason 2, code 0x0a):
      // without keys, that is all a forger can do (protocol.md 3.5).
      if (!expected.count(n) &&
          !(sc_.spoof && (client_.left_reason[n] == 3 ||
                          (client_.left_reason[n] == 2 &&
                           client_.left_code[n] == static_cast<uint64_t>(error_code::protocol_violation)))))
        fail("member node " + std::to_string(n) + " reported MemberLeft (reason " +
             std::to_string(client_.left_reason[n]) + ") unexpectedly");
    for (uint32_t n : expected) {
      if (!client_.left.count(n)) {
        fail("member node " + std::to_string(n) + " was not reported as MemberLeft");
        continue;
      }
      // A member that closed says so (5.2); one that went silent timed out.
      const bool left_by_closing = sc_.leave_member >= 0 && n == member_node(static_cast<uint32_t>(sc_.leave_member));
      const uint32_t want = static_cast<uint32_t>(left_by_closing ? member_left_reason::closed : member_left_reason::timeout);
      if (client_.left_reason[n] != want)
        fail("member node " + std::to_string(n) + " reported MemberLeft with reason " +
             std::to_string(client_.left_reason[n]) + ", expected " + std::to_string(want));
      if (left_by_closing && client_.left_code[n] != static_cast<uint64_t>(error_code::application))
        fail("member node " + std::to_string(n) + " left with CLOSE code " + std::to_string(client_.left_code[n]));
    }
    if (client_.connection_error != sc_.expect_error && !(sc_.spoof && client_.connection_error))
      fail("ConnectionError at the client: " + std::to_string(client_.connection_error) + ", expected " +
           std::to_string(sc_.expect_error));
  }
  // Members: an error only where one is expected.
  for (auto &[node, r] : member_rx_) {
    const uint32_t j = node - 1;
    const bool member_expected_error = failing || dead_.count(j) || expected.count(node) ||
                                       (sc_.partition_member == static_cast<int>(j) &&
                                        sc_.partition_ns > sc_.member_timeout_ns);
    if (r.connection_error && !member_expected_error && !sc_.spoof)
      fail("ConnectionError " + std::to_string(r.connection_error) + " at member node " + std::to_string(node));
    if (sc_.close == close_kind::graceful && !failing && !expected.count(node) && !r.closed)
      fail("member node " + std::to_string(node) + " did not see the close");
    if (r.duplicate_datagrams) fail("a datagram was delivered twice");
  }
  if (client_.conn->send_buffered_bytes() != 0 && !failing && sc_.close != close_kind::abort)
    fail("sender memory not back to zero");

  // Delivery, per live member and message: what it must have.
  for (uint32_t j = 0; j < sc_.members && !failing; ++j) {
    const uint32_t node = member_node(j);
    if (dead_.count(j) || expected.count(node) || client_.left.count(node)) continue;
    receiver_app &r = member_rx_[node];
    for (uint32_t k = 0; k < client_.streams.size(); ++k) {
      in_stream &in = r.in[{client_node, k}];
      if (sc_.mode == stream_mode::bytes) {
        if (sc_.close == close_kind::abort) continue;
        std::vector<std::byte> expect;
        for (std::size_t seq = 0; seq < client_.sizes[k].size(); ++seq) {
          std::vector<std::byte> m(client_.sizes[k][seq]);
          fill(m, client_node, k, seq);
          expect.insert(expect.end(), m.begin(), m.end());
        }
        if (in.bytes != expect) fail("byte stream content differs at member node " + std::to_string(node));
        if (sc_.fin && !in.fin) fail("FIN not delivered at member node " + std::to_string(node));
        continue;
      }
      for (std::size_t seq = 0; seq < client_.streams[k].size(); ++seq) {
        const planned_message &m = client_.streams[k][seq];
        const bool got = in.got.count(seq);
        const bool skipped = oracle_.forwarded(client_node, node, connection_id, k, m.start, m.end);
        const bool held = oracle_.held(client_node, node, connection_id, k, m.start, m.end);
        auto where = [&] {
          return " message " + std::to_string(seq) + " of stream " + std::to_string(k) + " ([" +
                 std::to_string(m.start) + ", " + std::to_string(m.end) + ")) at member node " + std::to_string(node);
        };
        if (m.outcome == 3) continue;  // aborted
        if (!got && !skipped) {
          // Nothing may be silently missing: delivered, or told to skip.
          fail("missing, never skipped:" + where());
          break;
        }
        if (held && !got && !skipped) fail("acknowledged but never delivered (absorbed?):" + where());
        if (m.outcome == 1 && !got && sc_.threshold == 0) fail("acknowledged (Sent) but lost:" + where());
        if (sc_.rel == reliability::reliable && !got && !sc_.allow_skips) fail("reliable message skipped:" + where());
        if (m.outcome == 0) fail("neither Sent nor Expired:" + where());
      }
    }
  }
  // Expired counts are the members told to skip (when nobody failed).
  if (!failing && sc_.crash.empty() && sc_.partition_member < 0 && !sc_.spoof)
    for (uint32_t k = 0; k < client_.streams.size(); ++k)
      for (const planned_message &m : client_.streams[k])
        if (m.outcome == 2) {
          const uint32_t n = oracle_.forwarded_count(client_node, connection_id, k, m.start, m.end);
          if (n != m.count)
            fail("Expired count " + std::to_string(m.count) + " but " + std::to_string(n) +
                 " members were told to skip [" + std::to_string(m.start) + ", " + std::to_string(m.end) + ")");
        }
  // Reverse traffic reached the client from every live member.
  if (sc_.reverse && !failing)
    for (auto &[conn, a] : member_senders_) {
      const uint32_t j = member_of_[conn];
      if (dead_.count(j) || expected.count(member_node(j))) continue;
      const in_stream &in = client_rx_.in[{a.node, 0}];
      if (in.got.size() != a.streams[0].size())
        fail("member node " + std::to_string(a.node) + " sent back " + std::to_string(a.streams[0].size()) +
             " messages; the client got " + std::to_string(in.got.size()));
    }
  // Datagrams: at most once, content checked.
  for (auto &[node, r] : member_rx_)
    for (const auto &d : r.datagrams) {
      uint64_t seq = 0;
      std::memcpy(&seq, d.data() + 8, 8);
      std::vector<std::byte> expect(d.size());
      fill(expect, client_node, 99, seq);
      if (std::memcmp(d.data(), expect.data(), d.size()) != 0) fail("datagram content differs");
    }
  if (sc_.third_party && net_.wrong_address() == 0) fail("no forged packet was stopped by address binding");
  // Retransmission bounds, from the wire.
  for (const auto &[key, n] : stream_sends_) {
    if (dead_.count(std::get<0>(key) - 1)) continue;
    if (sc_.rel == reliability::unreliable && n > 1)
      fail("an unreliable message was retransmitted (offset " + std::to_string(std::get<2>(key)) + ")");
    if (sc_.rel == reliability::partial && n > 1 + sc_.max_retx)
      fail("a partial message was sent " + std::to_string(n) + " times to node " + std::to_string(std::get<0>(key)) +
           " (bound " + std::to_string(1 + sc_.max_retx) + ")");
  }
  // Congestion: over a bottleneck whose queue is below the bandwidth-delay
  // product, losses must cut the window, which stays near the path's size.
  if (sc_.check_cwnd_falls) {
    const double bdp = static_cast<double>(sc_.link.bandwidth_bps) / 8 * 2 * static_cast<double>(sc_.link.delay_ns) / 1e9;
    const double cap = 4 * (bdp + static_cast<double>(sc_.link.queue_bytes)) + 10 * 1400;
    if (net_.dropped() == 0) fail("coverage: the bottleneck never dropped a packet");
    if (!cwnd_fell_) fail("the congestion window never fell after losses at the bottleneck");
    if (static_cast<double>(cwnd_max_) > cap)
      fail("the congestion window reached " + std::to_string(cwnd_max_) + " bytes over a path of " +
           std::to_string(static_cast<uint64_t>(bdp)) + " B BDP and a " + std::to_string(sc_.link.queue_bytes) +
           " B queue");
  }
  if (sc_.check_pacing && cwnd_max_ < 40 * 1400)
    fail("coverage: the window never grew past 40 packets, so bursts were never possible (" +
         std::to_string(cwnd_max_) + ")");
  // Within a bound after the last impairment.
  const time_ns settle = std::max({net_.last_impairment(), sc_.crash_at_ns, sc_.partition_at_ns + sc_.partition_ns,
                                   sc_.change_at_ns});
  if (res_.finished_ns > settle && res_.finished_ns - settle > sc_.finish_bound_ns)
    fail("finished " + std::to_string((res_.finished_ns - settle) / 1'000'000) + " ms after the last impairment");

  // Coverage: the paths this scenario is for were taken.
  uint64_t not_absorbed = 0;
  for (auto &e : net_.endpoints()) not_absorbed += e->conn->stats().drops[static_cast<int>(drop_reason::not_absorbed)];
  if (sc_.need_would_block && client_.would_block == 0) fail("coverage: send() never found a table or buffer full");
  if (sc_.need_not_absorbed && not_absorbed == 0) fail("coverage: no receiver ever lacked room to absorb a packet");
  if (sc_.need_connection_credit && oracle_.max_connection_credit_use() < 0.9)
    fail("coverage: the connection window never bound (peak use " +
         std::to_string(oracle_.max_connection_credit_use()) + ")");
  if (sc_.need_expired) {
    bool any = false;
    for (auto &s : client_.streams)
      for (auto &m : s) any |= m.outcome == 2;
    if (!any) fail("coverage: no message expired");
  }
  if (sc_.need_partition_during_transfer && res_.all_stable_ns < sc_.partition_at_ns)
    fail("coverage: the transfer ended before the partition began");
}

}  // namespace

run_result run_scenario(const scenario &sc, uint64_t seed) {
  run_state st(sc, seed);
  return st.run();
}

std::vector<uint64_t> seeds_from_env() {
  const char *env = std::getenv("MTP_SIM_SEEDS");
  std::string s = env ? env : "0-15";
  std::vector<uint64_t> out;
  std::size_t pos = 0;
  while (pos <= s.size()) {
    const std::size_t comma = s.find(',', pos);
    const std::string part = s.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    if (!part.empty()) {
      const auto dash = part.find('-');
      if (dash == std::string::npos) {
        out.push_back(std::stoull(part));
      } else {
        for (uint64_t v = std::stoull(part.substr(0, dash)); v <= std::stoull(part.substr(dash + 1)); ++v)
          out.push_back(v);
      }
    }
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

std::string rerun_command(const std::string &test_name, uint64_t seed) {
  return "MTP_SIM_SEEDS=" + std::to_string(seed) + " build/tests/sim/sim_test --gtest_filter='" + test_name + "'";
}

}  // namespace mtp::sim
