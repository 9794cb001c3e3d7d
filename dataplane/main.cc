// SPDX-License-Identifier: BSD-3-Clause
// mtpd's entry: command line, config, EAL, lcores; nothing else.
//
// Exit codes: 0 clean stop (SIGINT/SIGTERM) or --check-config passed;
// 1 the host could not run the config (EAL, hugepages, ports, sockets);
// 2 bad command line or bad config.
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_version.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "app_listener.h"
#include "config.h"
#include "control.h"
#include "eal.h"
#include "log.h"
#include "mtp_version.h"
#include "port.h"
#include "runtime.h"
#include "stats.h"
#include "telemetry.h"
#include "worker.h"

namespace {

constexpr int exit_ok = 0;
constexpr int exit_runtime = 1;
constexpr int exit_usage = 2;

std::atomic<bool> stop_requested{false};
static_assert(std::atomic<bool>::is_always_lock_free, "signal handler needs a lock-free flag");

void on_signal(int) { stop_requested.store(true); }

const char usage_text[] =
    "usage: mtpd [--config FILE] [-- EAL-ARGS...]\n"
    "       mtpd --check-config FILE\n"
    "       mtpd --print-default-config | --version | --help\n"
    "\n"
    "  --config FILE          run with FILE (default: the embedded default, see\n"
    "                         --print-default-config: one net_tap port, no hugepages)\n"
    "  --check-config FILE    validate FILE against this host; exit 0 if good, 2 if not\n"
    "  --print-default-config print the embedded default config\n"
    "  --version              print the version\n"
    "  --help                 print this help\n"
    "  -- EAL-ARGS            passed to DPDK's EAL after those the config sets\n"
    "\n"
    "Stop with SIGINT or SIGTERM. Exit codes: 0 clean stop, 1 runtime failure,\n"
    "2 bad command line or config. Docs: docs/operations.md.\n";

struct options {
  std::string config_path;
  bool check_only = false;
  std::vector<std::string> eal_extra;
};

/// @return exit code to leave with, or -1 to go on.
int parse_options(int argc, char **argv, options &o) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--") {
      o.eal_extra.assign(argv + i + 1, argv + argc);
      break;
    }
    if (a == "--help" || a == "-h") {
      std::fputs(usage_text, stdout);
      return exit_ok;
    }
    if (a == "--version") {
      std::printf("mtpd %s (%s)\n", MTP_VERSION, rte_version());
      return exit_ok;
    }
    if (a == "--print-default-config") {
      std::fputs(mtp::cfg::default_config_text().c_str(), stdout);
      return exit_ok;
    }
    if (a == "--config" || a == "--check-config") {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "mtpd: %s needs a file name\n%s", a.c_str(), usage_text);
        return exit_usage;
      }
      o.config_path = argv[++i];
      o.check_only = a == "--check-config";
      continue;
    }
    std::fprintf(stderr, "mtpd: unknown option '%s' (EAL options go after '--')\n%s", a.c_str(), usage_text);
    return exit_usage;
  }
  return -1;
}

bool report(const mtp::cfg::problems &ps) {
  for (const auto &p : ps) std::fprintf(stderr, "%s\n", p.to_string().c_str());
  if (!ps.empty()) std::fprintf(stderr, "mtpd: %zu problem(s) in the config\n", ps.size());
  return ps.empty();
}

void fail(const mtp::error &e) { std::fprintf(stderr, "mtpd: %s\n", e.message.c_str()); }

}  // namespace

