// SPDX-License-Identifier: BSD-3-Clause
// See endpoint.h.
#include "endpoint.h"

#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_hash_crc.h>
#include <rte_lcore.h>
#include <rte_random.h>

#include <algorithm>
#include <cstring>

#include "log.h"
#include "neighbour.h"

namespace mtp::dp {

namespace {


/// Who computes the checksums of a frame to `family` leaving `port`.
core::checksums checksums_for(const port_runtime &port, uint8_t family) {
  if (family == 4 ? port.tx_ip_csum : port.tx_udp_csum) return core::checksums::offload;
  return core::checksums::no_udp4;
}

}  // namespace

endpoint::endpoint(const runtime &rt, worker_context &w, core::time_ns now_ns)
    : rt_(rt),
      w_(w),
      memory_(uint64_t{rt.config.limits.session_memory_mb} << 20),
      wheel_(std::max<uint32_t>(rt.config.limits.sessions, 1)),
      now_ns_(now_ns),
      tx_(rt.ports.size()),
      tx_progress_ns_(rt.ports.size(), now_ns) {
  for (auto &q : tx_) q.reserve(tx_backlog_max + tx_burst);
  sessions_.reserve(rt_.config.limits.sessions);
  free_slots_.reserve(rt_.config.limits.sessions);
  dirty_.reserve(rt_.config.limits.sessions);
  finished_.reserve(rt_.config.limits.sessions);
  vn_tokens_ = vn_per_second / 10;
  vn_last_ns_ = now_ns;
  const std::string name = "mtp_sessions_" + std::to_string(w_.queue);
  rte_hash_parameters hp{};
  hp.name = name.c_str();
  hp.entries = std::max<uint32_t>(rt_.config.limits.sessions, 8);
  hp.key_len = sizeof(uint64_t);
  hp.hash_func = rte_hash_crc;
  hp.socket_id = static_cast<int>(rte_socket_id());
  table_ = rte_hash_create(&hp);
  if (table_ == nullptr) {
    MTP_LOG(ERR, "worker lcore %u: cannot create the session table of %u entries: %s; no sessions here\n", w_.lcore,
            hp.entries, rte_strerror(rte_errno));
    return;
  }
  if (w_.redirect_ends != nullptr) {
    // At most one redirect per session another worker holds.
    const std::string rname = "mtp_redirects_" + std::to_string(w_.queue);
    hp.name = rname.c_str();
    hp.entries = std::max<uint32_t>(rt_.config.limits.sessions * static_cast<uint32_t>(rt_.workers.size() - 1), 8);
    redirects_ = rte_hash_create(&hp);
    if (redirects_ == nullptr)
      MTP_LOG(ERR, "worker lcore %u: cannot create the redirect table of %u entries: %s; connections it owns "
              "reach only a listener on this worker\n", w_.lcore, hp.entries, rte_strerror(rte_errno));
  }
  if (rt_.secured()) {
    std::string why;
    aead_ = crypto::aead_engine::create(why);
    if (!aead_)
      MTP_LOG(ERR, "worker lcore %u: no AES-256-GCM engine (%s): this worker refuses every connection\n", w_.lcore,
              why.c_str());
    identity_ = std::make_unique<crypto::hs_identity>();
    if (!crypto::make_identity(rt_.identity, rt_.config.node.id, *identity_)) identity_.reset();
    if (identity_) cookies_ = std::make_unique<crypto::cookie_checker>(*identity_, static_cast<uint64_t>(now_ns));
    peer_timestamps_.resize(rt_.config.peers.size());
    peer_static_static_.resize(rt_.config.peers.size());
    peer_static_static_ok_.assign(rt_.config.peers.size(), false);
    for (std::size_t i = 0; i < rt_.config.peers.size(); ++i)
      if (const auto &k = rt_.config.peers[i].public_key)
        peer_static_static_ok_[i] =
            crypto::x25519(rt_.identity.priv, rt_.identity.pub, k->data(), peer_static_static_[i].data());
    hs_tokens_ = rt_.config.security.cookie_after_handshakes_per_s / 10.0 + 1;
    hs_last_ns_ = now_ns;
  }
  // The test source runs on the worker owning its connection id; a sink
  // listens on every worker (each accepts the connections it owns).
  const auto &test = rt_.config.test;
  const bool source = test.source.enabled && rt_.session_owner(test.source.connection_id) == w_.queue;
  if (source || test.sink.enabled) {
    test_app_ = std::make_unique<test_app>(rt_, w_, source, test.sink.enabled, now_ns);
    if (app_handoff *h = test_app_->handoff()) {
      take_app(h);
      apps_.back()->builtin = true;
      ++builtin_links_;
      w_.counters.app_links.set(apps_.size() - builtin_links_);
    }
  }
}

endpoint::~endpoint() {
  crypto::wipe(peer_static_static_.data(), peer_static_static_.size() * crypto::key_bytes);
  for (auto &q : tx_) rte_pktmbuf_free_bulk(q.data(), static_cast<unsigned>(q.size()));
  for (auto &s : sessions_)
    if (s) drop_held(*s);
  // Connections give their memory back before the budget goes.
  sessions_.clear();
  rte_hash_free(table_);
  rte_hash_free(redirects_);
}

// The transport parameters both ends must agree on until a handshake
// carries them (protocol.md 6.5): the config gives them to both.
core::connection_config endpoint::base_config(uint64_t cid, uint32_t window_bytes) {
  core::connection_config c;
  c.connection_id = cid;
  c.local_id = rt_.config.node.id;
  uint16_t mtu = 9600;
  for (const auto &p : rt_.ports) mtu = std::min(mtu, p.mtu);
  // Within the configured packet size, the MTU less IPv6 + UDP headers, and
  // one mbuf: the engine writes each packet into a single mbuf behind room
  // for the headers.
  const uint32_t mbuf_room = rt_.config.memory.mbuf_data_room - RTE_PKTMBUF_HEADROOM - core::udp_headers_size(6);
  c.max_packet_bytes =
      static_cast<uint16_t>(std::min<uint32_t>({rt_.config.node.max_packet_bytes, mtu - 48u, mbuf_room}));
  c.max_streams = static_cast<uint16_t>(rt_.config.limits.streams_per_session);
  c.stream_buffer_bytes = window_bytes;
  c.connection_window_bytes = uint64_t{window_bytes} * 16;
  c.max_messages = 1u << 14;
  c.max_sent_packets = 1u << 13;
  c.max_events = 1u << 13;
  c.memory = &memory_;
  c.seed = rte_rand();
  // Events are drained right after each call (drain_events), so spans may
  // point into the mbuf being processed.
  c.zero_copy_delivery = true;
  // A secured node seals every packet (secure.cc): the engine leaves room
  // for the tag and takes only packets opened before it sees them.
  c.packet_protection = rt_.secured() ? core::protection::sealed : core::protection::crc;
  return c;
}

void endpoint::drop_held(session &s) {
  if (!s.sec) return;
  for (auto &m : s.sec->members) {
    for (const held_packet &h : m.held) rte_pktmbuf_free(h.mb);
    m.held.clear();
  }
}

endpoint::session *endpoint::find(uint64_t cid) {
  void *data = nullptr;
  if (table_ == nullptr || rte_hash_lookup_data(table_, &cid, &data) < 0) return nullptr;
  return sessions_[reinterpret_cast<uintptr_t>(data)].get();
}

endpoint::session *endpoint::add(std::unique_ptr<session> s) {
  if (table_ == nullptr || live_ >= rt_.config.limits.sessions) return nullptr;
  uint32_t index;
  if (!free_slots_.empty()) {
    index = free_slots_.back();
    free_slots_.pop_back();
  } else {
    index = static_cast<uint32_t>(sessions_.size());
    sessions_.emplace_back();
  }
  s->index = index;
  s->cid = s->conn->id();
  s->generation = next_generation_++;
  if (rte_hash_add_key_data(table_, &s->cid, reinterpret_cast<void *>(uintptr_t{index})) != 0) {
    free_slots_.push_back(index);
    return nullptr;
  }
  sessions_[index] = std::move(s);
  ++live_;
  w_.counters.sessions_opened.inc();
  w_.counters.sessions_live.set(live_);
  session &added = *sessions_[index];
  wheel_.arm(added.index, added.conn->next_expiry());
  mark_dirty(added);
  return &added;
}

// Forgets a session: its counters are added up, its memory goes back to
// the worker's budget, its connection id may open a new connection.
void endpoint::remove(session &s) {
  account(s);
  if (s.app_owned) {
    // The engine goes: the send buffers it still reads go back first.
    s.conn->release_all_pieces(now_ns_);
    return_buffers(s, true);
  }
  if (s.app != nullptr) {
    // Removed while its application still holds the handle (evicted, or
    // drained before the application took its last events): it hears so.
    app_channel &ch = s.app->channels[s.channel];
    shm::descriptor e{};
    e.type = static_cast<uint16_t>(shm::event::connection_error);
    e.buffer = shm::no_buffer;
    e.connection = s.handle;
    e.reason = static_cast<uint32_t>(shm::reason::no_resources);
    post(ch, e);
    forget_handle(s);
  }
  if (s.redirect_tag != 0) end_redirect(s.cid, s.redirect_tag);
  drop_held(s);
  if (s.sec) memory_.budget.release(s.sec->charged_bytes);
  const uint32_t index = s.index;
  if (s.blocked) blocked_.erase(std::find(blocked_.begin(), blocked_.end(), index));
  wheel_.cancel(index);
  rte_hash_del_key(table_, &s.cid);
  s.dirty = false;
  sessions_[index].reset();
  free_slots_.push_back(index);
  --live_;
  w_.counters.sessions_removed.inc();
  w_.counters.sessions_live.set(live_);
  w_.counters.session_memory_bytes.set(memory_.budget.used());
}

// A full table makes room by evicting the oldest session whose peer never
// proved its address: strangers cannot lock legitimate clients out.
bool endpoint::make_room(core::time_ns) {
  while (live_ >= rt_.config.limits.sessions && !unvalidated_.empty()) {
    const auto [index, generation] = unvalidated_.front();
    unvalidated_.pop_front();
    session *s = index < sessions_.size() ? sessions_[index].get() : nullptr;
    if (s == nullptr || s->generation != generation || s->conn->member_validated(0)) continue;
    MTP_LOG(DEBUG, "session %llx evicted: its peer never proved its address, and the table is full\n",
            static_cast<unsigned long long>(s->cid));
    w_.counters.sessions_evicted.inc();
    remove(*s);
  }
  return live_ < rt_.config.limits.sessions;
}

endpoint::session *endpoint::accept(std::size_t port_index, const core::udp_frame_view &v, uint64_t cid,
                                    uint32_t sender, core::time_ns now_ns) {
  return accept_for_app(port_index, v, cid, sender, now_ns);
}

// The client of an accepted connection: answered where it came from, from
// the address it was sent to; its address is bound from here on.
endpoint::peer endpoint::peer_from(std::size_t port_index, const core::udp_frame_view &v) const {
  peer p;
  p.known = true;
  p.port = port_index;
  p.to.dst_mac = v.ends.src_mac;
  std::memcpy(p.to.src_mac.data(), rt_.ports[port_index].mac.addr_bytes, 6);
  p.to.src_ip = v.ends.dst_ip;
  p.to.dst_ip = v.ends.src_ip;
  p.to.src_port = v.ends.dst_port;
  p.to.dst_port = v.ends.src_port;
  return p;
}

// Packets of a session come from its members' bound addresses (the
// configured ones, or where the opening packet came from); anything else
// is a third party (protocol.md 3.6). A sender id that is no member is the
// engine's to count.
bool endpoint::from_member(const session &s, const core::udp_frame_view &v, uint32_t sender) const {
  const std::size_t mi = s.conn->member_index(sender);
  if (mi >= s.members.size()) return true;
  const peer &p = s.members[mi];
  return v.ends.src_ip == p.to.dst_ip && v.ends.src_port == p.to.dst_port;
}

// A packet of another version gets a version negotiation packet (3.3):
// never in answer to one, never larger than what came in, and at most
// vn_per_second per worker.
void endpoint::answer_version(std::size_t port_index, const core::udp_frame_view &v, uint64_t cid,
                              core::time_ns now_ns) {
  w_.counters.mtp_other_version.inc();
  vn_tokens_ = std::min(vn_per_second / 10, vn_tokens_ + static_cast<double>(now_ns - vn_last_ns_) * vn_per_second / 1e9);
  vn_last_ns_ = now_ns;
  std::byte vn[64];
  const std::size_t len = core::build_version_negotiation(vn, cid, rt_.config.node.id);
  if (len == 0 || len > 3 * v.payload.size() || vn_tokens_ < 1) {
    w_.counters.vn_rate_limited.inc();
    return;
  }
  vn_tokens_ -= 1;
  core::udp_endpoints to;
  to.dst_mac = v.ends.src_mac;
  std::memcpy(to.src_mac.data(), rt_.ports[port_index].mac.addr_bytes, 6);
  to.src_ip = v.ends.dst_ip;
  to.dst_ip = v.ends.src_ip;
  to.src_port = v.ends.dst_port;
  to.dst_port = v.ends.src_port;
  rte_mbuf *m = rte_pktmbuf_alloc(rt_.pool);
  if (m == nullptr) {
    w_.counters.tx_nombuf.inc();
    return;
  }
  const std::size_t frame_len = core::udp_headers_size(to.dst_ip.family) + len;
  auto *out = reinterpret_cast<std::byte *>(rte_pktmbuf_append(m, static_cast<uint16_t>(frame_len)));
  if (out == nullptr || core::build_udp_frame({out, frame_len}, to, {vn, len}) == 0) {
    rte_pktmbuf_free(m);
    return;
  }
  w_.counters.vn_sent.inc();
  queue_tx(port_index, m, false);
}

endpoint::onward endpoint::on_frame(std::size_t port_index, const core::udp_frame_view &v, core::time_ns now_ns,
                                    uint32_t redirect_tag) {
  now_ns_ = now_ns;
  // The ids find the session (they sit at the same place in every
  // version); the engine then verifies and parses it all.
  uint32_t sender = 0;
  uint64_t cid = 0;
  if (!core::peek_ids(v.payload, sender, cid)) {
    w_.counters.mtp_no_session.inc();
    return {};
  }
  const uint8_t version = std::to_integer<uint8_t>(v.payload[0]);
  if (version != core::protocol_version && version != core::version_negotiation_version) {
    answer_version(port_index, v, cid, now_ns);
    return {};
  }
  if (version == core::protocol_version) {
    const uint8_t type = std::to_integer<uint8_t>(v.payload[1]);
    if (type >= static_cast<uint8_t>(crypto::hs_type::initiation) &&
        type <= static_cast<uint8_t>(crypto::hs_type::cookie_reply))
      return on_handshake(port_index, v, cid, sender, now_ns, redirect_tag);
  }
  session *s = find(cid);
  // On a secured node only an initiation opens a connection: a plaintext
  // packet, opening or not, is refused (auth_failed) wherever it goes.
  const bool secured = rt_.secured();
  if (secured && (version != core::protocol_version ||
                  !(std::to_integer<uint8_t>(v.payload[2]) & core::flag_sealed))) {
    w_.counters.auth_failed.inc();
    return {};
  }
  const bool opening = !secured && version == core::protocol_version && core::is_opening_packet(v.payload);
  if (s != nullptr && opening && s->conn->is_closed() && !s->source) {
    // A new connection with the id of one that closed (a rerun): the old
    // one holds nothing more to deliver.
    w_.counters.sessions_replaced.inc();
    remove(*s);
    s = nullptr;
  }
  if (s == nullptr) {
    if (redirects_ != nullptr && redirect_tag == 0) {
      onward o;
      if (redirect(cid, opening, o)) return o;
    }
    // Only a client's opening packet creates a session (protocol.md 5.1):
    // never an ACK-only, mid-connection or version negotiation packet.
    if (opening) s = accept(port_index, v, cid, sender, now_ns);
    if (s == nullptr) {
      w_.counters.mtp_no_session.inc();
      // The owner's redirect leads nowhere: it may forget it.
      if (redirect_tag != 0) end_redirect(cid, redirect_tag);
      return {};
    }
  } else if (!from_member(*s, v, sender)) {
    w_.counters.mtp_wrong_address.inc();
    return {};
  }
  if (s->sec && !open_sealed(*s, v, sender)) return {};
  if (redirect_tag != 0) s->redirect_tag = redirect_tag;
  w_.counters.mtp_packets_in.inc();
  // An application that can take this packet's data at once gets it
  // straight from the packet (one copy, into its receive buffer).
  if (s->app_owned) s->conn->set_zero_copy_delivery(app_has_room(*s));
  s->conn->on_packet(v.payload, now_ns);
  // Events may point into this packet: consume them before it is freed;
  // what an application had no room for is copied out of it.
  drain_events(*s, now_ns);
  if (s->app_owned) s->conn->keep_packet_data();
  mark_dirty(*s);
  return {};
}

bool endpoint::redirect(uint64_t cid, bool opening, onward &o) {
  void *data = nullptr;
  const bool known = rte_hash_lookup_data(redirects_, &cid, &data) >= 0;
  const auto r = reinterpret_cast<uintptr_t>(data);
  if (!opening) {
    if (!known) return false;
    o = {static_cast<int>(r & 0xff), static_cast<uint32_t>(r >> 8)};
    return true;
  }
  // A listener here takes it; else one listening on another worker.
  const int to = listener_.link != nullptr ? -1 : listening_worker(cid);
  if (to < 0) {
    if (known) rte_hash_del_key(redirects_, &cid);
    return false;
  }
  // A new tag for every opening packet (a retransmitted one, or a new
  // connection with the id of one that ended): the host keeps the latest,
  // so the end of an earlier session cannot remove this redirect.
  last_redirect_tag_ = (last_redirect_tag_ + 1) & 0xffffff;
  if (last_redirect_tag_ == 0) last_redirect_tag_ = 1;
  const uintptr_t entry = uintptr_t{last_redirect_tag_} << 8 | static_cast<uintptr_t>(to);
  if (rte_hash_add_key_data(redirects_, &cid, reinterpret_cast<void *>(entry)) != 0) {
    w_.counters.redirects_refused.inc();
    o = {};
    return true;
  }
  if (!known) w_.counters.sessions_redirected.inc();
  o = {to, last_redirect_tag_};
  return true;
}

int endpoint::listening_worker(uint64_t cid) const {
  unsigned n = 0;
  for (const worker_context *w : rt_.workers) n += w != &w_ && w->app_listening.load(std::memory_order_acquire);
  if (n == 0) return -1;
  // Several listeners share the connections (each id always to the same one).
  unsigned k = static_cast<unsigned>(cid % n);
  for (unsigned i = 0; i < rt_.workers.size(); ++i)
    if (rt_.workers[i] != &w_ && rt_.workers[i]->app_listening.load(std::memory_order_acquire) && k-- == 0)
      return static_cast<int>(i);
  return -1;
}

void endpoint::end_redirect(uint64_t cid, uint32_t tag) {
  redirect_end e{cid, tag};
  rte_ring *ends = rt_.workers[rt_.session_owner(cid)]->redirect_ends;
  if (ends == nullptr || rte_ring_mp_enqueue_elem(ends, &e, sizeof e) != 0) w_.counters.redirect_ends_lost.inc();
}

unsigned endpoint::take_redirect_ends() {
  redirect_end ends[32];
  const unsigned n = rte_ring_sc_dequeue_burst_elem(w_.redirect_ends, ends, sizeof(redirect_end), 32, nullptr);
  for (unsigned i = 0; i < n; ++i) {
    void *data = nullptr;
    if (rte_hash_lookup_data(redirects_, &ends[i].cid, &data) < 0 ||
        reinterpret_cast<uintptr_t>(data) >> 8 != ends[i].tag)
      continue;
    rte_hash_del_key(redirects_, &ends[i].cid);
    w_.counters.redirects_ended.inc();
  }
  return n;
}

void endpoint::mark_dirty(session &s) {
  if (s.dirty) return;
  s.dirty = true;
  dirty_.push_back(s.index);
}

void endpoint::drain_events(session &s, core::time_ns now_ns) {
  if (s.app_owned) return drain_app_events(s, now_ns);
  // A session no application took (refused: nothing listened).
  core::event e;
  while (next_event(s, e, now_ns)) {
  }
}

void endpoint::transmit(session &s, core::time_ns now_ns) {
  // The engine writes each packet straight into an mbuf, past room for the
  // largest headers; a burst of them is sealed at once (secured sessions),
  // then each goes to its members (fan_out).
  if (s.sec) age_group_key(s, now_ns);
  for (int n = 0; n < 256 / tx_burst; ++n) {
    if (backlogged(s)) {
      // Resumed at the next poll, once its ports have taken some.
      if (!s.blocked) {
        s.blocked = true;
        blocked_.push_back(s.index);
      }
      return;
    }
    built_packet built[tx_burst];
    std::size_t count = 0;
    while (count < tx_burst) {
      rte_mbuf *first = rte_pktmbuf_alloc(rt_.pool);
      if (first == nullptr) {
        w_.counters.tx_nombuf.inc();
        break;
      }
      std::byte *base = rte_pktmbuf_mtod(first, std::byte *);
      const std::size_t cap = rte_pktmbuf_tailroom(first);
      const core::transmit t = s.conn->poll_transmit({base + tx_headroom, cap - tx_headroom}, now_ns);
      if (t.bytes == 0) {
        rte_pktmbuf_free(first);
        break;
      }
      built[count++] = {first, t};
    }
    if (count == 0) return;
    if (s.sec) seal_built(s, {built, count}, now_ns);
    for (std::size_t i = 0; i < count; ++i) fan_out(s, built[i]);
    if (count < tx_burst) return;
  }
}

// The first member's frame gets its headers written in front of the
// payload; every further member gets a small mbuf with its own headers
// chained to a clone of the payload (the buffer is shared,
// reference-counted), or a copy where the port cannot send chains. A
// member still in its handshake (secured client) gets a copy held back
// until its keys exist (hold).
void endpoint::fan_out(session &s, const built_packet &bp) {
  rte_mbuf *first = bp.mb;
  const core::transmit &t = bp.t;
  const uint16_t base_off = first->data_off;
  std::byte *base = rte_pktmbuf_mtod(first, std::byte *);
  uint32_t targets[64];
  std::size_t k = 0;
  for (std::size_t m = 0; m < s.members.size(); ++m) {
    if (!(t.member_mask & (uint64_t{1} << m))) continue;
    if (!s.members[m].known) {
      w_.counters.mtp_unknown_peer.inc();
      continue;
    }
    if (bp.early_mask >> m & 1) continue;  // sent its own early copy
    if (s.sec && !member_keyed(s, m)) {
      hold(s, m, {base + tx_headroom, t.bytes}, bp.sealed);
      continue;
    }
    if (s.sec && !bp.sealed) {
      // Never in clear: a seal that failed (a key of another ipsec-mb path).
      w_.counters.seal_failed.inc();
      continue;
    }
    targets[k++] = static_cast<uint32_t>(m);
  }
  if (k == 0) {
    rte_pktmbuf_free(first);
    return;
  }
  const std::span<const std::byte> payload{base + tx_headroom, t.bytes};
  if (k > 1) {
    // Clones take the payload-only view the packet has now.
    first->data_off = static_cast<uint16_t>(base_off + tx_headroom);
    first->data_len = static_cast<uint16_t>(t.bytes);
    first->pkt_len = static_cast<uint32_t>(t.bytes);
    for (std::size_t i = 1; i < k; ++i) {
      const peer &p = s.members[targets[i]];
      const auto hlen = static_cast<uint16_t>(core::udp_headers_size(p.to.dst_ip.family));
      if (rt_.ports[p.port].tx_multi_seg) {
        rte_mbuf *head = rte_pktmbuf_alloc(rt_.header_pool);
        rte_mbuf *body = head != nullptr ? rte_pktmbuf_clone(first, rt_.header_pool) : nullptr;
        if (body == nullptr) {
          rte_pktmbuf_free(head);
          w_.counters.tx_nombuf.inc();
          continue;
        }
        auto *h = reinterpret_cast<std::byte *>(rte_pktmbuf_append(head, hlen));
        rte_pktmbuf_chain(head, body);  // two segments: cannot overflow
        w_.counters.fanout_attached.inc();
        emit(p, head, h, payload);
      } else {
        rte_mbuf *copy = rte_pktmbuf_alloc(rt_.pool);
        if (copy == nullptr) {
          w_.counters.tx_nombuf.inc();
          continue;
        }
        auto *h = reinterpret_cast<std::byte *>(rte_pktmbuf_append(copy, static_cast<uint16_t>(hlen + t.bytes)));
        std::memcpy(h + hlen, payload.data(), t.bytes);
        w_.counters.fanout_copied.inc();
        emit(p, copy, h, {h + hlen, t.bytes});
      }
    }
  }
  const peer &p = s.members[targets[0]];
  const std::size_t hlen = core::udp_headers_size(p.to.dst_ip.family);
  first->data_off = static_cast<uint16_t>(base_off + tx_headroom - hlen);
  first->data_len = static_cast<uint16_t>(hlen + t.bytes);
  first->pkt_len = static_cast<uint32_t>(hlen + t.bytes);
  emit(p, first, rte_pktmbuf_mtod(first, std::byte *), payload);
}

void endpoint::emit(const peer &p, rte_mbuf *head, std::byte *headers, std::span<const std::byte> payload) {
  const port_runtime &port = rt_.ports[p.port];
  const uint8_t family = p.to.dst_ip.family;
  const core::checksums policy = checksums_for(port, family);
  core::write_udp_headers({headers, core::udp_headers_size(family)}, p.to, payload, policy);
  if (policy == core::checksums::offload) {
    head->l2_len = 14;
    head->l3_len = family == 4 ? 20 : 40;
    head->ol_flags |= family == 4 ? RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM
                                  : RTE_MBUF_F_TX_IPV6 | RTE_MBUF_F_TX_UDP_CKSUM;
    w_.counters.tx_csum_offload.inc();
  }
  queue_tx(p.port, head);
}

// An ARP request (IPv4) or a neighbour solicitation (IPv6) for a member.
void endpoint::ask_neighbour(const peer &p) {
  rte_mbuf *m = rte_pktmbuf_alloc(rt_.pool);
  if (m == nullptr) {
    w_.counters.tx_nombuf.inc();
    return;
  }
  auto *out = reinterpret_cast<std::byte *>(rte_pktmbuf_append(m, core::neighbour_solicitation_size));
  const std::size_t len = p.to.dst_ip.family == 4
                              ? core::build_arp_request({out, core::arp_request_size}, p.to.src_mac, p.to.src_ip, p.to.dst_ip)
                              : core::build_neighbour_solicitation({out, core::neighbour_solicitation_size}, p.to.src_mac,
                                                                   p.to.src_ip, p.to.dst_ip);
  if (len == 0) {
    rte_pktmbuf_free(m);
    return;
  }
  rte_pktmbuf_trim(m, static_cast<uint16_t>(core::neighbour_solicitation_size - len));
  w_.counters.neighbour_requests.inc();
  queue_tx(p.port, m, false);
}

void endpoint::queue_tx(std::size_t port, rte_mbuf *mb, bool mtp) {
  auto &q = tx_[port];
  q.push_back(mb);
  if (mtp) w_.counters.mtp_packets_out.inc();
  if (q.size() >= tx_burst) flush_port(port);
}

// A full TX ring is backpressure, not loss: frames it does not take wait
// here (up to tx_backlog_max) and transmit() stops asking the engine for
// more until they are gone. Dropping them would have the engine see
// losses it caused itself and cut its window.
void endpoint::flush_port(std::size_t i) {
  auto &q = tx_[i];
  if (q.empty()) return;
  const port_runtime &port = rt_.ports[i];
  std::size_t done = 0;
  while (done < q.size()) {
    const auto n = static_cast<uint16_t>(std::min<std::size_t>(q.size() - done, tx_burst));
    rte_mbuf **pkts = q.data() + done;
    uint16_t ready = n;
    // Offloads may need the driver's preparation (pseudo-header sums,
    // limits); it stops at the first frame it refuses, which is dropped.
    if (port.tx_ip_csum || port.tx_udp_csum) {
      ready = rte_eth_tx_prepare(port.port_id, w_.queue, pkts, n);
      if (ready < n) {
        rte_pktmbuf_free(pkts[ready]);
        q.erase(q.begin() + static_cast<std::ptrdiff_t>(done + ready));
        w_.counters.tx_prepare_failed.inc();
        if (ready == 0) continue;
      }
    }
    const uint16_t sent = rte_eth_tx_burst(port.port_id, w_.queue, pkts, ready);
    uint64_t bytes = 0;
    for (uint16_t k = 0; k < sent; ++k) bytes += pkts[k]->pkt_len;
    w_.counters.tx_pkts.add(sent);
    w_.counters.tx_bytes.add(bytes);
    done += sent;
    if (sent < ready) break;  // the ring is full
  }
  q.erase(q.begin(), q.begin() + static_cast<std::ptrdiff_t>(done));
  if (done > 0 || q.empty()) tx_progress_ns_[i] = now_ns_;
  // A port that takes nothing for 20 ms (link down, peer gone) is not
  // backpressure any more: its frames are dropped, so it holds up no
  // session, and the engine's loss detection and member timeout take over.
  if (!q.empty() && now_ns_ - tx_progress_ns_[i] > tx_stall_ns) {
    rte_pktmbuf_free_bulk(q.data(), static_cast<unsigned>(q.size()));
    w_.counters.tx_dropped.add(q.size());
    q.clear();
  }
  if (q.size() > tx_backlog_max) {
    const std::size_t excess = q.size() - tx_backlog_max;
    rte_pktmbuf_free_bulk(q.data() + tx_backlog_max, static_cast<unsigned>(excess));
    q.resize(tx_backlog_max);
    w_.counters.tx_dropped.add(excess);
  }
}

void endpoint::flush_tx() {
  for (std::size_t i = 0; i < tx_.size(); ++i) flush_port(i);
}

bool endpoint::backlogged(const session &s) const {
  for (const peer &p : s.members)
    if (tx_[p.port].size() >= tx_backlog_max / 2) return true;
  return false;
}

void endpoint::service(session &s, core::time_ns now_ns) {
  s.dirty = false;
  // Events of timers first: what an application answers leaves in this transmit.
  drain_events(s, now_ns);
  if (s.sec && s.conn->side() == core::role::client) service_handshakes(s, now_ns);
  transmit(s, now_ns);
  account(s);
  if (s.conn->finished())
    finished_.push_back(s.index);
  else
    wheel_.arm(s.index, s.sec ? std::min(s.conn->next_expiry(), s.sec->next_ns) : s.conn->next_expiry());
}

// The engine's counters of a session, added to the worker's as they move.
void endpoint::account(session &s) {
  const core::connection_stats &st = s.conn->stats();
  w_.counters.mtp_retransmitted.add(st.retransmitted_frames - s.seen.retransmitted_frames);
  w_.counters.closes_sent.add(st.closes_sent - s.seen.closes_sent);
  w_.counters.closes_received.add(st.closes_received - s.seen.closes_received);
  for (std::size_t d = 0; d < core::drop_reason_count; ++d)
    w_.counters.mtp_drops[d].add(st.drops[d] - s.seen.drops[d]);
  s.seen = st;
  w_.counters.session_memory_bytes.set(memory_.budget.used());
  w_.counters.session_memory_peak.set(memory_.budget.peak());
  w_.counters.session_memory_refusals.set(memory_.budget.refusals());
}

unsigned endpoint::poll(core::time_ns now_ns) {
  now_ns_ = now_ns;
  const uint64_t before = w_.counters.mtp_packets_out.get();
  // The test application first: what it posts is served at once.
  unsigned app_work = test_app_ ? test_app_->run(now_ns) : 0;
  if (!apps_.empty() || w_.app_inbox != nullptr) app_work += serve_apps(now_ns);
  if (redirects_ != nullptr) app_work += take_redirect_ends();
  const std::size_t fired = wheel_.advance(now_ns, [&](uint32_t id) {
    session &s = *sessions_[id];
    s.conn->on_expiry(now_ns);
    mark_dirty(s);
  });
  if (fired) w_.counters.timers_fired.add(fired);
  if (!blocked_.empty()) {
    flush_tx();
    std::size_t kept = 0;
    for (uint32_t id : blocked_) {
      session &b = *sessions_[id];
      if (backlogged(b)) {
        blocked_[kept++] = id;
        continue;
      }
      b.blocked = false;
      mark_dirty(b);
    }
    blocked_.resize(kept);
  }
  // Only sessions a frame, a timer or an application touched (a slot may have
  // been emptied since it was marked).
  for (std::size_t i = 0; i < dirty_.size(); ++i)
    if (session *s = sessions_[dirty_[i]].get(); s != nullptr && s->dirty) service(*s, now_ns);
  dirty_.clear();
  flush_tx();
  // Closed and drained: forgotten (protocol.md 5.1).
  // An application's connection goes once the application took its last
  // events (Closed, and data that arrived before it): drain_app_events
  // forgets the handle, and the next service brings it back here.
  for (uint32_t index : finished_)
    if (session *s = sessions_[index].get(); s != nullptr && s->conn->finished() && s->app == nullptr) remove(*s);
  finished_.clear();
  while (!unvalidated_.empty()) {
    const auto [index, generation] = unvalidated_.front();
    const session *s = index < sessions_.size() ? sessions_[index].get() : nullptr;
    if (s != nullptr && s->generation == generation && !s->conn->member_validated(0)) break;
    unvalidated_.pop_front();
  }
  return app_work + static_cast<unsigned>(w_.counters.mtp_packets_out.get() - before);
}

void endpoint::shutdown(core::time_ns now_ns) {
  now_ns_ = now_ns;
  for (auto &s : sessions_) {
    if (!s || s->conn->is_closed()) continue;
    s->conn->abort(core::error_code::no_error, "daemon stopping", now_ns);
    transmit(*s, now_ns);
    account(*s);
  }
  flush_tx();
}

}  // namespace mtp::dp
