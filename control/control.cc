// SPDX-License-Identifier: BSD-3-Clause
// See control.h. Slow path: syscalls and logging are fine here.
#include "control.h"

#include <poll.h>
#include <rte_cycles.h>
#include <rte_ethdev.h>


#include "log.h"
#include "port.h"
#include "stats.h"

namespace mtp::ctl {

namespace {

constexpr int poll_timeout_ms = 10;  // bounds how late a stop signal is seen

uint64_t now_ms() { return rte_get_timer_cycles() * 1000 / rte_get_timer_hz(); }

}  // namespace

void control_run(dp::runtime &rt, app_listener &app, const std::atomic<bool> &stop_requested,
                 const std::function<bool(const dp::runtime &, uint64_t)> &tick) {
  const uint64_t start_ms = now_ms();
  const uint64_t stats_ms = rt.config.telemetry.stats_interval_ms;
  uint64_t next_link_ms = 0;
  uint64_t next_stats_ms = now_ms() + stats_ms;

  while (!stop_requested.load(std::memory_order_relaxed)) {
    pollfd pfd{app.fd(), POLLIN, 0};
    (void)::poll(&pfd, 1, poll_timeout_ms);
    app.poll(rt);  // also when nothing connects: attached applications may leave, silent ones time out
    const auto &ac = app.counters();
    rt.apps.attached_now.store(app.attached(), std::memory_order_relaxed);
    rt.apps.attached.store(ac.attached, std::memory_order_relaxed);
    rt.apps.detached.store(ac.detached, std::memory_order_relaxed);
    rt.apps.refused.store(ac.refused, std::memory_order_relaxed);
    rt.apps.timed_out.store(ac.timed_out, std::memory_order_relaxed);
    rt.apps.shed.store(ac.shed, std::memory_order_relaxed);

    const uint64_t now = now_ms();
    if (tick && tick(rt, now - start_ms)) break;
    if (now >= next_link_ms) {
      next_link_ms = now + 1000;
      for (auto &p : rt.ports) {
        rte_eth_link link{};
        if (rte_eth_link_get_nowait(p.port_id, &link) == 0 && link.link_status != p.link_up)
          p.link_up = dp::port_log_link(p);
      }
    }
    if (stats_ms && now >= next_stats_ms) {
      next_stats_ms = now + stats_ms;
      MTP_LOG(INFO, "counters:\n");
      print_counters(rt, rte_log_get_stream());
    }
  }
  rt.stop.store(true, std::memory_order_relaxed);
}

}  // namespace mtp::ctl
