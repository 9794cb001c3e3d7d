// SPDX-License-Identifier: BSD-3-Clause
// parse_udp_frame / build_udp_frame: round trips for IPv4 and IPv6, and one
// test per drop reason, each asserting that exact verdict.
#include "udp_frame.h"
#include "test_addresses.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

using namespace mtp::core;
using namespace mtp::core::test;

namespace {

udp_endpoints endpoints(uint8_t family) {
  udp_endpoints ep;
  ep.dst_mac = {0x02, 0, 0, 0, 0, 2};
  ep.src_mac = {0x02, 0, 0, 0, 0, 1};
  ep.src_ip = family == 4 ? v4(10, 0, 0, 1) : v6(1);
  ep.dst_ip = family == 4 ? v4(10, 0, 0, 2) : v6(2);
  ep.src_port = 5000;
  ep.dst_port = 7400;
  return ep;
}

std::vector<std::byte> payload_of(std::size_t n) {
  std::vector<std::byte> p(n);
  for (std::size_t i = 0; i < n; ++i) p[i] = static_cast<std::byte>(i * 7 + 3);
  return p;
}

std::vector<std::byte> frame(uint8_t family, std::size_t payload) {
  std::vector<std::byte> f(udp_headers_size(family) + payload);
  const auto p = payload_of(payload);
  EXPECT_EQ(build_udp_frame(f, endpoints(family), p), f.size());
  return f;
}

frame_verdict parse(const std::vector<std::byte> &f, csum_hint ip = csum_hint::unknown,
                    csum_hint l4 = csum_hint::unknown) {
  udp_frame_view v;
  return parse_udp_frame(f, 7400, ip, l4, v);
}

}  // namespace

TEST(udp_frame, ipv4_round_trip) {
  const auto f = frame(4, 100);
  udp_frame_view v;
  ASSERT_EQ(parse_udp_frame(f, 7400, csum_hint::unknown, csum_hint::unknown, v), frame_verdict::accepted);
  EXPECT_EQ(v.ends.src_ip, v4(10, 0, 0, 1));
  EXPECT_EQ(v.ends.dst_ip, v4(10, 0, 0, 2));
  EXPECT_EQ(v.ends.src_port, 5000);
  EXPECT_EQ(v.ends.dst_port, 7400);
  EXPECT_EQ(v.l3_offset, 14);
  EXPECT_EQ(v.l4_offset, 34);
  ASSERT_EQ(v.payload.size(), 100u);
  const auto p = payload_of(100);
  EXPECT_TRUE(std::equal(p.begin(), p.end(), v.payload.begin()));
  EXPECT_EQ(v.ends.src_mac[5], 1);
  EXPECT_EQ(v.ends.dst_mac[5], 2);
}

TEST(udp_frame, ipv6_round_trip) {
  const auto f = frame(6, 33);
  udp_frame_view v;
  ASSERT_EQ(parse_udp_frame(f, 7400, csum_hint::unknown, csum_hint::unknown, v), frame_verdict::accepted);
  EXPECT_EQ(v.ends.src_ip, v6(1));
  EXPECT_EQ(v.ends.dst_ip, v6(2));
  EXPECT_EQ(v.l4_offset, 54);
  EXPECT_EQ(v.payload.size(), 33u);
}

TEST(udp_frame, known_ipv4_header_checksum) {
  // 10.0.0.1 -> 10.0.0.2, UDP, 128 B datagram, TTL 64, DF, id 0: 0x266b,
  // as computed independently with Python's struct over the same header.
  const auto f = frame(4, 100);
  EXPECT_EQ(std::to_integer<int>(f[24]), 0x26);
  EXPECT_EQ(std::to_integer<int>(f[25]), 0x6b);
}

TEST(udp_frame, empty_payload) {
  const auto f = frame(4, 0);
  udp_frame_view v;
  ASSERT_EQ(parse_udp_frame(f, 7400, csum_hint::unknown, csum_hint::unknown, v), frame_verdict::accepted);
  EXPECT_TRUE(v.payload.empty());
}

TEST(udp_frame, link_padding_is_ignored) {
  auto f = frame(4, 2);  // 44 B, padded by the link to 60
  f.resize(60, std::byte{0});
  udp_frame_view v;
  ASSERT_EQ(parse_udp_frame(f, 7400, csum_hint::unknown, csum_hint::unknown, v), frame_verdict::accepted);
  EXPECT_EQ(v.payload.size(), 2u);
}

