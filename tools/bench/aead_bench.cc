// SPDX-License-Identifier: BSD-3-Clause
// The data path's AES-256-GCM, Google Benchmark: aead_engine seal_burst /
// open_burst on bursts of 32 packets (24-byte header as AAD, payload
// encrypted in place, 16-byte tag), next to the other ways ipsec-mb 1.3
// can do the same work, so the choice in dataplane/crypto/aead.cc can be
// rechecked on another machine or library version:
//
//   engine     aead_engine (the direct API, IMB_AES256_GCM_ENC / _DEC)
//   direct3    direct API in three calls: INIT, ENC/DEC_UPDATE, FINALIZE
//   job        job API, IMB_GET_NEXT_JOB + IMB_SUBMIT_JOB per packet,
//              IMB_FLUSH_JOB at the end of the burst
//   burst      burst API, IMB_GET_NEXT_BURST + IMB_SUBMIT_BURST (validating)
//   burst_nc   the same with IMB_SUBMIT_BURST_NOCHECK
//
//   build-dir/tools/bench/aead_bench --benchmark_counters_tabular=true
//
// Counters, per core: ns_per_pkt, pkts_per_s, Gbit_per_s (payload bits).
// Before timing, every candidate seals one packet of each size and the
// bytes are compared with the engine's, and every candidate opens what
// the engine sealed: a candidate that computes something else aborts.
//
// Open runs in place, so iteration n+1 opens the plaintext that iteration
// n left behind: CTR turns it back into the ciphertext and the tag check
// fails; the iteration after that succeeds again. The work (GHASH over the
// bytes, CTR, a 16-byte compare) is the same either way.
#include <benchmark/benchmark.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "aead.h"

using namespace mtp::crypto;

namespace {

constexpr uint32_t burst_pkts = 32;
constexpr uint32_t max_payload_bytes = 9000;
constexpr uint32_t slot_bytes = 9216;  // header + 9000 + tag, rounded to 1 KiB: every packet starts 64-byte aligned

enum class api { engine, direct3, job, burst, burst_nc };

struct rig {
  std::unique_ptr<aead_engine> engine;
  IMB_MGR *mgr = nullptr;  // for the candidates, on the same path as the engine
  aead_key key{};
  std::vector<uint8_t> buf;
  std::array<aead_packet, burst_pkts> pkts{};
  std::array<std::array<uint8_t, aead_iv_bytes>, burst_pkts> nonces{};
  std::array<std::array<uint8_t, aead_tag_bytes>, burst_pkts> tags{};
  alignas(64) gcm_context_data ctx{};

  rig() : buf(std::size_t{slot_bytes} * burst_pkts + 64) {
    std::string error;
    engine = aead_engine::create(error);
    if (!engine) {
      std::fprintf(stderr, "aead_bench: %s\n", error.c_str());
      std::exit(1);
    }
    mgr = alloc_mb_mgr(0);
    IMB_ARCH arch = IMB_ARCH_NONE;
    init_mb_mgr_auto(mgr, &arch);
    uint8_t k[aead_key_bytes], iv[aead_iv_bytes];
    for (std::size_t i = 0; i < sizeof k; ++i) k[i] = static_cast<uint8_t>(i * 7 + 1);
    for (std::size_t i = 0; i < sizeof iv; ++i) iv[i] = static_cast<uint8_t>(0xa0 + i);
    if (!aead_key_init(key, k, iv)) std::exit(1);
    for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<uint8_t>(i * 131 + 7);
  }
  ~rig() { free_mb_mgr(mgr); }

  uint8_t *slot(uint32_t i) {
    auto base = reinterpret_cast<uintptr_t>(buf.data());
    return reinterpret_cast<uint8_t *>(((base + 63) & ~uintptr_t{63}) + std::size_t{i} * slot_bytes);
  }

  void prepare(uint32_t payload_bytes, uint64_t first_pn) {
    for (uint32_t i = 0; i < burst_pkts; ++i)
      pkts[i] = aead_packet{slot(i), aead_header_bytes, payload_bytes, &key, first_pn + i, false};
  }

