// SPDX-License-Identifier: BSD-3-Clause
// Bringing a validated config to life and back: EAL, pool, ports, workers,
// the control loop, and an orderly teardown. Shared by mtpd and mtp-perf.
#include "daemon.h"

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_ring.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstring>

#include "app_listener.h"
#include "control.h"
#include "eal.h"
#include "log.h"
#include "mtp_version.h"
#include "port.h"
#include "stats.h"
#include "telemetry.h"
#include "worker.h"

namespace mtp::dp {

namespace {

std::atomic<bool> stop_requested{false};
static_assert(std::atomic<bool>::is_always_lock_free, "signal handler needs a lock-free flag");

constexpr unsigned handoff_ring_size = 4096;
constexpr unsigned app_inbox_size = 128;  // > attach_policy::max_apps

void on_signal(int) { stop_requested.store(true); }

void fail(const char *name, const error &e) { std::fprintf(stderr, "%s: %s\n", name, e.message.c_str()); }

}  // namespace

int run_daemon(cfg::config config, const std::vector<std::string> &eal_extra, const run_hooks &hooks) {
  runtime rt;
  rt.config = std::move(config);
  const auto &cfg = rt.config;
  if (auto r = check_hugepages(cfg); !r) return fail(hooks.name, r.err()), exit_runtime;

  ctl::app_listener app;
  if (auto r = app.open(cfg); !r) return fail(hooks.name, r.err()), exit_runtime;

  struct sigaction sa{};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  if (auto r = eal_start(eal_arguments(cfg, eal_extra)); !r) {
    app.close();
    return fail(hooks.name, r.err()), exit_runtime;
  }
  log_init(cfg.log.level);
  FILE *log_file = nullptr;
  if (!cfg.log.file.empty()) {
    log_file = std::fopen(cfg.log.file.c_str(), "a");
    if (log_file == nullptr) {
      std::fprintf(stderr, "%s: cannot open log.file '%s': %s\n", hooks.name, cfg.log.file.c_str(), std::strerror(errno));
      app.close();
      eal_stop(cfg);
      return exit_runtime;
    }
    setvbuf(log_file, nullptr, _IOLBF, 0);
    rte_openlog_stream(log_file);
  }
  MTP_LOG(INFO, "%s %s node %s (id %u), config %s\n", hooks.name, MTP_VERSION, cfg.node.name.c_str(), cfg.node.id,
          cfg.source.c_str());

  int status = exit_ok;
  // Everything below is undone in reverse order at `shutdown`.
  rt.pool = rte_pktmbuf_pool_create("mtp_pkts", cfg.memory.mbufs, cfg.memory.mbuf_cache, 0,
                                    static_cast<uint16_t>(cfg.memory.mbuf_data_room), static_cast<int>(rte_socket_id()));
  if (rt.pool == nullptr) {
    std::fprintf(stderr, "%s: cannot create the packet pool of %u mbufs x %u B: %s (raise memory.size_mb or lower memory.mbufs)\n",
                 hooks.name, cfg.memory.mbufs, cfg.memory.mbuf_data_room, rte_strerror(rte_errno));
    status = exit_runtime;
  }
  if (status == exit_ok) {
    // Headers of fan-out copies (at most 62 B) and indirect mbufs, which
    // carry no data of their own.
    rt.header_pool = rte_pktmbuf_pool_create("mtp_headers", cfg.memory.mbufs, cfg.memory.mbuf_cache, 0,
                                             RTE_PKTMBUF_HEADROOM + 64, static_cast<int>(rte_socket_id()));
    if (rt.header_pool == nullptr) {
      std::fprintf(stderr, "%s: cannot create the header pool of %u mbufs: %s (raise memory.size_mb)\n", hooks.name,
                   cfg.memory.mbufs, rte_strerror(rte_errno));
      status = exit_runtime;
    }
  }
  for (std::size_t i = 0; status == exit_ok && i < cfg.ports.size(); ++i) {
    auto p = port_start(cfg.ports[i], cfg.node, static_cast<unsigned>(cfg.lcores.workers.size()), rt.pool);
    if (!p) {
      fail(hooks.name, p.err());
      status = exit_runtime;
      break;
    }
    rt.ports.push_back(std::move(*p));
    rt.ports.back().link_up = port_log_link(rt.ports.back());
  }

  rt.peer_macs = std::vector<std::atomic<uint64_t>>(cfg.peers.size());
  for (std::size_t i = 0; i < cfg.peers.size(); ++i)
    if (cfg.peers[i].mac) rt.peer_macs[i].store(runtime::pack_mac(*cfg.peers[i].mac));

  std::vector<worker_context> workers(cfg.lcores.workers.size());
  if (status == exit_ok) {
    for (std::size_t i = 0; i < workers.size(); ++i) {
      workers[i].lcore = cfg.lcores.workers[i];
      workers[i].queue = static_cast<uint16_t>(i);
      workers[i].rt = &rt;
      rt.workers.push_back(&workers[i]);
    }
    // Each worker takes the applications the control lcore hands it here.
    for (std::size_t i = 0; i < workers.size(); ++i) {
      const std::string name = "mtp_apps_" + std::to_string(i);
      workers[i].app_inbox = rte_ring_create(name.c_str(), app_inbox_size, static_cast<int>(rte_socket_id()),
                                             RING_F_SP_ENQ | RING_F_SC_DEQ);
      if (workers[i].app_inbox == nullptr) {
        std::fprintf(stderr, "%s: cannot create the application ring of worker %zu: %s\n", hooks.name, i,
                     rte_strerror(rte_errno));
        status = exit_runtime;
      }
    }
    // With several workers, each has an inbox for the frames of the sessions
    // it owns that other workers received.
    for (std::size_t i = 0; workers.size() > 1 && i < workers.size(); ++i) {
      const std::string name = "mtp_handoff_" + std::to_string(i);
      workers[i].handoff = rte_ring_create(name.c_str(), handoff_ring_size, static_cast<int>(rte_socket_id()), RING_F_SC_DEQ);
      // Each redirect ends at most once per tag, and a worker holds at most
      // (workers - 1) x sessions of them: this ring never fills but under
      // a flood of stray frames (each may tell an end; counted when lost).
      const std::string ends = "mtp_redirect_ends_" + std::to_string(i);
      const unsigned ends_size =
          std::max<unsigned>(cfg.limits.sessions * static_cast<unsigned>(workers.size() - 1), 64);
      workers[i].redirect_ends = rte_ring_create_elem(ends.c_str(), sizeof(redirect_end), ends_size,
                                                      static_cast<int>(rte_socket_id()), RING_F_SC_DEQ | RING_F_EXACT_SZ);
      if (workers[i].handoff == nullptr || workers[i].redirect_ends == nullptr) {
        std::fprintf(stderr, "%s: cannot create the hand-off rings of worker %zu: %s\n", hooks.name, i,
                     rte_strerror(rte_errno));
        status = exit_runtime;
      }
    }
  }
  if (status == exit_ok) {
    ctl::telemetry_attach(rt);
    for (auto &w : workers) rte_eal_remote_launch(worker_main, &w, w.lcore);
    MTP_LOG(INFO, "running: %zu port(s), %zu worker(s), control on lcore %u%s\n", rt.ports.size(), workers.size(),
            cfg.lcores.control, cfg.test.generator.enabled ? ", test generator on" : "");
    ctl::control_run(rt, app, stop_requested, hooks.tick);
    rte_eal_mp_wait_lcore();
    ctl::telemetry_detach();
    MTP_LOG(INFO, "stopping\n");
    if (hooks.at_exit) hooks.at_exit(rt);
    std::printf("%s: final counters of node %s\n", hooks.name, cfg.node.name.c_str());
    ctl::print_counters(rt, stdout);
    std::printf("MTPD_FINAL %s\n", ctl::counters_json(rt).c_str());
    std::fflush(stdout);
  }

  for (auto it = rt.ports.rbegin(); it != rt.ports.rend(); ++it) port_stop(*it);
  rt.ports.clear();
  // Workers are stopped: the regions they served may go.
  app.close();
  for (auto &w : workers) {
    rte_ring_free(w.app_inbox);  // what it holds belongs to app
    rte_ring_free(w.redirect_ends);
    // Frames still in an inbox were never processed; free them with it.
    if (w.handoff == nullptr) continue;
    void *m = nullptr;
    while (rte_ring_dequeue(w.handoff, &m) == 0) rte_pktmbuf_free(static_cast<rte_mbuf *>(m));
    rte_ring_free(w.handoff);
  }
  rte_mempool_free(rt.header_pool);
  rte_mempool_free(rt.pool);
  rt.pool = nullptr;
  eal_stop(cfg);
  if (log_file != nullptr) std::fclose(log_file);
  return status;
}

}  // namespace mtp::dp
