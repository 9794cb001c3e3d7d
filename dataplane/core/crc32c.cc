// SPDX-License-Identifier: BSD-3-Clause
#include "crc32c.h"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace mtp::core {

namespace {

constexpr uint32_t poly_reflected = 0x82f63b78u;

constexpr std::array<uint32_t, 256> make_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ poly_reflected : c >> 1;
    t[i] = c;
  }
  return t;
}

constexpr auto table = make_table();

#if defined(__x86_64__)
// Three independent crc32 chains hide the instruction's 3-cycle latency;
// the chains are joined with a "shift by L zero bytes" operator (the CRC
// register update is linear over GF(2)), tabulated once per lane length.
template <std::size_t lane>
struct shift_tables {
  uint32_t t[4][256];
  shift_tables() {
    for (int k = 0; k < 4; ++k)
      for (uint32_t v = 0; v < 256; ++v) {
        uint32_t c = v << (8 * k);
        for (std::size_t z = 0; z < lane; ++z) c = table[c & 0xff] ^ (c >> 8);
        t[k][v] = c;
      }
  }
  uint32_t shift(uint32_t c) const {
    return t[0][c & 0xff] ^ t[1][(c >> 8) & 0xff] ^ t[2][(c >> 16) & 0xff] ^ t[3][c >> 24];
  }
};

// Long lanes for MTU-sized packets (one 3 x 448 = 1344 B block covers most
// of a 1500 B frame: one join instead of three and a short serial tail),
// short ones for what is left.
constexpr std::size_t long_lane = 448, short_lane = 128;
const shift_tables<long_lane> long_shifter;
const shift_tables<short_lane> short_shifter;

template <std::size_t lane, class Shifter>
__attribute__((target("sse4.2"))) inline uint64_t three_lanes(uint64_t c, const std::byte *&p, std::size_t &n,
                                                              const Shifter &shifter) {
  while (n >= 3 * lane) {
    uint64_t c1 = 0, c2 = 0;
    for (std::size_t i = 0; i < lane; i += 8) {
      uint64_t v0, v1, v2;
      std::memcpy(&v0, p + i, 8);
      std::memcpy(&v1, p + lane + i, 8);
      std::memcpy(&v2, p + 2 * lane + i, 8);
      c = _mm_crc32_u64(c, v0);
      c1 = _mm_crc32_u64(c1, v1);
      c2 = _mm_crc32_u64(c2, v2);
    }
    const uint32_t joined = shifter.shift(static_cast<uint32_t>(c)) ^ static_cast<uint32_t>(c1);
    c = shifter.shift(joined) ^ static_cast<uint32_t>(c2);
    p += 3 * lane;
    n -= 3 * lane;
  }
  return c;
}

__attribute__((target("sse4.2"))) uint32_t crc32c_sse42(std::span<const std::byte> data) {
  uint64_t c = 0xffffffffu;
  const std::byte *p = data.data();
  std::size_t n = data.size();
  c = three_lanes<long_lane>(c, p, n, long_shifter);
  c = three_lanes<short_lane>(c, p, n, short_shifter);
  while (n >= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    c = _mm_crc32_u64(c, v);
    p += 8;
    n -= 8;
  }
  auto c32 = static_cast<uint32_t>(c);
  while (n--) c32 = _mm_crc32_u8(c32, std::to_integer<uint8_t>(*p++));
  return ~c32;
}

const bool have_sse42 = __builtin_cpu_supports("sse4.2");
#endif

}  // namespace

uint32_t crc32c_portable(std::span<const std::byte> data) {
  uint32_t c = 0xffffffffu;
  for (std::byte b : data) c = table[(c ^ std::to_integer<uint8_t>(b)) & 0xff] ^ (c >> 8);
  return ~c;
}

uint32_t crc32c(std::span<const std::byte> data) {
#if defined(__x86_64__)
  if (have_sse42) return crc32c_sse42(data);
#endif
  return crc32c_portable(data);
}

}  // namespace mtp::core