TEST(udp_frame, vlan_tag_is_skipped) {
  auto f = frame(4, 10);
  const std::byte tag[4] = {std::byte{0x81}, std::byte{0x00}, std::byte{0x00}, std::byte{0x05}};
  f.insert(f.begin() + 12, tag, tag + 4);
  udp_frame_view v;
  ASSERT_EQ(parse_udp_frame(f, 7400, csum_hint::unknown, csum_hint::unknown, v), frame_verdict::accepted);
  EXPECT_EQ(v.l3_offset, 18);
}

TEST(udp_frame, other_port) {
  udp_frame_view v;
  const auto f = frame(4, 10);
  EXPECT_EQ(parse_udp_frame(f, 9999, csum_hint::unknown, csum_hint::unknown, v), frame_verdict::other_udp_port);
  EXPECT_EQ(v.ends.dst_port, 7400);
}

TEST(udp_frame, truncated_ethernet) {
  EXPECT_EQ(parse(std::vector<std::byte>(13)), frame_verdict::truncated_ethernet);
}

TEST(udp_frame, arp_is_not_ip) {
  auto f = frame(4, 10);
  f[12] = std::byte{0x08};
  f[13] = std::byte{0x06};
  EXPECT_EQ(parse(f), frame_verdict::not_ip);
}

TEST(udp_frame, every_truncation_is_caught) {
  for (uint8_t family : {4, 6}) {
    const auto f = frame(family, 20);
    for (std::size_t n = 0; n < f.size(); ++n) {
      std::vector<std::byte> cut(f.begin(), f.begin() + static_cast<long>(n));
      EXPECT_NE(parse(cut), frame_verdict::accepted) << "family " << int(family) << " cut at " << n;
    }
  }
}

TEST(udp_frame, bad_ip_version) {
  auto f = frame(4, 10);
  f[14] = std::byte{0x65};
  EXPECT_EQ(parse(f), frame_verdict::bad_ip_version);
}

TEST(udp_frame, bad_ip_header_length) {
  auto f = frame(4, 10);
  f[14] = std::byte{0x44};  // IHL 16 bytes
  EXPECT_EQ(parse(f), frame_verdict::bad_ip_header_length);
}

TEST(udp_frame, bad_ip_total_length) {
  auto f = frame(4, 10);
  f[17] = std::byte{0xff};  // longer than the frame
  EXPECT_EQ(parse(f), frame_verdict::bad_ip_total_length);
}

TEST(udp_frame, bad_ip_checksum_in_software_and_from_nic) {
  auto f = frame(4, 10);
  f[22] = std::byte{63};  // TTL changed, checksum not updated
  EXPECT_EQ(parse(f), frame_verdict::bad_ip_checksum);
  EXPECT_EQ(parse(frame(4, 10), csum_hint::bad), frame_verdict::bad_ip_checksum);
  // A NIC verdict of good is trusted without recomputing.
  EXPECT_NE(parse(f, csum_hint::good), frame_verdict::bad_ip_checksum);
}

TEST(udp_frame, fragments_are_dropped) {
  auto f = frame(4, 10);
  f[20] = std::byte{0x20};  // more fragments
  // Recompute the header checksum so only the flag differs.
  f[24] = f[25] = std::byte{0};
  const uint16_t sum = static_cast<uint16_t>(~ones_complement_sum({f.data() + 14, 20}));
  f[24] = static_cast<std::byte>(sum >> 8);
  f[25] = static_cast<std::byte>(sum & 0xff);
  EXPECT_EQ(parse(f), frame_verdict::ip_fragment);
}

TEST(udp_frame, tcp_is_not_udp) {
  auto f = frame(4, 10);
  f[23] = std::byte{6};
  EXPECT_EQ(parse(f, csum_hint::good), frame_verdict::not_udp);
}

TEST(udp_frame, bad_udp_length) {
  auto f = frame(4, 10);
  f[38] = std::byte{0};
  f[39] = std::byte{9};  // 9 < 8 + 10
  EXPECT_EQ(parse(f), frame_verdict::bad_udp_length);
}

