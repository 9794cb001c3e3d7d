// SPDX-License-Identifier: BSD-3-Clause
// Fuzzes parse_udp_frame: any bytes, any NIC hints. Beyond "no crash, no
// out-of-bounds read" (ASan), checks the view it returns: the payload lies
// inside the input, and an accepted frame rebuilt from its own fields and
// payload parses back to the same fields and payload.
#include <cstring>
#include <vector>

#include "udp_frame.h"

using namespace mtp::core;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  const auto ip = static_cast<csum_hint>(data[0] % 3);
  const auto l4 = static_cast<csum_hint>((data[0] / 3) % 3);
  std::span<const std::byte> frame(reinterpret_cast<const std::byte *>(data + 1), size - 1);
  udp_frame_view v;
  const frame_verdict verdict = parse_udp_frame(frame, 7400, ip, l4, v);
  if (static_cast<std::size_t>(verdict) >= frame_verdict_count) __builtin_trap();
  if (verdict != frame_verdict::accepted && verdict != frame_verdict::other_udp_port) return 0;
  if (v.payload.data() < frame.data() || v.payload.data() + v.payload.size() > frame.data() + frame.size())
    __builtin_trap();

  std::vector<std::byte> rebuilt(udp_headers_size(v.ends.src_ip.family) + v.payload.size());
  if (build_udp_frame(rebuilt, v.ends, v.payload) != rebuilt.size()) __builtin_trap();
  udp_frame_view w;
  if (parse_udp_frame(rebuilt, 7400, csum_hint::unknown, csum_hint::unknown, w) != verdict) __builtin_trap();
  if (!(w.ends.src_ip == v.ends.src_ip) || !(w.ends.dst_ip == v.ends.dst_ip) || w.ends.src_port != v.ends.src_port ||
      w.ends.dst_port != v.ends.dst_port ||
      w.payload.size() != v.payload.size() ||
      (v.payload.size() && std::memcmp(w.payload.data(), v.payload.data(), v.payload.size()) != 0))
    __builtin_trap();
  return 0;
}
