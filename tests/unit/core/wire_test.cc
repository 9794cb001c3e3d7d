// SPDX-License-Identifier: BSD-3-Clause
// The wire codec (docs/protocol.md sections 3 and 4): varints, CRC32C,
// header, every frame type round-tripped, and each rejection reason.
#include "wire.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "crc32c.h"

using namespace mtp::core;

namespace {

std::vector<std::byte> bytes_of(const std::string &s) {
  std::vector<std::byte> b(s.size());
  std::memcpy(b.data(), s.data(), s.size());
  return b;
}

packet_header header() {
  packet_header h;
  h.sender_id = 0x01020304;
  h.connection_id = 0x1122334455667788ull;
  h.packet_number = 0xabcdef;
  return h;
}

}  // namespace

TEST(wire, crc32c_known_vector) {
  // The CRC-32C check value of "123456789" (RFC 3720 appendix B.4).
  const auto b = bytes_of("123456789");
  EXPECT_EQ(crc32c(b), 0xe3069283u);
  EXPECT_EQ(crc32c_portable(b), 0xe3069283u);
  std::vector<std::byte> big(3000);  // two long-lane blocks (3 x 448 B) and every tail
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<std::byte>(i * 7);
  for (std::size_t n = 0; n <= big.size(); ++n)
    EXPECT_EQ(crc32c({big.data(), n}), crc32c_portable({big.data(), n})) << n;
}

TEST(wire, varint_boundaries) {
  const uint64_t values[] = {0, 63, 64, 16383, 16384, (1u << 30) - 1, 1u << 30, varint_max};
  const std::size_t sizes[] = {1, 1, 2, 2, 4, 4, 8, 8};
  for (std::size_t i = 0; i < 8; ++i) {
    std::vector<std::byte> buf(8);
    std::size_t pos = 0;
    ASSERT_TRUE(write_varint(buf, pos, values[i]));
    EXPECT_EQ(pos, sizes[i]);
    std::size_t rpos = 0;
    uint64_t v = 0;
    ASSERT_TRUE(read_varint(buf, rpos, v));
    EXPECT_EQ(v, values[i]);
    // One byte short is refused.
    std::size_t spos = 0;
    EXPECT_FALSE(read_varint({buf.data(), sizes[i] - 1}, spos, v));
  }
  std::vector<std::byte> buf(8);
  std::size_t pos = 0;
  EXPECT_FALSE(write_varint(buf, pos, varint_max + 1));
}

