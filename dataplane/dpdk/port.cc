// SPDX-License-Identifier: BSD-3-Clause
// See port.h. Virtual devices are created with rte_dev_probe() after EAL
// init rather than with --vdev, so a bad device is reported against its
// port by name instead of failing EAL as a whole.
#include "port.h"

#include <rte_dev.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_flow.h>

#include <cstring>

#include "log.h"
#include "runtime.h"

namespace mtp::dp {

namespace {

std::string errstr(int rc) { return rte_strerror(rc < 0 ? -rc : rc); }

std::string driver_of(const std::string &eal_name) {
  std::size_t end = eal_name.size();
  while (end > 0 && std::isdigit(static_cast<unsigned char>(eal_name[end - 1]))) --end;
  return eal_name.substr(0, end);
}

}  // namespace

namespace {

/// Steers MTP frames by connection id with rte_flow where the device takes
/// the rules: per worker k and IP version, UDP to the MTP port whose
/// connection id's last byte, under the worker mask, is k's (salted) value
/// (runtime::owner_of) goes to queue k. All or nothing: on the first rule
/// the device refuses, the rules made so far are removed.
/// @return true with every rule in place, or false and why in `why`.
bool steer_by_connection_id(uint16_t port_id, const cfg::node_config &node, unsigned workers, std::string &why) {
  if (workers < 2 || (workers & (workers - 1)) != 0) {
    why = "the worker count is not a power of two";
    return false;
  }
  const uint8_t mask = static_cast<uint8_t>(workers - 1);
  const uint8_t salt = runtime::steer_salt(node.id);
  for (int family : {4, 6}) {
    for (unsigned k = 0; k < workers; ++k) {
      rte_flow_attr attr{};
      attr.ingress = 1;
      rte_flow_item_udp udp_spec{}, udp_mask{};
      udp_spec.hdr.dst_port = rte_cpu_to_be_16(node.udp_port);
      udp_mask.hdr.dst_port = 0xffff;
      const uint8_t want = static_cast<uint8_t>((k ^ salt) & mask);
      rte_flow_item_raw raw_spec{}, raw_mask{};
      raw_spec.relative = 1;
      raw_spec.offset = 15;  // the connection id's last byte: MTP header bytes 8..15 (protocol.md 3.1)
      raw_spec.length = 1;
      raw_spec.pattern = &want;
      raw_mask.relative = 1;
      raw_mask.offset = -1;
      raw_mask.limit = 0xffff;
      raw_mask.length = 0xffff;
      raw_mask.pattern = &mask;
      const rte_flow_item pattern[] = {
          {RTE_FLOW_ITEM_TYPE_ETH, nullptr, nullptr, nullptr},
          {family == 4 ? RTE_FLOW_ITEM_TYPE_IPV4 : RTE_FLOW_ITEM_TYPE_IPV6, nullptr, nullptr, nullptr},
          {RTE_FLOW_ITEM_TYPE_UDP, &udp_spec, nullptr, &udp_mask},
          {RTE_FLOW_ITEM_TYPE_RAW, &raw_spec, nullptr, &raw_mask},
          {RTE_FLOW_ITEM_TYPE_END, nullptr, nullptr, nullptr},
      };
      rte_flow_action_queue queue{static_cast<uint16_t>(k)};
      const rte_flow_action actions[] = {{RTE_FLOW_ACTION_TYPE_QUEUE, &queue}, {RTE_FLOW_ACTION_TYPE_END, nullptr}};
      rte_flow_error err{};
      if (rte_flow_validate(port_id, &attr, pattern, actions, &err) != 0 ||
          rte_flow_create(port_id, &attr, pattern, actions, &err) == nullptr) {
        why = err.message != nullptr ? err.message : "refused";
        rte_flow_flush(port_id, &err);
        return false;
      }
    }
  }
  return true;
}

}  // namespace

result<port_runtime> port_start(const cfg::port_config &pc, const cfg::node_config &node, unsigned workers,
                                rte_mempool *pool) {
  port_runtime p;
  p.name = pc.name;
  p.config = &pc;
  const std::string eal_name = pc.eal_name();
  const std::string ctx = "port '" + pc.name + "' (" + pc.device + ")";

  if (!pc.is_pci) {
    const int rc = rte_dev_probe(pc.device.c_str());
    // rte_dev_probe says -EFAULT when no driver on the vdev bus matches the
    // name ("failed to parse device"), anything else when the driver matched
    // but refused the arguments or the host (its own message says why).
    if (rc == -EFAULT)
      return make_error("no DPDK driver named '" + driver_of(eal_name) +
                        "' is installed (PMDs load from the EAL plugin directory; Debian package: dpdk)")
          .context(ctx);
    if (rc != 0)
      return make_error("the '" + driver_of(eal_name) + "' driver refused the device (" + errstr(rc) +
                        "); its message above says why")
          .context(ctx);
  }
  if (rte_eth_dev_get_port_by_name(eal_name.c_str(), &p.port_id) != 0)
    return make_error(pc.is_pci ? "no ethdev for this PCI address: is it bound to vfio-pci and not blocked?"
                                : "the device was created but is not an ethdev")
        .context(ctx);

  rte_eth_dev_info info{};
  if (int rc = rte_eth_dev_info_get(p.port_id, &info); rc != 0)
    return make_error("cannot read device info: " + errstr(rc)).context(ctx);
  if (info.max_rx_queues < workers || info.max_tx_queues < workers)
    return make_error("the device has at most " + std::to_string(info.max_rx_queues) + " rx / " +
                      std::to_string(info.max_tx_queues) + " tx queues, the config asks one each for " +
                      std::to_string(workers) + " workers")
        .context(ctx);

  rte_eth_conf conf{};
  if (workers > 1) {
    conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
    conf.rx_adv_conf.rss_conf.rss_hf = (RTE_ETH_RSS_IP | RTE_ETH_RSS_UDP) & info.flow_type_rss_offloads;
    if (conf.rx_adv_conf.rss_conf.rss_hf == 0) conf.rxmode.mq_mode = RTE_ETH_MQ_RX_NONE;
  }
  // Checksum verdicts on receive when the port computes them; the worker
  // verifies in software otherwise.
  const uint64_t rx_csum = RTE_ETH_RX_OFFLOAD_IPV4_CKSUM | RTE_ETH_RX_OFFLOAD_UDP_CKSUM;
  conf.rxmode.offloads = info.rx_offload_capa & rx_csum;
  // Frames longer than one mbuf arrive as chains, where the device can.
  const uint32_t one_mbuf = rte_pktmbuf_data_room_size(pool) - RTE_PKTMBUF_HEADROOM;
  if (pc.mtu + 18u > one_mbuf) {
    if (!(info.rx_offload_capa & RTE_ETH_RX_OFFLOAD_SCATTER))
      return make_error("frames of MTU " + std::to_string(pc.mtu) + " need " + std::to_string(pc.mtu + 18u) +
                        " B but an mbuf holds " + std::to_string(one_mbuf) +
                        " and the device cannot receive into chained mbufs (no RX scatter): raise memory.mbuf_data_room")
          .context(ctx);
    conf.rxmode.offloads |= RTE_ETH_RX_OFFLOAD_SCATTER;
  }
  p.rx_ip_csum = info.rx_offload_capa & RTE_ETH_RX_OFFLOAD_IPV4_CKSUM;
  p.rx_l4_csum = info.rx_offload_capa & RTE_ETH_RX_OFFLOAD_UDP_CKSUM;
  // Checksums on transmit when the port computes them (software otherwise),
  // and chained mbufs so fan-out copies share one payload.
  const uint64_t tx_wanted =
      RTE_ETH_TX_OFFLOAD_IPV4_CKSUM | RTE_ETH_TX_OFFLOAD_UDP_CKSUM | RTE_ETH_TX_OFFLOAD_MULTI_SEGS;
  conf.txmode.offloads = info.tx_offload_capa & tx_wanted;
  p.tx_ip_csum = info.tx_offload_capa & RTE_ETH_TX_OFFLOAD_IPV4_CKSUM;
  p.tx_udp_csum = info.tx_offload_capa & RTE_ETH_TX_OFFLOAD_UDP_CKSUM;
  p.tx_multi_seg = info.tx_offload_capa & RTE_ETH_TX_OFFLOAD_MULTI_SEGS;

  if (int rc = rte_eth_dev_configure(p.port_id, static_cast<uint16_t>(workers), static_cast<uint16_t>(workers), &conf);
      rc != 0)
    return make_error("cannot configure " + std::to_string(workers) + " rx/tx queue pair(s): " + errstr(rc))
        .context(ctx);

  uint16_t rx_desc = pc.rx_descriptors;
  uint16_t tx_desc = pc.tx_descriptors;
  if (int rc = rte_eth_dev_adjust_nb_rx_tx_desc(p.port_id, &rx_desc, &tx_desc); rc != 0)
    return make_error("cannot fit descriptor counts: " + errstr(rc)).context(ctx);
  const int socket = rte_eth_dev_socket_id(p.port_id);
  const unsigned sock = socket < 0 ? 0u : static_cast<unsigned>(socket);
  for (uint16_t q = 0; q < workers; ++q) {
    rte_eth_rxconf rxconf = info.default_rxconf;
    rxconf.offloads = conf.rxmode.offloads;
    if (int rc = rte_eth_rx_queue_setup(p.port_id, q, rx_desc, sock, &rxconf, pool); rc != 0)
      return make_error("cannot set up rx queue " + std::to_string(q) + " with " + std::to_string(rx_desc) +
                        " descriptors: " + errstr(rc))
          .context(ctx);
    rte_eth_txconf txconf = info.default_txconf;
    txconf.offloads = conf.txmode.offloads;
    if (int rc = rte_eth_tx_queue_setup(p.port_id, q, tx_desc, sock, &txconf); rc != 0)
      return make_error("cannot set up tx queue " + std::to_string(q) + " with " + std::to_string(tx_desc) +
                        " descriptors: " + errstr(rc))
          .context(ctx);
  }

  // Some virtual devices have no settable MTU; they carry what they carry.
  // Only a device that supports setting it and refuses our value is an error.
  if (int rc = rte_eth_dev_set_mtu(p.port_id, pc.mtu); rc != 0 && rc != -ENOTSUP)
    return make_error("cannot set MTU " + std::to_string(pc.mtu) + ": " + errstr(rc) + " (device range " +
                      std::to_string(info.min_mtu) + ".." + std::to_string(info.max_mtu) + ")")
        .context(ctx);
  rte_eth_dev_get_mtu(p.port_id, &p.mtu);

  if (pc.mac) {
    rte_ether_addr mac;
    std::memcpy(mac.addr_bytes, pc.mac->data(), 6);
    if (int rc = rte_eth_dev_default_mac_addr_set(p.port_id, &mac); rc == -ENOTSUP)
      MTP_LOG(WARNING, "port %s: the device cannot change its MAC address; keeping its own\n", pc.name.c_str());
    else if (rc != 0)
      return make_error("cannot set MAC address: " + errstr(rc)).context(ctx);
  }

  if (int rc = rte_eth_dev_start(p.port_id); rc != 0)
    return make_error("cannot start: " + errstr(rc)).context(ctx);
  // MTP frames are addressed by IP; promiscuous mode keeps L2 filtering from
  // hiding frames the counters must see. Not every device has it.
  rte_eth_promiscuous_enable(p.port_id);
  rte_eth_macaddr_get(p.port_id, &p.mac);
  std::string steer_why;
  if (workers > 1) {
    p.flow_steered = steer_by_connection_id(p.port_id, node, workers, steer_why);
    MTP_LOG(INFO, "port %s: %s\n", pc.name.c_str(),
            p.flow_steered ? "rte_flow steers MTP frames to the worker owning their connection id"
                           : ("rte_flow cannot steer by connection id (" + steer_why +
                              "): other workers hand frames to the owner")
                                 .c_str());
  }
  MTP_LOG(INFO, "port %s: rx checksums %s, tx checksums %s, fan-out copies %s, %u queue pair(s)%s\n", pc.name.c_str(),
          p.rx_ip_csum || p.rx_l4_csum ? "from the port" : "in software",
          p.tx_ip_csum || p.tx_udp_csum ? "by the port" : "in software",
          p.tx_multi_seg ? "chained (no payload copy)" : "copied", workers,
          workers > 1 && conf.rxmode.mq_mode == RTE_ETH_MQ_RX_RSS ? ", RSS" : "");
  return p;
}

int port_log_link(const port_runtime &p) {
  rte_eth_link link{};
  char text[RTE_ETH_LINK_MAX_STR_LEN];
  if (rte_eth_link_get_nowait(p.port_id, &link) != 0) {
    MTP_LOG(WARNING, "port %s: link state unknown\n", p.name.c_str());
    return -1;
  }
  rte_eth_link_to_str(text, sizeof text, &link);
  char mac[RTE_ETHER_ADDR_FMT_SIZE];
  rte_ether_format_addr(mac, sizeof mac, &p.mac);
  MTP_LOG(INFO, "port %s (ethdev %u, %s, mtu %u): %s\n", p.name.c_str(), p.port_id, mac, p.mtu, text);
  return link.link_status;
}

void port_stop(const port_runtime &p) {
  if (p.flow_steered) {
    rte_flow_error err{};
    rte_flow_flush(p.port_id, &err);
  }
  if (int rc = rte_eth_dev_stop(p.port_id); rc != 0)
    MTP_LOG(WARNING, "port %s: stop failed: %s\n", p.name.c_str(), errstr(rc).c_str());
  if (int rc = rte_eth_dev_close(p.port_id); rc != 0)
    MTP_LOG(WARNING, "port %s: close failed: %s\n", p.name.c_str(), errstr(rc).c_str());
  if (!p.config->is_pci) rte_eal_hotplug_remove("vdev", p.config->eal_name().c_str());
}

}  // namespace mtp::dp
