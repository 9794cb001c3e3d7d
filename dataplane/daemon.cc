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

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
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

bool load_identity(const cfg::config &c, crypto::static_keypair &out, std::string &error, bool *generated) {
  if (generated != nullptr) *generated = false;
  if (c.security.mode != cfg::security_mode::required) return true;
  const std::string &path = c.security.key_file;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 && errno == ENOENT) {
    if (!c.security.generate_key) {
      error = "security.key_file " + path + " does not exist: create it with `mtpd keygen " + path +
              "` (or set security.generate_key: true)";
      return false;
    }
    // First start: a directory only we may enter, then a new key pair.
    const std::string dir = path.substr(0, path.rfind('/'));
    if (!dir.empty() && ::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
      error = "cannot create the directory " + dir + " for security.key_file: " + std::strerror(errno);
      return false;
    }
    if (!crypto::generate_keypair(out)) {
      error = "cannot generate a key pair (the random generator failed)";
      return false;
    }
    if (!crypto::write_private_key_file(path, out, error)) return false;
    if (generated != nullptr) *generated = true;
    return true;
  }
  return crypto::load_private_key_file(path, out, error);
}

bool load_peer_keys(cfg::config &c, std::string &error) {
  if (c.security.mode != cfg::security_mode::required) return true;
  for (auto &p : c.peers) {
    if (p.public_key_file.empty()) continue;
    std::FILE *f = std::fopen(p.public_key_file.c_str(), "r");
    if (f == nullptr) {
      error = "peer " + std::to_string(p.id) + ": cannot read public_key_file " + p.public_key_file + ": " +
              std::strerror(errno);
      return false;
    }
    char line[128] = {};
    const std::size_t n = std::fread(line, 1, sizeof line - 1, f);
    std::fclose(f);
    std::string_view text(line, n);
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) text.remove_suffix(1);
    cfg::key_bytes key{};
    std::string why;
    if (!crypto::key_from_base64(text, key.data(), why)) {
      error = "peer " + std::to_string(p.id) + ": public_key_file " + p.public_key_file +
              " does not hold one base64 key (as `mtpd keygen` prints): " + why;
      return false;
    }
    p.public_key = key;
  }
  return true;
}

int run_daemon(cfg::config config, const std::vector<std::string> &eal_extra, const run_hooks &hooks) {
  runtime rt;
  rt.config = std::move(config);
  const auto &cfg = rt.config;
  {
    std::string why;
    bool generated = false;
    if (!load_peer_keys(rt.config, why) || !load_identity(cfg, rt.identity, why, &generated)) {
      std::fprintf(stderr, "%s: %s\n", hooks.name, why.c_str());
      return exit_usage;
    }
    if (generated)
      std::fprintf(stderr, "%s: generated a new key pair in %s; public key %s\n", hooks.name,
                   cfg.security.key_file.c_str(), crypto::key_to_base64(rt.identity.pub).c_str());
  }
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
  if (rt.secured())
    MTP_LOG(INFO, "security required: key file %s, public key %s, %zu peer(s) allowed\n",
            cfg.security.key_file.c_str(), crypto::key_to_base64(rt.identity.pub).c_str(), cfg.peers.size());
  else
    MTP_LOG(INFO, "security: plaintext (security.mode says so): packets are checked by CRC32C, not authenticated\n");

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
