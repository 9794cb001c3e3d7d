// SPDX-License-Identifier: BSD-3-Clause
// Native security on a worker (docs/security.md, protocol.md 9): the
// handshake in both roles, sealing bursts of built packets, opening each
// received one in place, group keys and their rekeying. Part of endpoint;
// one owner (the worker), no locks.
//
// A secured node takes no plaintext DATA packet at all: a session is made
// only by an authenticated initiation from a peer whose static key the
// config allows, and every packet of it is sealed. The handshake runs on
// the worker owning the connection id (its cost is measured per core in
// docs/BENCHMARKS.md), so no session state crosses threads.
#include <rte_byteorder.h>
#include <rte_mbuf.h>

#include <algorithm>
#include <cstring>
#include <ctime>

#include "endpoint.h"
#include "log.h"

namespace mtp::dp {

namespace {

uint64_t load_be64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
  return v;
}

/// The cookie binds a source address: its IP bytes and UDP port.
std::size_t source_bytes(const core::udp_frame_view &v, uint8_t out[18]) {
  const std::size_t n = v.ends.src_ip.family == 4 ? 4 : 16;
  std::memcpy(out, v.ends.src_ip.bytes.data(), n);
  out[n] = static_cast<uint8_t>(v.ends.src_port >> 8);
  out[n + 1] = static_cast<uint8_t>(v.ends.src_port);
  return n + 2;
}

std::span<const uint8_t> bytes_of(std::span<const std::byte> s) {
  return {reinterpret_cast<const uint8_t *>(s.data()), s.size()};
}

}  // namespace

bool endpoint::lookup_peer(void *ctx, const uint8_t static_pub[crypto::key_bytes], uint32_t sender_member_id,
                           crypto::hs_peer_entry &out) {
  auto *self = static_cast<endpoint *>(ctx);
  const auto &peers = self->rt_.config.peers;
  for (std::size_t i = 0; i < peers.size(); ++i) {
    // The key must be the one configured for the id it claims: a peer
    // cannot speak as another member.
    if (peers[i].id != sender_member_id || !peers[i].public_key ||
        std::memcmp(peers[i].public_key->data(), static_pub, crypto::key_bytes) != 0)
      continue;
    out.psk = peers[i].preshared_key ? peers[i].preshared_key->data() : nullptr;
    out.greatest_timestamp = self->peer_timestamps_[i].data();
    out.peer_index = static_cast<uint32_t>(i);
    out.static_static = self->peer_static_static_ok_[i] ? self->peer_static_static_[i].data() : nullptr;
    return true;
  }
  return false;
}

// Initiations beyond the configured rate (a token bucket per worker) are
// "load": they must then carry the mac2 of a cookie, which proves their
// source address receives our packets, before any Diffie-Hellman is spent.
bool endpoint::under_load(core::time_ns now_ns) {
  const double rate = rt_.config.security.cookie_after_handshakes_per_s;
  if (rate == 0) return true;
  hs_tokens_ = std::min(rate / 10 + 1, hs_tokens_ + static_cast<double>(now_ns - hs_last_ns_) * rate / 1e9);
  hs_last_ns_ = now_ns;
  if (hs_tokens_ < 1) return true;
  hs_tokens_ -= 1;
  return false;
}

void endpoint::send_to_member(session &s, std::size_t m, std::span<const uint8_t> bytes) {
  const peer &p = s.members[m];
  if (!p.known) return;
  rte_mbuf *mb = rte_pktmbuf_alloc(rt_.pool);
  if (mb == nullptr) {
    w_.counters.tx_nombuf.inc();
    return;
  }
  const std::size_t frame_len = core::udp_headers_size(p.to.dst_ip.family) + bytes.size();
  auto *out = reinterpret_cast<std::byte *>(rte_pktmbuf_append(mb, static_cast<uint16_t>(frame_len)));
  if (out == nullptr ||
      core::build_udp_frame({out, frame_len}, p.to, {reinterpret_cast<const std::byte *>(bytes.data()), bytes.size()}) == 0) {
    rte_pktmbuf_free(mb);
    return;
  }
  queue_tx(p.port, mb, false);
}

void endpoint::send_reply(std::size_t port_index, const core::udp_frame_view &v, std::span<const uint8_t> bytes) {
  session tmp;
  tmp.members.push_back(peer_from(port_index, v));
  send_to_member(tmp, 0, bytes);
}

