// SPDX-License-Identifier: BSD-3-Clause
// The worker loop: rx burst -> classify -> count -> free; the test traffic
// source when the config's test section enables it; then idle.
//
// Runs on one worker lcore and touches only that worker's queues and
// counters. Shaped like DPDK's l2fwd main_loop: the TSC read once per loop,
// bursts of 32, prefetch three frames ahead, partial tx freed and counted.
// The protocol engine takes over the accepted frames in its own issue.
#include "worker.h"

#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_prefetch.h>

#include <cstring>

#include "idle.h"
#include "log.h"
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
};

void setup_generator(const runtime &rt, const worker_context &w, generator_port (&gens)[RTE_MAX_ETHPORTS],
                     uint64_t &interval_tsc) {
  const auto &g = rt.config.test.generator;
  interval_tsc = 0;
  if (!g.enabled) return;
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
  }
}

/// Sends the generator frames that are due on one port.
/// @return frames handed to the NIC.
unsigned generate(const runtime &rt, worker_context &w, const port_runtime &p, generator_port &gen,
                  uint64_t now_tsc, uint64_t interval_tsc) {
  if (!gen.active || now_tsc < gen.next_tsc) return 0;
  // After a long stall (a sleep, a descheduled CPU) do not burst to catch up
  // more than one burst's worth: the rate is an average, not a debt.
  if (now_tsc - gen.next_tsc > interval_tsc * burst_pkts) gen.next_tsc = now_tsc - interval_tsc * burst_pkts;
  uint16_t n = 0;
  while (n < burst_pkts && gen.next_tsc + interval_tsc * n <= now_tsc) ++n;
  rte_mbuf *pkts[burst_pkts];
  if (rte_pktmbuf_alloc_bulk(rt.pool, pkts, n) != 0) {
    w.counters.tx_nombuf.add(n);
    gen.next_tsc += interval_tsc * n;
    return 0;
  }
  const auto &g = rt.config.test.generator;
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

/// Receives one burst on one port and accounts for every frame in it.
unsigned receive(const runtime &rt, worker_context &w, const port_runtime &p) {
  rte_mbuf *pkts[burst_pkts];
  const uint16_t n = rte_eth_rx_burst(p.port_id, w.queue, pkts, burst_pkts);
  if (n == 0) return 0;
  for (unsigned i = 0; i < prefetch_offset && i < n; ++i) rte_prefetch0(rte_pktmbuf_mtod(pkts[i], void *));
  uint64_t bytes = 0;
  for (uint16_t i = 0; i < n; ++i) {
    if (i + prefetch_offset < n) rte_prefetch0(rte_pktmbuf_mtod(pkts[i + prefetch_offset], void *));
    rte_mbuf *m = pkts[i];
    bytes += m->pkt_len;
    // Frames fit one mbuf (the config checks MTU against the data room), so
    // the first segment is the whole frame.
    core::udp_frame_view view;
    const auto verdict = core::parse_udp_frame(
        {rte_pktmbuf_mtod(m, const std::byte *), m->data_len}, rt.config.node.udp_port,
        p.rx_ip_csum ? ip_hint(m->ol_flags) : core::csum_hint::unknown,
        p.rx_l4_csum ? l4_hint(m->ol_flags) : core::csum_hint::unknown, view);
    w.counters.rx_verdict[static_cast<std::size_t>(verdict)].inc();
  }
  rte_pktmbuf_free_bulk(pkts, n);
  w.counters.rx_pkts.add(n);
  w.counters.rx_bytes.add(bytes);
  w.counters.rx_bursts.inc();
  return n;
}

}  // namespace

int worker_main(void *arg) {
  auto &w = *static_cast<worker_context *>(arg);
  const runtime &rt = *w.rt;
  idle_strategy idle(rt.config.idle);
  idle_counters idle_n;
  generator_port gens[RTE_MAX_ETHPORTS]{};
  uint64_t gen_interval_tsc = 0;
  setup_generator(rt, w, gens, gen_interval_tsc);
  MTP_LOG(INFO, "worker lcore %u: polling queue %u on %zu port(s)\n", w.lcore, w.queue, rt.ports.size());

  while (!rt.stop.load(std::memory_order_relaxed)) {
    const uint64_t now_tsc = rte_rdtsc();
    unsigned work = 0;
    for (std::size_t i = 0; i < rt.ports.size(); ++i) {
      work += receive(rt, w, rt.ports[i]);
      if (gen_interval_tsc) work += generate(rt, w, rt.ports[i], gens[i], now_tsc, gen_interval_tsc);
    }
    w.counters.loops.inc();
    idle.idle(work, idle_n);
    // Idle counters live in the loop's registers; publish them now and then.
    if (idle_n.idle_loops >= 1024 || (work && idle_n.idle_loops)) {
      w.counters.idle_loops.add(idle_n.idle_loops);
      w.counters.sleeps.add(idle_n.sleeps);
      idle_n = {};
    }
  }
  w.counters.idle_loops.add(idle_n.idle_loops);
  w.counters.sleeps.add(idle_n.sleeps);
  MTP_LOG(INFO, "worker lcore %u: stopped\n", w.lcore);
  return 0;
}

}  // namespace mtp::dp
