// SPDX-License-Identifier: BSD-3-Clause
// AES-256-GCM for the data path (see aead.h). Owns nothing shared but the
// process-wide managers that expand keys on the slow path.
//
// Which ipsec-mb API: the direct GCM API (IMB_AES256_GCM_ENC / _DEC), one
// call per packet. ipsec-mb 1.3's burst API does accept GCM jobs
// (IMB_CIPHER_GCM + IMB_AUTH_AES_GMAC, 32-byte key; aead_bench checks it
// gives the same bytes), but GCM is not multi-buffer in 1.3: each job runs
// synchronously on submit in the same single-buffer VAES code, so the job
// and burst APIs only add set-up, validation and dispatch per packet.
// Measured here (tools/bench/aead_bench, AVX-512 + VAES path, one core,
// bursts of 32, median of 5; ns per packet and Gbit/s of payload, seal):
//   payload  direct (ours)    IMB_SUBMIT_BURST  _BURST_NOCHECK  SUBMIT_JOB
//   64 B      21.0 ns  24 G    38.1 ns  13 G    27.6 ns  19 G   35.0 ns  15 G
//   256 B     36.3 ns  56 G    60.1 ns  34 G    42.1 ns  49 G   46.8 ns  44 G
//   1400 B    99.7 ns 112 G   118   ns  95 G   107   ns 105 G  132   ns  85 G
//   9000 B   537   ns 134 G   556   ns 130 G   545   ns 132 G  568   ns 127 G
// (open: 19.8 / 28.4 / 98.0 / 549 ns direct vs 37.1 / 46.7 / 119 / 570
// burst.) The burst API is 1.8x slower at 64 B and 1.2x at 1400 B, the
// unvalidated one 1.3x at 64 B: measurably slower, so not used. The
// benchmark keeps every candidate so the choice can be rechecked against a
// later ipsec-mb (whose GCM may become multi-buffer).
#include "aead.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <mutex>

#include <openssl/crypto.h>