TEST(udp_frame, bad_udp_checksum_each_payload_bit) {
  const auto good = frame(4, 16);
  for (std::size_t bit = 0; bit < 16 * 8; ++bit) {
    auto f = good;
    f[42 + bit / 8] ^= static_cast<std::byte>(1u << (bit % 8));
    EXPECT_EQ(parse(f), frame_verdict::bad_udp_checksum) << "bit " << bit;
  }
  EXPECT_EQ(parse(good, csum_hint::unknown, csum_hint::bad), frame_verdict::bad_udp_checksum);
}

TEST(udp_frame, zero_udp_checksum_allowed_on_ipv4_only) {
  auto f4 = frame(4, 10);
  f4[40] = f4[41] = std::byte{0};
  EXPECT_EQ(parse(f4), frame_verdict::accepted);
  auto f6 = frame(6, 10);
  f6[60] = f6[61] = std::byte{0};
  EXPECT_EQ(parse(f6), frame_verdict::bad_udp_checksum);
}

TEST(udp_frame, checksum_left_out_on_ipv4_only_when_asked) {
  const auto p = payload_of(40);
  std::vector<std::byte> f4(udp_headers_size(4) + 40), f6(udp_headers_size(6) + 40);
  ASSERT_EQ(build_udp_frame(f4, endpoints(4), p, checksums::no_udp4), f4.size());
  EXPECT_EQ(std::to_integer<int>(f4[40]) | std::to_integer<int>(f4[41]), 0) << "IPv4: zero, absent";
  EXPECT_EQ(parse(f4), frame_verdict::accepted);
  ASSERT_EQ(build_udp_frame(f6, endpoints(6), p, checksums::no_udp4), f6.size());
  EXPECT_NE(std::to_integer<int>(f6[60]) | std::to_integer<int>(f6[61]), 0) << "IPv6 always has one";
  EXPECT_EQ(parse(f6), frame_verdict::accepted);
}

// Headers written apart from their payload (a chained segment) equal the
// contiguous frame, byte for byte, for every policy and odd and even sizes.
TEST(udp_frame, headers_apart_from_the_payload_match_the_whole_frame) {
  for (uint8_t family : {4, 6}) {
    for (std::size_t n : {0u, 1u, 57u, 1400u}) {
      for (auto policy : {checksums::full, checksums::no_udp4, checksums::offload}) {
        const auto p = payload_of(n);
        std::vector<std::byte> whole(udp_headers_size(family) + n), apart(udp_headers_size(family));
        ASSERT_EQ(build_udp_frame(whole, endpoints(family), p, policy), whole.size());
        ASSERT_EQ(write_udp_headers(apart, endpoints(family), p, policy), apart.size());
        EXPECT_TRUE(std::equal(apart.begin(), apart.end(), whole.begin()))
            << "family " << int(family) << " size " << n << " policy " << int(policy);
        if (policy != checksums::offload) {
          EXPECT_EQ(parse(whole), frame_verdict::accepted);
        }
      }
    }
  }
  std::vector<std::byte> small(10);
  EXPECT_EQ(write_udp_headers(small, endpoints(4), payload_of(4)), 0u);
}

// Offload leaves the IPv4 header checksum zero (the NIC fills it) and seeds
// the IPv6 UDP checksum with the pseudo-header sum; completing them the way
// a NIC does gives a frame that parses.
TEST(udp_frame, offload_leaves_what_the_nic_completes) {
  const auto p = payload_of(33);
  std::vector<std::byte> f4(udp_headers_size(4) + 33), f6(udp_headers_size(6) + 33);
  ASSERT_EQ(build_udp_frame(f4, endpoints(4), p, checksums::offload), f4.size());
  EXPECT_EQ(std::to_integer<int>(f4[24]) | std::to_integer<int>(f4[25]), 0);
  EXPECT_EQ(std::to_integer<int>(f4[40]) | std::to_integer<int>(f4[41]), 0);
  EXPECT_EQ(parse(f4), frame_verdict::bad_ip_checksum);
  const uint16_t ip_csum = static_cast<uint16_t>(~ones_complement_sum({f4.data() + 14, 20}));
  f4[24] = static_cast<std::byte>(ip_csum >> 8);
  f4[25] = static_cast<std::byte>(ip_csum & 0xff);
  EXPECT_EQ(parse(f4), frame_verdict::accepted);

  ASSERT_EQ(build_udp_frame(f6, endpoints(6), p, checksums::offload), f6.size());
  const uint16_t seed = static_cast<uint16_t>((std::to_integer<unsigned>(f6[60]) << 8) | std::to_integer<unsigned>(f6[61]));
  EXPECT_NE(seed, 0);
  // The NIC sums the UDP header and payload over the seeded field.
  const uint16_t udp_csum = static_cast<uint16_t>(~ones_complement_sum({f6.data() + 54, f6.size() - 54}));
  f6[60] = static_cast<std::byte>(udp_csum >> 8);
  f6[61] = static_cast<std::byte>(udp_csum & 0xff);
  EXPECT_EQ(parse(f6), frame_verdict::accepted);
}

