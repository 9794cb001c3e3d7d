// SPDX-License-Identifier: BSD-3-Clause
// mtp-perf: measures MTP on the real dataplane, testpmd-style. It runs the
// daemon (EAL, ports, poll-mode workers, the engine) with a built-in
// source or sink instead of an application, prints statistics every second
// and one machine-readable summary line at the end.
//
//   mtp-perf --config FILE --mode tx|fanout --members 2[,3,...] [--size B] [--streams N]
//            [--reliability reliable|partial|unreliable] [--ordering fifo|none]
//            [--window BYTES] [--bytes N] [--seconds S] [-- EAL-ARGS]
//   mtp-perf --config FILE --mode rx|echo [--window BYTES] [--seconds S]
//   mtp-perf --config FILE --mode pingpong --members 2 [--size B] [--seconds S]
//   mtp-perf --config FILE --mode udp-ping --members 2 [--size B] [--seconds S]
//
// udp-ping is the raw half of the round-trip pair: plain UDP frames, one
// in flight, against a reflector such as dpdk-testpmd --forward-mode=macswap;
// no MTP at all, the same ports, loop and clock as pingpong.
// The config file gives node, ports and peers (see config/examples);
// mtp-perf sets its test section from the options.
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "config.h"
#include "daemon.h"
#include "runtime.h"

namespace {

const char usage[] =
    "usage: mtp-perf --config FILE --mode tx|fanout|rx|echo|pingpong|udp-ping [options] [-- EAL-ARGS]\n"
    "  --members ID[,ID...]   members to send to (tx, fanout, pingpong, udp-ping), each in the config's peers\n"
    "  --size BYTES           message size (default 1024)\n"
    "  --streams N            streams, messages round-robin over them (default 1)\n"
    "  --reliability R        reliable (default), partial, unreliable\n"
    "  --retransmissions N    partial: at most N per member (default 2)\n"
    "  --ordering O           fifo (default) or none\n"
    "  --window BYTES         stream window, the same on both ends (default 4194304)\n"
    "  --bytes N              stop after N bytes are stable (tx; default 1 GiB)\n"
    "  --seconds S            stop after S seconds (default 10; 0 = until --bytes)\n"
    "  --idle busy|adaptive   the workers' idle policy (default: the config's)\n"
    "  --verify on|off        rx: check every byte against the pattern (default on)\n"
    "Prints statistics every second and, at the end, one line:\n"
    "  MTP_PERF_SUMMARY {\"mode\":...,\"msgs_per_s\":...,\"gbit_per_s\":...,...}\n";

struct options {
  std::string config, mode, idle;
  std::vector<uint32_t> members;
  uint32_t size = 1024, streams = 1, retx = 2, window = 4u << 20;
  uint32_t reliability = 0;
  bool unordered = false;
  bool verify = true;
  uint64_t bytes = 1ull << 30;
  double seconds = 10;
  std::vector<std::string> eal;
};

bool parse(int argc, char **argv, options &o) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--") {
      o.eal.assign(argv + i + 1, argv + argc);
      break;
    }
    if (a == "--help") {
      std::fputs(usage, stdout);
      std::exit(0);
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "mtp-perf: %s needs a value\n", a.c_str());
      return false;
    }
    const std::string v = argv[++i];
    try {
      if (a == "--config") o.config = v;
      else if (a == "--mode") o.mode = v;
      else if (a == "--size") o.size = static_cast<uint32_t>(std::stoul(v));
      else if (a == "--streams") o.streams = static_cast<uint32_t>(std::stoul(v));
      else if (a == "--retransmissions") o.retx = static_cast<uint32_t>(std::stoul(v));
      else if (a == "--window") o.window = static_cast<uint32_t>(std::stoul(v));
      else if (a == "--bytes") o.bytes = std::stoull(v);
      else if (a == "--seconds") o.seconds = std::stod(v);
      else if (a == "--verify") {
        if (v != "on" && v != "off") throw std::invalid_argument(v);
        o.verify = v == "on";
      } else if (a == "--idle") {
        if (v != "busy" && v != "adaptive") throw std::invalid_argument(v);
        o.idle = v;
      }
      else if (a == "--reliability") {
        if (v == "reliable") o.reliability = 0;
        else if (v == "partial") o.reliability = 1;
        else if (v == "unreliable") o.reliability = 2;
        else throw std::invalid_argument(v);
      } else if (a == "--ordering") {
        if (v != "fifo" && v != "none") throw std::invalid_argument(v);
        o.unordered = v == "none";
      } else if (a == "--members") {
        std::size_t pos = 0;
        while (pos < v.size()) {
          const std::size_t comma = v.find(',', pos);
          o.members.push_back(static_cast<uint32_t>(std::stoul(v.substr(pos, comma - pos))));
          pos = comma == std::string::npos ? v.size() : comma + 1;
        }
      } else {
        std::fprintf(stderr, "mtp-perf: unknown option '%s'\n%s", a.c_str(), usage);
        return false;
      }
    } catch (const std::exception &) {
      std::fprintf(stderr, "mtp-perf: bad value '%s' for %s\n", v.c_str(), a.c_str());
      return false;
    }
  }
  const bool sends = o.mode == "tx" || o.mode == "fanout" || o.mode == "pingpong" || o.mode == "udp-ping";
  if (o.config.empty() || (!sends && o.mode != "rx" && o.mode != "echo")) {
    std::fprintf(stderr, "mtp-perf: --config and --mode tx|fanout|rx|echo|pingpong|udp-ping are required\n%s", usage);
    return false;
  }
  if (sends && o.members.empty()) {
    std::fprintf(stderr, "mtp-perf: --mode %s needs --members\n", o.mode.c_str());
    return false;
  }
  if (o.mode == "udp-ping" && (o.members.size() != 1 || o.size < 20 || o.size > 1472)) {
    std::fprintf(stderr, "mtp-perf: --mode udp-ping needs one member and --size 20..1472\n");
    return false;
  }
  if (o.size < 16 || o.size > 65536 || o.streams < 1 || o.streams > 16) {
    std::fprintf(stderr, "mtp-perf: --size must be 16..65536 and --streams 1..16\n");
    return false;
  }
  return true;
}

