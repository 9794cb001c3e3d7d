// SPDX-License-Identifier: BSD-3-Clause
// The worker loop: rx burst -> fault stage (test only) -> classify ->
// the session's owner (here, or another worker's inbox) -> free; the inbox;
// the sessions' timers and transmissions; the test traffic generator; idle.
//
// Runs on one worker lcore and touches only that worker's queues and
// counters. Shaped like DPDK's l2fwd main_loop: the TSC read once per loop,
// bursts of 32, prefetch three frames ahead, partial tx freed and counted.
#include "worker.h"

#include <sys/prctl.h>

#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_prefetch.h>
#include <rte_ring.h>

#include <array>
#include <cstring>
#include <memory>
#include <span>

#include "endpoint.h"
#include "idle.h"
#include "log.h"
#include "neighbour.h"
#include "runtime.h"

namespace mtp::dp {

namespace {

constexpr uint16_t burst_pkts = 32;
constexpr unsigned prefetch_offset = 3;

core::csum_hint ip_hint(uint64_t ol_flags) {
  switch (ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK) {
    case RTE_MBUF_F_RX_IP_CKSUM_GOOD:
    case RTE_MBUF_F_RX_IP_CKSUM_NONE:  // header verified, field left stale
      return core::csum_hint::good;
    case RTE_MBUF_F_RX_IP_CKSUM_BAD:
      return core::csum_hint::bad;
    default:
      return core::csum_hint::unknown;
  }
}

core::csum_hint l4_hint(uint64_t ol_flags) {
  switch (ol_flags & RTE_MBUF_F_RX_L4_CKSUM_MASK) {
    case RTE_MBUF_F_RX_L4_CKSUM_GOOD:
    case RTE_MBUF_F_RX_L4_CKSUM_NONE:
      return core::csum_hint::good;
    case RTE_MBUF_F_RX_L4_CKSUM_BAD:
      return core::csum_hint::bad;
    default:
      return core::csum_hint::unknown;
  }
}

/// Test traffic source state for one port on this worker.
struct generator_port {
  core::udp_endpoints endpoints;
  uint64_t next_tsc = 0;
  uint64_t seq = 0;
  bool active = false;
  // Ping-pong: the frame in flight, waiting for its reflection.
  bool outstanding = false;
  core::time_ns sent_ns = 0;
};

constexpr core::time_ns pingpong_timeout_ns = 10'000'000;

void setup_generator(const runtime &rt, const worker_context &w, generator_port (&gens)[RTE_MAX_ETHPORTS],
                     uint64_t &interval_tsc) {
  const auto &g = rt.config.test.generator;
  interval_tsc = 0;
  // Ping-pong is one frame in flight: the first worker, the first port.
  if (!g.enabled || (g.pingpong && w.queue != 0)) return;
  const uint64_t per_worker_pps = std::max<uint64_t>(1, g.rate_pps / rt.workers.size());
  interval_tsc = std::max<uint64_t>(1, rte_get_tsc_hz() / per_worker_pps);
  for (std::size_t i = 0; i < rt.ports.size(); ++i) {
    const auto &p = rt.ports[i];
    auto &gen = gens[i];
    for (const auto &a : p.config->addresses)
      if (a.address.family == g.dst_ip.family) {
        gen.endpoints.src_ip = a.address;
        gen.active = true;
        break;
      }
    if (!gen.active) continue;
    std::memcpy(gen.endpoints.src_mac.data(), p.mac.addr_bytes, 6);
    gen.endpoints.dst_mac = g.dst_mac;
    gen.endpoints.dst_ip = g.dst_ip;
    gen.endpoints.src_port = rt.config.node.udp_port;
    gen.endpoints.dst_port = g.dst_port;
    // Workers start staggered so their frames interleave.
    gen.next_tsc = rte_rdtsc() + interval_tsc * w.queue / rt.workers.size();
    if (g.pingpong) break;
  }
}

/// Sends the generator frames that are due on one port.
/// @return frames handed to the NIC.
unsigned generate(const runtime &rt, worker_context &w, const port_runtime &p, generator_port &gen,
                  uint64_t now_tsc, uint64_t interval_tsc, core::time_ns now_ns) {
  if (!gen.active) return 0;
  const auto &g = rt.config.test.generator;
  if (g.pingpong) {
    // One in flight; a lost one is given up after the timeout.
    if (gen.outstanding && now_ns - gen.sent_ns < pingpong_timeout_ns) return 0;
    gen.next_tsc = now_tsc;
    interval_tsc = 1;
    gen.outstanding = true;
    gen.sent_ns = now_ns;
  }
  if (now_tsc < gen.next_tsc) return 0;
  // After a long stall (a sleep, a descheduled CPU) do not burst to catch up
  // more than one burst's worth: the rate is an average, not a debt.
  if (now_tsc - gen.next_tsc > interval_tsc * burst_pkts) gen.next_tsc = now_tsc - interval_tsc * burst_pkts;
  uint16_t n = 0;
  while (n < burst_pkts && gen.next_tsc + interval_tsc * n <= now_tsc && !(g.pingpong && n == 1)) ++n;
  rte_mbuf *pkts[burst_pkts];
  if (rte_pktmbuf_alloc_bulk(rt.pool, pkts, n) != 0) {
    w.counters.tx_nombuf.add(n);
    gen.next_tsc += interval_tsc * n;
    return 0;
  }
  const std::size_t frame_len = core::udp_headers_size(g.dst_ip.family) + g.payload_bytes;
  std::byte payload[9600];
  std::memset(payload, 0, g.payload_bytes);
  uint64_t tx_bytes = 0;
  for (uint16_t i = 0; i < n; ++i) {
    // Payload: "MTPGEN" magic, node id, sequence; the rest zeros.
    const uint64_t seq = gen.seq++;
    if (g.payload_bytes >= 20) {
      std::memcpy(payload, "MTPGEN", 6);
      std::memcpy(payload + 8, &rt.config.node.id, 4);
      std::memcpy(payload + 12, &seq, 8);
    }
    char *data = rte_pktmbuf_append(pkts[i], static_cast<uint16_t>(frame_len));
    core::build_udp_frame({reinterpret_cast<std::byte *>(data), frame_len}, gen.endpoints,
                          {payload, g.payload_bytes});
    tx_bytes += frame_len;
  }
  gen.next_tsc += interval_tsc * n;
  const uint16_t sent = rte_eth_tx_burst(p.port_id, w.queue, pkts, n);
  if (sent < n) {
    for (uint16_t i = sent; i < n; ++i) tx_bytes -= pkts[i]->pkt_len;
    rte_pktmbuf_free_bulk(pkts + sent, n - sent);
    w.counters.tx_dropped.add(n - sent);
  }
  w.counters.tx_pkts.add(sent);
  w.counters.tx_bytes.add(tx_bytes);
  return n;
}

/// Per-worker state beyond the counters: the MTP endpoint (sessions this
/// worker owns), the seeded fault stage, hand-off staging, the generator.
struct worker_state {
  std::unique_ptr<endpoint> ep;
  core::rng fault_rng{1};
  rte_mbuf *held = nullptr;  ///< a frame held back one burst (reordering)
  std::size_t held_port = 0;
  // Delay line: frames wait here in arrival order until their time comes.
  struct delayed {
    rte_mbuf *m;
    std::size_t port;
    core::time_ns due_ns;
  };
  std::vector<delayed> delay_line;  ///< ring, sized at start
  std::size_t delay_head = 0, delay_tail = 0;
  // Frames for sessions other workers own, gathered per owner and passed
  // to its inbox once per burst.
  std::vector<std::array<rte_mbuf *, burst_pkts>> handoff;
  std::vector<uint16_t> handoff_n;
  std::vector<std::byte> linear;  ///< a multi-segment frame gathered to parse
  generator_port gens[RTE_MAX_ETHPORTS]{};
};

/// Ping-pong generator: is this the reflection of the frame in flight?
/// Then its round trip is recorded and the next one may leave.
bool take_reflection(const runtime &rt, worker_context &w, worker_state &ws, std::size_t port_index,
                     const core::udp_frame_view &v, core::time_ns now_ns) {
  generator_port &gen = ws.gens[port_index];
  if (!gen.outstanding || v.payload.size() < 20 || std::memcmp(v.payload.data(), "MTPGEN", 6) != 0) return false;
  uint32_t node = 0;
  uint64_t seq = 0;
  std::memcpy(&node, v.payload.data() + 8, 4);
  std::memcpy(&seq, v.payload.data() + 12, 8);
  if (node != rt.config.node.id || seq + 1 != gen.seq) return false;
  w.counters.record_rtt(now_ns - gen.sent_ns);
  gen.outstanding = false;
  return true;
}

void flush_handoff(const runtime &rt, worker_context &w, worker_state &ws, unsigned owner) {
  const unsigned n = ws.handoff_n[owner];
  if (n == 0) return;
  auto &q = ws.handoff[owner];
  const unsigned sent =
      rte_ring_enqueue_burst(rt.workers[owner]->handoff, reinterpret_cast<void *const *>(q.data()), n, nullptr);
  if (sent < n) {
    rte_pktmbuf_free_bulk(q.data() + sent, n - sent);
    w.counters.handoff_dropped.add(n - sent);
  }
  w.counters.handoff_out.add(sent);
  ws.handoff_n[owner] = 0;
}

void flush_handoffs(const runtime &rt, worker_context &w, worker_state &ws) {
  for (unsigned o = 0; o < ws.handoff_n.size(); ++o) flush_handoff(rt, w, ws, o);
}

/// Passes `m` (received on `port_index`) to worker `to`, with the tag of
/// its redirect (0: `to` owns its connection id) in the mbuf's hash.usr
/// beside the port (RTE_MAX_ETHPORTS < 256). The caller still frees it.
void hand_to(const runtime &rt, worker_context &w, worker_state &ws, unsigned to, rte_mbuf *m,
             std::size_t port_index, uint32_t tag) {
  // The receiver frees it; the caller's free drops our reference.
  rte_mbuf_refcnt_update(m, 1);
  m->hash.usr = static_cast<uint32_t>(port_index) | tag << 8;
  ws.handoff[to][ws.handoff_n[to]++] = m;
  if (ws.handoff_n[to] == burst_pkts) flush_handoff(rt, w, ws, to);
}

/// The frame's bytes as one span: the first segment, or for a chained
/// frame a copy gathered into the worker's buffer (valid until the next).
std::span<const std::byte> frame_bytes(worker_context &w, worker_state &ws, const rte_mbuf *m) {
  if (m->nb_segs == 1) return {rte_pktmbuf_mtod(m, const std::byte *), m->data_len};
  if (m->pkt_len > ws.linear.size()) ws.linear.resize(m->pkt_len);  // once per new size, not per frame
  w.counters.rx_linearized.inc();
  const void *p = rte_pktmbuf_read(m, 0, m->pkt_len, ws.linear.data());
  return {static_cast<const std::byte *>(p), m->pkt_len};
}

/// ARP and neighbour discovery: answers requests for the port's own
/// addresses (so kernel peers reach mtpd without static entries) and
/// learns where configured peers are. Rare: replies are sent at once.
void handle_neighbour(const runtime &rt, worker_context &w, const port_runtime &p, std::span<const std::byte> frame) {
  core::neighbour n;
  if (core::learn_neighbour(frame, n)) {
    for (std::size_t i = 0; i < rt.config.peers.size(); ++i) {
      const auto &pc = rt.config.peers[i];
      if (!(pc.ip == n.ip) || pc.mac || (!pc.port.empty() && pc.port != p.name)) continue;
      const uint64_t v = runtime::pack_mac(n.mac);
      if (rt.peer_macs[i].exchange(v, std::memory_order_acq_rel) != v) {
        w.counters.neighbours_learned.inc();
        MTP_LOG(INFO, "peer %u (%s) is at %02x:%02x:%02x:%02x:%02x:%02x on port %s\n", pc.id,
                core::format_ip(pc.ip).c_str(), n.mac[0], n.mac[1], n.mac[2], n.mac[3], n.mac[4], n.mac[5],
                p.name.c_str());
      }
    }
  }
  std::array<uint8_t, 6> mac;
  std::memcpy(mac.data(), p.mac.addr_bytes, 6);
  for (const auto &a : p.config->addresses) {
    std::byte reply[core::neighbour_advert_size];
    const bool v4 = a.address.family == 4;
    const std::size_t len = v4 ? core::arp_reply_for(frame, a.address, mac, reply)
                               : core::neighbour_advert_for(frame, a.address, mac, reply);
    if (len == 0) continue;
    rte_mbuf *r = rte_pktmbuf_alloc(rt.pool);
    if (r == nullptr) {
      w.counters.tx_nombuf.inc();
      return;
    }
    std::memcpy(rte_pktmbuf_append(r, static_cast<uint16_t>(len)), reply, len);
    if (rte_eth_tx_burst(p.port_id, w.queue, &r, 1) == 1) {
      (v4 ? w.counters.arp_replies : w.counters.nd_replies).inc();
      w.counters.tx_pkts.inc();
      w.counters.tx_bytes.add(len);
    } else {
      rte_pktmbuf_free(r);
      w.counters.tx_dropped.inc();
    }
    return;
  }
}

/// Is this frame addressed to this port: its MAC (the device's, or the one
/// the config gives it where the device cannot take it: memif) and one of
/// its addresses?
bool to_this_port(const port_runtime &p, const core::udp_endpoints &ends) {
  if (std::memcmp(ends.dst_mac.data(), p.mac.addr_bytes, 6) != 0 &&
      !(p.config->mac && std::memcmp(ends.dst_mac.data(), p.config->mac->data(), 6) == 0))
    return false;
  for (const auto &a : p.config->addresses)
    if (a.address == ends.dst_ip) return true;
  return false;
}

void classify(const runtime &rt, worker_context &w, worker_state &ws, std::size_t port_index, rte_mbuf *m,
              core::time_ns now_ns) {
  const port_runtime &p = rt.ports[port_index];
  core::udp_frame_view view;
  const std::span<const std::byte> frame = frame_bytes(w, ws, m);
  const auto verdict = core::parse_udp_frame(
      frame, rt.config.node.udp_port,
      p.rx_ip_csum ? ip_hint(m->ol_flags) : core::csum_hint::unknown,
      p.rx_l4_csum ? l4_hint(m->ol_flags) : core::csum_hint::unknown, view);
  w.counters.rx_verdict[static_cast<std::size_t>(verdict)].inc();
  // ARP is not IP; neighbour discovery is ICMPv6, so not UDP.
  if (verdict == core::frame_verdict::not_ip || verdict == core::frame_verdict::not_udp) {
    handle_neighbour(rt, w, p, frame);
    return;
  }
  if (verdict != core::frame_verdict::accepted && verdict != core::frame_verdict::other_udp_port) return;
  if (rt.config.test.generator.pingpong && take_reflection(rt, w, ws, port_index, view, now_ns)) return;
  if (verdict != core::frame_verdict::accepted) return;
  if (!to_this_port(p, view.ends)) {
    // Another node's frame (a flooding bridge, a promiscuous port): not
    // ours to take, nor to answer as if we were it.
    w.counters.mtp_wrong_destination.inc();
    return;
  }
  if (!ws.ep) {
    w.counters.mtp_no_session.inc();
    return;
  }
  uint32_t sender = 0;
  uint64_t cid = 0;
  if (w.handoff != nullptr && core::peek_ids(view.payload, sender, cid)) {
    const unsigned owner = rt.session_owner(cid);
    if (owner != w.queue) {
      hand_to(rt, w, ws, owner, m, port_index, 0);
      return;
    }
  }
  if (const endpoint::onward o = ws.ep->on_frame(port_index, view, now_ns); o.to >= 0)
    hand_to(rt, w, ws, static_cast<unsigned>(o.to), m, port_index, o.tag);
}

/// Frames other workers received for sessions owned here. They were
/// classified there (checksums included); only the view is rebuilt.
unsigned drain_inbox(const runtime &rt, worker_context &w, worker_state &ws, core::time_ns now_ns) {
  rte_mbuf *pkts[burst_pkts];
  const unsigned n =
      rte_ring_dequeue_burst(w.handoff, reinterpret_cast<void **>(pkts), burst_pkts, nullptr);
  for (unsigned i = 0; i < n; ++i) {
    core::udp_frame_view view;
    if (core::parse_udp_frame(frame_bytes(w, ws, pkts[i]), rt.config.node.udp_port, core::csum_hint::good,
                              core::csum_hint::good, view) != core::frame_verdict::accepted)
      continue;
    const std::size_t port_index = pkts[i]->hash.usr & 0xff;
    const uint32_t tag = pkts[i]->hash.usr >> 8;
    // A frame of a connection id owned here may go on once more: to the
    // worker its redirect names (never further: that one does not own it).
    if (const endpoint::onward o = ws.ep->on_frame(port_index, view, now_ns, tag); o.to >= 0)
      hand_to(rt, w, ws, static_cast<unsigned>(o.to), pkts[i], port_index, o.tag);
  }
  rte_pktmbuf_free_bulk(pkts, n);
  w.counters.handoff_in.add(n);
  return n;
}

/// The fault stage, enabled only by the config's test section: decides
/// per frame to drop, corrupt, duplicate or hold it back one burst.
/// @return how many times to process `m` now (0, 1 or 2).
int apply_faults(const cfg::faults_config &f, worker_context &w, worker_state &ws, std::size_t port_index,
                 rte_mbuf *m) {
  if (ws.fault_rng.uniform() < f.drop) {
    w.counters.fault_dropped.inc();
    return 0;
  }
  if (ws.fault_rng.uniform() < f.corrupt && m->data_len > 0) {
    const uint64_t bit = ws.fault_rng.below(uint64_t{m->data_len} * 8);
    rte_pktmbuf_mtod(m, uint8_t *)[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
    // A NIC verdict computed before the flip no longer holds.
    m->ol_flags &= ~(RTE_MBUF_F_RX_IP_CKSUM_MASK | RTE_MBUF_F_RX_L4_CKSUM_MASK);
    w.counters.fault_corrupted.inc();
  }
  if (ws.held == nullptr && ws.fault_rng.uniform() < f.reorder) {
    ws.held = rte_pktmbuf_clone(m, m->pool);
    if (ws.held != nullptr) {
      ws.held_port = port_index;
      w.counters.fault_reordered.inc();
      return 0;
    }
  }
  if (ws.fault_rng.uniform() < f.duplicate) {
    w.counters.fault_duplicated.inc();
    return 2;
  }
  return 1;
}

/// Frames whose delay has passed leave the delay line through the rest of
/// the fault stage. @return frames released.
unsigned release_delayed(const runtime &rt, worker_context &w, worker_state &ws, core::time_ns now_ns) {
  unsigned n = 0;
  while (ws.delay_head < ws.delay_tail && n < burst_pkts) {
    auto &d = ws.delay_line[ws.delay_head % ws.delay_line.size()];
    if (d.due_ns > now_ns) break;
    const int times = apply_faults(rt.config.test.faults, w, ws, d.port, d.m);
    for (int k = 0; k < times; ++k) classify(rt, w, ws, d.port, d.m, now_ns);
    flush_handoffs(rt, w, ws);
    rte_pktmbuf_free(d.m);
    ++ws.delay_head;
    ++n;
  }
  return n;
}

/// Receives one burst on one port and accounts for every frame in it.
unsigned receive(const runtime &rt, worker_context &w, worker_state &ws, std::size_t port_index,
                 core::time_ns now_ns) {
  const port_runtime &p = rt.ports[port_index];
  rte_mbuf *pkts[burst_pkts];
  const uint16_t n = rte_eth_rx_burst(p.port_id, w.queue, pkts, burst_pkts);
  if (n == 0) return 0;
  const auto &faults = rt.config.test.faults;
  const bool faulty = faults.any();
  // The frame held back by the last burst goes first: it is now late.
  if (faulty && ws.held != nullptr && ws.held_port == port_index) {
    rte_mbuf *late = ws.held;
    ws.held = nullptr;
    classify(rt, w, ws, port_index, late, now_ns);
    flush_handoffs(rt, w, ws);
    rte_pktmbuf_free(late);
  }
  for (unsigned i = 0; i < prefetch_offset && i < n; ++i) rte_prefetch0(rte_pktmbuf_mtod(pkts[i], void *));
  uint64_t bytes = 0;
  for (uint16_t i = 0; i < n; ++i) {
    if (i + prefetch_offset < n) rte_prefetch0(rte_pktmbuf_mtod(pkts[i + prefetch_offset], void *));
    rte_mbuf *m = pkts[i];
    bytes += m->pkt_len;
    if (!ws.delay_line.empty()) {
      // Into the delay line (the line owns the mbuf now); a full line drops.
      if (ws.delay_tail - ws.delay_head < ws.delay_line.size()) {
        ws.delay_line[ws.delay_tail++ % ws.delay_line.size()] = {m, port_index, now_ns + faults.delay_us * 1000ull};
      } else {
        w.counters.fault_dropped.inc();
        rte_pktmbuf_free(m);
      }
      pkts[i] = nullptr;
      continue;
    }
    const int times = faulty ? apply_faults(faults, w, ws, port_index, m) : 1;
    for (int k = 0; k < times; ++k) classify(rt, w, ws, port_index, m, now_ns);
  }
  flush_handoffs(rt, w, ws);
  if (ws.delay_line.empty()) rte_pktmbuf_free_bulk(pkts, n);
  w.counters.rx_pkts.add(n);
  w.counters.rx_bytes.add(bytes);
  w.counters.rx_bursts.inc();
  return n;
}

}  // namespace

int worker_main(void *arg) {
  auto &w = *static_cast<worker_context *>(arg);
  const runtime &rt = *w.rt;
  // An adaptive sleep of a few microseconds must not become the kernel's
  // default 50 us of timer slack: a frame (or a command) would wait that long.
  if (rt.config.idle.policy == cfg::idle_policy::adaptive) prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
  idle_strategy idle(rt.config.idle);
  idle_counters idle_n;
  worker_state ws;
  uint64_t gen_interval_tsc = 0;
  setup_generator(rt, w, ws.gens, gen_interval_tsc);
  // TSC to nanoseconds once per loop (a double holds 104 days of ns exactly).
  const double ns_per_tsc = 1e9 / static_cast<double>(rte_get_tsc_hz());
  const uint64_t tsc0 = rte_rdtsc();
  auto to_ns = [&](uint64_t tsc) { return static_cast<core::time_ns>(static_cast<double>(tsc - tsc0) * ns_per_tsc) + 1; };
  ws.fault_rng = core::rng(rt.config.test.faults.seed * 0x9e3779b97f4a7c15ull + w.queue + 1);
  if (rt.config.test.faults.delay_us) ws.delay_line.resize(rt.config.memory.mbufs / 2);
  ws.linear.resize(2048);
  ws.handoff.resize(w.handoff != nullptr ? rt.workers.size() : 0);
  ws.handoff_n.assign(ws.handoff.size(), 0);
  // Every worker runs sessions: those whose connection id it owns, for
  // applications and for the test source and sink.
  ws.ep = std::make_unique<endpoint>(rt, w, to_ns(rte_rdtsc()));
  // Serving applications, the idle sleep is on their eventfds: a command
  // wakes the worker at once (shm_layout.h daemon_sleeping).
  const idle_sleeper sleeper{ws.ep.get(), [](void *ep, uint64_t ns) { return static_cast<endpoint *>(ep)->sleep(ns); }};
  MTP_LOG(INFO, "worker lcore %u: polling queue %u on %zu port(s)%s\n", w.lcore, w.queue, rt.ports.size(),
          ws.ep ? ", MTP sessions" : "");

  while (!rt.stop.load(std::memory_order_relaxed)) {
    const uint64_t now_tsc = rte_rdtsc();
    const core::time_ns now_ns = to_ns(now_tsc);
    unsigned work = 0;
    for (std::size_t i = 0; i < rt.ports.size(); ++i) {
      work += receive(rt, w, ws, i, now_ns);
      if (gen_interval_tsc) work += generate(rt, w, rt.ports[i], ws.gens[i], now_tsc, gen_interval_tsc, now_ns);
    }
    if (!ws.delay_line.empty()) work += release_delayed(rt, w, ws, now_ns);
    if (ws.ep && w.handoff != nullptr) work += drain_inbox(rt, w, ws, now_ns);
    if (ws.ep) work += ws.ep->poll(now_ns);
    w.counters.loops.inc();
    idle.idle(work, idle_n, ws.ep->serves_apps() ? &sleeper : nullptr);
    // Idle counters live in the loop's registers; publish them now and then.
    if (idle_n.idle_loops >= 1024 || (work && idle_n.idle_loops)) {
      w.counters.idle_loops.add(idle_n.idle_loops);
      w.counters.sleeps.add(idle_n.sleeps);
      idle_n = {};
    }
  }
  if (ws.ep) ws.ep->shutdown(to_ns(rte_rdtsc()));
  ws.ep.reset();
  if (ws.held != nullptr) rte_pktmbuf_free(ws.held);
  for (; ws.delay_head < ws.delay_tail; ++ws.delay_head) rte_pktmbuf_free(ws.delay_line[ws.delay_head % ws.delay_line.size()].m);
  flush_handoffs(rt, w, ws);
  w.counters.idle_loops.add(idle_n.idle_loops);
  w.counters.sleeps.add(idle_n.sleeps);
  MTP_LOG(INFO, "worker lcore %u: stopped\n", w.lcore);
  return 0;
}

}  // namespace mtp::dp
