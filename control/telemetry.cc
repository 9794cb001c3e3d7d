// SPDX-License-Identifier: BSD-3-Clause
// See telemetry.h. DPDK telemetry callbacks take no user pointer, so the
// runtime is published through one atomic pointer.
#include "telemetry.h"

#include <rte_telemetry.h>

#include <atomic>

#include "mtp_version.h"
#include "stats.h"

namespace mtp::ctl {

namespace {

std::atomic<const dp::runtime *> published{nullptr};

void add_values(rte_tel_data *d, const std::vector<named_value> &vs) {
  for (const auto &v : vs) rte_tel_data_add_dict_u64(d, v.name, v.value);
}

int cmd_info(const char *, const char *, rte_tel_data *d) {
  const dp::runtime *rt = published.load();
  if (rt == nullptr) return -1;
  rte_tel_data_start_dict(d);
  rte_tel_data_add_dict_string(d, "version", MTP_VERSION);
  rte_tel_data_add_dict_string(d, "node", rt->config.node.name.c_str());
  rte_tel_data_add_dict_u64(d, "node_id", rt->config.node.id);
  rte_tel_data_add_dict_u64(d, "udp_port", rt->config.node.udp_port);
  rte_tel_data_add_dict_string(d, "config", rt->config.source.c_str());
  rte_tel_data_add_dict_u64(d, "ports", rt->ports.size());
  rte_tel_data_add_dict_u64(d, "workers", rt->workers.size());
  return 0;
}

int cmd_ports(const char *, const char *, rte_tel_data *d) {
  const dp::runtime *rt = published.load();
  if (rt == nullptr) return -1;
  rte_tel_data_start_dict(d);
  for (const auto &p : rt->ports) {
    rte_tel_data *c = rte_tel_data_alloc();
    if (c == nullptr) return -1;
    rte_tel_data_start_dict(c);
    rte_tel_data_add_dict_u64(c, "ethdev", p.port_id);
    add_values(c, port_counters(p));
    rte_tel_data_add_dict_container(d, p.name.c_str(), c, 0);
  }
  return 0;
}

int cmd_workers(const char *, const char *, rte_tel_data *d) {
  const dp::runtime *rt = published.load();
  if (rt == nullptr) return -1;
  rte_tel_data_start_dict(d);
  for (const auto *w : rt->workers) {
    rte_tel_data *c = rte_tel_data_alloc();
    if (c == nullptr) return -1;
    rte_tel_data_start_dict(c);
    add_values(c, worker_counter_values(w->counters));
    rte_tel_data_add_dict_container(d, ("lcore" + std::to_string(w->lcore)).c_str(), c, 0);
  }
  return 0;
}

int cmd_verdicts(const char *, const char *, rte_tel_data *d) {
  const dp::runtime *rt = published.load();
  if (rt == nullptr) return -1;
  rte_tel_data_start_dict(d);
  add_values(d, verdict_totals(*rt));
  return 0;
}

int cmd_apps(const char *, const char *, rte_tel_data *d) {
  const dp::runtime *rt = published.load();
  if (rt == nullptr) return -1;
  rte_tel_data_start_dict(d);
  add_values(d, app_counter_values(*rt));
  return 0;
}

}  // namespace

void telemetry_attach(const dp::runtime &rt) {
  published.store(&rt);
  // Registration fails only for a second registration or a full table;
  // both would be bugs here, and telemetry is not worth dying for.
  rte_telemetry_register_cmd("/mtp/info", cmd_info, "mtpd node, version, ports and workers");
  rte_telemetry_register_cmd("/mtp/ports", cmd_ports, "ethdev counters per port");
  rte_telemetry_register_cmd("/mtp/workers", cmd_workers, "counters per worker lcore");
  rte_telemetry_register_cmd("/mtp/rx_verdicts", cmd_verdicts, "received frames by verdict");
  rte_telemetry_register_cmd("/mtp/apps", cmd_apps, "applications attached, detached, refused");
}

void telemetry_detach() { published.store(nullptr); }

}  // namespace mtp::ctl