  static void fill_job(IMB_JOB *job, const aead_packet &p, const uint8_t *nonce, uint8_t *tag_out, bool seal) {
    job->cipher_mode = IMB_CIPHER_GCM;
    job->hash_alg = IMB_AUTH_AES_GMAC;
    job->key_len_in_bytes = IMB_KEY_256_BYTES;
    job->enc_keys = &p.key->gcm;
    job->dec_keys = &p.key->gcm;
    job->cipher_direction = seal ? IMB_DIR_ENCRYPT : IMB_DIR_DECRYPT;
    job->chain_order = seal ? IMB_ORDER_CIPHER_HASH : IMB_ORDER_HASH_CIPHER;
    job->src = p.data;
    job->dst = p.data + p.header_bytes;
    job->cipher_start_src_offset_in_bytes = p.header_bytes;
    job->msg_len_to_cipher_in_bytes = p.payload_bytes;
    job->hash_start_src_offset_in_bytes = p.header_bytes;
    job->msg_len_to_hash_in_bytes = p.payload_bytes;
    job->iv = nonce;
    job->iv_len_in_bytes = aead_iv_bytes;
    job->u.GCM.aad = p.data;
    job->u.GCM.aad_len_in_bytes = p.header_bytes;
    job->auth_tag_output = tag_out;
    job->auth_tag_output_len_in_bytes = aead_tag_bytes;
    job->user_data = const_cast<aead_packet *>(&p);
  }

  // Marks a finished job's packet (its tag, for open, is compared after
  // the burst, by run()).
  static void finish(IMB_JOB *job) { static_cast<aead_packet *>(job->user_data)->ok = job->status == IMB_STATUS_COMPLETED; }

