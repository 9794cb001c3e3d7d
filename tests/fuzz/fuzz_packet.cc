// SPDX-License-Identifier: BSD-3-Clause
// Fuzzes the packet parser: parse_packet on arbitrary bytes, and
// frame_reader on arbitrary frame bytes differentially against the simple
// reference decoder (reference_decoder.h): both must agree on accept or
// reject, on the reason, and on every decoded field.
#include <cstring>
#include <vector>

#include "reference_decoder.h"
#include "wire.h"

using namespace mtp::core;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const std::span<const std::byte> in(reinterpret_cast<const std::byte *>(data), size);

  // 1. Whole packets: never crash; an accepted packet's frames lie inside it.
  packet_header h;
  std::span<const std::byte> frames;
  if (parse_packet(in, h, frames) == parse_status::ok)
    if (frames.data() < in.data() || frames.data() + frames.size() > in.data() + in.size()) __builtin_trap();

  // 2. The input as a frame payload, against the reference.
  std::vector<ref::frame> want;
  const ref::verdict rv = ref::decode(data, size, want);
  frame_reader rd(in);
  std::size_t k = 0;
  parse_status st = parse_status::ok;
  while (!rd.done()) {
    frame f;
    st = rd.next(f);
    if (st != parse_status::ok) break;
    if (k >= want.size()) __builtin_trap();  // we accepted a frame the reference rejected
    const ref::frame &w = want[k++];
    if (static_cast<uint8_t>(f.type) != w.type) __builtin_trap();
    switch (f.type) {
      case frame_type::ack: {
        if (f.ack.largest != w.fields[0] || f.ack.ack_delay_us != w.fields[1] || f.ack.range_count != w.fields[2])
          __builtin_trap();
        ack_range_iter it(f.ack);
        uint64_t lo, hi;
        std::size_t r = 0;
        while (it.next(lo, hi)) {
          if (r >= w.ranges.size() || w.ranges[r].first != lo || w.ranges[r].second != hi) __builtin_trap();
          ++r;
        }
        if (it.error() || r != w.ranges.size()) __builtin_trap();
        break;
      }
      case frame_type::stream: {
        const auto &s = f.stream;
        if (s.stream_id != w.fields[1] || s.offset != w.fields[2] || s.data.size() != w.data_len) __builtin_trap();
        if (s.fin != bool(w.fields[0] & 1) || s.message != bool(w.fields[0] & 2)) __builtin_trap();
        if (s.message && (s.msg_start != s.offset - w.fields[4] || s.msg_length != w.fields[5])) __builtin_trap();
        break;
      }
      case frame_type::credit:
        if (f.credit.connection != (w.fields[0] == 0) || f.credit.max_offset != w.fields[1]) __builtin_trap();
        break;
      case frame_type::forward:
        if (f.forward.stream_id != w.fields[0] || f.forward.offset != w.fields[1] || f.forward.length != w.fields[2])
          __builtin_trap();
        break;
      case frame_type::close:
        if (f.close.error_code != w.fields[0] || f.close.reason.size() != w.fields[1]) __builtin_trap();
        break;
      case frame_type::datagram:
        if (f.datagram.size() != w.data_len) __builtin_trap();
        break;
      default:
        if (is_extension_frame(static_cast<uint8_t>(f.type)) && f.extension.size() != w.fields[0]) __builtin_trap();
        break;
    }
  }
  const bool ours_ok = st == parse_status::ok;
  if (ours_ok != (rv == ref::verdict::ok)) __builtin_trap();
  if (!ours_ok && k != want.size()) __builtin_trap();  // same frame failed
  if (st == parse_status::unknown_frame && rv != ref::verdict::unknown) __builtin_trap();
  if (st == parse_status::malformed_frame && rv != ref::verdict::malformed) __builtin_trap();
  return 0;
}
