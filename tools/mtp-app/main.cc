// SPDX-License-Identifier: BSD-3-Clause
// mtp-app: an application of mtpd through libmtp, for tests and
// benchmarks: the application-mode twin of mtp-perf (same statistics,
// same summary fields) and the misbehaving applications the robustness
// tests need.
//
//   mtp-app --socket S tx     --members 2[,3..] | --group NAME [--threshold T] [--size B] [--datagrams]
//                             [--messages N] [--seconds S] [--burst K] [--hold]
//   mtp-app --socket S rx     [--messages N] [--seconds S] [--slow-us U] [--verify on|off]
//   mtp-app --socket S echo   [--seconds S]
//   mtp-app --socket S ping   --members 2 [--size B] [--count N] [--seconds S]
//   mtp-app --socket S hostile --attack ring|buffer|handle|oversize|release|batch
//
// tx sends messages carrying their index and a pattern; rx checks every
// byte, the order, and counts; --hold keeps tx's connection open after the
// last Sent (until killed: the SIGKILL test, or until the connection fails,
// mtpd gone included: then exit 1). hostile attaches without
// libmtp and writes garbage into its own region, then checks mtpd answers
// with command errors (or stops serving a broken channel) and stays up.
// Every mode ends with one line:
//   MTP_APP_SUMMARY {"mode":...,"msgs":...,"msgs_per_s":...,"gbit_per_s":...,...}
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <array>
#include <cstring>
#include <string>
#include <vector>

#include "keyfile.h"
#include "mtp/mtp.h"
#include "mtp/shm_attach.h"
#include "mtp/shm_commands.h"
#include "mtp/shm_ring.h"