  // One burst through candidate `a`. @return packets that succeeded.
  // Every candidate stores the burst's nonces before its first AES call,
  // as the engine does (see the store-forwarding note in aead.cc).
  uint32_t run(api a, bool seal) {
    if (a == api::engine) return seal ? engine->seal_burst(pkts) : engine->open_burst(pkts);
    uint32_t done = 0;
    for (aead_packet &p : pkts) p.ok = false;
    for (uint32_t i = 0; i < burst_pkts; ++i) aead_nonce(*pkts[i].key, pkts[i].packet_number, nonces[i].data());
    switch (a) {
      case api::engine:  // handled above
        break;
      case api::direct3:
        for (uint32_t i = 0; i < burst_pkts; ++i) {
          aead_packet &p = pkts[i];
          uint8_t *payload = p.data + p.header_bytes;
          IMB_AES256_GCM_INIT(mgr, &p.key->gcm, &ctx, nonces[i].data(), p.data, p.header_bytes);
          if (seal) {
            IMB_AES256_GCM_ENC_UPDATE(mgr, &p.key->gcm, &ctx, payload, payload, p.payload_bytes);
            IMB_AES256_GCM_ENC_FINALIZE(mgr, &p.key->gcm, &ctx, payload + p.payload_bytes, aead_tag_bytes);
          } else {
            IMB_AES256_GCM_DEC_UPDATE(mgr, &p.key->gcm, &ctx, payload, payload, p.payload_bytes);
            IMB_AES256_GCM_DEC_FINALIZE(mgr, &p.key->gcm, &ctx, tags[i].data(), aead_tag_bytes);
          }
          p.ok = true;
        }
        break;
      case api::job: {
        for (uint32_t i = 0; i < burst_pkts; ++i) {
          aead_packet &p = pkts[i];
          IMB_JOB *job = IMB_GET_NEXT_JOB(mgr);
          fill_job(job, p, nonces[i].data(), seal ? p.data + p.header_bytes + p.payload_bytes : tags[i].data(),
                   seal);
          for (job = IMB_SUBMIT_JOB(mgr); job != nullptr; job = IMB_GET_COMPLETED_JOB(mgr)) finish(job);
        }
        for (IMB_JOB *job = IMB_FLUSH_JOB(mgr); job != nullptr; job = IMB_FLUSH_JOB(mgr)) finish(job);
        break;
      }
      case api::burst:
      case api::burst_nc: {
        IMB_JOB *jobs[burst_pkts];
        uint32_t n = IMB_GET_NEXT_BURST(mgr, burst_pkts, jobs);
        if (n < burst_pkts) {
          // The queue still holds jobs from an earlier burst: complete them.
          IMB_JOB *old[IMB_MAX_JOBS];
          IMB_FLUSH_BURST(mgr, IMB_MAX_JOBS, old);
          n = IMB_GET_NEXT_BURST(mgr, burst_pkts, jobs);
          if (n < burst_pkts) std::abort();
        }
        for (uint32_t i = 0; i < burst_pkts; ++i) {
          aead_packet &p = pkts[i];
          fill_job(jobs[i], p, nonces[i].data(), seal ? p.data + p.header_bytes + p.payload_bytes : tags[i].data(),
                   seal);
        }
        uint32_t completed = a == api::burst ? IMB_SUBMIT_BURST(mgr, burst_pkts, jobs)
                                             : IMB_SUBMIT_BURST_NOCHECK(mgr, burst_pkts, jobs);
        if (completed == 0 && imb_get_errno(mgr) != 0) {
          std::fprintf(stderr, "aead_bench: IMB_SUBMIT_BURST: %s\n", imb_get_strerror(imb_get_errno(mgr)));
          std::abort();
        }
        for (uint32_t i = 0; i < completed; ++i) finish(jobs[i]);
        if (completed < burst_pkts) {
          const uint32_t flushed = IMB_FLUSH_BURST(mgr, burst_pkts - completed, jobs);
          for (uint32_t i = 0; i < flushed; ++i) finish(jobs[i]);
        }
        break;
      }
    }
    for (uint32_t i = 0; i < burst_pkts; ++i) {
      aead_packet &p = pkts[i];
      if (!seal && p.ok) p.ok = std::memcmp(tags[i].data(), p.data + p.header_bytes + p.payload_bytes, aead_tag_bytes) == 0;
      done += p.ok ? 1 : 0;
    }
    return done;
  }
};

rig &the_rig() {
  static rig r;
  return r;
}

const char *api_name(api a) {
  switch (a) {
    case api::engine: return "engine";
    case api::direct3: return "direct3";
    case api::job: return "job";
    case api::burst: return "burst";
    case api::burst_nc: return "burst_nc";
  }
  return "?";
}

// Every candidate seals exactly what the engine seals and opens it.
void check_candidates() {
  rig &r = the_rig();
  for (uint32_t size : {0u, 1u, 64u, 256u, 1400u, 9000u}) {
    for (api a : {api::direct3, api::job, api::burst, api::burst_nc}) {
      for (uint32_t i = 0; i < burst_pkts; ++i) std::memset(r.slot(i), static_cast<int>(i + size), slot_bytes);
      r.prepare(size, 1000);
      if (r.run(api::engine, true) != burst_pkts) std::abort();
      std::vector<uint8_t> expect(r.slot(0), r.slot(0) + std::size_t{slot_bytes} * burst_pkts);
      for (uint32_t i = 0; i < burst_pkts; ++i) std::memset(r.slot(i), static_cast<int>(i + size), slot_bytes);
      if (r.run(a, true) != burst_pkts || std::memcmp(expect.data(), r.slot(0), expect.size()) != 0) {
        std::fprintf(stderr, "aead_bench: %s seals %u B differently from the engine\n", api_name(a), size);
        std::abort();
      }
      if (r.run(a, false) != burst_pkts) {
        std::fprintf(stderr, "aead_bench: %s cannot open %u B sealed by the engine\n", api_name(a), size);
        std::abort();
      }
    }
  }
}

void bm_aead(benchmark::State &state, api a, bool seal) {
  rig &r = the_rig();
  const auto payload_bytes = static_cast<uint32_t>(state.range(0));
  r.prepare(payload_bytes, 1u << 20);
  if (!seal) r.run(api::engine, true);  // start from valid sealed packets
  uint64_t ok = 0;
  for (auto _ : state) {
    ok += r.run(a, seal);
    benchmark::ClobberMemory();
  }
  const double pkts = static_cast<double>(state.iterations()) * burst_pkts;
  state.counters["ns_per_pkt"] = benchmark::Counter(pkts, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["pkts_per_s"] = benchmark::Counter(pkts, benchmark::Counter::kIsRate);
  state.counters["Gbit_per_s"] = benchmark::Counter(pkts * payload_bytes * 8 / 1e9, benchmark::Counter::kIsRate);
  state.counters["ok_frac"] = benchmark::Counter(static_cast<double>(ok) / pkts);
}

void register_all() {
  for (api a : {api::engine, api::direct3, api::job, api::burst, api::burst_nc}) {
    for (bool seal : {true, false}) {
      const std::string name = std::string(seal ? "seal/" : "open/") + api_name(a);
      benchmark::RegisterBenchmark(name.c_str(), bm_aead, a, seal)->Arg(64)->Arg(256)->Arg(1400)->Arg(9000);
    }
  }
}

}  // namespace

int main(int argc, char **argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  std::printf("ipsec-mb %s, path %s, bursts of %u\n", imb_get_version_str(), aead_arch_name(the_rig().engine->arch()),
              burst_pkts);
  check_candidates();
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