std::unique_ptr<endpoint::secure_state> endpoint::make_secure(std::size_t members) {
  const uint64_t bytes = sizeof(secure_state) + members * sizeof(secure_member);
  if (!memory_.budget.charge(bytes)) return nullptr;
  auto sec = std::make_unique<secure_state>();
  sec->members.resize(members);
  sec->charged_bytes = bytes;
  return sec;
}

void endpoint::start_security(session &s, std::unique_ptr<secure_state> sec, core::time_ns now_ns) {
  for (std::size_t m = 0; m < s.members.size(); ++m) {
    const cfg::peer_config &pc = rt_.config.peers[s.members[m].config_index];
    secure_member &sm = sec->members[m];
    // The config checked that every peer has a key in required mode.
    std::memcpy(sm.identity, pc.public_key->data(), crypto::key_bytes);
    crypto::initiator_init(sm.init, *identity_, pc.public_key->data(), pc.id,
                           pc.preshared_key ? pc.preshared_key->data() : nullptr, s.cid);
    sm.next_init_ns = now_ns;
  }
  s.sec = std::move(sec);
  rekey_group(s, now_ns);
  service_handshakes(s, now_ns);
}

void endpoint::service_handshakes(session &s, core::time_ns now_ns) {
  secure_state &sec = *s.sec;
  sec.next_ns = core::never;
  const core::time_ns retry_ns = core::time_ns{rt_.config.security.handshake_retry_ms} * 1'000'000;
  const core::time_ns give_up_ns = core::connection_config{}.member_timeout_ns;
  for (std::size_t m = 0; m < sec.members.size(); ++m) {
    secure_member &sm = sec.members[m];
    if (sm.keyed || sm.gave_up || !s.members[m].known) continue;
    if (now_ns < sm.next_init_ns) {
      sec.next_ns = std::min(sec.next_ns, sm.next_init_ns);
      continue;
    }
    if (sm.first_init_ns == 0) {
      sm.first_init_ns = now_ns;
    } else if (now_ns - sm.first_init_ns >= give_up_ns) {
      // The engine's member timeout reports it (MemberLeft); what waited
      // for its keys goes.
      sm.gave_up = true;
      w_.counters.handshakes_failed.inc();
      for (const held_packet &h : sm.held) rte_pktmbuf_free(h.mb);
      sm.held.clear();
      continue;
    }
    // The timestamp only has to grow per responder: wall time, made
    // strictly increasing on this worker.
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    const uint64_t wall_ns = static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
    last_wall_ns_ = std::max<uint64_t>(last_wall_ns_ + 1, wall_ns);
    uint8_t pkt[crypto::initiation_bytes];
    const crypto::hs_error e = crypto::create_initiation(sm.init, *identity_, last_wall_ns_, now_ns, pkt);
    if (e == crypto::hs_error::ok) {
      send_to_member(s, m, pkt);
      w_.counters.handshakes_initiated.inc();
      // This initiation's early key (a retry's replaces the last).
      uint8_t early[crypto::key_bytes];
      crypto::traffic_keys k;
      sm.early_tx_ready = crypto::early_secret(sm.init, early) &&
                          k.start(std::span<const uint8_t, crypto::key_bytes>(early, crypto::key_bytes));
      if (sm.early_tx_ready) sm.early_tx = k.current();
      crypto::wipe(early, sizeof early);
    } else {
      w_.counters.hs_drops[static_cast<std::size_t>(e)].inc();
    }
    sm.next_init_ns = now_ns + retry_ns;
    sec.next_ns = std::min(sec.next_ns, sm.next_init_ns);
  }
}