namespace {

const char usage[] =
    "usage: mtp-app --socket PATH tx|rx|echo|ping|hostile [options]\n"
    "  --members ID[,ID...]  tx, ping: members (each one of mtpd's peers)\n"
    "  --group NAME          tx: a group of mtpd's config instead of --members\n"
    "  --threshold T         tx: t of n (default all)\n"
    "  --size BYTES          message size (default 64; at least 16)\n"
    "  --messages N          tx: messages to send (default 1000000); rx: exit after N\n"
    "  --seconds S           stop after S seconds (default 10)\n"
    "  --burst K             tx: messages per mtp_send_burst (default 32)\n"
    "  --datagrams           tx: send the messages as unreliable datagrams (size <= one packet's)\n"
    "  --hold                tx: keep the connection open after everything is Sent (exit 1 if it fails)\n"
    "  --slow-us U           rx: sleep U microseconds per message (a slow receiver)\n"
    "  --verify on|off       rx: check every byte (default on)\n"
    "  --count N             ping: round trips (default 10000)\n"
    "  --attack KIND         hostile: ring, buffer, handle, oversize, release, batch\n"
    "  --security PREF       tx, ping, rx, echo: prohibit|avoid|none|prefer|require (default none)\n"
    "  --member-keys K[,K..] tx, ping: the public key (base64) each member must prove, in --members order\n"
    "  --idempotent          tx: messages are idempotent and sent at once, before Ready (early data)\n";

struct options {
  std::string socket, mode, group, attack;
  std::vector<uint32_t> members;
  uint32_t threshold = 0, size = 64, burst = 32;
  uint64_t messages = 1000000, count = 10000, slow_us = 0;
  double seconds = 10;
  bool hold = false, verify = true, datagrams = false;
  mtp_preference security = MTP_NO_PREFERENCE;
  bool idempotent = false;
  std::vector<std::array<uint8_t, 32>> member_keys;
};

mtp_preference parse_preference(const std::string &s) {
  if (s == "prohibit") return MTP_PROHIBIT;
  if (s == "avoid") return MTP_AVOID;
  if (s == "none") return MTP_NO_PREFERENCE;
  if (s == "prefer") return MTP_PREFER;
  if (s == "require") return MTP_REQUIRE;
  std::fprintf(stderr, "mtp-app: --security takes prohibit|avoid|none|prefer|require, not '%s'\n", s.c_str());
  std::exit(1);
}

std::vector<std::array<uint8_t, 32>> parse_keys(const std::string &s) {
  std::vector<std::array<uint8_t, 32>> v;
  std::size_t at = 0;
  while (at <= s.size()) {
    const std::size_t comma = std::min(s.find(',', at), s.size());
    std::array<uint8_t, 32> k{};
    std::string why;
    if (!mtp::crypto::key_from_base64(s.substr(at, comma - at), k.data(), why)) {
      std::fprintf(stderr, "mtp-app: --member-keys: %s\n", why.c_str());
      std::exit(1);
    }
    v.push_back(k);
    at = comma + 1;
  }
  return v;
}

uint64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

[[noreturn]] void fail(const std::string &what) {
  std::fprintf(stderr, "mtp-app: %s\n", what.c_str());
  std::exit(1);
}

// Message i: its index (8 bytes), then a pattern of i and the offset.
void fill(uint8_t *p, uint32_t size, uint64_t i) {
  std::memcpy(p, &i, 8);
  for (uint32_t k = 8; k < size; ++k) p[k] = static_cast<uint8_t>(i * 131 + k * 7);
}
uint64_t check(const uint8_t *p, uint32_t size, uint64_t *index) {
  uint64_t i = 0;
  std::memcpy(&i, p, 8);
  *index = i;
  uint64_t bad = 0;
  for (uint32_t k = 8; k < size; ++k) bad += p[k] != static_cast<uint8_t>(i * 131 + k * 7);
  return bad;
}

struct app {
  mtp_context *ctx = nullptr;
  mtp_channel *ch = nullptr;
  explicit app(const std::string &socket) {
    char err[256];
    if (const int st = mtp_attach(socket.c_str(), 1, &ctx, err, sizeof err); st != MTP_OK) fail(err);
    ch = mtp_channel_get(ctx, 0);
  }
  ~app() { mtp_detach(ctx); }
};

void summary(const options &o, double secs, uint64_t msgs, uint64_t bytes, uint64_t errors, uint64_t verify_errors,
             uint64_t order_errors, double p50 = 0, double p99 = 0, double p999 = 0) {
  std::printf("MTP_APP_SUMMARY {\"mode\":\"%s\",\"size\":%u,\"members\":%zu,\"seconds\":%.3f,\"msgs\":%" PRIu64
              ",\"bytes\":%" PRIu64 ",\"msgs_per_s\":%.0f,\"gbit_per_s\":%.4f,\"errors\":%" PRIu64
              ",\"verify_errors\":%" PRIu64 ",\"order_errors\":%" PRIu64
              ",\"rtt_p50_us\":%.2f,\"rtt_p99_us\":%.2f,\"rtt_p999_us\":%.2f}\n",
              o.mode.c_str(), o.size, o.members.size(), secs, msgs, bytes, static_cast<double>(msgs) / secs,
              static_cast<double>(bytes) * 8 / secs / 1e9, errors, verify_errors, order_errors, p50, p99, p999);
  std::fflush(stdout);
}

mtp_connection initiate(app &a, const options &o) {
  mtp_preconnection p;
  mtp_preconnection_init(&p);
  p.members = o.members.data();
  p.member_count = static_cast<uint32_t>(o.members.size());
  p.group = o.group.empty() ? nullptr : o.group.c_str();
  p.threshold = o.threshold;
  p.security = o.security;
  if (!o.member_keys.empty()) {
    if (o.member_keys.size() != o.members.size()) fail("--member-keys needs one key per member");
    p.member_keys = reinterpret_cast<const uint8_t(*)[32]>(o.member_keys.data());
  }
  mtp_connection c = 0;
  if (const int st = mtp_initiate(a.ch, &p, &c); st != MTP_OK)
    fail(std::string("initiate: ") + mtp_status_text(st));
  // Idempotent messages go at once (early data): Ready comes meanwhile.
  if (o.idempotent) return c;
  // Ready, or why not.
  const uint64_t deadline = now_ns() + 10'000'000'000ull;
  mtp_event ev[64];
  while (now_ns() < deadline) {
    const size_t n = mtp_poll(a.ch, ev, 64);
    for (size_t i = 0; i < n; ++i) {
      if (ev[i].type == MTP_EVENT_READY) return c;
      if (ev[i].type == MTP_EVENT_CONNECTION_ERROR || ev[i].type == MTP_EVENT_COMMAND_ERROR)
        fail(std::string("initiate: ") + mtp_reason_text(ev[i].reason));
    }
    if (n == 0) mtp_wait(a.ch, 10);
  }
  fail("initiate: not Ready within 10 s (are the members' daemons up?)");
}

// Datagrams: each sent once (mtp_send_datagram); the summary counts what
// was posted (nothing acknowledges a datagram), then the connection closes
// once mtpd has handed every buffer back (each datagram is in a packet).
// At most --burst are outstanding: a buffer comes back when its datagram
// left in a packet, so this paces the sender to what mtpd sends (mtpd
// refuses a datagram its connection has no queue room for: it would be
// lost).
int run_tx_datagrams(app &a, mtp_connection c, const options &o) {
  std::vector<uint8_t> msg(o.size);
  uint64_t sent = 0, refused = 0;
  mtp_event ev[256];
  mtp_channel_stats st;
  st.struct_size = sizeof st;
  const uint64_t t0 = now_ns();
  const uint64_t stop_at = t0 + static_cast<uint64_t>(o.seconds * 1e9);
  while (sent < o.messages && now_ns() < stop_at) {
    mtp_channel_stats_get(a.ch, &st);
    if (st.send_buffers_total - st.send_buffers_free >= o.burst) {
      const size_t n = mtp_poll(a.ch, ev, 256);
      for (size_t i = 0; i < n; ++i) {
        refused += ev[i].type == MTP_EVENT_COMMAND_ERROR;
        mtp_release(a.ch, &ev[i]);
      }
      if (n == 0) mtp_wait(a.ch, 1);
      continue;
    }
    fill(msg.data(), o.size, sent);
    const int st = mtp_send_datagram(a.ch, c, msg.data(), msg.size());
    if (st == MTP_OK) {
      ++sent;
      continue;
    }
    if (st != MTP_EAGAIN) fail(std::string("datagram: ") + mtp_status_text(st));
    const size_t n = mtp_poll(a.ch, ev, 256);
    for (size_t i = 0; i < n; ++i) {
      refused += ev[i].type == MTP_EVENT_COMMAND_ERROR;
      mtp_release(a.ch, &ev[i]);
    }
    if (n == 0) mtp_wait(a.ch, 1);
  }
  const double secs = static_cast<double>(now_ns() - t0) / 1e9;
  // Every buffer back: every datagram went into a packet.
  const uint64_t deadline = now_ns() + 5'000'000'000ull;
  for (;;) {
    const size_t n = mtp_poll(a.ch, ev, 256);
    for (size_t i = 0; i < n; ++i) {
      refused += ev[i].type == MTP_EVENT_COMMAND_ERROR;
      mtp_release(a.ch, &ev[i]);
    }
    mtp_channel_stats_get(a.ch, &st);
    if (st.send_buffers_free == st.send_buffers_total || now_ns() > deadline) break;
    if (n == 0) mtp_wait(a.ch, 1);
  }
  std::printf("BUFFERS %u of %u free\n", st.send_buffers_free, st.send_buffers_total);
  summary(o, secs, sent, sent * o.size, refused, 0, 0);
  mtp_close(a.ch, c);
  const uint64_t closing = now_ns() + 5'000'000'000ull;
  while (now_ns() < closing) {
    const size_t n = mtp_poll(a.ch, ev, 256);
    for (size_t i = 0; i < n; ++i)
      if (ev[i].type == MTP_EVENT_CLOSED || ev[i].type == MTP_EVENT_CONNECTION_ERROR) return 0;
    if (n == 0) mtp_wait(a.ch, 10);
  }
  return 0;
}

int run_tx(const options &o) {
  app a(o.socket);
  const mtp_connection c = initiate(a, o);
  std::printf("READY\n");
  std::fflush(stdout);
  if (o.datagrams) return run_tx_datagrams(a, c, o);
  std::vector<std::vector<uint8_t>> msgs(o.burst, std::vector<uint8_t>(o.size));
  std::vector<mtp_send_request> reqs(o.burst);
  uint64_t queued = 0, stable = 0, errors = 0;
  const uint64_t t0 = now_ns();
  const uint64_t stop_at = t0 + static_cast<uint64_t>(o.seconds * 1e9);
  mtp_event ev[256];
  uint64_t stable_at_stop = 0, stop_ns = 0;
  mtp_message_properties props;
  mtp_message_properties_init(&props);
  props.idempotent = o.idempotent ? 1 : 0;
  while (stable < o.messages) {
    const uint64_t now = now_ns();
    if (now >= stop_at) break;
    const uint64_t queued_before = queued;
    if (queued < o.messages) {
      const uint64_t k = std::min<uint64_t>(o.burst, o.messages - queued);
      for (uint64_t i = 0; i < k; ++i) {
        fill(msgs[i].data(), o.size, queued + i);
        reqs[i] = {c, 0, msgs[i].data(), o.size, queued + i};
      }
      int st = MTP_OK;
      queued += mtp_send_burst(a.ch, reqs.data(), k, &props, &st);
      if (st != MTP_OK && st != MTP_EAGAIN) fail(std::string("send: ") + mtp_status_text(st));
    }
    const size_t n = mtp_poll(a.ch, ev, 256);
    for (size_t i = 0; i < n; ++i) {
      switch (ev[i].type) {
        case MTP_EVENT_SENT:
          ++stable;
          break;
        case MTP_EVENT_SEND_ERROR:
        case MTP_EVENT_EXPIRED:
        case MTP_EVENT_COMMAND_ERROR:
          ++errors;
          break;
        case MTP_EVENT_CONNECTION_ERROR:
          fail(std::string("connection failed: ") + mtp_reason_text(ev[i].reason) + " (code " +
               std::to_string(ev[i].code) + ")");
        default:
          break;
      }
      mtp_release(a.ch, &ev[i]);
    }
    // Nothing moved: sleep until mtpd posts (it signals a sleeping
    // channel), so a daemon sharing this CPU gets it instead of a spin.
    if (n == 0 && queued == queued_before) mtp_wait(a.ch, 1);
  }
  stop_ns = now_ns();
  stable_at_stop = stable;
  const double secs = static_cast<double>(stop_ns - t0) / 1e9;
  summary(o, secs, stable_at_stop, stable_at_stop * o.size, errors, 0, 0);
  if (o.hold) {
    std::printf("HOLDING\n");
    std::fflush(stdout);
    // Until killed, or until there is nothing left to hold: once mtpd is
    // gone the connection fails (ConnectionError, daemon_gone) and
    // mtp_wait returns at once, so going on would spin.
    for (;;) {
      const size_t n = mtp_poll(a.ch, ev, 256);
      for (size_t i = 0; i < n; ++i) {
        if (ev[i].type == MTP_EVENT_CONNECTION_ERROR)
          fail(std::string("holding: connection failed: ") + mtp_reason_text(ev[i].reason) + " (code " +
               std::to_string(ev[i].code) + ")");
        mtp_release(a.ch, &ev[i]);
      }
      if (const int st = mtp_wait(a.ch, 100); st != MTP_OK && st != MTP_ETIMEDOUT)
        fail(std::string("holding: ") + mtp_status_text(st));
    }
  }
  mtp_close(a.ch, c);
  const uint64_t deadline = now_ns() + 5'000'000'000ull;
  while (now_ns() < deadline) {
    const size_t n = mtp_poll(a.ch, ev, 256);
    for (size_t i = 0; i < n; ++i)
      if (ev[i].type == MTP_EVENT_CLOSED || ev[i].type == MTP_EVENT_CONNECTION_ERROR) return errors == 0 ? 0 : 2;
    if (n == 0) mtp_wait(a.ch, 10);
  }
  return errors == 0 && stable == o.messages ? 0 : 2;
}

int run_rx(const options &o, bool echo) {
  app a(o.socket);
  mtp_connection l = 0;
  mtp_preconnection p;
  mtp_preconnection_init(&p);
  p.security = o.security;
  if (const int st = mtp_listen(a.ch, &p, &l); st != MTP_OK) fail(std::string("listen: ") + mtp_status_text(st));
  std::printf("LISTENING\n");
  std::fflush(stdout);
  uint64_t msgs = 0, bytes = 0, verify_errors = 0, order_errors = 0, next = 0, closed = 0, errors = 0, datagrams = 0;
  uint64_t t0 = 0;
  const uint64_t give_up = now_ns() + static_cast<uint64_t>(o.seconds * 1e9);
  mtp_event ev[256];
  std::vector<uint8_t> gather;
  bool done = false;
  while (!done && now_ns() < give_up) {
    const size_t n = mtp_poll(a.ch, ev, 256);
    for (size_t i = 0; i < n; ++i) {
      const mtp_event &e = ev[i];
      if (e.type == MTP_EVENT_RECEIVED || e.type == MTP_EVENT_RECEIVED_PARTIAL) {
        if (t0 == 0) t0 = now_ns();
        gather.insert(gather.end(), static_cast<const uint8_t *>(e.data), static_cast<const uint8_t *>(e.data) + e.length);
        bytes += e.length;
        if (e.type == MTP_EVENT_RECEIVED) {
          ++msgs;
          if (gather.size() >= 8) {
            uint64_t index = 0;
            const uint64_t bad = o.verify ? check(gather.data(), static_cast<uint32_t>(gather.size()), &index)
                                          : (std::memcpy(&index, gather.data(), 8), 0);
            verify_errors += bad;
            if (index != next) ++order_errors;
            next = index + 1;
          }
          if (echo) {
            int st;
            while ((st = mtp_send(a.ch, e.connection, e.stream, gather.data(), gather.size(), nullptr, 0)) == MTP_EAGAIN) {
              mtp_event more[64];
              const size_t k = mtp_poll(a.ch, more, 64);
              for (size_t j = 0; j < k; ++j) mtp_release(a.ch, &more[j]);
            }
          }
          gather.clear();
          if (o.slow_us) usleep(static_cast<useconds_t>(o.slow_us));
        }
      } else if (e.type == MTP_EVENT_DATAGRAM) {
        // Unordered and unreliable: counted and checked, never in order.
        if (t0 == 0) t0 = now_ns();
        ++msgs;
        ++datagrams;
        bytes += e.length;
        uint64_t index = 0;
        if (o.verify && e.length >= 8) verify_errors += check(static_cast<const uint8_t *>(e.data), e.length, &index);
      } else if (e.type == MTP_EVENT_CLOSED || e.type == MTP_EVENT_CONNECTION_ERROR) {
        ++closed;
        if (e.type == MTP_EVENT_CONNECTION_ERROR) ++errors;
        std::printf("%s: %s\n", e.type == MTP_EVENT_CLOSED ? "CLOSED" : "CONNECTION_ERROR", mtp_reason_text(e.reason));
        std::fflush(stdout);
        if (!echo) done = true;
      } else if (e.type == MTP_EVENT_CONNECTION_RECEIVED) {
        // On a secured node, who the client proved to be.
        uint8_t key[32];
        const bool proved = mtp_peer_identity(a.ch, e.connection, key) == MTP_OK;
        std::printf("CONNECTION_RECEIVED from member %u identity %s\n", e.member,
                    proved ? mtp::crypto::key_to_base64(key).c_str() : "none");
        std::fflush(stdout);
      } else if (e.type == MTP_EVENT_RECEIVE_ERROR) {
        // A message whose rest its sender gave up: its pieces go.
        gather.clear();
      } else if (e.type == MTP_EVENT_COMMAND_ERROR && e.connection == l) {
        // The listen itself was refused (another application listens).
        fail(std::string("listen refused: ") + mtp_reason_text(e.reason));
      }
      mtp_release(a.ch, &e);
    }
    if (o.messages && msgs >= o.messages && !echo) done = true;
    if (n == 0)
      if (const int st = mtp_wait(a.ch, 10); st != MTP_OK && st != MTP_ETIMEDOUT)
        fail(std::string("waiting: ") + mtp_status_text(st));
  }
  const double secs = t0 ? static_cast<double>(now_ns() - t0) / 1e9 : 1e-9;
  if (datagrams) std::printf("DATAGRAMS %" PRIu64 "\n", datagrams);
  summary(o, secs, msgs, bytes, errors, verify_errors, order_errors);
  return verify_errors == 0 && order_errors == 0 ? 0 : 2;
}

int run_ping(const options &o) {
  app a(o.socket);
  const mtp_connection c = initiate(a, o);
  std::vector<uint8_t> msg(o.size);
  std::vector<uint64_t> rtts;
  rtts.reserve(o.count);
  mtp_event ev[64];
  mtp_message_properties props;
  mtp_message_properties_init(&props);
  props.low_latency = 1;
  const uint64_t t0 = now_ns();
  const uint64_t stop_at = t0 + static_cast<uint64_t>(o.seconds * 1e9);
  for (uint64_t i = 0; i < o.count && now_ns() < stop_at; ++i) {
    fill(msg.data(), o.size, i);
    const uint64_t sent = now_ns();
    while (mtp_send(a.ch, c, 0, msg.data(), msg.size(), &props, i) == MTP_EAGAIN) {
      const size_t n = mtp_poll(a.ch, ev, 64);
      for (size_t k = 0; k < n; ++k) mtp_release(a.ch, &ev[k]);
    }
    bool back = false;
    while (!back && now_ns() < stop_at) {
      const size_t n = mtp_poll(a.ch, ev, 64);
      if (n == 0) mtp_wait(a.ch, 1);  // a CPU shared with mtpd: no spin
      for (size_t k = 0; k < n; ++k) {
        if (ev[k].type == MTP_EVENT_RECEIVED) {
          back = true;
          rtts.push_back(now_ns() - sent);
        } else if (ev[k].type == MTP_EVENT_CONNECTION_ERROR) {
          fail(std::string("connection failed: ") + mtp_reason_text(ev[k].reason));
        }
        mtp_release(a.ch, &ev[k]);
      }
    }
  }
  const double secs = static_cast<double>(now_ns() - t0) / 1e9;
  std::sort(rtts.begin(), rtts.end());
  auto pct = [&](double q) {
    return rtts.empty() ? 0.0 : static_cast<double>(rtts[std::min(rtts.size() - 1, static_cast<size_t>(q * rtts.size()))]) / 1000.0;
  };
  summary(o, secs, rtts.size(), rtts.size() * o.size, 0, 0, 0, pct(0.5), pct(0.99), pct(0.999));
  mtp_close(a.ch, c);
  return rtts.empty() ? 2 : 0;
}

// A hostile application: the attach is by hand (shm_attach.h), then
// garbage goes into its own region. What it expects back:
//   buffer    a send naming buffers outside the region, mtpd's receive
//             area, or ranges into the headroom -> command_error bad_buffer
//   handle    sends and closes on handles it never opened -> bad_handle
//   oversize  a length past the buffer -> bad_buffer
//   release   releasing receive buffers never lent -> bad_buffer
//   batch     release_batch commands with a count of 0 and of 16
//             (-> bad_command each) and one naming three buffers never
//             lent (-> bad_buffer for each of them)
//   ring      the command ring's head jumps past the ring -> mtpd stops
//             serving that channel (counted) and goes on
int run_hostile(const options &o) {
  using namespace mtp::shm;
  attach_result r = attach_client(o.socket, 2);
  if (!r.error.empty()) fail(r.error);
  const region_layout &l = r.region.layout();
  channel_header *ch = channel_at(r.region.base(), l, 0);
  ring_producer<descriptor> cmds(to_daemon_indices(ch, l), to_daemon_slots(ch, l), l.plan.to_daemon_slots);
  ring_consumer<descriptor> events(to_app_indices(ch, l), to_app_slots(ch, l), l.plan.to_app_slots);
  std::vector<descriptor> bad;
  uint64_t expected = 0;  // command errors beyond one per bad command
  // Initiate checks its buffer before anything else, so it reaches the
  // buffer checks without a connection to a real member.
  auto send_cmd = [&](uint32_t buffer, uint32_t offset, uint32_t length, uint64_t handle) {
    descriptor d{};
    d.type = static_cast<uint16_t>(o.attack == "handle" ? command::send : command::initiate);
    d.buffer = buffer;
    d.offset = offset;
    d.length = length;
    d.connection = handle;
    bad.push_back(d);
  };
  const uint32_t hr = l.plan.buffer_headroom;
  if (o.attack == "buffer") {
    send_cmd(l.plan.buffer_count + 5, hr, 10, 1);  // past the region
    send_cmd(UINT32_MAX - 1, hr, 10, 2);
    send_cmd(l.plan.tx_buffers, hr, 10, 3);        // mtpd's receive area
    send_cmd(0, 0, 10, 4);                         // into the headroom
  } else if (o.attack == "handle") {
    send_cmd(0, hr, 10, 12345);
    descriptor d{};
    d.type = static_cast<uint16_t>(command::close);
    d.connection = 0xdeadbeef;
    bad.push_back(d);
    d.type = 999;  // no such command
    bad.push_back(d);
  } else if (o.attack == "oversize") {
    send_cmd(1, hr, l.plan.buffer_bytes, 1);
    send_cmd(2, hr, UINT32_MAX, 2);
    send_cmd(3, UINT32_MAX, 16, 3);
    send_cmd(4, hr, 8, 4);  // in range, but too short for initiate's parameters
  } else if (o.attack == "release") {
    descriptor d{};
    d.type = static_cast<uint16_t>(command::release);
    for (uint32_t b : {0u, l.plan.tx_buffers, l.plan.buffer_count - 1, l.plan.buffer_count, UINT32_MAX}) {
      d.buffer = b;
      bad.push_back(d);
    }
  } else if (o.attack == "batch") {
    buffer_batch b{};
    b.type = static_cast<uint16_t>(command::release_batch);
    b.count = 0;
    bad.push_back(descriptor_of(b));
    b.count = buffer_batch::max_buffers + 1;
    bad.push_back(descriptor_of(b));
    b.count = 3;
    b.buffers[0] = 0;  // a send buffer
    b.buffers[1] = l.plan.buffer_count;
    b.buffers[2] = UINT32_MAX;
    bad.push_back(descriptor_of(b));
    expected = 2;  // the third command: one error per buffer
  } else if (o.attack == "ring") {
    // The head runs 10^6 past the tail: beyond any ring.
    to_daemon_indices(ch, l)->head.store(1'000'000, std::memory_order_release);
  } else {
    fail("unknown --attack " + o.attack);
  }
  if (!bad.empty() && cmds.push_burst(bad.data(), static_cast<uint32_t>(bad.size())) != bad.size())
    fail("command ring full");
  // Wait for the answers (none for `ring`: that channel is no longer served).
  uint64_t errors = 0, other = 0;
  const uint64_t deadline = now_ns() + 3'000'000'000ull;
  descriptor e{};
  expected += bad.size();
  while (now_ns() < deadline && errors < expected) {
    if (!events.pop(e)) {
      usleep(1000);
      continue;
    }
    if (e.type == static_cast<uint16_t>(event::command_error)) {
      ++errors;
      std::printf("COMMAND_ERROR reason=%u buffer=%u\n", e.reason, e.buffer);
    } else {
      ++other;
    }
  }
  // The second channel still works: a listen there must be answered
  // (refused or taken) only if the daemon still serves this application.
  std::printf("MTP_APP_SUMMARY {\"mode\":\"hostile\",\"attack\":\"%s\",\"commands\":%zu,\"expected_errors\":%" PRIu64
              ",\"command_errors\":%" PRIu64 ",\"other_events\":%" PRIu64 "}\n",
              o.attack.c_str(), bad.size(), expected, errors, other);
  std::fflush(stdout);
  close(r.socket_fd);
  return errors == expected ? 0 : 2;
}

std::vector<uint32_t> parse_ids(const char *s) {
  std::vector<uint32_t> v;
  for (const char *p = s; *p;) {
    char *end = nullptr;
    const unsigned long x = std::strtoul(p, &end, 10);
    if (end == p || x == 0 || x > 0xfffffffeul) fail(std::string("bad member list: ") + s);
    v.push_back(static_cast<uint32_t>(x));
    p = *end == ',' ? end + 1 : end;
    if (*end != ',' && *end != '\0') fail(std::string("bad member list: ") + s);
  }
  return v;
}

}  // namespace

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> const char * {
      if (i + 1 >= argc) fail("missing value after " + a);
      return argv[++i];
    };
    if (a == "--socket") o.socket = next();
    else if (a == "--members") o.members = parse_ids(next());
    else if (a == "--group") o.group = next();
    else if (a == "--threshold") o.threshold = static_cast<uint32_t>(std::strtoul(next(), nullptr, 10));
    else if (a == "--size") o.size = static_cast<uint32_t>(std::strtoul(next(), nullptr, 10));
    else if (a == "--messages") o.messages = std::strtoull(next(), nullptr, 10);
    else if (a == "--seconds") o.seconds = std::strtod(next(), nullptr);
    else if (a == "--burst") o.burst = static_cast<uint32_t>(std::strtoul(next(), nullptr, 10));
    else if (a == "--hold") o.hold = true;
    else if (a == "--datagrams") o.datagrams = true;
    else if (a == "--slow-us") o.slow_us = std::strtoull(next(), nullptr, 10);
    else if (a == "--verify") o.verify = std::string(next()) != "off";
    else if (a == "--count") o.count = std::strtoull(next(), nullptr, 10);
    else if (a == "--attack") o.attack = next();
    else if (a == "--security") o.security = parse_preference(next());
    else if (a == "--member-keys") o.member_keys = parse_keys(next());
    else if (a == "--idempotent") o.idempotent = true;
    else if (a == "-h" || a == "--help") {
      std::fputs(usage, stdout);
      return 0;
    } else if (a[0] != '-' && o.mode.empty()) o.mode = a;
    else fail("unknown argument " + a + "\n" + usage);
  }
  if (o.socket.empty() || o.mode.empty()) fail(std::string("need --socket and a mode\n") + usage);
  if (o.size < 16 || o.size > (4u << 20)) fail("--size must be 16 .. 4194304");
  if (o.burst == 0 || o.burst > 256) fail("--burst must be 1 .. 256");
  if (o.mode == "tx") {
    if (o.members.empty() && o.group.empty()) fail("tx needs --members or --group");
    return run_tx(o);
  }
  if (o.mode == "rx") return run_rx(o, false);
  if (o.mode == "echo") return run_rx(o, true);
  if (o.mode == "ping") {
    if (o.members.empty()) fail("ping needs --members");
    return run_ping(o);
  }
  if (o.mode == "hostile") return run_hostile(o);
  fail("unknown mode " + o.mode + "\n" + usage);
}
