// SPDX-License-Identifier: BSD-3-Clause
// Handshake cost, Google Benchmark, one core, no I/O: what a responder (the
// control lcore) can take per second, and the cost of the cheap refusals
// that protect it.
//
//   build/tools/bench/handshake_bench --benchmark_counters_tabular=true
//
// Benchmarks (counter handshakes_per_s or packets_per_s, per core):
//   full_handshake      initiator create + responder consume and create +
//                       initiator consume (8 X25519 operations in all)
//   responder_only      consume_initiation + create_response on one
//                       initiation (4 X25519; the replay check is reset)
//   responder_precomputed_ss  the same with ss precomputed per peer, as mtpd
//                       does (3 X25519)
//   initiator_only      create_initiation + consume_response
//   drop_bad_mac1       a packet not made for our key (one HMAC)
//   drop_bad_mac2       under load without a cookie (two HMACs)
//   cookie_reply        make_cookie_reply (HMAC + AES-GCM)
//   x25519              one X25519 from a bare private key (OpenSSL derives
//                       the public key on import: two scalar multiplications)
//   x25519_with_own_pub one X25519 as the handshake does it (one)
#include <benchmark/benchmark.h>

#include <array>
#include <cstring>

#include "handshake.h"

using namespace mtp::crypto;

namespace {

constexpr uint64_t cid = 0x1122334455667788ull;
constexpr uint64_t now_ns = 1'000'000'000ull;
const uint8_t source[] = {192, 0, 2, 1, 0x1c, 0xe8};

struct bench_world {
  static_keypair ik{}, rk{};
  hs_identity ini, res;
  uint8_t greatest[hs_timestamp_bytes]{};
  uint8_t ss[key_bytes]{};
  bool use_ss = false;