endpoint::onward endpoint::on_handshake(std::size_t port_index, const core::udp_frame_view &v, uint64_t cid,
                                        uint32_t sender, core::time_ns now_ns, uint32_t redirect_tag) {
  const std::span<const uint8_t> pkt = bytes_of(v.payload);
  auto refuse = [&](crypto::hs_error e) {
    w_.counters.hs_drops[static_cast<std::size_t>(e)].inc();
    return onward{};
  };
  if (!rt_.secured() || !identity_ || !aead_) return refuse(crypto::hs_error::bad_type);
  const auto type = static_cast<crypto::hs_type>(pkt[1]);
  session *s = find(cid);
  if (type == crypto::hs_type::initiation) {
    // Like an opening packet: to the worker where an application listens.
    if (s == nullptr && redirects_ != nullptr && redirect_tag == 0) {
      onward o;
      if (redirect(cid, true, o)) return o;
    }
    // A second initiation for a connection that is open: its client never
    // got our response (nothing sealed came from it yet), or it is a
    // replay, which the timestamp check below refuses.
    const bool retry = s != nullptr && s->sec && s->conn->side() == core::role::server &&
                       s->conn->stats().packets_received == 0 && s->members.size() == 1 &&
                       v.ends.src_ip == s->members[0].to.dst_ip && v.ends.src_port == s->members[0].to.dst_port;
    if (s != nullptr && !s->conn->is_closed() && !retry) return refuse(crypto::hs_error::unexpected);
    uint8_t src[18];
    const std::size_t src_len = source_bytes(v, src);
    crypto::responder_state st;
    const crypto::hs_load load{under_load(now_ns), cookies_.get(), {src, src_len}, static_cast<uint64_t>(now_ns)};
    const crypto::hs_peer_table table{&endpoint::lookup_peer, this};
    const crypto::hs_error e = crypto::consume_initiation(st, *identity_, pkt, table, load);
    if (e == crypto::hs_error::bad_mac2) {
      // Stateless: a cookie for this address, nothing kept (68 bytes for
      // the 164 received: within three times, as everything we send an
      // address that has not proved itself).
      uint8_t reply[crypto::cookie_reply_bytes];
      if (cookies_->make_cookie_reply(pkt, {src, src_len}, static_cast<uint64_t>(now_ns), reply) ==
          crypto::hs_error::ok) {
        send_reply(port_index, v, reply);
        w_.counters.cookies_sent.inc();
      }
      return refuse(e);
    }
    if (e != crypto::hs_error::ok) return refuse(e);
    if (s != nullptr) {
      // Closed (a rerun with the same id), or the retry: starts anew.
      w_.counters.sessions_replaced.inc();
      remove(*s);
    }
    s = accept_for_app(port_index, v, cid, sender, now_ns);
    if (s == nullptr) {
      w_.counters.mtp_no_session.inc();
      return {};
    }
    auto sec = make_secure(1);
    if (!sec) {
      w_.counters.sessions_refused.inc();
      remove(*s);
      return {};
    }
    // The early key of this initiation, before the response spends its state.
    {
      uint8_t early[crypto::key_bytes];
      crypto::traffic_keys k;
      secure_member &sm = sec->members[0];
      sm.early_rx_ready = crypto::early_secret(st, early) &&
                          k.start(std::span<const uint8_t, crypto::key_bytes>(early, crypto::key_bytes));
      if (sm.early_rx_ready) sm.early_rx = k.current();
      crypto::wipe(early, sizeof early);
    }
    uint8_t resp[crypto::response_bytes];
    crypto::hs_session_keys keys;
    if (const crypto::hs_error r = crypto::create_response(st, resp, keys); r != crypto::hs_error::ok) {
      remove(*s);
      return refuse(r);
    }
    secure_member &sm = sec->members[0];
    sm.tx.start(std::span<const uint8_t, crypto::key_bytes>(keys.send, crypto::key_bytes));
    sm.rx.start(std::span<const uint8_t, crypto::key_bytes>(keys.recv, crypto::key_bytes));
    sm.keyed = true;
    sm.tx_epoch_ns = now_ns;
    std::memcpy(sm.identity, keys.peer_static, crypto::key_bytes);
    crypto::wipe(&keys, sizeof keys);
    s->sec = std::move(sec);
    if (redirect_tag != 0) s->redirect_tag = redirect_tag;
    send_to_member(*s, 0, resp);
    w_.counters.handshakes_completed.inc();
    mark_dirty(*s);
    return {};
  }
  // A response or a cookie: for a connection this node opened.
  if (s == nullptr || !s->sec || s->conn->side() != core::role::client) return refuse(crypto::hs_error::unexpected);
  const std::size_t mi = s->conn->member_index(sender);
  if (mi >= s->sec->members.size()) return refuse(crypto::hs_error::unexpected);
  if (!from_member(*s, v, sender)) {
    w_.counters.mtp_wrong_address.inc();
    return {};
  }
  secure_member &sm = s->sec->members[mi];
  if (type == crypto::hs_type::cookie_reply) {
    const crypto::hs_error e = crypto::consume_cookie_reply(sm.init, pkt, static_cast<uint64_t>(now_ns));
    if (e != crypto::hs_error::ok) return refuse(e);
    // Again at once, now with the cookie's mac2.
    sm.next_init_ns = now_ns;
    mark_dirty(*s);
    return {};
  }
  if (sm.keyed) return refuse(crypto::hs_error::unexpected);
  crypto::hs_session_keys keys;
  if (const crypto::hs_error e = crypto::consume_response(sm.init, *identity_, pkt, keys); e != crypto::hs_error::ok)
    return refuse(e);
  sm.tx.start(std::span<const uint8_t, crypto::key_bytes>(keys.send, crypto::key_bytes));
  sm.rx.start(std::span<const uint8_t, crypto::key_bytes>(keys.recv, crypto::key_bytes));
  sm.keyed = true;
  sm.tx_epoch_ns = now_ns;
  crypto::wipe(&keys, sizeof keys);
  w_.counters.handshakes_completed.inc();
  release_held(*s, mi, now_ns);
  mark_dirty(*s);
  return {};
}

