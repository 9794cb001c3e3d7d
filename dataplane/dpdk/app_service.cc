// SPDX-License-Identifier: BSD-3-Clause
// The worker's side of libmtp: serving the channels of the applications
// the control lcore handed to this worker (runtime.h app_handoff).
//
// Every command is copied out of its ring before it is looked at, and
// every handle, buffer reference and parameter in it is checked here
// (shm_ledger.h for buffers); a bad one gets a command_error event and
// changes nothing. A ring whose indices break the ring invariant turns
// its channel `broken`: its connections are aborted and it is no longer
// served, while the worker and the other applications go on.
//
// Back-pressure, never loss: commands are taken only while the channel's
// event ring has room for what they may post; a send the connection has
// no room for waits (held) and stops the channel's later commands, so the
// application's ring fills and its sends say EAGAIN; received data waits
// in the engine (its window is not released, so the peers slow down)
// while the application has no free receive buffer or ring room.
#include <poll.h>
#include <rte_random.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>

#include "endpoint.h"
#include "log.h"

namespace mtp::dp {

namespace {

using shm::descriptor;
using shm::reason;

constexpr uint32_t command_burst = 32;
/// Events an application's connection may queue while its application
/// reads: a full stream window of small messages (4 MiB of 64 B ones), so
/// a slow application holds the sender back by flow control (its window
/// is released only as it reads) before a full event queue would make the
/// engine drop packets. Grown on demand, charged to the session budget.
constexpr uint32_t app_max_events = 1u << 16;
/// Events one command may post at most (buffer_returned + send_error).
constexpr uint32_t events_per_command = 2;
/// Pieces of one message sent in several (send_more) mtpd holds at most.
constexpr std::size_t max_gather_pieces = 4096;

reason reason_of(core::status st) {
  switch (st) {
    case core::status::ok:
      return reason::none;
    case core::status::would_block:
      return reason::would_block;
    case core::status::bad_stream:
      return reason::bad_stream;
    case core::status::too_large:
      return reason::too_large;
    case core::status::closed:
      return reason::closed;
    case core::status::unsupported:
      return reason::not_supported;
    case core::status::invalid:
      return reason::bad_params;
  }
  return reason::bad_params;
}

reason reason_of_left(uint32_t r) {
  switch (static_cast<core::member_left_reason>(r)) {
    case core::member_left_reason::timeout:
      return reason::timeout;
    case core::member_left_reason::closed:
      return reason::peer_closed;
    case core::member_left_reason::protocol_violation:
      return reason::protocol_violation;
    case core::member_left_reason::version_mismatch:
      return reason::version_mismatch;
  }
  return reason::none;
}

reason reason_of_error(uint64_t code) {
  switch (static_cast<core::error_code>(code)) {
    case core::error_code::member_timeout:
      return reason::timeout;
    case core::error_code::threshold_lost:
      return reason::threshold_lost;
    case core::error_code::version_mismatch:
      return reason::version_mismatch;
    case core::error_code::protocol_violation:
    case core::error_code::flow_control:
      return reason::protocol_violation;
    case core::error_code::refused:
      return reason::refused;
    default:
      return reason::peer_closed;
  }
}

descriptor event_for(shm::event type, uint64_t handle) {
  descriptor e{};
  e.type = static_cast<uint16_t>(type);
  e.buffer = shm::no_buffer;
  e.connection = handle;
  return e;
}

}  // namespace

// -- attach and detach ---------------------------------------------------

void endpoint::take_app(app_handoff *h) {
  auto link = std::make_unique<app_link>(h);
  const shm::region_layout &l = h->layout;
  link->channels.resize(l.plan.channel_count);
  for (uint32_t c = 0; c < l.plan.channel_count; ++c) {
    app_channel &ch = link->channels[c];
    ch.header = shm::channel_at(h->base, l, c);
    ch.commands = shm::ring_consumer<descriptor>(shm::to_daemon_indices(ch.header, l), shm::to_daemon_slots(ch.header, l),
                                                 l.plan.to_daemon_slots);
    ch.events = shm::ring_producer<descriptor>(shm::to_app_indices(ch.header, l), shm::to_app_slots(ch.header, l),
                                               l.plan.to_app_slots);
  }
  MTP_LOG(INFO, "application %llu (pid %d): served by worker lcore %u, %u channel(s)\n",
          static_cast<unsigned long long>(h->app_id), h->pid, w_.lcore, l.plan.channel_count);
  apps_.push_back(std::move(link));
  w_.counters.app_links.set(apps_.size() - builtin_links_);
}

// The application is gone (or its channel broke): its connections are
// aborted, so their peers hear CLOSE at once (they see Closed or
// MemberLeft), and the sessions drain and go like any other.
void endpoint::break_channel(app_link &link, app_channel &ch, const char *why, core::time_ns now_ns) {
  if (ch.broken) return;
  for (const auto &[handle, index] : ch.handles) {
    session *s = sessions_[index].get();
    if (s == nullptr || s->app != &link) continue;
    drop_gather(*s, false);  // the channel is gone: nobody to hand them to
    drop_fills(*s);
    s->app = nullptr;
    // Not no_error: the peers must not take a dead application's end for
    // a graceful close (they see Closed / MemberLeft with code 0x100).
    s->conn->abort(core::error_code::application, why, now_ns);
    mark_dirty(*s);
    --app_connections_;
  }
  ch.handles.clear();
  ch.last_handle = 0;
  ch.backlog.clear();
  ch.backlog_head = 0;
  ch.broken = true;
  if (listener_.link == &link && &link.channels[listener_.channel] == &ch) set_listener({});
  w_.counters.app_connections.set(app_connections_);
}

void endpoint::leave_app(app_link &link, core::time_ns now_ns) {
  for (app_channel &ch : link.channels) break_channel(link, ch, "application detached", now_ns);
  MTP_LOG(INFO, "application %llu: detached from worker lcore %u; its connections aborted\n",
          static_cast<unsigned long long>(link.handoff->app_id), w_.lcore);
  // After this store the control lcore may unmap the region.
  link.handoff->state.store(app_handoff::released, std::memory_order_release);
}

unsigned endpoint::serve_apps(core::time_ns now_ns) {
  unsigned work = 0;
  if (w_.app_inbox != nullptr) {
    void *h = nullptr;
    while (rte_ring_sc_dequeue(w_.app_inbox, &h) == 0) {
      take_app(static_cast<app_handoff *>(h));
      ++work;
    }
  }
  for (std::size_t i = 0; i < apps_.size();) {
    app_link &link = *apps_[i];
    if (link.handoff->state.load(std::memory_order_acquire) == app_handoff::leave) {
      leave_app(link, now_ns);
      apps_[i] = std::move(apps_.back());
      apps_.pop_back();
      w_.counters.app_links.set(apps_.size() - builtin_links_);
      ++work;
      continue;
    }
    for (uint32_t c = 0; c < link.channels.size(); ++c) work += serve_channel(link, c, now_ns);
    ++i;
  }
  // Sessions whose events waited for their application's room.
  if (!app_stalled_.empty()) {
    std::vector<uint32_t> again;
    again.swap(app_stalled_);
    for (uint32_t index : again) {
      session *s = sessions_[index].get();
      if (s == nullptr || !s->app_stalled) continue;
      s->app_stalled = false;
      const uint64_t posted = w_.counters.app_events.get();
      drain_app_events(*s, now_ns);
      // Only a drain that moved something may have released receive space
      // (credit to grant) or finished the session: servicing every stalled
      // session at every loop cost a full service() for nothing.
      if (w_.counters.app_events.get() != posted) mark_dirty(*s);
    }
  }
  // Wake applications asleep on their eventfd that got events. The fence
  // orders the ring stores above before the loads of app_sleeping (x86 may
  // reorder a store and a later load); the application sets the flag and
  // fences before it re-checks the ring, so one of the two sees the other.
  if (!apps_.empty()) std::atomic_thread_fence(std::memory_order_seq_cst);
  for (auto &lp : apps_)
    for (app_channel &ch : lp->channels) {
      if (!ch.posted) continue;
      ch.posted = false;
      if (ch.header->app_sleeping.load(std::memory_order_seq_cst) != 0) {
        const uint64_t one = 1;
        [[maybe_unused]] ssize_t n = ::write(lp->handoff->app_eventfd, &one, sizeof one);
      }
    }
  if (!resolving_.empty()) resolve_app_peers(now_ns);
  return work;
}

// A ring index out of range: the application broke its own channel. Its
// other channels, the worker and other applications are untouched.
void endpoint::channel_corrupt(app_link &link, uint32_t c, const char *which, core::time_ns now_ns) {
  w_.counters.app_channels_broken.inc();
  MTP_LOG(WARNING, "application %llu channel %u: %s index out of range; the channel is no longer served and its "
          "connections are aborted\n", static_cast<unsigned long long>(link.handoff->app_id), c, which);
  break_channel(link, link.channels[c], "application channel broken", now_ns);
}

bool endpoint::post(app_channel &ch, const descriptor &d) {
  if (!ch.events.push(d)) return false;
  ch.posted = true;
  w_.counters.app_events.inc();
  return true;
}

unsigned endpoint::serve_channel(app_link &link, uint32_t c, core::time_ns now_ns) {
  app_channel &ch = link.channels[c];
  if (ch.broken) return 0;
  unsigned work = 0;
  // What waited for room in its connection goes first, in order.
  while (ch.backlog_head < ch.backlog.size()) {
    if (!ch.events.has_room(events_per_command)) return work;
    if (!run_command(link, c, ch.backlog[ch.backlog_head], now_ns)) return work;
    ++ch.backlog_head;
    ++work;
  }
  ch.backlog.clear();
  ch.backlog_head = 0;
  const uint32_t room = ch.events.room();
  if (ch.events.state() != shm::ring_state::ok) {
    channel_corrupt(link, c, "event ring tail", now_ns);
    return 1;
  }
  if (room < events_per_command) {
    w_.counters.app_backpressure.inc();
    return work;
  }
  descriptor cmds[command_burst];
  const uint32_t n = ch.commands.pop_burst(cmds, std::min(command_burst, room / events_per_command));
  if (ch.commands.state() != shm::ring_state::ok) {
    channel_corrupt(link, c, "command ring head", now_ns);
    return 1;
  }
  w_.counters.app_commands.add(n);
  for (uint32_t i = 0; i < n; ++i) {
    if (run_command(link, c, cmds[i], now_ns)) continue;
    // No room in its connection: this command and those behind it wait.
    ch.backlog.assign(cmds + i, cmds + n);
    ch.backlog_head = 0;
    w_.counters.app_backpressure.inc();
    return work + i;
  }
  return work + n;
}

// -- commands --------------------------------------------------------------

// Refuses a command: the buffer it named goes back when the application
// still holds it (taken and given back, or a bad range in its own), so a
// refused send never leaks the application's buffer; a buffer it does not
// hold is never named back (that would hand it a buffer twice).
void endpoint::command_error(app_link &, app_channel &ch, const descriptor &d, reason why, bool give_back) {
  descriptor e = event_for(shm::event::command_error, d.connection);
  e.stream = d.stream;
  e.user = d.user;
  e.value = d.type;
  e.reason = static_cast<uint32_t>(why);
  if (give_back) e.buffer = d.buffer;
  w_.counters.app_command_errors.inc();
  post(ch, e);
}

endpoint::session *endpoint::app_session(app_channel &ch, uint64_t handle) {
  // Bursts of commands mostly name one connection: the last one found
  // is checked before the hash map.
  if (handle != 0 && handle == ch.last_handle) {
    session *s = sessions_[ch.last_index].get();
    if (s != nullptr && s->handle == handle && s->app != nullptr && &s->app->channels[s->channel] == &ch) return s;
  }
  const auto it = ch.handles.find(handle);
  if (it == ch.handles.end()) return nullptr;
  session *s = sessions_[it->second].get();
  if (s == nullptr || s->handle != handle || s->app == nullptr || &s->app->channels[s->channel] != &ch) return nullptr;
  ch.last_handle = handle;
  ch.last_index = it->second;
  return s;
}

// Messages being gathered for the application will not be finished:
// their buffers are free again, never lent.
void endpoint::drop_fills(session &s) {
  for (auto &f : s.fill) {
    if (f.buffer != shm::no_buffer) s.app->ledger.put_back(f.buffer);
    f = {};
  }
}

void endpoint::forget_handle(session &s) {
  if (s.app == nullptr) return;
  app_channel &ch = s.app->channels[s.channel];
  drop_gather(s, true);  // pieces of a message whose last piece never came
  drop_fills(s);
  ch.handles.erase(s.handle);
  if (ch.last_handle == s.handle) ch.last_handle = 0;
  s.app = nullptr;
  --app_connections_;
  w_.counters.app_connections.set(app_connections_);
}

bool endpoint::run_command(app_link &link, uint32_t c, const descriptor &d, core::time_ns now_ns) {
  app_channel &ch = link.channels[c];
  const auto type = static_cast<shm::command>(d.type);
  switch (type) {
    case shm::command::initiate:
      initiate(link, c, d, now_ns);
      return true;
    case shm::command::listen:
      listen(link, c, d);
      return true;
    case shm::command::stop_listen:
      if (listener_.link == &link && listener_.channel == c && listener_.handle == d.connection)
        set_listener({});
      else
        command_error(link, ch, d, reason::bad_handle, false);
      return true;
    case shm::command::release:
      if (link.ledger.release(d) != shm::buffer_check::ok) command_error(link, ch, d, reason::bad_buffer, false);
      return true;
    case shm::command::release_batch: {
      const shm::buffer_batch b = shm::batch_of(d);
      if (b.count == 0 || b.count > shm::buffer_batch::max_buffers) {
        command_error(link, ch, d, reason::bad_command, false);
        return true;
      }
      for (uint32_t k = 0; k < b.count; ++k) {
        descriptor one{};
        one.type = static_cast<uint16_t>(shm::command::release);
        one.buffer = b.buffers[k];
        // Each bad one is refused alone; the good ones around it count.
        if (link.ledger.release(one) != shm::buffer_check::ok) command_error(link, ch, one, reason::bad_buffer, false);
      }
      return true;
    }
    default:
      break;
  }
  const bool data = type == shm::command::send || type == shm::command::datagram;
  const bool known = d.type >= static_cast<uint16_t>(shm::command::initiate) &&
                     d.type <= static_cast<uint16_t>(shm::command::finish);
  session *s = known ? app_session(ch, d.connection) : nullptr;
  if (s == nullptr) {
    // The buffer of a data command goes back if the application holds it.
    bool give_back = false;
    if (data && link.ledger.take_for_send(d) == shm::buffer_check::ok) give_back = link.ledger.complete_send(d.buffer);
    command_error(link, ch, d, known ? reason::bad_handle : reason::bad_command, give_back);
    return true;
  }
  switch (type) {
    case shm::command::send:
      return app_send(link, ch, *s, d, now_ns);
    case shm::command::datagram: {
      s->early_ok = false;  // datagrams never go as early data
      const shm::buffer_check r = link.ledger.take_for_send(d);
      if (r != shm::buffer_check::ok) {
        command_error(link, ch, d, reason::bad_buffer, r == shm::buffer_check::bad_range);
        return true;
      }
      // Read in place when its packet is built; the buffer comes back
      // then (return_buffers), like a send's.
      const std::byte *p = shm::buffer_at(link.handoff->base, link.handoff->layout, d.buffer) + d.offset;
      const core::status st = s->conn->send_datagram_piece({{p, d.length}, d.buffer}, now_ns);
      if (st != core::status::ok) {
        link.ledger.complete_send(d.buffer);
        command_error(link, ch, d, reason_of(st), true);
      } else {
        note_held(1);
      }
      mark_dirty(*s);
      return true;
    }
    case shm::command::open_stream: {
      const core::stream_mode mode = d.flags & shm::stream_bytes ? core::stream_mode::bytes : core::stream_mode::message;
      const core::ordering ord = d.flags & shm::stream_unordered ? core::ordering::none : core::ordering::fifo;
      const core::status st = s->conn->open_stream(d.stream, mode, ord);
      if (st != core::status::ok) command_error(link, ch, d, reason_of(st), false);
      return true;
    }
    case shm::command::finish: {
      const core::status st = s->conn->finish_stream(d.stream);
      if (st != core::status::ok) command_error(link, ch, d, reason_of(st), false);
      mark_dirty(*s);
      return true;
    }
    case shm::command::close:
      s->conn->close(core::error_code::no_error, "application closed", now_ns);
      mark_dirty(*s);
      return true;
    case shm::command::abort: {
      // Codes below 0x100 are the protocol's; the application's are above.
      const uint64_t code = d.value >= static_cast<uint64_t>(core::error_code::application)
                                ? d.value
                                : static_cast<uint64_t>(core::error_code::application);
      s->conn->abort(static_cast<core::error_code>(code), "application aborted", now_ns);
      mark_dirty(*s);
      return true;
    }
    default:
      command_error(link, ch, d, reason::bad_command, false);
      return true;
  }
}

endpoint::peer endpoint::peer_of(std::size_t ci) const {
  const auto &pc = rt_.config.peers[ci];
  peer p;
  std::size_t port = 0;
  for (std::size_t i = 0; i < rt_.ports.size(); ++i)
    if (rt_.ports[i].name == pc.port) port = i;
  p.port = port;
  p.config_index = ci;
  p.known = rt_.peer_mac(ci, p.to.dst_mac);
  std::memcpy(p.to.src_mac.data(), rt_.ports[port].mac.addr_bytes, 6);
  p.to.dst_ip = pc.ip;
  for (const auto &a : rt_.ports[port].config->addresses)
    if (a.address.family == pc.ip.family) p.to.src_ip = a.address;
  p.to.src_port = rt_.config.node.udp_port;
  p.to.dst_port = rt_.config.node.udp_port;
  return p;
}

void endpoint::initiate(app_link &link, uint32_t c, const descriptor &d, core::time_ns now_ns) {
  app_channel &ch = link.channels[c];
  const shm::buffer_check taken = link.ledger.take_for_send(d);
  if (taken != shm::buffer_check::ok) {
    command_error(link, ch, d, reason::bad_buffer, taken == shm::buffer_check::bad_range);
    return;
  }
  // A private copy: the application may rewrite the buffer meanwhile.
  shm::initiate_params ip{};
  const bool whole = d.length >= sizeof ip;
  // The expected member keys that may follow (as many as were written).
  uint8_t keys[shm::initiate_params::max_members][crypto::key_bytes];
  const std::size_t key_bytes_given = whole ? std::min<std::size_t>(d.length - sizeof ip, sizeof keys) : 0;
  if (whole) {
    const std::byte *at = shm::buffer_at(link.handoff->base, link.handoff->layout, d.buffer) + d.offset;
    std::memcpy(&ip, at, sizeof ip);
    std::memcpy(keys, at + sizeof ip, key_bytes_given);
  }
  link.ledger.complete_send(d.buffer);
  auto refuse = [&](reason why) { command_error(link, ch, d, why, true); };
  if (!whole) return refuse(reason::bad_params);
  if (d.connection == 0 || (d.connection >> 63) != 0) return refuse(reason::bad_params);
  if (ch.handles.count(d.connection) || (listener_.link == &link && listener_.handle == d.connection))
    return refuse(reason::handle_in_use);
  if (const reason why = shm::check_initiate_params(ip, rt_.config.limits.streams_per_session, false);
      why != reason::none)
    return refuse(why);
  // The node seals every connection or none (security.mode).
  if ((ip.security == 2 && !rt_.secured()) || (ip.security == 0 && rt_.secured()) || (ip.member_keys && !rt_.secured()))
    return refuse(reason::security_mismatch);
  if (ip.member_keys && key_bytes_given < std::size_t{crypto::key_bytes} * ip.member_count)
    return refuse(reason::bad_params);
  std::vector<uint32_t> members;
  uint32_t threshold = ip.threshold;
  if (ip.member_count == 0) {
    const cfg::group_config *g = nullptr;
    for (const auto &gc : rt_.config.groups)
      if (gc.name == ip.group) g = &gc;
    if (g == nullptr) return refuse(reason::unknown_group);
    members = g->members;
    if (threshold == 0) threshold = g->threshold;
  } else {
    members.assign(ip.members, ip.members + ip.member_count);
  }
  if (threshold > members.size()) return refuse(reason::bad_params);
  std::vector<peer> peers;
  for (std::size_t i = 0; i < members.size(); ++i) {
    std::size_t ci = rt_.config.peers.size();
    for (std::size_t k = 0; k < rt_.config.peers.size(); ++k)
      if (rt_.config.peers[k].id == members[i]) ci = k;
    if (ci == rt_.config.peers.size()) return refuse(reason::unknown_member);
    // The identity the application expects must be the one we accept.
    if (ip.member_keys && (!rt_.config.peers[ci].public_key ||
                           std::memcmp(rt_.config.peers[ci].public_key->data(), keys[i], crypto::key_bytes) != 0)) {
      MTP_LOG(INFO, "application %llu: refused a connection: the key it expects for member %u is not the one the "
              "config allows\n", static_cast<unsigned long long>(link.handoff->app_id), members[i]);
      return refuse(reason::peer_not_allowed);
    }
    peers.push_back(peer_of(ci));
  }
  uint64_t cid = ip.connection_id;
  if (cid != 0) {
    // Asked for (the test source's, a steering test's): frames of it must
    // come to this worker, and no connection here may have it.
    if (rt_.session_owner(cid) != w_.queue) return refuse(reason::bad_params);
    if (const session *old = find(cid); old != nullptr) {
      if (!old->conn->is_closed() || old->app != nullptr) return refuse(reason::handle_in_use);
      remove(*const_cast<session *>(old));
    }
  }
  if (memory_.budget.used() + (64u << 10) > memory_.budget.limit() || !make_room(now_ns))
    return refuse(reason::no_resources);
  // A connection id this worker owns (its frames come here), not in use.
  for (int tries = 0; tries < 1024 && cid == 0; ++tries) {
    const uint64_t x = rte_rand();
    if (x != 0 && rt_.session_owner(x) == w_.queue && find(x) == nullptr) cid = x;
  }
  if (cid == 0) return refuse(reason::no_resources);
  auto sp = std::make_unique<session>();
  core::connection_config cc = base_config(cid, ip.window_log2 ? 1u << ip.window_log2 : 1u << 22);
  cc.side = core::role::client;
  cc.members = members;
  cc.threshold = threshold;
  cc.cc = ip.congestion == 1 ? core::cc_algorithm::newreno : core::cc_algorithm::cubic;
  cc.defaults.rel = static_cast<core::reliability>(ip.reliability);
  // The application polls when it likes: received data stays in the
  // engine's buffers until it is copied out (zero copy would tie it to
  // the packet).
  cc.zero_copy_delivery = false;
  cc.max_events = app_max_events;
  // A message spanning packets is gathered from the packets themselves
  // into receive buffers (post_received).
  cc.in_place_fragments_max_bytes = cc.stream_buffer_bytes;
  sp->members = std::move(peers);
  sp->conn = std::make_unique<core::connection>(cc, now_ns);
  const uint32_t streams = std::max<uint32_t>(ip.streams, 1);
  const core::stream_mode mode = ip.stream_mode == 1 ? core::stream_mode::bytes : core::stream_mode::message;
  const core::ordering ord = ip.ordering == 0 ? core::ordering::none : core::ordering::fifo;
  for (uint32_t k = 0; k < streams; ++k)
    if (sp->conn->open_stream(k, k == 0 ? mode : core::stream_mode::message, ord) != core::status::ok)
      return refuse(reason::bad_params);
  sp->conn_default_rel = cc.defaults.rel;
  sp->source = link.builtin;
  sp->app_owned = true;
  sp->app = &link;
  sp->channel = c;
  sp->handle = d.connection;
  std::unique_ptr<secure_state> sec;
  if (rt_.secured() && (!aead_ || !identity_ || !(sec = make_secure(members.size()))))
    return refuse(reason::no_resources);
  session *s = add(std::move(sp));
  if (s == nullptr) {
    memory_.budget.release(sec ? sec->charged_bytes : 0);
    return refuse(reason::no_resources);
  }
  // Keys first: every packet the engine builds from here on is sealed or
  // held until its member's handshake ends.
  if (sec) start_security(*s, std::move(sec), now_ns);
  ch.handles.emplace(d.connection, s->index);
  ++app_connections_;
  w_.counters.app_connections.set(app_connections_);
  for (const peer &p : s->members)
    if (!p.known && !s->resolving) {
      s->resolving = true;
      resolving_.push_back(s->index);
    }
  descriptor e = event_for(shm::event::buffer_returned, d.connection);
  e.buffer = d.buffer;
  e.user = d.user;
  post(ch, e);
  MTP_LOG(INFO, "application %llu: connection %llx (handle %llu) to %zu member(s), threshold %u\n",
          static_cast<unsigned long long>(link.handoff->app_id), static_cast<unsigned long long>(cid),
          static_cast<unsigned long long>(d.connection), members.size(), threshold);
}

void endpoint::listen(app_link &link, uint32_t c, const descriptor &d) {
  app_channel &ch = link.channels[c];
  shm::initiate_params ip{};
  bool have_params = false;
  bool give_back = false;
  if (d.buffer != shm::no_buffer) {
    const shm::buffer_check taken = link.ledger.take_for_send(d);
    if (taken != shm::buffer_check::ok) {
      command_error(link, ch, d, reason::bad_buffer, taken == shm::buffer_check::bad_range);
      return;
    }
    have_params = d.length >= sizeof ip;
    if (have_params)
      std::memcpy(&ip, shm::buffer_at(link.handoff->base, link.handoff->layout, d.buffer) + d.offset, sizeof ip);
    link.ledger.complete_send(d.buffer);
    give_back = true;
  }
  auto refuse = [&](reason why) { command_error(link, ch, d, why, give_back); };
  if (d.connection == 0 || (d.connection >> 63) != 0) return refuse(reason::bad_params);
  if (ch.handles.count(d.connection)) return refuse(reason::handle_in_use);
  if (listener_.link != nullptr) return refuse(reason::listener_exists);
  if (have_params)
    if (const reason why = shm::check_initiate_params(ip, rt_.config.limits.streams_per_session, true);
        why != reason::none)
      return refuse(why);
  if (have_params && ((ip.security == 2 && !rt_.secured()) || (ip.security == 0 && rt_.secured())))
    return refuse(reason::security_mismatch);
  bool none = false;
  if (!link.builtin && !rt_.app_listens.compare_exchange_strong(none, true, std::memory_order_acq_rel))
    return refuse(reason::listener_exists);
  listener l;
  l.link = &link;
  l.channel = c;
  l.handle = d.connection;
  l.streams = have_params ? std::max<uint32_t>(ip.streams, 1) : 1;
  l.order = have_params && ip.ordering == 0 ? core::ordering::none : core::ordering::fifo;
  l.mode = have_params && ip.stream_mode == 1 ? core::stream_mode::bytes : core::stream_mode::message;
  l.window_bytes = have_params && ip.window_log2 ? 1u << ip.window_log2 : 1u << 22;
  set_listener(l);
  if (give_back) {
    descriptor e = event_for(shm::event::buffer_returned, d.connection);
    e.buffer = d.buffer;
    e.user = d.user;
    post(ch, e);
  }
  MTP_LOG(INFO, "application %llu: listening (handle %llu) on worker lcore %u\n",
          static_cast<unsigned long long>(link.handoff->app_id), static_cast<unsigned long long>(d.connection),
          w_.lcore);
}

// The other workers see it: the connections whose ids they own come here.
void endpoint::set_listener(const listener &l) {
  if (listener_.link != nullptr && !listener_.link->builtin) rt_.app_listens.store(false, std::memory_order_release);
  listener_ = l;
  w_.app_listening.store(l.link != nullptr, std::memory_order_release);
}

// A message (or a piece of one) from a send buffer into the engine, which
// builds packets from that buffer in place: mtpd holds it until the
// engine hands it back (its bytes stable, given up, or the connection
// closed), then buffer_returned gives it back. The pieces of a message
// sent in several (send_more) are held until its last arrives.
// @return false: the connection has no room now; nothing changed, and the
// command is run again later.
bool endpoint::app_send(app_link &link, app_channel &ch, session &s, const descriptor &d, core::time_ns now_ns) {
  // One message that is not idempotent, and nothing more goes early.
  if (!(d.flags & shm::send_idempotent)) s.early_ok = false;
  const shm::buffer_check taken = link.ledger.take_for_send(d);
  if (taken != shm::buffer_check::ok) {
    command_error(link, ch, d, reason::bad_buffer, taken == shm::buffer_check::bad_range);
    return true;
  }
  const std::byte *p = shm::buffer_at(link.handoff->base, link.handoff->layout, d.buffer) + d.offset;
  const core::connection::send_piece piece{{p, d.length}, d.buffer};
  // Refused: the gathered pieces go back, and this one with the error.
  auto fail = [&](reason why) {
    drop_gather(s, true);
    link.ledger.complete_send(d.buffer);
    descriptor e = event_for(shm::event::send_error, d.connection);
    e.buffer = d.buffer;
    e.stream = d.stream;
    e.message = UINT64_MAX;  // never queued
    e.user = d.user;
    e.reason = static_cast<uint32_t>(why);
    post(ch, e);
  };
  if (s.gathering && d.stream != s.gather_stream) {
    fail(reason::bad_params);  // pieces of two messages interleaved
    return true;
  }
  const bool more = (d.flags & shm::send_more) != 0;
  if (more || s.gathering) {
    // A message is at most the stream window; its pieces at most what
    // the ring can hold of them, so a gather never grows without bound.
    if (s.gather_bytes + d.length > (uint64_t{1} << 22) || s.gather.size() >= max_gather_pieces) {
      fail(reason::too_large);
      return true;
    }
    if (more) {
      // Its buffer stays with mtpd until the message is handed back.
      s.gather.push_back(piece);
      s.gather_bytes += d.length;
      s.gathering = true;
      note_held(1);
      s.gather_stream = d.stream;
      return true;
    }
  }
  core::message_options opt;
  opt.rel = d.flags & shm::send_unreliable ? core::reliability::unreliable
            : d.flags & shm::send_partial  ? core::reliability::partial
            : d.flags & shm::send_reliable ? core::reliability::reliable
                                           : s.conn_default_rel;
  opt.lifetime_ns = d.value;
  opt.max_retransmissions = d.member;
  opt.low_latency = (d.flags & shm::send_low_latency) != 0;
  if (s.gathering) s.gather.push_back(piece);
  const std::span<const core::connection::send_piece> pieces =
      s.gathering ? std::span<const core::connection::send_piece>(s.gather) : std::span(&piece, 1);
  const core::status st = s.conn->send_pieces(d.stream, pieces, opt, now_ns);
  if (s.gathering) s.gather.pop_back();
  if (st == core::status::would_block) {
    // Waits for Sent to free room; the buffer is the application's
    // meanwhile in the ledger's eyes (the retry takes it again).
    link.ledger.complete_send(d.buffer);
    mark_dirty(s);
    return false;
  }
  if (st != core::status::ok) {
    fail(reason_of(st));
    mark_dirty(s);
    return true;
  }
  if (s.cookies.size() <= d.stream) s.cookies.resize(d.stream + 1);
  s.cookies[d.stream].push_back(d.user);
  note_held(1);
  w_.counters.app_sends.inc();
  w_.counters.app_send_bytes.add(s.gather_bytes + d.length);
  s.gather.clear();
  s.gather_bytes = 0;
  s.gathering = false;
  mark_dirty(s);
  return true;
}

void endpoint::drop_gather(session &s, bool give_back) {
  note_held(-static_cast<int64_t>(s.gather.size()));
  if (give_back && s.app != nullptr) {
    app_channel &ch = s.app->channels[s.channel];
    for (const auto &g : s.gather) {
      s.app->ledger.complete_send(static_cast<uint32_t>(g.token));
      descriptor e = event_for(shm::event::buffer_returned, s.handle);
      e.buffer = static_cast<uint32_t>(g.token);
      post(ch, e);
    }
  }
  s.gather.clear();
  s.gather_bytes = 0;
  s.gathering = false;
}

bool endpoint::return_buffers(session &s, bool force) {
  uint64_t tokens[64];
  if (s.app == nullptr) {
    // The application is gone (or its channel broke): nobody to tell.
    for (std::size_t n; (n = s.conn->poll_released(tokens)) != 0;) note_held(-static_cast<int64_t>(n));
    return true;
  }
  app_link &link = *s.app;
  app_channel &ch = link.channels[s.channel];
  // Up to 15 buffers per event (a buffer_batch): a small message's buffer
  // would otherwise cost an event of its own beside its Sent.
  constexpr uint32_t per_event = shm::buffer_batch::max_buffers;
  while (s.conn->has_released()) {
    const uint32_t room = ch.events.room();
    if (room == 0 && !force) return false;
    const std::size_t max = force ? 64 : std::min<std::size_t>(uint64_t{room} * per_event, 64);
    const std::size_t n = s.conn->poll_released(std::span<uint64_t>(tokens, max));
    note_held(-static_cast<int64_t>(n));
    for (std::size_t i = 0; i < n; i += per_event) {
      shm::buffer_batch b{};
      b.type = static_cast<uint16_t>(shm::event::buffers_returned);
      b.count = static_cast<uint16_t>(std::min<std::size_t>(per_event, n - i));
      for (uint32_t k = 0; k < b.count; ++k) {
        b.buffers[k] = static_cast<uint32_t>(tokens[i + k]);
        link.ledger.complete_send(b.buffers[k]);
      }
      post(ch, shm::descriptor_of(b));
    }
  }
  return true;
}

// -- events ------------------------------------------------------------------

void endpoint::note_joined(session &s, app_channel &ch) {
  if (s.conn->side() != core::role::client) return;
  const std::size_t n = s.conn->member_count();
  const uint64_t all = n >= 64 ? ~uint64_t{0} : (uint64_t{1} << n) - 1;
  if (s.joined_mask == all) return;
  for (std::size_t m = 0; m < n; ++m) {
    const uint64_t bit = uint64_t{1} << m;
    if ((s.joined_mask & bit) || !s.conn->member_accepted(m)) continue;
    if (!ch.events.has_room(1)) return;
    descriptor e = event_for(shm::event::member_joined, s.handle);
    e.member = s.conn->member_id(m);
    post(ch, e);
    s.joined_mask |= bit;
  }
}

bool endpoint::post_received(session &s, app_channel &ch, const rx_piece &p, std::span<const std::byte> bytes,
                             std::size_t &done) {
  app_link &link = *s.app;
  const uint32_t cap = link.handoff->layout.plan.buffer_bytes;
  const bool eom = (p.flags & shm::end_of_message) != 0;
  if (p.flags & shm::is_datagram) {
    // A datagram alone in its buffer(s), posted at once.
    for (;;) {
      if (!ch.events.has_room(2)) return false;
      const uint32_t b = link.ledger.lend_for_receive();
      if (b == shm::no_buffer) return false;
      const std::size_t n = std::min<std::size_t>(cap, bytes.size() - done);
      std::memcpy(shm::buffer_at(link.handoff->base, link.handoff->layout, b), bytes.data() + done, n);
      descriptor e = event_for(shm::event::received, s.handle);
      e.buffer = b;
      e.length = static_cast<uint32_t>(n);
      e.member = p.member;
      done += n;
      e.flags = static_cast<uint16_t>(done >= bytes.size() ? p.flags : p.flags & ~shm::end_of_message);
      post(ch, e);
      w_.counters.app_received_bytes.add(n);
      if (done >= bytes.size()) return true;
    }
  }
  // A message: gathered into the buffer open for its stream (member,
  // stream) until its end, or until the buffer is full (ReceivedPartial).
  session::rx_fill *f = nullptr;
  for (auto &x : s.fill)
    if (x.active && x.member == p.member && x.stream == p.stream) f = &x;
  auto post_fill = [&](session::rx_fill &x, uint16_t flags) {
    descriptor e = event_for(shm::event::received, s.handle);
    e.buffer = x.buffer;
    e.length = x.length;
    e.stream = x.stream;
    e.member = x.member;
    e.value = x.offset;
    e.flags = flags;
    link.ledger.lend_filled(x.buffer);
    post(ch, e);
    x.buffer = shm::no_buffer;
    x.partial_posted = true;
  };
  for (;;) {
    if (f == nullptr) {
      if (done >= bytes.size() && !eom) return true;
      for (auto &x : s.fill)
        if (!x.active) f = &x;
      if (f == nullptr) {
        // Not expected (one message in fragments at a time, and the engine
        // hands over any other message's pieces in one run): make room by
        // posting what the first holds, as a piece.
        f = &s.fill[0];
        if (f->buffer != shm::no_buffer) {
          if (!ch.events.has_room(2)) return false;
          post_fill(*f, 0);
        }
      }
      *f = {};
      f->active = true;
      f->member = p.member;
      f->stream = p.stream;
    }
    if (f->buffer == shm::no_buffer) {
      f->buffer = link.ledger.take_for_filling();
      if (f->buffer == shm::no_buffer) return false;
      f->length = 0;
      f->offset = p.offset + done;
    }
    const std::size_t n = std::min<std::size_t>(cap - f->length, bytes.size() - done);
    std::memcpy(shm::buffer_at(link.handoff->base, link.handoff->layout, f->buffer) + f->length, bytes.data() + done, n);
    f->length += static_cast<uint32_t>(n);
    done += n;
    w_.counters.app_received_bytes.add(n);
    const bool last = done >= bytes.size() && eom;
    if (!last && f->length < cap) return true;  // more of the message follows
    if (!ch.events.has_room(2)) return false;    // the bytes wait in the buffer
    post_fill(*f, static_cast<uint16_t>(last ? p.flags : p.flags & ~shm::end_of_message));
    if (last) *f = {};
    if (done >= bytes.size()) return true;
  }
}

// What waited for receive room (copied out of the engine) goes now.
// @return everything staged went.
bool endpoint::deliver_stage(session &s, app_channel &ch) {
  std::size_t done = s.stage.done;
  const bool all = post_received(s, ch, s.stage.piece, s.stage.bytes, done);
  s.stage.done = done;
  if (!all) return false;
  s.stage.active = false;
  s.stage.bytes.clear();
  s.stage.done = 0;
  return true;
}

bool endpoint::app_has_room(const session &s) {
  // Not while it is known to be short: then data waits in the engine.
  // Otherwise whatever of a packet the application finds no room for is
  // copied into the engine's arena (keep_packet_data), no dearer than
  // reassembly, and the rest went straight from the packet.
  return s.app != nullptr && !s.app_stalled && !s.stage.active;
}

// An application's connection: its events become ring events, data
// copied into receive buffers. Stops (and comes back at the next poll)
// when the application's ring or buffers are short: what is not polled
// stays in the engine, whose window then holds the peers back.
void endpoint::drain_app_events(session &s, core::time_ns now_ns) {
  core::event e;
  if (s.app == nullptr) {
    // The application is gone: nothing to tell.
    return_buffers(s);
    while (next_event(s, e, now_ns)) {
    }
    return;
  }
  app_link &link = *s.app;
  app_channel &ch = link.channels[s.channel];
  auto stall = [&] {
    if (!s.app_stalled) {
      s.app_stalled = true;
      app_stalled_.push_back(s.index);
    }
    w_.counters.app_backpressure.inc();
  };
  if (!s.announced) {
    if (!ch.events.has_room(1)) return stall();
    descriptor a = event_for(shm::event::connection_received, s.handle);
    a.value = s.listener_handle;
    a.member = s.conn->member_id(0);
    if (s.sec) {
      // The identity the client proved, in a receive buffer libmtp keeps
      // with the handle (mtp_peer_identity) and gives straight back.
      const uint32_t b = link.ledger.take_for_filling();
      if (b == shm::no_buffer) return stall();
      std::memcpy(shm::buffer_at(link.handoff->base, link.handoff->layout, b), s.sec->members[0].identity,
                  crypto::key_bytes);
      link.ledger.lend_filled(b);
      a.buffer = b;
      a.offset = 0;
      a.length = crypto::key_bytes;
    }
    post(ch, a);
    s.announced = true;
  }
  if (s.stage.active && !deliver_stage(s, ch)) return stall();
  note_joined(s, ch);
  for (;;) {
    // Send buffers the engine is done with go back first: all of them
    // before Closed or ConnectionError, after which the handle is gone.
    if (!return_buffers(s)) return stall();
    // Room for one event of any kind, or a received piece.
    if (!ch.events.has_room(2) || link.ledger.free_receive() == 0) return stall();
    if (!next_event(s, e, now_ns)) break;
    descriptor d = event_for(shm::event::ready, s.handle);
    auto pop_cookie = [&] {
      if (e.stream_id < s.cookies.size() && !s.cookies[e.stream_id].empty()) {
        d.user = s.cookies[e.stream_id].front();
        s.cookies[e.stream_id].pop_front();
      }
    };
    switch (e.type) {
      case core::event_type::ready:
        if (s.conn->side() == core::role::server) continue;  // announced by ConnectionReceived
        break;
      case core::event_type::group_key:
        continue;  // next_event installed it
      case core::event_type::received:
      case core::event_type::datagram: {
        // Piece by piece into receive buffers, straight from the engine's
        // span (the packet itself, with zero copy: one copy in all); what
        // has no room waits in the session's stage, copied out of the
        // engine, whose span lives only until the next call into it.
        const bool dgram = e.type == core::event_type::datagram;
        if (e.abandoned) {
          // The rest of a message that came in fragments was skipped: what
          // was gathered of it goes back unseen, and an application that
          // saw pieces of it hears so (ReceiveError).
          w_.counters.app_messages_abandoned.inc();
          for (auto &f : s.fill) {
            if (!f.active || f.member != e.member || f.stream != e.stream_id) continue;
            if (f.buffer != shm::no_buffer) link.ledger.put_back(f.buffer);
            const bool seen = f.partial_posted;
            f = {};
            if (!seen) continue;
            d.type = static_cast<uint16_t>(shm::event::receive_error);
            d.stream = e.stream_id;
            d.member = e.member;
            d.value = e.offset;
            d.reason = static_cast<uint32_t>(reason::given_up);
            post(ch, d);
          }
          continue;
        }
        rx_piece p;
        p.flags = static_cast<uint16_t>(dgram ? shm::is_datagram | shm::end_of_message
                                              : (e.end_of_message ? shm::end_of_message : 0));
        p.stream = dgram ? 0 : e.stream_id;
        p.member = e.member;
        p.offset = dgram ? 0 : e.offset;
        std::size_t done = 0;
        const bool all = post_received(s, ch, p, e.data, done);
        if (e.in_packet) w_.counters.app_received_in_place.add(done);
        if (all) continue;
        p.offset += done;
        s.stage.active = true;
        s.stage.piece = p;
        s.stage.done = 0;
        s.stage.bytes.assign(e.data.begin() + static_cast<long>(done), e.data.end());
        return stall();
      }
      case core::event_type::sent:
        d.type = static_cast<uint16_t>(shm::event::sent);
        d.stream = e.stream_id;
        d.message = e.message_id;
        d.value = e.count;
        pop_cookie();
        break;
      case core::event_type::expired:
        d.type = static_cast<uint16_t>(shm::event::expired);
        d.stream = e.stream_id;
        d.message = e.message_id;
        d.value = e.count;
        pop_cookie();
        break;
      case core::event_type::send_error:
        d.type = static_cast<uint16_t>(shm::event::send_error);
        d.stream = e.stream_id;
        d.message = e.message_id;
        d.reason = static_cast<uint32_t>(e.error_code == 0 ? reason::aborted : reason_of_error(e.error_code));
        pop_cookie();
        break;
      case core::event_type::member_left:
        w_.counters.members_left.inc();
        d.type = static_cast<uint16_t>(shm::event::member_left);
        d.member = e.member;
        d.reason = static_cast<uint32_t>(e.error_code == static_cast<uint64_t>(core::error_code::refused)
                                              ? reason::refused
                                              : reason_of_left(e.reason));
        d.value = e.error_code;
        s.last_left = d.reason;
        MTP_LOG(INFO, "application %llu: connection %llx: member %u left (reason %u, code %llu)\n",
                static_cast<unsigned long long>(link.handoff->app_id), static_cast<unsigned long long>(s.cid),
                e.member, e.reason, static_cast<unsigned long long>(e.error_code));
        break;
      case core::event_type::closed:
      case core::event_type::connection_error:
        if (e.type == core::event_type::closed) {
          d.type = static_cast<uint16_t>(shm::event::closed);
          if (e.error_code != 0) d.reason = static_cast<uint32_t>(reason_of_error(e.error_code));
        } else {
          w_.counters.connections_failed.inc();
          d.type = static_cast<uint16_t>(shm::event::connection_error);
          d.reason = static_cast<uint32_t>(reason_of_error(e.error_code));
          // Without a threshold the engine reports the last member's loss
          // as member_timeout; the member's own reason says more (it may
          // have closed, or refused the connection).
          if (s.last_left != 0 && e.error_code == static_cast<uint64_t>(core::error_code::member_timeout))
            d.reason = s.last_left;
        }
        d.value = e.error_code;
        if (e.type == core::event_type::connection_error || e.error_code != 0)
          MTP_LOG(INFO, "application %llu: connection %llx %s (code %llu)\n",
                  static_cast<unsigned long long>(link.handoff->app_id), static_cast<unsigned long long>(s.cid),
                  e.type == core::event_type::closed ? "closed" : "failed", static_cast<unsigned long long>(e.error_code));
        post(ch, d);
        forget_handle(s);
        // The handle is gone: anything after is the engine's own business.
        while (next_event(s, e, now_ns)) {
        }
        return;
    }
    post(ch, d);
  }
  note_joined(s, ch);
}

// -- accepting ---------------------------------------------------------------

endpoint::session *endpoint::accept_for_app(std::size_t port_index, const core::udp_frame_view &v, uint64_t cid,
                                            uint32_t sender, core::time_ns now_ns) {
  if (memory_.budget.used() + (64u << 10) > memory_.budget.limit() || !make_room(now_ns)) {
    w_.counters.sessions_refused.inc();
    return nullptr;
  }
  auto sp = std::make_unique<session>();
  core::connection_config c = base_config(cid, listener_.window_bytes);
  c.side = core::role::server;
  c.members = {sender};
  c.zero_copy_delivery = false;
  c.max_events = app_max_events;
  c.in_place_fragments_max_bytes = c.stream_buffer_bytes;
  sp->members.push_back(peer_from(port_index, v));
  sp->conn = std::make_unique<core::connection>(c, now_ns);
  const bool listening = listener_.link != nullptr;
  if (listening) {
    for (uint32_t k = 0; k < listener_.streams; ++k)
      sp->conn->open_stream(k, k == 0 ? listener_.mode : core::stream_mode::message, listener_.order);
    sp->app_owned = true;
    sp->app = listener_.link;
    sp->channel = listener_.channel;
    sp->handle = listener_.link->next_accept_handle++;
    sp->listener_handle = listener_.handle;
    sp->announced = false;
  }
  session *s = add(std::move(sp));
  if (s == nullptr) {
    w_.counters.sessions_refused.inc();
    return nullptr;
  }
  unvalidated_.emplace_back(s->index, s->generation);
  if (!listening) {
    // Nothing listens: the client hears CLOSE(refused) at once (within
    // the 3x amplification limit) instead of waiting for its timeout.
    w_.counters.sessions_no_listener.inc();
    s->conn->abort(core::error_code::refused, "no application listens", now_ns);
    return s;
  }
  s->app->channels[s->channel].handles.emplace(s->handle, s->index);
  ++app_connections_;
  w_.counters.app_connections.set(app_connections_);
  MTP_LOG(INFO, "application %llu: accepted connection %llx from member %u (%s) as handle %llu\n",
          static_cast<unsigned long long>(s->app->handoff->app_id), static_cast<unsigned long long>(cid), sender,
          core::format_ip(v.ends.src_ip).c_str(), static_cast<unsigned long long>(s->handle));
  return s;
}

// Members of application connections without a static MAC: what any
// worker learnt is picked up, and ARP / ND asked every 50 ms.
void endpoint::resolve_app_peers(core::time_ns now_ns) {
  std::size_t kept = 0;
  for (uint32_t index : resolving_) {
    session *s = sessions_[index].get();
    if (s == nullptr || !s->resolving) continue;
    bool all = true;
    const bool ask = now_ns >= s->next_resolve_ns;
    for (peer &p : s->members) {
      if (p.known) continue;
      if (rt_.peer_mac(p.config_index, p.to.dst_mac)) {
        p.known = true;
        continue;
      }
      all = false;
      if (!ask) continue;
      ask_neighbour(p);
    }
    if (ask) s->next_resolve_ns = now_ns + 50'000'000;
    if (all) {
      s->resolving = false;
      mark_dirty(*s);
      continue;
    }
    resolving_[kept++] = index;
  }
  resolving_.resize(kept);
}

// -- sleeping ----------------------------------------------------------------

// The wake-up protocol of shm_layout.h, mtpd's half: daemon_sleeping set
// (seq_cst), then every command ring looked at again; the application
// stores its head, fences, and signals the eventfd if it sees the flag. One
// of the two sees the other, so no command waits out a whole sleep.
bool endpoint::sleep(uint64_t ns) {
  if (apps_.empty() || apps_.size() > 64) {
    const timespec ts{0, static_cast<long>(ns)};
    nanosleep(&ts, nullptr);
    return true;
  }
  for (auto &lp : apps_)
    for (app_channel &ch : lp->channels)
      if (!ch.broken) ch.header->daemon_sleeping.store(1, std::memory_order_seq_cst);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  bool waiting = false;
  for (auto &lp : apps_)
    for (app_channel &ch : lp->channels)
      if (!ch.broken && (ch.commands.size() != 0 || ch.backlog_head < ch.backlog.size())) waiting = true;
  pollfd fds[64];
  nfds_t n = 0;
  if (!waiting) {
    for (auto &lp : apps_)
      if (lp->handoff->daemon_eventfd >= 0) fds[n++] = {lp->handoff->daemon_eventfd, POLLIN, 0};
    const timespec ts{0, static_cast<long>(ns)};
    if (ppoll(fds, n, &ts, nullptr) > 0) {
      w_.counters.app_wakeups.inc();
      for (nfds_t i = 0; i < n; ++i)
        if (fds[i].revents & POLLIN) {
          uint64_t v;
          [[maybe_unused]] ssize_t r = ::read(fds[i].fd, &v, sizeof v);
        }
    }
  }
  for (auto &lp : apps_)
    for (app_channel &ch : lp->channels) ch.header->daemon_sleeping.store(0, std::memory_order_relaxed);
  return !waiting;
}

}  // namespace mtp::dp
