// SPDX-License-Identifier: BSD-3-Clause
// Fuzzes the ACK-range decoder: an ACK frame built from the input is
// decoded by ack_range_iter and by the reference (128-bit arithmetic);
// both must agree on every range and on rejection. Accepted ranges are
// re-encoded with packet_builder::append_ack and must decode to the same.
#include <vector>

#include "reference_decoder.h"
#include "wire.h"

using namespace mtp::core;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::vector<uint8_t> frame_bytes;
  frame_bytes.push_back(0x02);
  frame_bytes.insert(frame_bytes.end(), data, data + size);
  std::vector<ref::frame> want;
  const ref::verdict rv = ref::decode(frame_bytes.data(), frame_bytes.size(), want);

  frame_reader rd({reinterpret_cast<const std::byte *>(frame_bytes.data()), frame_bytes.size()});
  frame f;
  const parse_status st = rd.next(f);
  const bool ref_ok_first = !want.empty() && want[0].type == 0x02;
  if ((st == parse_status::ok) != ref_ok_first) __builtin_trap();
  if (st != parse_status::ok) {
    if (rv == ref::verdict::ok) __builtin_trap();
    return 0;
  }
  std::vector<uint64_t> flat;
  ack_range_iter it(f.ack);
  uint64_t lo, hi;
  std::size_t r = 0;
  while (it.next(lo, hi)) {
    if (r >= want[0].ranges.size() || want[0].ranges[r] != std::make_pair(lo, hi)) __builtin_trap();
    flat.insert(flat.end(), {lo, hi});
    ++r;
  }
  if (it.error() || r != want[0].ranges.size()) __builtin_trap();

  // Re-encode: ranges that are disjoint and non-adjacent round-trip exactly.
  std::vector<std::byte> out(65536);
  packet_header h;
  h.sender_id = 1;  // 0 is reserved (protocol.md 3): parse_packet refuses it
  packet_builder b(out, h);
  if (b.append_ack(flat, f.ack.ack_delay_us)) {
    const std::size_t len = b.finish();
    std::span<const std::byte> frames;
    if (parse_packet({out.data(), len}, h, frames) != parse_status::ok) __builtin_trap();
    frame_reader rd2(frames);
    frame g;
    if (rd2.next(g) != parse_status::ok) __builtin_trap();
    ack_range_iter it2(g.ack);
    std::size_t i = 0;
    while (it2.next(lo, hi)) {
      if (i + 1 >= flat.size() || flat[i] != lo || flat[i + 1] != hi) __builtin_trap();
      i += 2;
    }
    if (i != flat.size()) __builtin_trap();
  }
  return 0;
}
