// SPDX-License-Identifier: BSD-3-Clause
// ARP and Neighbor Discovery: the frames mtpd builds equal the ones scapy
// builds (byte for byte, checksums included), answers go to the asker,
// and what a frame says about a neighbour is read only from valid frames.
#include "neighbour.h"
#include "test_addresses.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

using namespace mtp::core;
using namespace mtp::core::test;

namespace {

std::array<uint8_t, 6> mac(uint8_t last) { return {0x02, 0, 0, 0, 0, last}; }

std::string hex(std::span<const std::byte> b) {
  static const char *digits = "0123456789abcdef";
  std::string s;
  for (auto x : b) {
    s += digits[std::to_integer<unsigned>(x) >> 4];
    s += digits[std::to_integer<unsigned>(x) & 15];
  }
  return s;
}

// scapy: Ether()/IPv6(src='fd00::1', dst='ff02::1:ff00:2', hlim=255)/
//        ICMPv6ND_NS(tgt='fd00::2')/ICMPv6NDOptSrcLLAddr('02:00:00:00:00:01')
const char *scapy_ns =
    "3333ff00000202000000000186dd6000000000203afffd000000000000000000000000000001ff0200000000000000000001ff000002"
    "87007d9700000000fd0000000000000000000000000000020101020000000001";
// scapy: the solicited, override advertisement fd00::2 -> fd00::1 with the
// target link-layer option 02:00:00:00:00:02.
const char *scapy_na =
    "02000000000102000000000286dd6000000000203afffd000000000000000000000000000002fd000000000000000000000000000001"
    "88001c9a60000000fd0000000000000000000000000000020201020000000002";

TEST(neighbour, solicitation_and_advert_match_scapy) {
  std::vector<std::byte> ns(neighbour_solicitation_size), na(neighbour_advert_size);
  ASSERT_EQ(build_neighbour_solicitation(ns, mac(1), v6(1), v6(2)), ns.size());
  EXPECT_EQ(hex(ns), scapy_ns);
  ASSERT_EQ(neighbour_advert_for(ns, v6(2), mac(2), na), na.size());
  EXPECT_EQ(hex(na), scapy_na);
}

TEST(neighbour, learns_from_solicitations_and_adverts) {
  std::vector<std::byte> ns(neighbour_solicitation_size), na(neighbour_advert_size);
  build_neighbour_solicitation(ns, mac(1), v6(1), v6(2));
  neighbour n;
  ASSERT_TRUE(learn_neighbour(ns, n));  // the asker, from its source link-layer option
  EXPECT_EQ(n.ip, v6(1));
  EXPECT_EQ(n.mac, mac(1));
  neighbour_advert_for(ns, v6(2), mac(2), na);
  ASSERT_TRUE(learn_neighbour(na, n));
  EXPECT_EQ(n.ip, v6(2));
  EXPECT_EQ(n.mac, mac(2));
}

TEST(neighbour, answers_only_valid_solicitations_for_its_address) {
  std::vector<std::byte> ns(neighbour_solicitation_size), na(neighbour_advert_size);
  build_neighbour_solicitation(ns, mac(1), v6(1), v6(2));
  EXPECT_EQ(neighbour_advert_for(ns, v6(3), mac(3), na), 0u) << "not our address";
  EXPECT_EQ(neighbour_advert_for(ns, v4(2), mac(3), na), 0u) << "not IPv6";
  auto hop = ns;
  hop[14 + 7] = std::byte{254};  // routed: RFC 4861 says drop
  EXPECT_EQ(neighbour_advert_for(hop, v6(2), mac(2), na), 0u);
  neighbour n;
  EXPECT_FALSE(learn_neighbour(hop, n));
  for (std::size_t bit = 0; bit < (ns.size() - 54) * 8; ++bit) {
    auto bad = ns;
    bad[54 + bit / 8] ^= static_cast<std::byte>(1u << (bit % 8));
    EXPECT_EQ(neighbour_advert_for(bad, v6(2), mac(2), na), 0u) << "bit " << bit;
  }
  auto dad = ns;  // duplicate address detection: source ::, no option
  std::memset(dad.data() + 14 + 8, 0, 16);
  EXPECT_EQ(neighbour_advert_for(dad, v6(2), mac(2), na), 0u);
  for (std::size_t len = 0; len < ns.size(); ++len) {
    EXPECT_EQ(neighbour_advert_for({ns.data(), len}, v6(2), mac(2), na), 0u) << len;
    EXPECT_FALSE(learn_neighbour({ns.data(), len}, n)) << len;
  }
  std::vector<std::byte> small(40);
  EXPECT_EQ(neighbour_advert_for(ns, v6(2), mac(2), small), 0u);
}

TEST(neighbour, arp_request_is_answered_and_both_teach) {
  std::vector<std::byte> req(arp_request_size), rep(64);
  ASSERT_EQ(build_arp_request(req, mac(1), v4(1), v4(2)), req.size());
  EXPECT_EQ(hex({req.data(), 14}), "ffffffffffff0200000000010806");
  neighbour n;
  ASSERT_TRUE(learn_neighbour(req, n));
  EXPECT_EQ(n.ip, v4(1));
  EXPECT_EQ(n.mac, mac(1));
  ASSERT_EQ(arp_reply_for(req, v4(2), mac(2), rep), 42u);
  ASSERT_TRUE(learn_neighbour({rep.data(), 42}, n));
  EXPECT_EQ(n.ip, v4(2));
  EXPECT_EQ(n.mac, mac(2));
  EXPECT_EQ(build_arp_request(req, mac(1), v6(1), v4(2)), 0u);
  auto probe = req;  // sender 0.0.0.0
  std::memset(probe.data() + 28, 0, 4);
  EXPECT_FALSE(learn_neighbour(probe, n));
}

}  // namespace
