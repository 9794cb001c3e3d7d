// SPDX-License-Identifier: BSD-3-Clause
// Ethernet / IPv4 / IPv6 / UDP framing around MTP packets, on byte views.
//
// The binding hands every received frame to parse_udp_frame() and gets either
// a view of the UDP payload (to the MTP engine) or exactly one drop reason,
// which it counts. build_udp_frame() writes the headers for a payload. Pure
// functions on caller memory: no allocation, no DPDK, callable from any
// thread. Offsets are bounds-checked before every read.
//
//   Ethernet  dst(6) src(6) [0x8100 tci(2)] type(2)
//   IPv4      ver/ihl tos len(2) id(2) frag(2) ttl proto csum(2) src(4) dst(4)
//   IPv6      ver/tc/flow(4) plen(2) next hop src(16) dst(16)
//   UDP       sport(2) dport(2) len(2) csum(2)
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace mtp::core {

/// Why a received frame did not reach the engine. One list gives the enum,
/// the counter names and their descriptions (mtpctl and telemetry print them).
#define MTP_FRAME_VERDICTS(X)                                                  \
  X(accepted, "UDP datagram to the MTP port, handed to the engine")            \
  X(truncated_ethernet, "shorter than an Ethernet header")                     \
  X(not_ip, "ethertype neither IPv4 nor IPv6 (ARP, LLDP, ...)")                \
  X(truncated_ip, "shorter than its IP header")                                \
  X(bad_ip_version, "IP version field does not match the ethertype")           \
  X(bad_ip_header_length, "IPv4 header length below 20 bytes or past the end") \
  X(bad_ip_total_length, "IP length field disagrees with the frame")           \
  X(bad_ip_checksum, "IPv4 header checksum wrong")                             \
  X(ip_fragment, "IP fragment (MTP never fragments)")                          \
  X(not_udp, "IP payload is not UDP")                                          \
  X(truncated_udp, "shorter than a UDP header")                                \
  X(bad_udp_length, "UDP length field disagrees with the IP length")           \
  X(bad_udp_checksum, "UDP checksum wrong")                                    \
  X(other_udp_port, "UDP to a port other than the MTP port")

enum class frame_verdict : uint8_t {
#define MTP_X(name, text) name,
  MTP_FRAME_VERDICTS(MTP_X)
#undef MTP_X
      count_
};

inline constexpr std::size_t frame_verdict_count = static_cast<std::size_t>(frame_verdict::count_);

/// Counter name of a verdict ("bad_udp_checksum").
std::string_view frame_verdict_name(frame_verdict v);
/// One-line description of a verdict.
std::string_view frame_verdict_text(frame_verdict v);

/// What the NIC already verified. `unknown` makes the parser compute the
/// checksum in software; `good`/`bad` are trusted as they are.
enum class csum_hint : uint8_t { unknown, good, bad };

struct ip_address {
  uint8_t family = 0;  ///< 4 or 6; 0 = unset
  std::array<uint8_t, 16> bytes{};  ///< IPv4 uses the first four
  bool operator==(const ip_address &) const = default;
};

/// "10.0.0.1" or "fd00::1" (RFC 5952: lower case, longest zero run as ::).
std::string format_ip(const ip_address &ip);

/// Addresses and ports of a frame, as parsed or as to build. Both IPs have
/// the same family.
struct udp_endpoints {
  std::array<uint8_t, 6> dst_mac{};
  std::array<uint8_t, 6> src_mac{};
  ip_address src_ip;
  ip_address dst_ip;
  uint16_t src_port = 0;
  uint16_t dst_port = 0;
};

/// A parsed frame: its endpoints and where the payload sits.
struct udp_frame_view {
  udp_endpoints ends;
  uint16_t l3_offset = 0;  ///< IP header offset in the frame
  uint16_t l4_offset = 0;  ///< UDP header offset in the frame
  std::span<const std::byte> payload;
};

/// Parses a frame.
/// @param frame    the whole Ethernet frame
/// @param mtp_port UDP port the MTP engine listens on (host order)
/// @param ip_csum  NIC verdict on the IPv4 header checksum
/// @param l4_csum  NIC verdict on the UDP checksum
/// @param out      filled when the verdict is `accepted` or `other_udp_port`
/// @return `accepted`, or the one reason the frame is dropped.
frame_verdict parse_udp_frame(std::span<const std::byte> frame, uint16_t mtp_port, csum_hint ip_csum,
                              csum_hint l4_csum, udp_frame_view &out);

/// Size of the Ethernet + IP + UDP headers build_udp_frame() writes.
constexpr std::size_t udp_headers_size(uint8_t family) { return family == 6 ? 14 + 40 + 8 : 14 + 20 + 8; }

/// Who computes which checksum of a built frame.
enum class checksums : uint8_t {
  full,     ///< IPv4 header and UDP checksums, computed here
  no_udp4,  ///< as full, but IPv4 frames carry no UDP checksum (zero): for MTP
            ///< packets, whose CRC32C covers every byte (protocol.md 3.4)
  offload,  ///< the NIC computes them: IPv4 header checksum left zero and no
            ///< UDP checksum; IPv6 UDP checksum seeded with the pseudo-header
            ///< sum, as DPDK's checksum offload expects
};

/// Writes Ethernet, IP and UDP headers (udp_headers_size bytes) into
/// `headers` for `payload`, which may live elsewhere (a chained segment).
/// @return the header size, or 0 if `headers` is too small, the families
///         differ or the datagram would exceed 65535 bytes.
std::size_t write_udp_headers(std::span<std::byte> headers, const udp_endpoints &ep,
                              std::span<const std::byte> payload, checksums policy = checksums::full);

/// Writes Ethernet, IP and UDP headers followed by a copy of payload.
/// @return bytes written, or 0 as write_udp_headers().
std::size_t build_udp_frame(std::span<std::byte> out, const udp_endpoints &ep, std::span<const std::byte> payload,
                            checksums policy = checksums::full);

/// Writes Ethernet, IP and UDP headers in front of a payload already in
/// place at frame[udp_headers_size(family)...].
/// @return the frame's length, or 0 as build_udp_frame().
std::size_t build_udp_headers(std::span<std::byte> frame, const udp_endpoints &ep, std::size_t payload_len,
                              checksums policy = checksums::full);

/// If `frame` is an ARP request (Ethernet, IPv4) for `ip`, writes the
/// reply that says `ip` is at `mac` into `reply` (at least 42 bytes).
/// @return the reply's length, or 0 if the frame is not such a request.
std::size_t arp_reply_for(std::span<const std::byte> frame, const ip_address &ip, const std::array<uint8_t, 6> &mac,
                          std::span<std::byte> reply);

/// RFC 1071 ones'-complement sum of `data` folded into 16 bits, starting
/// from `initial` (for pseudo-headers). Not inverted.
uint16_t ones_complement_sum(std::span<const std::byte> data, uint32_t initial = 0);

}  // namespace mtp::core