  bench_world() {
    if (!generate_keypair(ik) || !generate_keypair(rk) || !make_identity(ik, 100, ini) || !make_identity(rk, 7, res))
      std::abort();
  }
  static bool lookup(void *ctx, const uint8_t pub[32], uint32_t, hs_peer_entry &out) {
    auto *w = static_cast<bench_world *>(ctx);
    if (std::memcmp(pub, w->ik.pub, 32) != 0) return false;
    out.psk = nullptr;
    out.greatest_timestamp = w->greatest;
    out.peer_index = 1;
    out.static_static = w->use_ss ? w->ss : nullptr;
    return true;
  }
  hs_peer_table table() { return {&bench_world::lookup, this}; }
};

void rate(benchmark::State &state, const char *name) {
  state.counters[name] = benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

void full_handshake(benchmark::State &state) {
  bench_world w;
  initiator_state ist;
  if (!initiator_init(ist, w.ini, w.rk.pub, 7, nullptr, cid)) std::abort();
  responder_state rst;
  std::array<uint8_t, initiation_bytes> init{};
  std::array<uint8_t, response_bytes> resp{};
  hs_session_keys ik, rk;
  uint64_t wall = 1'700'000'000'000'000'000ull;
  for (auto _ : state) {
    bool ok = create_initiation(ist, w.ini, ++wall, now_ns, init) == hs_error::ok &&
              consume_initiation(rst, w.res, init, w.table(), {}) == hs_error::ok &&
              create_response(rst, resp, rk) == hs_error::ok && consume_response(ist, w.ini, resp, ik) == hs_error::ok;
    if (!ok) state.SkipWithError("handshake failed");
    benchmark::DoNotOptimize(ik.send);
  }
  rate(state, "handshakes_per_s");
}

// The responder's part on one initiation (its replay check reset each
// time); with `precomputed_ss`, the static-static DH comes from the peer
// table, as mtpd computes it once per peer at start.
void responder(benchmark::State &state, bool precomputed_ss) {
  bench_world w;
  w.use_ss = precomputed_ss && x25519(w.rk.priv, w.rk.pub, w.ik.pub, w.ss);
  initiator_state ist;
  if (!initiator_init(ist, w.ini, w.rk.pub, 7, nullptr, cid)) std::abort();
  std::array<uint8_t, initiation_bytes> init{};
  if (create_initiation(ist, w.ini, 1'700'000'000'000'000'000ull, now_ns, init) != hs_error::ok) std::abort();
  responder_state rst;
  std::array<uint8_t, response_bytes> resp{};
  hs_session_keys rk;
  for (auto _ : state) {
    std::memset(w.greatest, 0, sizeof w.greatest);  // the same initiation each time
    bool ok = consume_initiation(rst, w.res, init, w.table(), {}) == hs_error::ok &&
              create_response(rst, resp, rk) == hs_error::ok;
    if (!ok) state.SkipWithError("responder failed");
    benchmark::DoNotOptimize(rk.send);
  }
  rate(state, "handshakes_per_s");
}
void responder_only(benchmark::State &state) { responder(state, false); }
void responder_precomputed_ss(benchmark::State &state) { responder(state, true); }

void initiator_only(benchmark::State &state) {
  // One response per initiation needs the responder; time only the
  // initiator's two calls.
  bench_world w;
  initiator_state ist;
  if (!initiator_init(ist, w.ini, w.rk.pub, 7, nullptr, cid)) std::abort();
  responder_state rst;
  std::array<uint8_t, initiation_bytes> init{};
  std::array<uint8_t, response_bytes> resp{};
  hs_session_keys ik, rk;
  uint64_t wall = 1'700'000'000'000'000'000ull;
  for (auto _ : state) {
    bool ok = create_initiation(ist, w.ini, ++wall, now_ns, init) == hs_error::ok;
    state.PauseTiming();
    ok = ok && consume_initiation(rst, w.res, init, w.table(), {}) == hs_error::ok &&
         create_response(rst, resp, rk) == hs_error::ok;
    state.ResumeTiming();
    ok = ok && consume_response(ist, w.ini, resp, ik) == hs_error::ok;
    if (!ok) state.SkipWithError("initiator failed");
  }
  rate(state, "handshakes_per_s");
}

void drop_bad_mac1(benchmark::State &state) {
  bench_world w;
  static_keypair other{};
  if (!generate_keypair(other)) std::abort();
  initiator_state ist;
  if (!initiator_init(ist, w.ini, other.pub, 7, nullptr, cid)) std::abort();
  std::array<uint8_t, initiation_bytes> init{};
  if (create_initiation(ist, w.ini, 1, now_ns, init) != hs_error::ok) std::abort();
  responder_state rst;
  for (auto _ : state)
    if (consume_initiation(rst, w.res, init, w.table(), {}) != hs_error::bad_mac1) state.SkipWithError("not bad_mac1");
  rate(state, "packets_per_s");
}

void drop_bad_mac2(benchmark::State &state) {
  bench_world w;
  cookie_checker cc(w.res, now_ns);
  initiator_state ist;
  if (!initiator_init(ist, w.ini, w.rk.pub, 7, nullptr, cid)) std::abort();
  std::array<uint8_t, initiation_bytes> init{};
  if (create_initiation(ist, w.ini, 1, now_ns, init) != hs_error::ok) std::abort();
  responder_state rst;
  const hs_load load{true, &cc, source, now_ns};
  for (auto _ : state)
    if (consume_initiation(rst, w.res, init, w.table(), load) != hs_error::bad_mac2) state.SkipWithError("not bad_mac2");
  rate(state, "packets_per_s");
}

void cookie_reply(benchmark::State &state) {
  bench_world w;
  cookie_checker cc(w.res, now_ns);
  initiator_state ist;
  if (!initiator_init(ist, w.ini, w.rk.pub, 7, nullptr, cid)) std::abort();
  std::array<uint8_t, initiation_bytes> init{};
  if (create_initiation(ist, w.ini, 1, now_ns, init) != hs_error::ok) std::abort();
  std::array<uint8_t, cookie_reply_bytes> reply{};
  for (auto _ : state)
    if (cc.make_cookie_reply(init, source, now_ns, reply) != hs_error::ok) state.SkipWithError("no reply");
  rate(state, "packets_per_s");
}

void x25519_one(benchmark::State &state) {
  static_keypair a{}, b{};
  if (!generate_keypair(a) || !generate_keypair(b)) std::abort();
  uint8_t out[32];
  for (auto _ : state) {
    if (!x25519(a.priv, b.pub, out)) state.SkipWithError("x25519 failed");
    benchmark::DoNotOptimize(out);
  }
  rate(state, "ops_per_s");
}

void x25519_with_own_pub(benchmark::State &state) {
  static_keypair a{}, b{};
  if (!generate_keypair(a) || !generate_keypair(b)) std::abort();
  uint8_t out[32];
  for (auto _ : state) {
    if (!x25519(a.priv, a.pub, b.pub, out)) state.SkipWithError("x25519 failed");
    benchmark::DoNotOptimize(out);
  }
  rate(state, "ops_per_s");
}

}  // namespace

BENCHMARK(full_handshake);
BENCHMARK(responder_only);
BENCHMARK(responder_precomputed_ss);
BENCHMARK(initiator_only);
BENCHMARK(drop_bad_mac1);
BENCHMARK(drop_bad_mac2);
BENCHMARK(cookie_reply);
BENCHMARK(x25519_one)->Name("x25519");
BENCHMARK(x25519_with_own_pub);

BENCHMARK_MAIN();
