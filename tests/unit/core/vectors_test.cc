// SPDX-License-Identifier: BSD-3-Clause
// The test vectors of docs/protocol.md appendix A, read from the document
// itself: every ```mtp-vector block's hex must parse (CRC included) and
// decode to exactly the header and frame lines written under it, in the
// canonical form describe() prints. A second implementation checks itself
// against the same blocks.
//
// MTP_PRINT_VECTORS=1 prints the vectors this codec builds (how the
// appendix was made).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "wire.h"

using namespace mtp::core;

namespace {

std::string hex(std::span<const std::byte> b) {
  static const char digits[] = "0123456789abcdef";
  std::string s;
  for (std::byte x : b) {
    s.push_back(digits[std::to_integer<int>(x) >> 4]);
    s.push_back(digits[std::to_integer<int>(x) & 15]);
  }
  return s;
}

std::vector<std::byte> unhex(const std::string &text) {
  std::vector<std::byte> out;
  int nibble = -1;
  for (char c : text) {
    int v;
    if (c >= '0' && c <= '9')
      v = c - '0';
    else if (c >= 'a' && c <= 'f')
      v = c - 'a' + 10;
    else
      continue;
    if (nibble < 0) {
      nibble = v;
    } else {
      out.push_back(static_cast<std::byte>(nibble << 4 | v));
      nibble = -1;
    }
  }
  return out;
}

std::string u(uint64_t v) { return std::to_string(v); }

// The canonical decoding: one "header:" line, then one "frame:" line each.
std::vector<std::string> describe(std::span<const std::byte> pkt) {
  std::vector<std::string> out;
  if (!pkt.empty() && std::to_integer<uint8_t>(pkt[0]) == version_negotiation_version) {
    uint32_t sender = 0;
    uint64_t cid = 0;
    version_list v;
    const parse_status st = parse_version_negotiation(pkt, sender, cid, v);
    if (st != parse_status::ok) return {"error: " + std::string(parse_status_name(st))};
    std::string versions;
    for (std::size_t i = 0; i + 4 <= v.versions.size(); i += 4)
      versions += (i ? "," : "") + u(std::to_integer<uint32_t>(v.versions[i]) << 24 |
                                     std::to_integer<uint32_t>(v.versions[i + 1]) << 16 |
                                     std::to_integer<uint32_t>(v.versions[i + 2]) << 8 |
                                     std::to_integer<uint32_t>(v.versions[i + 3]));
    char c[32];
    std::snprintf(c, sizeof c, "0x%llx", static_cast<unsigned long long>(cid));
    out.push_back("header: version=0 (version negotiation) sender=" + u(sender) + " connection=" + c +
                  " versions=" + versions);
    return out;
  }
  packet_header h;
  std::span<const std::byte> frames;
  const parse_status st = parse_packet(pkt, h, frames);
  if (st != parse_status::ok) return {"error: " + std::string(parse_status_name(st))};
  char c[32];
  std::snprintf(c, sizeof c, "0x%llx", static_cast<unsigned long long>(h.connection_id));
  std::string flags = "C";
  if (h.flags & flag_opening) flags += ",O";
  out.push_back("header: version=" + u(h.version) + " type=DATA flags=" + flags + " sender=" + u(h.sender_id) +
                " connection=" + c + " pn=" + u(h.packet_number));
  frame_reader rd(frames);
  while (!rd.done()) {
    frame f;
    const parse_status fs = rd.next(f);
    if (fs != parse_status::ok) {
      out.push_back("error: " + std::string(parse_status_name(fs)));
      break;
    }
    std::string l = "frame: ";
    switch (f.type) {
      case frame_type::padding:
        l += "PADDING";
        break;
      case frame_type::ping:
        l += "PING";
        break;
      case frame_type::ack: {
        l += "ACK largest=" + u(f.ack.largest) + " ack_delay_us=" + u(f.ack.ack_delay_us) + " ranges=";
        ack_range_iter it(f.ack);
        uint64_t lo, hi;
        bool first = true;
        while (it.next(lo, hi)) {
          l += (first ? "[" : ",[") + u(lo) + "," + u(hi) + "]";
          first = false;
        }
        break;
      }
      case frame_type::group_ack:
        l += "GROUP_ACK stream=" + u(f.group_ack.stream_id) + " stable_offset=" + u(f.group_ack.stable_offset) +
             " acked_members=" + u(f.group_ack.acked_members) + " total_members=" + u(f.group_ack.total_members);
        break;
      case frame_type::stream:
        l += "STREAM stream=" + u(f.stream.stream_id) + " offset=" + u(f.stream.offset) +
             " length=" + u(f.stream.data.size()) + " fin=" + u(f.stream.fin) + " message=" + u(f.stream.message) +
             " unordered=" + u(f.stream.unordered);
        if (f.stream.message) l += " msg_start=" + u(f.stream.msg_start) + " msg_length=" + u(f.stream.msg_length);
        l += " data=" + hex(f.stream.data);
        break;
      case frame_type::datagram:
        l += "DATAGRAM length=" + u(f.datagram.size()) + " data=" + hex(f.datagram);
        break;
      case frame_type::credit:
        l += f.credit.connection ? "CREDIT connection" : "CREDIT stream=" + u(f.credit.stream_id);
        l += " max_offset=" + u(f.credit.max_offset);
        break;
      case frame_type::heartbeat:
        l += "HEARTBEAT sequence=" + u(f.heartbeat_seq);
        break;
      case frame_type::close:
        l += "CLOSE error_code=" + u(f.close.error_code) + " reason=\"" + std::string(f.close.reason) + "\"";
        break;
      case frame_type::forward:
        l += "FORWARD stream=" + u(f.forward.stream_id) + " offset=" + u(f.forward.offset) +
             " length=" + u(f.forward.length);
        break;
      default: {
        char t[8];
        std::snprintf(t, sizeof t, "0x%02x", static_cast<unsigned>(f.type));
        l += std::string("EXTENSION type=") + t + " length=" + u(f.extension.size()) + " body=" + hex(f.extension);
        break;
      }
    }
    out.push_back(l);
  }
  return out;
}

struct vector_block {
  std::string name;
  std::vector<std::byte> bytes;
  std::vector<std::string> lines;
};

std::vector<vector_block> read_blocks() {
  std::ifstream in(std::string(MTP_SOURCE_ROOT) + "/docs/protocol.md");
  std::vector<vector_block> out;
  std::string line;
  bool inside = false;
  std::string hex_text;
  while (std::getline(in, line)) {
    if (!inside && line == "```mtp-vector") {
      inside = true;
      out.emplace_back();
      hex_text.clear();
      continue;
    }
    if (!inside) continue;
    if (line == "```") {
      out.back().bytes = unhex(hex_text);
      inside = false;
      continue;
    }
    if (line.rfind("name: ", 0) == 0)
      out.back().name = line.substr(6);
    else if (line.rfind("hex: ", 0) == 0 || line.rfind("     ", 0) == 0)
      hex_text += line.substr(5);
    else if (!line.empty())
      out.back().lines.push_back(line);
  }
  return out;
}

// The packets of appendix A, built by this codec.
std::vector<std::pair<std::string, std::vector<std::byte>>> build_vectors() {
  std::vector<std::pair<std::string, std::vector<std::byte>>> v;
  auto build = [&](const char *name, packet_header h, auto add) {
    std::vector<std::byte> out(256);
    packet_builder b(out, h);
    add(b);
    out.resize(b.finish());
    v.emplace_back(name, out);
  };
  auto bytes = [](const char *s) {
    return std::span<const std::byte>(reinterpret_cast<const std::byte *>(s), std::strlen(s));
  };
  packet_header h;
  h.sender_id = 100;
  h.connection_id = 0x1122334455667788ull;
  h.packet_number = 1234567;
  h.flags = flag_crc | flag_opening;
  build("A.1 a client's opening packet: PING and a whole message", h, [&](packet_builder &b) {
    b.append_ping();
    stream_frame s;
    s.stream_id = 0;
    s.message = true;
    s.msg_length = 5;
    s.data = bytes("hello");
    b.append_stream(s);
  });
  h.sender_id = 7;
  h.packet_number = 900;
  h.flags = flag_crc;
  build("A.2 a member's ACK of two ranges with a connection and a stream credit", h, [&](packet_builder &b) {
    const uint64_t r[4] = {1234560, 1234567, 1234550, 1234555};
    b.append_ack(r, 250);
    credit_frame c;
    c.connection = true;
    c.max_offset = 67108864;
    b.append_credit(c);
    credit_frame s;
    s.stream_id = 0;
    s.max_offset = 1048576 + 5;
    b.append_credit(s);
  });
  h.sender_id = 100;
  h.packet_number = 1234568;
  build("A.3 the second segment of an unordered message, and a byte stream's last bytes with FIN", h,
        [&](packet_builder &b) {
          stream_frame s;
          s.stream_id = 3;
          s.offset = 1300;
          s.message = true;
          s.unordered = true;
          s.msg_start = 1000;
          s.msg_length = 310;
          s.data = bytes("0123456789");
          b.append_stream(s);
          stream_frame t;
          t.stream_id = 1;
          t.offset = 4096;
          t.fin = true;
          t.data = bytes("end");
          b.append_stream(t);
        });
  h.packet_number = 1234569;
  build("A.4 a FORWARD (skip a given-up message), a DATAGRAM and a HEARTBEAT", h, [&](packet_builder &b) {
    b.append_forward({2, 65536, 1400});
    b.append_datagram(bytes("dgram"));
    b.append_heartbeat(17);
  });
  h.packet_number = 1234570;
  build("A.5 a CLOSE", h, [&](packet_builder &b) { b.append_close(0x100, "done"); });
  h.packet_number = 1234571;
  build("A.6 an extension frame a version 1 receiver skips, then a PING", h, [&](packet_builder &b) {
    b.append_extension(0x40, bytes("ext"));
    b.append_ping();
  });
  {
    std::vector<std::byte> out(64);
    out.resize(build_version_negotiation(out, 0x1122334455667788ull, 7));
    v.emplace_back("A.7 version negotiation from member 7", out);
  }
  return v;
}

}  // namespace

TEST(vectors, appendix_a_decodes_as_written) {
  if (std::getenv("MTP_PRINT_VECTORS")) {
    for (const auto &[name, pkt] : build_vectors()) {
      std::printf("```mtp-vector\nname: %s\nhex: ", name.c_str());
      const std::string h = hex(pkt);
      for (std::size_t i = 0; i < h.size(); i += 64) std::printf("%s%s\n", i ? "     " : "", h.substr(i, 64).c_str());
      for (const std::string &l : describe(pkt)) std::printf("%s\n", l.c_str());
      std::printf("```\n\n");
    }
  }
  const auto blocks = read_blocks();
  ASSERT_GE(blocks.size(), 7u) << "docs/protocol.md appendix A has its vectors";
  for (const auto &b : blocks) {
    SCOPED_TRACE(b.name);
    EXPECT_EQ(describe(b.bytes), b.lines);
  }
  // And the codec builds exactly those bytes.
  const auto built = build_vectors();
  ASSERT_EQ(built.size(), blocks.size());
  for (std::size_t i = 0; i < built.size(); ++i) {
    EXPECT_EQ(built[i].first, blocks[i].name);
    EXPECT_EQ(hex(built[i].second), hex(blocks[i].bytes)) << blocks[i].name;
  }
}