bool endpoint::open_sealed(session &s, const core::udp_frame_view &v, uint32_t sender) {
  auto *p = const_cast<uint8_t *>(reinterpret_cast<const uint8_t *>(v.payload.data()));
  const std::size_t len = v.payload.size();
  // Plaintext (a downgrade), version negotiation, anything unsealed.
  if (len < core::header_size + core::tag_size || p[0] != core::protocol_version ||
      p[1] != static_cast<uint8_t>(core::packet_type::data) || !(p[2] & core::flag_sealed)) {
    w_.counters.auth_failed.inc();
    return false;
  }
  const std::size_t mi = s.conn->member_index(sender);
  if (mi >= s.sec->members.size()) {
    w_.counters.auth_failed.inc();
    return false;
  }
  secure_member &sm = s.sec->members[mi];
  if (!sm.keyed) {
    w_.counters.no_key.inc();
    return false;
  }
  const uint64_t pn = load_be64(p + 16);
  // The window first: a replay costs no AES, and a duplicate is never
  // decrypted twice in place.
  if (sm.replay.check(pn) != crypto::replay_status::ok) {
    w_.counters.replayed.inc();
    return false;
  }
  const uint8_t key_byte = p[3];
  const crypto::aead_key *key = nullptr;
  bool rolls = false;
  const bool early = p[2] & core::flag_early;
  if (early) {
    // Early data: from the client, under the key of the initiation we
    // accepted, and only until its handshake keys confirmed it.
    if (s.conn->side() != core::role::server || !sm.early_rx_ready || sm.confirmed || key_byte != 0) {
      w_.counters.auth_failed.inc();
      return false;
    }
    key = &sm.early_rx;
  } else if (key_byte & core::key_byte_group) {
    // Group packets come only from the client.
    if (s.conn->side() != core::role::server) {
      w_.counters.auth_failed.inc();
      return false;
    }
    for (const auto &g : s.sec->group_rx)
      if (g.set && (g.epoch & core::key_byte_epoch_mask) == (key_byte & core::key_byte_epoch_mask)) key = &g.key;
  } else {
    switch (sm.rx.match(key_byte)) {
      case crypto::epoch_match::current:
      case crypto::epoch_match::previous:
        key = sm.rx.key_for(key_byte);
        break;
      case crypto::epoch_match::next:
        // The sender rolled: the next epoch's key, committed only once a
        // packet under it proves authentic (garbage cannot move us on).
        key = sm.rx.peek_next();
        rolls = true;
        break;
      case crypto::epoch_match::unknown:
        break;
    }
  }
  if (key == nullptr) {
    w_.counters.no_key.inc();
    return false;
  }
  crypto::aead_packet ap{p, static_cast<uint32_t>(core::header_size),
                         static_cast<uint32_t>(len - core::header_size - core::tag_size), key, pn, false};
  aead_->open_burst({&ap, 1});
  if (!ap.ok) {
    w_.counters.auth_failed.inc();
    return false;
  }
  // Authentic: only now may it move the window or the receive epoch.
  sm.replay.accept(pn);
  if (rolls) sm.rx.roll();
  w_.counters.packets_opened.inc();
  if (early) {
    w_.counters.early_opened.inc();
  } else if (!sm.confirmed && s.conn->side() == core::role::server) {
    // The client holds the handshake's keys: no more early data.
    sm.confirmed = true;
    sm.early_rx_ready = false;
    crypto::aead_key_wipe(sm.early_rx);
  }
  return true;
}