uint64_t sum(const mtp::dp::runtime &rt, mtp::dp::counter mtp::dp::worker_counters::*c) {
  uint64_t n = 0;
  for (const auto *w : rt.workers) n += (w->counters.*c).get();
  return n;
}

/// Percentile of the summed RTT histograms, in microseconds (the middle of
/// its bucket: within 3.2%).
double rtt_percentile_us(const mtp::dp::runtime &rt, double p) {
  using h = mtp::dp::rtt_histogram;
  uint64_t total = 0;
  std::vector<uint64_t> b(h::buckets, 0);
  for (const auto *w : rt.workers)
    for (std::size_t i = 0; i < h::buckets; ++i) {
      b[i] += w->counters.rtt.count[i].get();
      total += w->counters.rtt.count[i].get();
    }
  if (total == 0) return 0;
  const auto rank = static_cast<uint64_t>(p * static_cast<double>(total - 1));
  uint64_t seen = 0;
  for (std::size_t i = 0; i < h::buckets; ++i) {
    seen += b[i];
    if (seen > rank) return static_cast<double>(h::bucket_low(i) + h::bucket_high(i)) / 2000.0;
  }
  return 0;
}

struct snapshot {
  uint64_t stable_msgs = 0, stable_bytes = 0, sink_msgs = 0, sink_bytes = 0, retx = 0, rtts = 0;
};

snapshot take(const mtp::dp::runtime &rt) {
  using W = mtp::dp::worker_counters;
  return {sum(rt, &W::source_messages_stable), sum(rt, &W::source_bytes_stable), sum(rt, &W::sink_messages),
          sum(rt, &W::sink_bytes), sum(rt, &W::mtp_retransmitted), sum(rt, &W::pingpong_rtts)};
}

}  // namespace

