// SPDX-License-Identifier: BSD-3-Clause
// ARP and IPv6 Neighbor Discovery; see neighbour.h.
//
//   ARP      Ethernet(14) | htype 1 | ptype 0x0800 | hlen 6 | plen 4 | oper |
//            sender mac(6) ip(4) | target mac(6) ip(4)
//   NS / NA  Ethernet(14) | IPv6(40, next header 58, hop limit 255) |
//            type(1) code(1) checksum(2) | reserved or flags(4) | target(16) |
//            option: type(1) len(1, in 8-byte units) mac(6)
#include "neighbour.h"

#include <cstring>

namespace mtp::core {

namespace {

constexpr std::size_t eth = 14;
constexpr std::size_t ip6 = 40;
constexpr uint8_t icmpv6 = 58;
constexpr uint8_t type_ns = 135, type_na = 136;
constexpr uint8_t opt_source_lla = 1, opt_target_lla = 2;
constexpr std::size_t nd_body = 24;  // type .. target
constexpr std::size_t nd_option = 8;

uint16_t be16(const std::byte *p) {
  return static_cast<uint16_t>((std::to_integer<unsigned>(p[0]) << 8) | std::to_integer<unsigned>(p[1]));
}
void put16(std::byte *p, uint16_t v) {
  p[0] = static_cast<std::byte>(v >> 8);
  p[1] = static_cast<std::byte>(v & 0xff);
}
uint8_t u8(const std::byte *p) { return std::to_integer<uint8_t>(*p); }

/// ICMPv6 checksum over the pseudo-header (RFC 8200 8.1) and the message.
uint16_t icmpv6_checksum(const std::byte *ip_header, std::span<const std::byte> message) {
  uint32_t pseudo = ones_complement_sum({ip_header + 8, 32});  // source and destination
  pseudo += static_cast<uint32_t>(message.size()) + icmpv6;
  return static_cast<uint16_t>(~ones_complement_sum(message, pseudo));
}

void solicited_node(const ip_address &target, ip_address &group, std::array<uint8_t, 6> &mac) {
  group = {};
  group.family = 6;
  const uint8_t prefix[13] = {0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff};
  std::memcpy(group.bytes.data(), prefix, 13);
  std::memcpy(group.bytes.data() + 13, target.bytes.data() + 13, 3);
  mac = {0x33, 0x33, 0xff, target.bytes[13], target.bytes[14], target.bytes[15]};
}

/// Writes Ethernet + IPv6 + an ND message with one link-layer option.
std::size_t build_nd(std::span<std::byte> out, const std::array<uint8_t, 6> &dst_mac,
                     const std::array<uint8_t, 6> &src_mac, const ip_address &src, const ip_address &dst,
                     uint8_t type, uint32_t flags, const ip_address &target, uint8_t option) {
  constexpr std::size_t len = eth + ip6 + nd_body + nd_option;
  if (out.size() < len) return 0;
  std::byte *p = out.data();
  std::memset(p, 0, len);
  std::memcpy(p, dst_mac.data(), 6);
  std::memcpy(p + 6, src_mac.data(), 6);
  put16(p + 12, 0x86dd);
  std::byte *ip = p + eth;
  ip[0] = std::byte{0x60};
  put16(ip + 4, nd_body + nd_option);
  ip[6] = std::byte{icmpv6};
  ip[7] = std::byte{255};
  std::memcpy(ip + 8, src.bytes.data(), 16);
  std::memcpy(ip + 24, dst.bytes.data(), 16);
  std::byte *m = ip + ip6;
  m[0] = std::byte{type};
  m[4] = static_cast<std::byte>(flags >> 24);
  std::memcpy(m + 8, target.bytes.data(), 16);
  m[24] = std::byte{option};
  m[25] = std::byte{1};
  std::memcpy(m + 26, src_mac.data(), 6);
  put16(m + 2, icmpv6_checksum(ip, {m, nd_body + nd_option}));
  return len;
}

/// A valid ND message of `type` in `frame`: its IPv6 header and message.
bool nd_message(std::span<const std::byte> frame, uint8_t type, const std::byte *&ip,
                std::span<const std::byte> &message) {
  if (frame.size() < eth + ip6 + nd_body || be16(frame.data() + 12) != 0x86dd) return false;
  ip = frame.data() + eth;
  if ((u8(ip) >> 4) != 6 || u8(ip + 6) != icmpv6 || u8(ip + 7) != 255) return false;
  const std::size_t plen = be16(ip + 4);
  if (plen < nd_body || eth + ip6 + plen > frame.size()) return false;
  message = {ip + ip6, plen};
  if (u8(message.data()) != type || u8(message.data() + 1) != 0) return false;
  // A correct checksum sums to zero (all ones before the inversion).
  uint32_t pseudo = ones_complement_sum({ip + 8, 32});
  pseudo += static_cast<uint32_t>(plen) + icmpv6;
  return ones_complement_sum(message, pseudo) == 0xffff;
}

/// The link-layer address in option `want` of an ND message, if any.
bool nd_option_mac(std::span<const std::byte> message, uint8_t want, std::array<uint8_t, 6> &mac) {
  std::size_t off = nd_body;
  while (off + 2 <= message.size()) {
    const std::size_t len = std::size_t{u8(message.data() + off + 1)} * 8;
    if (len == 0 || off + len > message.size()) return false;  // RFC 4861 4.6: zero length is invalid
    if (u8(message.data() + off) == want && len >= 8) {
      std::memcpy(mac.data(), message.data() + off + 2, 6);
      return true;
    }
    off += len;
  }
  return false;
}

}  // namespace

std::size_t build_arp_request(std::span<std::byte> out, const std::array<uint8_t, 6> &src_mac,
                              const ip_address &src_ip, const ip_address &target) {
  if (out.size() < arp_request_size || src_ip.family != 4 || target.family != 4) return 0;
  std::byte *p = out.data();
  std::memset(p, 0, arp_request_size);
  std::memset(p, 0xff, 6);
  std::memcpy(p + 6, src_mac.data(), 6);
  put16(p + 12, 0x0806);
  std::byte *a = p + eth;
  put16(a, 1);
  put16(a + 2, 0x0800);
  a[4] = std::byte{6};
  a[5] = std::byte{4};
  put16(a + 6, 1);
  std::memcpy(a + 8, src_mac.data(), 6);
  std::memcpy(a + 14, src_ip.bytes.data(), 4);
  std::memcpy(a + 24, target.bytes.data(), 4);
  return arp_request_size;
}

std::size_t build_neighbour_solicitation(std::span<std::byte> out, const std::array<uint8_t, 6> &src_mac,
                                         const ip_address &src_ip, const ip_address &target) {
  if (src_ip.family != 6 || target.family != 6) return 0;
  ip_address group;
  std::array<uint8_t, 6> group_mac;
  solicited_node(target, group, group_mac);
  return build_nd(out, group_mac, src_mac, src_ip, group, type_ns, 0, target, opt_source_lla);
}

std::size_t neighbour_advert_for(std::span<const std::byte> frame, const ip_address &ip,
                                 const std::array<uint8_t, 6> &mac, std::span<std::byte> reply) {
  if (ip.family != 6 || ip.bytes == std::array<uint8_t, 16>{}) return 0;  // :: is nobody's address
  const std::byte *hdr = nullptr;
  std::span<const std::byte> m;
  if (!nd_message(frame, type_ns, hdr, m)) return 0;
  if (std::memcmp(m.data() + 8, ip.bytes.data(), 16) != 0) return 0;
  ip_address asker;
  asker.family = 6;
  std::memcpy(asker.bytes.data(), hdr + 8, 16);
  if (asker.bytes == std::array<uint8_t, 16>{}) return 0;  // duplicate address detection: not ours to answer
  std::array<uint8_t, 6> asker_mac;
  if (!nd_option_mac(m, opt_source_lla, asker_mac)) std::memcpy(asker_mac.data(), frame.data() + 6, 6);
  constexpr uint32_t solicited_override = 0x60000000u;
  return build_nd(reply, asker_mac, mac, ip, asker, type_na, solicited_override, ip, opt_target_lla);
}

bool learn_neighbour(std::span<const std::byte> frame, neighbour &out) {
  if (frame.size() < eth + 28) return false;
  const std::byte *p = frame.data();
  if (be16(p + 12) == 0x0806) {
    const std::byte *a = p + eth;
    if (be16(a) != 1 || be16(a + 2) != 0x0800 || u8(a + 4) != 6 || u8(a + 5) != 4) return false;
    const uint16_t op = be16(a + 6);
    if (op != 1 && op != 2) return false;
    out = {};
    out.ip.family = 4;
    std::memcpy(out.mac.data(), a + 8, 6);
    std::memcpy(out.ip.bytes.data(), a + 14, 4);
    return out.ip.bytes != std::array<uint8_t, 16>{};  // an ARP probe (sender 0.0.0.0) says nothing
  }
  const std::byte *hdr = nullptr;
  std::span<const std::byte> m;
  out = {};
  out.ip.family = 6;
  if (nd_message(frame, type_na, hdr, m)) {
    std::memcpy(out.ip.bytes.data(), m.data() + 8, 16);
    return nd_option_mac(m, opt_target_lla, out.mac);
  }
  if (nd_message(frame, type_ns, hdr, m)) {
    std::memcpy(out.ip.bytes.data(), hdr + 8, 16);
    if (out.ip.bytes == std::array<uint8_t, 16>{}) return false;
    return nd_option_mac(m, opt_source_lla, out.mac);
  }
  return false;
}

}  // namespace mtp::core