TEST(wire, every_frame_round_trips) {
  std::vector<std::byte> out(1400);
  packet_builder b(out, header());
  const uint64_t ranges[] = {90, 100, 50, 80, 10, 20};
  ASSERT_TRUE(b.append_ack(ranges, 250));
  ASSERT_TRUE(b.append_ping());
  const auto data = bytes_of("hello, group");
  stream_frame s;
  s.stream_id = 3;
  s.offset = 1000;
  s.message = true;
  s.unordered = true;
  s.msg_start = 990;
  s.msg_length = 30;
  s.data = data;
  ASSERT_TRUE(b.append_stream(s));
  stream_frame fin;
  fin.stream_id = 4;
  fin.offset = 77;
  fin.fin = true;
  ASSERT_TRUE(b.append_stream(fin));
  ASSERT_TRUE(b.append_datagram(data));
  ASSERT_TRUE(b.append_credit({true, 0, 1u << 20}));
  ASSERT_TRUE(b.append_credit({false, 5, 4096}));
  ASSERT_TRUE(b.append_heartbeat(42));
  ASSERT_TRUE(b.append_group_ack({2, 5000, 5, 8}));
  ASSERT_TRUE(b.append_forward({3, 2000, 64}));
  ASSERT_TRUE(b.append_close(static_cast<uint64_t>(0x100), "bye"));
  const std::size_t len = b.finish();

  packet_header h;
  std::span<const std::byte> frames;
  ASSERT_EQ(parse_packet({out.data(), len}, h, frames), parse_status::ok);
  EXPECT_EQ(h.sender_id, 0x01020304u);
  EXPECT_EQ(h.connection_id, 0x1122334455667788ull);
  EXPECT_EQ(h.packet_number, 0xabcdefu);
  frame_reader rd(frames);
  frame f;
  ASSERT_EQ(rd.next(f), parse_status::ok);
  ASSERT_EQ(f.type, frame_type::ack);
  EXPECT_EQ(f.ack.largest, 100u);
  EXPECT_EQ(f.ack.ack_delay_us, 250u);
  ack_range_iter it(f.ack);
  uint64_t lo, hi;
  std::vector<uint64_t> got;
  while (it.next(lo, hi)) got.insert(got.end(), {lo, hi});
  EXPECT_FALSE(it.error());
  EXPECT_EQ(got, std::vector<uint64_t>(std::begin(ranges), std::end(ranges)));
  ASSERT_EQ(rd.next(f), parse_status::ok);
  EXPECT_EQ(f.type, frame_type::ping);
  ASSERT_EQ(rd.next(f), parse_status::ok);
  ASSERT_EQ(f.type, frame_type::stream);
  EXPECT_EQ(f.stream.stream_id, 3u);
  EXPECT_EQ(f.stream.offset, 1000u);
  EXPECT_TRUE(f.stream.message);
  EXPECT_TRUE(f.stream.unordered);
  EXPECT_FALSE(f.stream.fin);
  EXPECT_EQ(f.stream.msg_start, 990u);
  EXPECT_EQ(f.stream.msg_length, 30u);
  EXPECT_EQ(std::string(reinterpret_cast<const char *>(f.stream.data.data()), f.stream.data.size()), "hello, group");
  ASSERT_EQ(rd.next(f), parse_status::ok);
  EXPECT_TRUE(f.stream.fin);
  EXPECT_EQ(f.stream.offset, 77u);
  EXPECT_TRUE(f.stream.data.empty());
  ASSERT_EQ(rd.next(f), parse_status::ok);
  ASSERT_EQ(f.type, frame_type::datagram);
  EXPECT_EQ(f.datagram.size(), data.size());
  ASSERT_EQ(rd.next(f), parse_status::ok);
  EXPECT_TRUE(f.credit.connection);
  EXPECT_EQ(f.credit.max_offset, 1u << 20);
  ASSERT_EQ(rd.next(f), parse_status::ok);
  EXPECT_FALSE(f.credit.connection);
  EXPECT_EQ(f.credit.stream_id, 5u);
  EXPECT_EQ(f.credit.max_offset, 4096u);
  ASSERT_EQ(rd.next(f), parse_status::ok);
  EXPECT_EQ(f.heartbeat_seq, 42u);
  ASSERT_EQ(rd.next(f), parse_status::ok);
  EXPECT_EQ(f.group_ack.stable_offset, 5000u);
  EXPECT_EQ(f.group_ack.acked_members, 5u);
  EXPECT_EQ(f.group_ack.total_members, 8u);
  ASSERT_EQ(rd.next(f), parse_status::ok);
  EXPECT_EQ(f.forward.offset, 2000u);
  EXPECT_EQ(f.forward.length, 64u);
  ASSERT_EQ(rd.next(f), parse_status::ok);
  EXPECT_EQ(f.close.error_code, 0x100u);
  EXPECT_EQ(f.close.reason, "bye");
  EXPECT_TRUE(rd.done());
}

TEST(wire, rejections) {
  std::vector<std::byte> out(200);
  packet_builder b(out, header());
  ASSERT_TRUE(b.append_ping());
  const std::size_t len = b.finish();
  packet_header h;
  std::span<const std::byte> frames;
  ASSERT_EQ(parse_packet({out.data(), len}, h, frames), parse_status::ok);

  EXPECT_EQ(parse_packet({out.data(), 3}, h, frames), parse_status::too_short);
  EXPECT_EQ(parse_packet({out.data(), 27}, h, frames), parse_status::too_short);
  auto bad = out;
  bad[0] = std::byte{2};
  EXPECT_EQ(parse_packet({bad.data(), len}, h, frames), parse_status::bad_version);
  bad = out;
  bad[1] = std::byte{9};
  EXPECT_EQ(parse_packet({bad.data(), len}, h, frames), parse_status::bad_type);
  bad = out;
  bad[2] = std::byte{0};
  EXPECT_EQ(parse_packet({bad.data(), len}, h, frames), parse_status::no_crc);
  for (std::size_t bit = 0; bit < len * 8; ++bit) {
    if (bit / 8 < 3) continue;  // version, type and flags have their own verdicts
    bad = out;
    bad[bit / 8] ^= static_cast<std::byte>(1u << (bit % 8));
    EXPECT_EQ(parse_packet({bad.data(), len}, h, frames), parse_status::bad_crc) << "bit " << bit;
  }
}