TEST(udp_frame, formats_addresses_like_rfc_5952) {
  EXPECT_EQ(format_ip(v4(10, 0, 0, 1)), "10.0.0.1");
  EXPECT_EQ(format_ip(v6(1)), "fd00::1");
  ip_address a;
  a.family = 6;
  EXPECT_EQ(format_ip(a), "::");
  a.bytes = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1};
  EXPECT_EQ(format_ip(a), "2001:db8:0:1::1");  // one zero group stays, the longer run shortens
  a.bytes = {0x20, 0x01, 0, 0, 0, 0, 0xab, 0xcd, 0, 0, 0, 0, 0, 0, 0, 0};
  EXPECT_EQ(format_ip(a), "2001:0:0:abcd::");
  EXPECT_EQ(format_ip(ip_address{}), "unset");
}

TEST(udp_frame, arp_request_for_us_gets_a_reply) {
  // An ARP request "who has 10.0.0.1? tell 10.0.0.2 at 02:..:02".
  std::vector<std::byte> req(60, std::byte{0});
  const uint8_t head[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 2, 0x08, 0x06,
                          0, 1, 0x08, 0x00, 6, 4, 0, 1, 0x02, 0, 0, 0, 0, 2, 10, 0, 0, 2,
                          0, 0, 0, 0, 0, 0, 10, 0, 0, 1};
  for (std::size_t i = 0; i < sizeof head; ++i) req[i] = static_cast<std::byte>(head[i]);
  const std::array<uint8_t, 6> mac{0x02, 0, 0, 0, 0, 1};
  std::vector<std::byte> reply(64);
  ASSERT_EQ(arp_reply_for(req, v4(10, 0, 0, 1), mac, reply), 42u);
  const uint8_t want[] = {0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 2,
                          0x02, 0, 0, 0, 0, 1, 10, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 10, 0, 0, 2};
  for (std::size_t i = 0; i < sizeof want; ++i) EXPECT_EQ(std::to_integer<uint8_t>(reply[i]), want[i]) << i;
  EXPECT_EQ(arp_reply_for(req, v4(10, 0, 0, 9), mac, reply), 0u) << "not our address";
  req[21] = std::byte{2};
  EXPECT_EQ(arp_reply_for(req, v4(10, 0, 0, 1), mac, reply), 0u) << "a reply is not answered";
  EXPECT_EQ(arp_reply_for({req.data(), 41}, v4(10, 0, 0, 1), mac, reply), 0u) << "truncated";
}

TEST(udp_frame, build_refuses_what_does_not_fit) {
  std::vector<std::byte> small(41);
  EXPECT_EQ(build_udp_frame(small, endpoints(4), {}), 0u);
  udp_endpoints mixed = endpoints(4);
  mixed.dst_ip = v6(2);
  std::vector<std::byte> big(200);
  EXPECT_EQ(build_udp_frame(big, mixed, {}), 0u);
}

TEST(udp_frame, verdict_names_come_from_one_list) {
  EXPECT_EQ(frame_verdict_name(frame_verdict::accepted), "accepted");
  EXPECT_EQ(frame_verdict_name(frame_verdict::bad_udp_checksum), "bad_udp_checksum");
  EXPECT_EQ(frame_verdict_name(frame_verdict::other_udp_port), "other_udp_port");
  EXPECT_EQ(frame_verdict_count, 14u);
}