int main(int argc, char **argv) {
  options opt;
  if (int rc = parse_options(argc, argv, opt); rc >= 0) return rc;

  auto loaded = opt.config_path.empty() ? mtp::cfg::load_default_config() : mtp::cfg::load_config_file(opt.config_path);
  if (!loaded) return report(loaded.err()), exit_usage;
  if (!report(mtp::cfg::check_host(*loaded))) return exit_usage;
  if (opt.check_only) {
    std::printf("%s: ok\n", loaded->source.c_str());
    return exit_ok;
  }

  mtp::dp::runtime rt;
  rt.config = std::move(*loaded);
  const auto &cfg = rt.config;
  if (auto r = mtp::dp::check_hugepages(cfg); !r) return fail(r.err()), exit_runtime;

  mtp::ctl::app_listener app;
  if (auto r = app.open(cfg); !r) return fail(r.err()), exit_runtime;

  struct sigaction sa{};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  if (auto r = mtp::dp::eal_start(mtp::dp::eal_arguments(cfg, opt.eal_extra)); !r) {
    app.close();
    return fail(r.err()), exit_runtime;
  }
  mtp::dp::log_init(cfg.log.level);
  FILE *log_file = nullptr;
  if (!cfg.log.file.empty()) {
    log_file = std::fopen(cfg.log.file.c_str(), "a");
    if (log_file == nullptr) {
      std::fprintf(stderr, "mtpd: cannot open log.file '%s': %s\n", cfg.log.file.c_str(), std::strerror(errno));
      app.close();
      mtp::dp::eal_stop(cfg);
      return exit_runtime;
    }
    setvbuf(log_file, nullptr, _IOLBF, 0);
    rte_openlog_stream(log_file);
  }
  MTP_LOG(INFO, "mtpd %s node %s (id %u), config %s\n", MTP_VERSION, cfg.node.name.c_str(), cfg.node.id,
          cfg.source.c_str());

  int status = exit_ok;
  // Everything below is undone in reverse order at `shutdown`.
  rt.pool = rte_pktmbuf_pool_create("mtp_pkts", cfg.memory.mbufs, cfg.memory.mbuf_cache, 0,
                                    static_cast<uint16_t>(cfg.memory.mbuf_data_room), static_cast<int>(rte_socket_id()));
  if (rt.pool == nullptr) {
    std::fprintf(stderr, "mtpd: cannot create the packet pool of %u mbufs x %u B: %s (raise memory.size_mb or lower memory.mbufs)\n",
                 cfg.memory.mbufs, cfg.memory.mbuf_data_room, rte_strerror(rte_errno));
    status = exit_runtime;
  }
  for (std::size_t i = 0; status == exit_ok && i < cfg.ports.size(); ++i) {
    auto p = mtp::dp::port_start(cfg.ports[i], static_cast<unsigned>(cfg.lcores.workers.size()), rt.pool);
    if (!p) {
      fail(p.err());
      status = exit_runtime;
      break;
    }
    rt.ports.push_back(std::move(*p));
    rt.ports.back().link_up = mtp::dp::port_log_link(rt.ports.back());
  }

  std::vector<mtp::dp::worker_context> workers(cfg.lcores.workers.size());
  if (status == exit_ok) {
    for (std::size_t i = 0; i < workers.size(); ++i) {
      workers[i].lcore = cfg.lcores.workers[i];
      workers[i].queue = static_cast<uint16_t>(i);
      workers[i].rt = &rt;
      rt.workers.push_back(&workers[i]);
    }
    mtp::ctl::telemetry_attach(rt);
    for (auto &w : workers) rte_eal_remote_launch(mtp::dp::worker_main, &w, w.lcore);
    MTP_LOG(INFO, "running: %zu port(s), %zu worker(s), control on lcore %u%s\n", rt.ports.size(), workers.size(),
            cfg.lcores.control, cfg.test.generator.enabled ? ", test generator on" : "");
    mtp::ctl::control_run(rt, app, stop_requested);
    rte_eal_mp_wait_lcore();
    mtp::ctl::telemetry_detach();
    MTP_LOG(INFO, "stopping\n");
    std::printf("mtpd: final counters of node %s\n", cfg.node.name.c_str());
    mtp::ctl::print_counters(rt, stdout);
    std::printf("MTPD_FINAL %s\n", mtp::ctl::counters_json(rt).c_str());
    std::fflush(stdout);
  }

  for (auto it = rt.ports.rbegin(); it != rt.ports.rend(); ++it) mtp::dp::port_stop(*it);
  rt.ports.clear();
  rte_mempool_free(rt.pool);
  rt.pool = nullptr;
  app.close();
  mtp::dp::eal_stop(cfg);
  if (log_file != nullptr) std::fclose(log_file);
  return status;
}