void endpoint::seal_built(session &s, std::span<built_packet> pkts, core::time_ns now_ns) {
  secure_state &sec = *s.sec;
  const auto &sc = rt_.config.security;
  const bool client = s.conn->side() == core::role::client;
  const core::time_ns max_age_ns = core::time_ns{sc.rekey_after_s} * 1'000'000'000;
  crypto::aead_packet ap[tx_burst];
  std::size_t idx[tx_burst];
  std::size_t n = 0;
  for (std::size_t i = 0; i < pkts.size() && n < tx_burst; ++i) {
    built_packet &bp = pkts[i];
    uint8_t *p = rte_pktmbuf_mtod(bp.mb, uint8_t *) + tx_headroom;
    const crypto::aead_key *key = nullptr;
    if (client && bp.t.group) {
      // Members still in their handshake get their own early copy of the
      // plaintext first, while only idempotent data was ever queued.
      if (s.early_ok)
        for (std::size_t m = 0; m < sec.members.size(); ++m)
          if ((bp.t.member_mask >> m & 1) && !sec.members[m].keyed &&
              send_early(s, m, {reinterpret_cast<const std::byte *>(p), bp.t.bytes}))
            bp.early_mask |= uint64_t{1} << m;
      p[3] = static_cast<uint8_t>(core::key_byte_group | (sec.group_epoch & core::key_byte_epoch_mask));
      key = &sec.group_tx;
      ++sec.group_packets;
    } else {
      const auto m = static_cast<std::size_t>(__builtin_ctzll(bp.t.member_mask));
      secure_member &sm = sec.members[m];
      if (!sm.keyed) continue;  // held, sealed once its keys exist
      if (sm.tx_packets >= sc.rekey_after_packets || now_ns - sm.tx_epoch_ns >= max_age_ns) {
        // A new epoch, derived: no handshake, no pause (the receiver
        // derives it on the first packet that names it).
        sm.tx.roll();
        sm.tx_packets = 0;
        sm.tx_epoch_ns = now_ns;
        w_.counters.key_rolls.inc();
      }
      p[3] = static_cast<uint8_t>(sm.tx.epoch() & core::key_byte_epoch_mask);
      key = &sm.tx.current();
      ++sm.tx_packets;
    }
    ap[n] = {p, static_cast<uint32_t>(core::header_size),
             static_cast<uint32_t>(bp.t.bytes - core::header_size - core::tag_size), key, load_be64(p + 16), false};
    idx[n++] = i;
  }
  if (n == 0) return;
  aead_->seal_burst({ap, n});
  for (std::size_t k = 0; k < n; ++k) pkts[idx[k]].sealed = ap[k].ok;
  w_.counters.packets_sealed.add(n);
}

