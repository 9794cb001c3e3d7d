// SPDX-License-Identifier: BSD-3-Clause
// See stats.h.
#include "stats.h"

#include <rte_ethdev.h>

#include <cinttypes>

namespace mtp::ctl {

namespace {

std::string json_object(const std::vector<named_value> &fs) {
  std::string s = "{";
  for (std::size_t i = 0; i < fs.size(); ++i)
    s += (i ? ",\"" : "\"") + std::string(fs[i].name) + "\":" + std::to_string(fs[i].value);
  return s + "}";
}

}  // namespace

std::vector<named_value> port_counters(const dp::port_runtime &p) {
  rte_eth_stats st{};
  if (rte_eth_stats_get(p.port_id, &st) != 0) return {};
  return {{"ipackets", st.ipackets}, {"opackets", st.opackets}, {"ibytes", st.ibytes},
          {"obytes", st.obytes},     {"imissed", st.imissed},   {"ierrors", st.ierrors},
          {"oerrors", st.oerrors},   {"rx_nombuf", st.rx_nombuf}};
}

namespace {
// "drop_bad_crc", ...: the engine's drop reasons under the names
// protocol.md gives them, prefixed so they read apart from the rest.
const std::vector<std::string> &drop_counter_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (std::size_t i = 0; i < core::drop_reason_count; ++i)
      v.push_back("drop_" + std::string(core::drop_reason_name(static_cast<core::drop_reason>(i))));
    return v;
  }();
  return names;
}
// "hs_bad_mac1", ...: handshake packets refused, by crypto::hs_error.
const std::vector<std::string> &hs_counter_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (std::size_t i = 0; i < crypto::hs_error_count; ++i)
      v.push_back("hs_" + std::string(crypto::to_string(static_cast<crypto::hs_error>(i))));
    return v;
  }();
  return names;
}
}  // namespace

std::vector<named_value> worker_counter_values(const dp::worker_counters &c) {
  std::vector<named_value> v = {
#define MTP_X(name, text) {#name, c.name.get()},
      MTP_WORKER_COUNTERS(MTP_X)
#undef MTP_X
  };
  for (std::size_t i = 0; i < core::drop_reason_count; ++i)
    v.push_back({drop_counter_names()[i].c_str(), c.mtp_drops[i].get()});
  for (std::size_t i = 1; i < crypto::hs_error_count; ++i)
    v.push_back({hs_counter_names()[i].c_str(), c.hs_drops[i].get()});
  return v;
}

std::vector<named_value> verdict_totals(const dp::runtime &rt) {
  std::vector<named_value> fs;
  for (std::size_t v = 0; v < core::frame_verdict_count; ++v) {
    uint64_t sum = 0;
    for (const auto *w : rt.workers) sum += w->counters.rx_verdict[v].get();
    fs.push_back({core::frame_verdict_name(static_cast<core::frame_verdict>(v)).data(), sum});
  }
  return fs;
}

std::vector<named_value> app_counter_values(const dp::runtime &rt) {
  const auto &a = rt.apps;
  return {{"attached_now", a.attached_now.load(std::memory_order_relaxed)},
          {"attached", a.attached.load(std::memory_order_relaxed)},
          {"detached", a.detached.load(std::memory_order_relaxed)},
          {"refused", a.refused.load(std::memory_order_relaxed)},
          {"timed_out", a.timed_out.load(std::memory_order_relaxed)},
          {"shed", a.shed.load(std::memory_order_relaxed)}};
}

std::string counters_json(const dp::runtime &rt) {
  std::string s = "{\"node\":\"" + rt.config.node.name + "\",\"ports\":{";
  for (std::size_t i = 0; i < rt.ports.size(); ++i) {
    const auto fs = port_counters(rt.ports[i]);
    s += (i ? ",\"" : "\"") + rt.ports[i].name + "\":" + (fs.empty() ? "null" : json_object(fs));
  }
  s += "},\"workers\":[";
  for (std::size_t i = 0; i < rt.workers.size(); ++i) {
    auto fs = worker_counter_values(rt.workers[i]->counters);
    fs.insert(fs.begin(), {"lcore", rt.workers[i]->lcore});
    s += (i ? "," : "") + json_object(fs);
  }
  return s + "],\"rx_verdicts\":" + json_object(verdict_totals(rt)) + ",\"apps\":" + json_object(app_counter_values(rt)) +
         "}";
}

void print_counters(const dp::runtime &rt, FILE *out) {
  for (const auto &p : rt.ports) {
    const auto fs = port_counters(p);
    std::fprintf(out, "  port %-10s", p.name.c_str());
    if (fs.empty()) std::fprintf(out, " (no stats)");
    for (const auto &f : fs) std::fprintf(out, " %s=%" PRIu64, f.name, f.value);
    std::fputc('\n', out);
  }
  for (const auto *w : rt.workers) {
    std::fprintf(out, "  worker %-8u", w->lcore);
    for (const auto &f : worker_counter_values(w->counters)) std::fprintf(out, " %s=%" PRIu64, f.name, f.value);
    std::fputc('\n', out);
  }
  std::fprintf(out, "  applications   ");
  for (const auto &f : app_counter_values(rt)) std::fprintf(out, " %s=%" PRIu64, f.name, f.value);
  std::fputc('\n', out);
  std::fprintf(out, "  rx verdicts     ");
  for (const auto &f : verdict_totals(rt))
    if (f.value) std::fprintf(out, " %s=%" PRIu64, f.name, f.value);
  std::fputc('\n', out);
}

}  // namespace mtp::ctl
