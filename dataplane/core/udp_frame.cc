// SPDX-License-Identifier: BSD-3-Clause
// Ethernet / IP / UDP parse and build; see udp_frame.h.
#include "udp_frame.h"

#include <cstdio>
#include <cstring>

namespace mtp::core {

namespace {

constexpr uint16_t ethertype_ipv4 = 0x0800;
constexpr uint16_t ethertype_ipv6 = 0x86dd;
constexpr uint16_t ethertype_vlan = 0x8100;
constexpr uint8_t ip_proto_udp = 17;
constexpr std::size_t ethernet_size = 14;
constexpr std::size_t vlan_tag_size = 4;
constexpr std::size_t ipv4_min_size = 20;
constexpr std::size_t ipv6_size = 40;
constexpr std::size_t udp_size = 8;

constexpr std::string_view verdict_names[] = {
#define MTP_X(name, text) #name,
    MTP_FRAME_VERDICTS(MTP_X)
#undef MTP_X
};
constexpr std::string_view verdict_texts[] = {
#define MTP_X(name, text) text,
    MTP_FRAME_VERDICTS(MTP_X)
#undef MTP_X
};

inline uint16_t load_be16(const std::byte *p) {
  return static_cast<uint16_t>((std::to_integer<unsigned>(p[0]) << 8) | std::to_integer<unsigned>(p[1]));
}
inline void store_be16(std::byte *p, uint16_t v) {
  p[0] = static_cast<std::byte>(v >> 8);
  p[1] = static_cast<std::byte>(v & 0xff);
}
inline uint8_t load_u8(const std::byte *p) { return std::to_integer<uint8_t>(*p); }

// Sum of the UDP pseudo-header (RFC 768 / RFC 8200 section 8.1).
uint32_t pseudo_header_sum(const ip_address &src, const ip_address &dst, uint16_t udp_len) {
  const std::size_t n = src.family == 6 ? 16 : 4;
  uint32_t sum = 0;
  for (std::size_t i = 0; i < n; i += 2) {
    sum += static_cast<uint32_t>((src.bytes[i] << 8) | src.bytes[i + 1]);
    sum += static_cast<uint32_t>((dst.bytes[i] << 8) | dst.bytes[i + 1]);
  }
  return sum + ip_proto_udp + udp_len;
}

}  // namespace

std::string format_ip(const ip_address &ip) {
  char buf[48];
  if (ip.family == 4) {
    std::snprintf(buf, sizeof buf, "%u.%u.%u.%u", ip.bytes[0], ip.bytes[1], ip.bytes[2], ip.bytes[3]);
    return buf;
  }
  if (ip.family != 6) return "unset";
  uint16_t g[8];
  for (int i = 0; i < 8; ++i) g[i] = static_cast<uint16_t>((ip.bytes[2 * i] << 8) | ip.bytes[2 * i + 1]);
  int best = -1, best_len = 1;  // a single zero group is not shortened
  for (int i = 0; i < 8;) {
    int j = i;
    while (j < 8 && g[j] == 0) ++j;
    if (j - i > best_len) best = i, best_len = j - i;
    i = j == i ? i + 1 : j;
  }
  std::string s;
  for (int i = 0; i < 8; ++i) {
    if (i == best) {
      s += "::";
      i += best_len - 1;
      continue;
    }
    if (!s.empty() && s.back() != ':') s += ':';
    std::snprintf(buf, sizeof buf, "%x", g[i]);
    s += buf;
  }
  return s;
}

std::string_view frame_verdict_name(frame_verdict v) {
  const auto i = static_cast<std::size_t>(v);
  return i < frame_verdict_count ? verdict_names[i] : "invalid";
}

std::string_view frame_verdict_text(frame_verdict v) {
  const auto i = static_cast<std::size_t>(v);
  return i < frame_verdict_count ? verdict_texts[i] : "invalid verdict";
}

uint16_t ones_complement_sum(std::span<const std::byte> data, uint32_t initial) {
  uint64_t sum = initial;
  std::size_t i = 0;
  for (; i + 1 < data.size(); i += 2) sum += load_be16(&data[i]);
  if (i < data.size()) sum += static_cast<uint32_t>(load_u8(&data[i]) << 8);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(sum);
}

frame_verdict parse_udp_frame(std::span<const std::byte> frame, uint16_t mtp_port, csum_hint ip_csum,
                              csum_hint l4_csum, udp_frame_view &out) {
  if (frame.size() < ethernet_size) return frame_verdict::truncated_ethernet;
  const std::byte *p = frame.data();
  std::memcpy(out.ends.dst_mac.data(), p, 6);
  std::memcpy(out.ends.src_mac.data(), p + 6, 6);
  std::size_t off = 12;
  uint16_t ethertype = load_be16(p + off);
  if (ethertype == ethertype_vlan) {
    if (frame.size() < ethernet_size + vlan_tag_size) return frame_verdict::truncated_ethernet;
    off += vlan_tag_size;
    ethertype = load_be16(p + off);
  }
  off += 2;
  const std::size_t l3 = off;
  std::size_t l4 = 0;
  std::size_t l3_end = 0;  // end of the IP datagram; link padding beyond it is ignored

  if (ethertype == ethertype_ipv4) {
    if (frame.size() < l3 + ipv4_min_size) return frame_verdict::truncated_ip;
    const uint8_t ver_ihl = load_u8(p + l3);
    if ((ver_ihl >> 4) != 4) return frame_verdict::bad_ip_version;
    const std::size_t ihl = static_cast<std::size_t>(ver_ihl & 0x0f) * 4;
    if (ihl < ipv4_min_size || l3 + ihl > frame.size()) return frame_verdict::bad_ip_header_length;
    const std::size_t total = load_be16(p + l3 + 2);
    if (total < ihl || l3 + total > frame.size()) return frame_verdict::bad_ip_total_length;
    if (ip_csum == csum_hint::bad) return frame_verdict::bad_ip_checksum;
    if (ip_csum == csum_hint::unknown && ones_complement_sum(frame.subspan(l3, ihl)) != 0xffff)
      return frame_verdict::bad_ip_checksum;
    // More-fragments flag or a non-zero fragment offset.
    if ((load_be16(p + l3 + 6) & 0x3fff) != 0) return frame_verdict::ip_fragment;
    if (load_u8(p + l3 + 9) != ip_proto_udp) return frame_verdict::not_udp;
    out.ends.src_ip.family = out.ends.dst_ip.family = 4;
    out.ends.src_ip.bytes = {};
    out.ends.dst_ip.bytes = {};
    std::memcpy(out.ends.src_ip.bytes.data(), p + l3 + 12, 4);
    std::memcpy(out.ends.dst_ip.bytes.data(), p + l3 + 16, 4);
    l4 = l3 + ihl;
    l3_end = l3 + total;
  } else if (ethertype == ethertype_ipv6) {
    if (frame.size() < l3 + ipv6_size) return frame_verdict::truncated_ip;
    if ((load_u8(p + l3) >> 4) != 6) return frame_verdict::bad_ip_version;
    const std::size_t payload_len = load_be16(p + l3 + 4);
    if (l3 + ipv6_size + payload_len > frame.size()) return frame_verdict::bad_ip_total_length;
    const uint8_t next = load_u8(p + l3 + 6);
    if (next == 44) return frame_verdict::ip_fragment;
    // Extension headers are not used by MTP; anything but UDP right away is dropped.
    if (next != ip_proto_udp) return frame_verdict::not_udp;
    out.ends.src_ip.family = out.ends.dst_ip.family = 6;
    std::memcpy(out.ends.src_ip.bytes.data(), p + l3 + 8, 16);
    std::memcpy(out.ends.dst_ip.bytes.data(), p + l3 + 24, 16);
    l4 = l3 + ipv6_size;
    l3_end = l4 + payload_len;
  } else {
    return frame_verdict::not_ip;
  }

  if (l3_end < l4 + udp_size) return frame_verdict::truncated_udp;
  const std::size_t udp_len = load_be16(p + l4 + 4);
  if (udp_len < udp_size || l4 + udp_len != l3_end) return frame_verdict::bad_udp_length;
  const uint16_t wire_csum = load_be16(p + l4 + 6);
  if (l4_csum == csum_hint::bad) return frame_verdict::bad_udp_checksum;
  if (l4_csum == csum_hint::unknown) {
    // IPv4 may omit the UDP checksum (zero); IPv6 may not (RFC 8200).
    if (wire_csum == 0) {
      if (out.ends.src_ip.family == 6) return frame_verdict::bad_udp_checksum;
    } else {
      const uint32_t pseudo = pseudo_header_sum(out.ends.src_ip, out.ends.dst_ip, static_cast<uint16_t>(udp_len));
      if (ones_complement_sum(frame.subspan(l4, udp_len), pseudo) != 0xffff) return frame_verdict::bad_udp_checksum;
    }
  }

  out.ends.src_port = load_be16(p + l4);
  out.ends.dst_port = load_be16(p + l4 + 2);
  out.l3_offset = static_cast<uint16_t>(l3);
  out.l4_offset = static_cast<uint16_t>(l4);
  out.payload = frame.subspan(l4 + udp_size, udp_len - udp_size);
  return out.ends.dst_port == mtp_port ? frame_verdict::accepted : frame_verdict::other_udp_port;
}

std::size_t write_udp_headers(std::span<std::byte> headers, const udp_endpoints &ep,
                              std::span<const std::byte> payload, checksums policy) {
  const uint8_t family = ep.src_ip.family;
  if ((family != 4 && family != 6) || ep.dst_ip.family != family) return 0;
  const std::size_t size = udp_headers_size(family);
  const std::size_t udp_len = udp_size + payload.size();
  const std::size_t ip_len = (family == 4 ? ipv4_min_size : 0) + udp_len;
  if (ip_len > 0xffff || headers.size() < size) return 0;

  std::byte *p = headers.data();
  std::memcpy(p, ep.dst_mac.data(), 6);
  std::memcpy(p + 6, ep.src_mac.data(), 6);
  store_be16(p + 12, family == 4 ? ethertype_ipv4 : ethertype_ipv6);
  std::byte *ip = p + ethernet_size;
  std::size_t l4 = 0;
  if (family == 4) {
    std::memset(ip, 0, ipv4_min_size);
    ip[0] = std::byte{0x45};
    store_be16(ip + 2, static_cast<uint16_t>(ip_len));
    store_be16(ip + 6, 0x4000);  // don't fragment
    ip[8] = std::byte{64};
    ip[9] = std::byte{ip_proto_udp};
    std::memcpy(ip + 12, ep.src_ip.bytes.data(), 4);
    std::memcpy(ip + 16, ep.dst_ip.bytes.data(), 4);
    if (policy != checksums::offload)
      store_be16(ip + 10, static_cast<uint16_t>(~ones_complement_sum({ip, ipv4_min_size})));
    l4 = ethernet_size + ipv4_min_size;
  } else {
    std::memset(ip, 0, ipv6_size);
    ip[0] = std::byte{0x60};
    store_be16(ip + 4, static_cast<uint16_t>(udp_len));
    ip[6] = std::byte{ip_proto_udp};
    ip[7] = std::byte{64};
    std::memcpy(ip + 8, ep.src_ip.bytes.data(), 16);
    std::memcpy(ip + 24, ep.dst_ip.bytes.data(), 16);
    l4 = ethernet_size + ipv6_size;
  }
  std::byte *udp = p + l4;
  store_be16(udp, ep.src_port);
  store_be16(udp + 2, ep.dst_port);
  store_be16(udp + 4, static_cast<uint16_t>(udp_len));
  store_be16(udp + 6, 0);
  const uint32_t pseudo = pseudo_header_sum(ep.src_ip, ep.dst_ip, static_cast<uint16_t>(udp_len));
  if (policy == checksums::offload) {
    // IPv4 may leave the UDP checksum out (zero); IPv6 may not (RFC 8200).
    if (family == 6) store_be16(udp + 6, ones_complement_sum({}, pseudo));
  } else if (policy == checksums::full || family == 6) {
    // The UDP header is 8 bytes (even), so its sum continues into the payload.
    uint16_t csum = static_cast<uint16_t>(~ones_complement_sum(payload, ones_complement_sum({udp, udp_size}, pseudo)));
    if (csum == 0) csum = 0xffff;  // zero means "no checksum" on the wire
    store_be16(udp + 6, csum);
  }
  return size;
}

std::size_t build_udp_headers(std::span<std::byte> frame, const udp_endpoints &ep, std::size_t payload_len,
                              checksums policy) {
  const std::size_t size = udp_headers_size(ep.src_ip.family);
  if (frame.size() < size + payload_len) return 0;
  if (write_udp_headers(frame.first(size), ep, frame.subspan(size, payload_len), policy) == 0) return 0;
  return size + payload_len;
}

std::size_t build_udp_frame(std::span<std::byte> out, const udp_endpoints &ep, std::span<const std::byte> payload,
                            checksums policy) {
  const std::size_t headers = udp_headers_size(ep.src_ip.family);
  if (ep.src_ip.family != 4 && ep.src_ip.family != 6) return 0;
  if (out.size() < headers + payload.size()) return 0;
  if (!payload.empty()) std::memmove(out.data() + headers, payload.data(), payload.size());
  return build_udp_headers(out, ep, payload.size(), policy);
}

std::size_t arp_reply_for(std::span<const std::byte> frame, const ip_address &ip, const std::array<uint8_t, 6> &mac,
                          std::span<std::byte> reply) {
  //   Ethernet(14) | htype 1 | ptype 0x0800 | hlen 6 | plen 4 | oper 1 |
  //   sender mac(6) ip(4) | target mac(6) ip(4)          (RFC 826)
  constexpr std::size_t arp_size = 28;
  if (ip.family != 4 || frame.size() < ethernet_size + arp_size || reply.size() < ethernet_size + arp_size) return 0;
  if (ip.bytes == std::array<uint8_t, 16>{}) return 0;  // 0.0.0.0 is nobody's address
  const std::byte *p = frame.data();
  if (load_be16(p + 12) != 0x0806) return 0;
  const std::byte *a = p + ethernet_size;
  if (load_be16(a) != 1 || load_be16(a + 2) != ethertype_ipv4 || load_u8(a + 4) != 6 || load_u8(a + 5) != 4 ||
      load_be16(a + 6) != 1)
    return 0;
  if (std::memcmp(a + 24, ip.bytes.data(), 4) != 0) return 0;
  std::byte *r = reply.data();
  std::memcpy(r, a + 8, 6);  // to the asker's MAC
  std::memcpy(r + 6, mac.data(), 6);
  store_be16(r + 12, 0x0806);
  std::byte *ra = r + ethernet_size;
  std::memcpy(ra, a, 6);       // htype, ptype, hlen, plen as asked
  store_be16(ra + 6, 2);       // reply
  std::memcpy(ra + 8, mac.data(), 6);
  std::memcpy(ra + 14, ip.bytes.data(), 4);
  std::memcpy(ra + 18, a + 8, 10);  // the asker's MAC and IP become the target
  return ethernet_size + arp_size;
}

}  // namespace mtp::core
