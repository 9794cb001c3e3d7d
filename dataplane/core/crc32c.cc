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
__attribute__((target("sse4.2"))) uint32_t crc32c_sse42(std::span<const std::byte> data) {
  uint64_t c = 0xffffffffu;
  const std::byte *p = data.data();
  std::size_t n = data.size();
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