namespace mtp::crypto {

namespace {

static_assert(std::endian::native == std::endian::little, "ipsec-mb runs on x86 only");

// Allocates and initialises a manager for `want`. @return null with
// `error` set if ipsec-mb cannot run that path here; `got` is the
// concrete path (resolved for `detect`).
IMB_MGR *make_manager(aead_arch want, aead_arch &got, std::string &error) {
  IMB_MGR *mgr = alloc_mb_mgr(0);
  if (mgr == nullptr) {
    error = "ipsec-mb: cannot allocate a manager";
    return nullptr;
  }
  got = want;
  switch (want) {
    case aead_arch::detect: {
      IMB_ARCH picked = IMB_ARCH_NONE;
      init_mb_mgr_auto(mgr, &picked);
      switch (picked) {
        case IMB_ARCH_SSE: got = aead_arch::sse; break;
        case IMB_ARCH_AVX: got = aead_arch::avx; break;
        case IMB_ARCH_AVX2: got = aead_arch::avx2; break;
        case IMB_ARCH_AVX512: got = aead_arch::avx512; break;
        default:
          // IMB_ARCH_NOAESNI: a software AES, an order of magnitude slower.
          error = "ipsec-mb: this CPU has no AES-NI; the data path needs it";
          free_mb_mgr(mgr);
          return nullptr;
      }
      break;
    }
    case aead_arch::sse: init_mb_mgr_sse(mgr); break;
    case aead_arch::avx: init_mb_mgr_avx(mgr); break;
    case aead_arch::avx2: init_mb_mgr_avx2(mgr); break;
    case aead_arch::avx512: init_mb_mgr_avx512(mgr); break;
  }
  if (const int err = imb_get_errno(mgr); err != 0) {
    error = std::string("ipsec-mb: cannot initialise the ") + aead_arch_name(want) + " path: " + imb_get_strerror(err);
    free_mb_mgr(mgr);
    return nullptr;
  }
  return mgr;
}

// The managers that expand keys: one per path, created on first use and
// kept for the life of the process. Only their stateless key-expansion
// function is called, so concurrent callers may share one.
IMB_MGR *key_manager(aead_arch want, aead_arch &got) {
  static std::mutex mutex;
  static std::array<IMB_MGR *, 5> managers{};
  static std::array<aead_arch, 5> archs{};
  const std::lock_guard lock(mutex);
  const auto slot = static_cast<std::size_t>(want);
  if (managers[slot] == nullptr) {
    std::string error;
    managers[slot] = make_manager(want, archs[slot], error);
  }
  got = archs[slot];
  return managers[slot];
}

// Both tags are 16 bytes; no early exit, so the time does not depend on
// where they differ.
inline bool tags_equal(const uint8_t *a, const uint8_t *b) {
  uint64_t a0, a1, b0, b1;
  std::memcpy(&a0, a, 8);
  std::memcpy(&a1, a + 8, 8);
  std::memcpy(&b0, b, 8);
  std::memcpy(&b1, b + 8, 8);
  return ((a0 ^ b0) | (a1 ^ b1)) == 0;
}

}  // namespace

const char *aead_arch_name(aead_arch arch) {
  switch (arch) {
    case aead_arch::detect: return "detect";
    case aead_arch::sse: return "sse";
    case aead_arch::avx: return "avx";
    case aead_arch::avx2: return "avx2";
    case aead_arch::avx512: return "avx512";
  }
  return "?";
}

bool aead_key_init(aead_key &out, std::span<const uint8_t, aead_key_bytes> key,
                   std::span<const uint8_t, aead_iv_bytes> iv, aead_arch arch) {
  aead_arch got = aead_arch::detect;
  IMB_MGR *mgr = key_manager(arch, got);
  if (mgr == nullptr) {
    aead_key_wipe(out);
    return false;
  }
  IMB_AES256_GCM_PRE(mgr, key.data(), &out.gcm);
  std::memcpy(out.iv, iv.data(), aead_iv_bytes);
  out.arch = got;
  return true;
}

void aead_key_wipe(aead_key &k) {
  OPENSSL_cleanse(&k, sizeof k);
  k.arch = aead_arch::detect;  // matches no engine: a wiped key seals and opens nothing
}

void aead_nonce(const aead_key &k, uint64_t packet_number, uint8_t out[aead_iv_bytes]) {
  uint64_t tail;
  std::memcpy(out, k.iv, 4);
  std::memcpy(&tail, k.iv + 4, 8);
  tail ^= __builtin_bswap64(packet_number);  // big-endian on the wire's nonce
  std::memcpy(out + 4, &tail, 8);
}

std::unique_ptr<aead_engine> aead_engine::create(std::string &error, aead_arch arch) {
  aead_arch got = aead_arch::detect;
  IMB_MGR *mgr = make_manager(arch, got, error);
  if (mgr == nullptr) return nullptr;
  return std::unique_ptr<aead_engine>(new aead_engine(mgr, got));
}

aead_engine::~aead_engine() {
  OPENSSL_cleanse(&ctx_, sizeof ctx_);  // holds the last packet's keystream block
  free_mb_mgr(mgr_);
}

// Three passes per chunk rather than one loop per packet. Done in one
// loop, ipsec-mb loads the nonce a few instructions after aead_nonce()
// stored it (and we load the tag just after it stored it); a load that
// spans several smaller stores, or follows a masked store, cannot be
// forwarded from the store buffer and waits for the stores to retire.
// Storing every nonce of the chunk first, and comparing every tag after,
// hides that: measured here at 64 B, seal 39 -> 23 ns and open 26.5 ->
// 20.7 ns per packet.
uint32_t aead_engine::seal_burst(std::span<aead_packet> pkts) {
  uint32_t sealed = 0;
  for (std::size_t base = 0; base < pkts.size(); base += chunk_pkts) {
    const std::span<aead_packet> chunk = pkts.subspan(base, std::min<std::size_t>(chunk_pkts, pkts.size() - base));
    for (std::size_t i = 0; i < chunk.size(); ++i) aead_nonce(*chunk[i].key, chunk[i].packet_number, nonces_[i]);
    for (std::size_t i = 0; i < chunk.size(); ++i) {
      aead_packet &p = chunk[i];
      const aead_key &k = *p.key;
      if (k.arch != arch_) [[unlikely]] {
        p.ok = false;
        continue;
      }
      uint8_t *payload = p.data + p.header_bytes;
      IMB_AES256_GCM_ENC(mgr_, &k.gcm, &ctx_, payload, payload, p.payload_bytes, nonces_[i], p.data, p.header_bytes,
                         payload + p.payload_bytes, aead_tag_bytes);
      p.ok = true;
      ++sealed;
    }
  }
  return sealed;
}

uint32_t aead_engine::open_burst(std::span<aead_packet> pkts) {
  uint32_t opened = 0;
  for (std::size_t base = 0; base < pkts.size(); base += chunk_pkts) {
    const std::span<aead_packet> chunk = pkts.subspan(base, std::min<std::size_t>(chunk_pkts, pkts.size() - base));
    for (std::size_t i = 0; i < chunk.size(); ++i) aead_nonce(*chunk[i].key, chunk[i].packet_number, nonces_[i]);
    for (std::size_t i = 0; i < chunk.size(); ++i) {
      aead_packet &p = chunk[i];
      const aead_key &k = *p.key;
      if (k.arch != arch_) [[unlikely]] continue;  // fails below, payload untouched
      uint8_t *payload = p.data + p.header_bytes;
      IMB_AES256_GCM_DEC(mgr_, &k.gcm, &ctx_, payload, payload, p.payload_bytes, nonces_[i], p.data, p.header_bytes,
                         tags_[i], aead_tag_bytes);
    }
    for (std::size_t i = 0; i < chunk.size(); ++i) {
      aead_packet &p = chunk[i];
      p.ok = p.key->arch == arch_ && tags_equal(tags_[i], p.data + p.header_bytes + p.payload_bytes);
      opened += p.ok ? 1 : 0;
    }
  }
  return opened;
}

}  // namespace mtp::crypto