int main(int argc, char **argv) {
  options o;
  if (!parse(argc, argv, o)) return mtp::dp::exit_usage;
  auto loaded = mtp::cfg::load_config_file(o.config);
  if (!loaded) {
    for (const auto &p : loaded.err()) std::fprintf(stderr, "%s\n", p.to_string().c_str());
    return mtp::dp::exit_usage;
  }
  mtp::cfg::config cfg = std::move(*loaded);
  if (!o.idle.empty()) cfg.idle.policy = o.idle == "busy" ? mtp::cfg::idle_policy::busy : mtp::cfg::idle_policy::adaptive;
  auto &t = cfg.test;
  const bool sends = o.mode != "rx" && o.mode != "echo";
  const bool round_trips = o.mode == "pingpong" || o.mode == "udp-ping";
  for (uint32_t id : o.members) {
    bool known = false;
    for (const auto &p : cfg.peers) known |= p.id == id;
    if (!known) {
      std::fprintf(stderr, "mtp-perf: member %u is not in the config's peers\n", id);
      return mtp::dp::exit_usage;
    }
  }
  if (o.mode == "udp-ping") {
    auto &g = t.generator;
    for (const auto &p : cfg.peers)
      if (p.id == o.members[0]) {
        g.dst_ip = p.ip;
        if (p.mac) g.dst_mac = *p.mac;  // else broadcast: a reflector takes any
      }
    g.enabled = true;
    g.pingpong = true;
    g.payload_bytes = static_cast<uint16_t>(o.size);
    g.dst_port = cfg.node.udp_port;
  } else if (sends) {
    t.source.enabled = true;
    t.source.members = o.members;
    t.source.message_bytes = o.size;
    t.source.streams = o.streams;
    t.source.reliability = o.reliability;
    t.source.max_retransmissions = o.retx;
    t.source.unordered = o.unordered;
    t.source.window_bytes = o.window;
    t.source.total_bytes = o.seconds > 0 && o.mode == "pingpong" ? (1ull << 50) : o.bytes;
    t.source.pingpong = o.mode == "pingpong";
  } else {
    t.sink.enabled = true;
    t.sink.echo = o.mode == "echo";
    t.sink.verify = o.verify;
    t.sink.window_bytes = o.window;
  }
  if (auto host = mtp::cfg::check_host(cfg); !host.empty()) {
    for (const auto &p : host) std::fprintf(stderr, "%s\n", p.to_string().c_str());
    return mtp::dp::exit_usage;
  }

  std::printf("mtp-perf: mode %s, %u B messages, %u stream(s), %s, %s, window %u B%s\n", o.mode.c_str(), o.size,
              o.streams, o.reliability == 0 ? "reliable" : o.reliability == 1 ? "partial" : "unreliable",
              o.unordered ? "unordered" : "fifo", o.window, sends ? "" : " (receiving)");
  std::fflush(stdout);

  snapshot last{}, first{};
  uint64_t last_ms = 0, start_ms = 0, end_ms = 0;
  bool started = false;
  mtp::dp::run_hooks hooks;
  hooks.name = "mtp-perf";
  hooks.tick = [&](const mtp::dp::runtime &rt, uint64_t ms) {
    if (!started) {
      // Counters start at zero with the daemon; the workers may already
      // have moved data by the first tick, so the totals count from zero
      // (the rate's clock starts here, a tick after the workers).
      started = true;
      start_ms = last_ms = ms;
      first = snapshot{};
      last = take(rt);
    }
    const bool complete = sends && !round_trips && sum(rt, &mtp::dp::worker_counters::source_complete_us) > 0;
    const bool timeout = o.seconds > 0 && static_cast<double>(ms - start_ms) >= o.seconds * 1000;
    if (ms - last_ms >= 1000 || complete || timeout) {
      const snapshot now = take(rt);
      const double dt = static_cast<double>(ms - last_ms) / 1000.0;
      if (dt > 0) {
        std::printf("\n  ######################## MTP statistics, second %.0f ########################\n",
                    static_cast<double>(ms - start_ms) / 1000.0);
        if (sends && !round_trips)
          std::printf("  TX stable: %-12.0f msg/s  %8.3f Gbit/s   retransmitted: %" PRIu64 "\n",
                      static_cast<double>(now.stable_msgs - last.stable_msgs) / dt,
                      static_cast<double>(now.stable_bytes - last.stable_bytes) * 8 / dt / 1e9, now.retx - last.retx);
        if (!sends)
          std::printf("  RX:        %-12.0f msg/s  %8.3f Gbit/s   retransmitted: %" PRIu64 "\n",
                      static_cast<double>(now.sink_msgs - last.sink_msgs) / dt,
                      static_cast<double>(now.sink_bytes - last.sink_bytes) * 8 / dt / 1e9, now.retx - last.retx);
        if (round_trips)
          std::printf("  Round trips: %-10.0f /s   RTT p50 %.1f us  p99 %.1f us  p99.9 %.1f us (cumulative)\n",
                      static_cast<double>(now.rtts - last.rtts) / dt, rtt_percentile_us(rt, 0.5),
                      rtt_percentile_us(rt, 0.99), rtt_percentile_us(rt, 0.999));
        std::printf("  ############################################################################\n");
        std::fflush(stdout);
      }
      last = now;
      last_ms = ms;
    }
    if (complete || timeout) end_ms = ms;
    return complete || timeout;
  };
  hooks.at_exit = [&](const mtp::dp::runtime &rt) {
    const snapshot now = take(rt);
    if (end_ms == 0) end_ms = last_ms;
    const double secs = std::max(1e-9, static_cast<double>(end_ms - start_ms) / 1000.0);
    const uint64_t msgs = round_trips ? now.rtts - first.rtts
                          : sends     ? now.stable_msgs - first.stable_msgs
                                      : now.sink_msgs - first.sink_msgs;
    const uint64_t bytes = sends ? now.stable_bytes - first.stable_bytes : now.sink_bytes - first.sink_bytes;
    std::printf("MTP_PERF_SUMMARY {\"mode\":\"%s\",\"size\":%u,\"streams\":%u,\"members\":%zu,\"seconds\":%.3f,"
                "\"msgs\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"msgs_per_s\":%.0f,\"gbit_per_s\":%.4f,"
                "\"retransmitted\":%" PRIu64 ",\"round_trips\":%" PRIu64
                ",\"rtt_p50_us\":%.2f,\"rtt_p99_us\":%.2f,\"rtt_p999_us\":%.2f,"
                "\"verify_errors\":%" PRIu64 "}\n",
                o.mode.c_str(), o.size, o.streams, o.members.size(), secs, msgs, bytes,
                static_cast<double>(msgs) / secs, static_cast<double>(bytes) * 8 / secs / 1e9, now.retx - first.retx,
                now.rtts - first.rtts, rtt_percentile_us(rt, 0.5), rtt_percentile_us(rt, 0.99),
                rtt_percentile_us(rt, 0.999), sum(rt, &mtp::dp::worker_counters::sink_verify_errors));
    std::fflush(stdout);
  };
  return mtp::dp::run_daemon(std::move(cfg), o.eal, hooks);
}