void endpoint::age_group_key(session &s, core::time_ns now_ns) {
  const secure_state &sec = *s.sec;
  const auto &sc = rt_.config.security;
  if (s.conn->side() == core::role::client && !s.conn->is_closed() &&
      (sec.group_packets >= sc.rekey_after_packets ||
       now_ns - sec.group_since_ns >= core::time_ns{sc.rekey_after_s} * 1'000'000'000))
    rekey_group(s, now_ns);
}

bool endpoint::send_early(session &s, std::size_t m, std::span<const std::byte> payload) {
  secure_member &sm = s.sec->members[m];
  const peer &to = s.members[m];
  if (!sm.early_tx_ready || sm.gave_up || !to.known) return false;
  rte_mbuf *mb = rte_pktmbuf_alloc(rt_.pool);
  const std::size_t hlen = core::udp_headers_size(to.to.dst_ip.family);
  auto *at = mb != nullptr ? reinterpret_cast<std::byte *>(
                                 rte_pktmbuf_append(mb, static_cast<uint16_t>(hlen + payload.size())))
                           : nullptr;
  if (at == nullptr) {
    rte_pktmbuf_free(mb);
    w_.counters.tx_nombuf.inc();
    return false;
  }
  auto *p = reinterpret_cast<uint8_t *>(at + hlen);
  std::memcpy(p, payload.data(), payload.size());
  p[2] = static_cast<uint8_t>(p[2] | core::flag_early);
  p[3] = 0;
  crypto::aead_packet ap{p, static_cast<uint32_t>(core::header_size),
                         static_cast<uint32_t>(payload.size() - core::header_size - core::tag_size), &sm.early_tx,
                         load_be64(p + 16), false};
  aead_->seal_burst({&ap, 1});
  if (!ap.ok) {
    rte_pktmbuf_free(mb);
    w_.counters.seal_failed.inc();
    return false;
  }
  emit(to, mb, at, {at + hlen, payload.size()});
  w_.counters.early_sent.inc();
  w_.counters.packets_sealed.inc();
  return true;
}

void endpoint::hold(session &s, std::size_t m, std::span<const std::byte> payload, bool sealed) {
  secure_member &sm = s.sec->members[m];
  if (sm.gave_up || sm.held.size() >= held_max) {
    // The engine repairs it once the member answers (or times it out).
    w_.counters.held_dropped.inc();
    return;
  }
  rte_mbuf *mb = rte_pktmbuf_alloc(rt_.pool);
  std::byte *at = mb != nullptr ? reinterpret_cast<std::byte *>(
                                      rte_pktmbuf_append(mb, static_cast<uint16_t>(tx_headroom + payload.size())))
                                : nullptr;
  if (at == nullptr) {
    rte_pktmbuf_free(mb);
    w_.counters.tx_nombuf.inc();
    return;
  }
  std::memcpy(at + tx_headroom, payload.data(), payload.size());
  sm.held.push_back({mb, static_cast<uint32_t>(payload.size()), sealed});
}

void endpoint::release_held(session &s, std::size_t m, core::time_ns now_ns) {
  std::vector<held_packet> held;
  held.swap(s.sec->members[m].held);
  for (const held_packet &h : held) {
    built_packet bp;
    bp.mb = h.mb;
    bp.t.bytes = h.bytes;
    bp.t.member_mask = uint64_t{1} << m;
    bp.t.group = false;
    bp.sealed = h.sealed;
    if (!bp.sealed) seal_built(s, {&bp, 1}, now_ns);
    fan_out(s, bp);
  }
}

void endpoint::rekey_group(session &s, core::time_ns now_ns) {
  secure_state &sec = *s.sec;
  uint8_t secret[core::group_secret_size];
  if (!crypto::random_bytes(secret)) return;
  const uint64_t epoch = sec.group_epoch + 1;
  if (s.conn->set_group_key(epoch, {reinterpret_cast<const std::byte *>(secret), sizeof secret}) !=
      core::status::ok) {
    crypto::wipe(secret, sizeof secret);
    return;
  }
  crypto::traffic_keys k;
  k.start(std::span<const uint8_t, crypto::key_bytes>(secret, crypto::key_bytes));
  sec.group_tx = k.current();
  sec.group_epoch = epoch;
  sec.group_packets = 0;
  sec.group_since_ns = now_ns;
  crypto::wipe(secret, sizeof secret);
  if (epoch > 1) w_.counters.group_rekeys.inc();
}

void endpoint::install_group_key(session &s, const core::event &e) {
  if (!s.sec || s.conn->side() != core::role::server || e.data.size() != core::group_secret_size) return;
  secure_state &sec = *s.sec;
  for (const auto &g : sec.group_rx)
    if (g.set && g.epoch == e.message_id) return;  // a repair of one we hold
  // Replaces the older of the two: packets of the previous epoch still in
  // flight open, anything older does not.
  auto &slot = !sec.group_rx[0].set ? sec.group_rx[0]
               : !sec.group_rx[1].set ? sec.group_rx[1]
               : sec.group_rx[0].epoch < sec.group_rx[1].epoch ? sec.group_rx[0]
                                                                : sec.group_rx[1];
  if (slot.set && slot.epoch > e.message_id) return;
  crypto::traffic_keys k;
  k.start(std::span<const uint8_t, crypto::key_bytes>(reinterpret_cast<const uint8_t *>(e.data.data()), crypto::key_bytes));
  slot.key = k.current();
  slot.epoch = e.message_id;
  slot.set = true;
  w_.counters.group_keys_installed.inc();
}

bool endpoint::next_event(session &s, core::event &e, core::time_ns now_ns) {
  while (s.conn->poll_event(e)) {
    if (e.type == core::event_type::group_key) {
      install_group_key(s, e);
      continue;
    }
    // What is sent after a member left is for the others only.
    if (e.type == core::event_type::member_left && s.sec && s.conn->side() == core::role::client &&
        !s.conn->is_closed())
      rekey_group(s, now_ns);
    return true;
  }
  return false;
}

}  // namespace mtp::dp