TEST(wire, malformed_and_unknown_frames) {
  auto check = [](std::vector<uint8_t> raw, parse_status want) {
    std::vector<std::byte> b(raw.size());
    std::memcpy(b.data(), raw.data(), raw.size());
    frame_reader rd(b);
    frame f;
    EXPECT_EQ(rd.next(f), want) << "frame starting " << int(raw[0]) << " of " << raw.size() << " bytes";
  };
  check({0x02, 5, 0, 0, 6}, parse_status::malformed_frame);        // first range below 0
  check({0x02, 5, 0, 1, 1, 2, 0}, parse_status::ok);               // [4,5] then [0,0]
  check({0x02, 5, 0, 1, 1, 3, 0}, parse_status::malformed_frame);  // gap underflows
  check({0x02, 5, 0, 1, 1}, parse_status::malformed_frame);        // ranges cut short
  check({0x04, 0x08, 0, 0, 0}, parse_status::malformed_frame);     // unknown stream flag
  check({0x04, 0x04, 0, 0, 0}, parse_status::malformed_frame);     // unordered without message
  check({0x04, 0x00, 1, 0, 5, 'a'}, parse_status::malformed_frame);  // data shorter than length
  check({0x04, 0x02, 1, 10, 1, 11, 5, 'a'}, parse_status::malformed_frame);  // message start past offset
  check({0x04, 0x02, 1, 10, 2, 0, 1, 'a', 'b'}, parse_status::malformed_frame);  // past the message end
  check({0x00, 0x00, 0x01}, parse_status::malformed_frame);        // padding then non-zero
  check({0x03, 0, 0, 9, 8}, parse_status::malformed_frame);        // more acked than members
  check({0x10}, parse_status::unknown_frame);                      // JOIN: reserved
  check({0x19}, parse_status::unknown_frame);                      // handshake: reserved
  check({0x20}, parse_status::unknown_frame);
  check({0x80}, parse_status::unknown_frame);
  check({0xff}, parse_status::unknown_frame);
  // Extensions (0x40-0x7f): type, length, body; a receiver skips them.
  check({0x7f}, parse_status::malformed_frame);                     // no length
  check({0x40, 3, 1, 2}, parse_status::malformed_frame);            // body cut short
  check({0x40, 2, 1, 2}, parse_status::ok);
  check({0x7f, 0}, parse_status::ok);
}

TEST(wire, builder_refuses_what_does_not_fit) {
  std::vector<std::byte> out(header_size + crc_size + 10);
  packet_builder b(out, header());
  std::vector<std::byte> data(20);
  stream_frame s;
  s.data = data;
  EXPECT_FALSE(b.append_stream(s));
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(b.stream_room(s), 5u);  // 10 - type - flags - id - offset - length
  s.data = {data.data(), 5};
  EXPECT_TRUE(b.append_stream(s));
  EXPECT_EQ(b.room(), 0u);
  EXPECT_FALSE(b.append_ping());
}

TEST(wire, peek_ids_reads_the_header_without_verifying) {
  std::vector<std::byte> out(100);
  packet_builder b(out, header());
  ASSERT_TRUE(b.append_ping());
  const std::size_t len = b.finish();
  uint32_t sender = 0;
  uint64_t cid = 0;
  ASSERT_TRUE(peek_ids({out.data(), len}, sender, cid));
  EXPECT_EQ(sender, 0x01020304u);
  EXPECT_EQ(cid, 0x1122334455667788ull);
  EXPECT_FALSE(peek_ids({out.data(), 15}, sender, cid));
  // The ids sit at the same place in every version (the invariants, 3.3).
  out[0] = std::byte{2};
  EXPECT_TRUE(peek_ids({out.data(), len}, sender, cid));
  EXPECT_EQ(cid, 0x1122334455667788ull);
}

TEST(wire, version_negotiation) {
  std::vector<std::byte> out(64);
  const std::size_t len = build_version_negotiation(out, 7, 9);
  ASSERT_EQ(len, 16 + 4 + crc_size);
  EXPECT_EQ(std::to_integer<int>(out[0]), 0);  // version 0 in every version
  uint32_t sender = 0;
  uint64_t cid = 0;
  version_list v;
  ASSERT_EQ(parse_version_negotiation({out.data(), len}, sender, cid, v), parse_status::ok);
  EXPECT_EQ(sender, 9u);
  EXPECT_EQ(cid, 7u);
  EXPECT_TRUE(v.lists(1));
  EXPECT_FALSE(v.lists(2));
  // A version 1 parser refuses it; a corrupted one fails its CRC.
  packet_header h;
  std::span<const std::byte> frames;
  EXPECT_EQ(parse_packet({out.data(), len}, h, frames), parse_status::bad_version);
  out[17] ^= std::byte{1};
  EXPECT_EQ(parse_version_negotiation({out.data(), len}, sender, cid, v), parse_status::bad_crc);
  EXPECT_EQ(parse_version_negotiation({out.data(), 19}, sender, cid, v), parse_status::too_short);
}
