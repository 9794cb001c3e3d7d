// SPDX-License-Identifier: BSD-3-Clause
// Neighbour resolution on the link: ARP (RFC 826) for IPv4 and Neighbor
// Discovery (RFC 4861) for IPv6. Builds the requests mtpd sends for its
// members, answers solicitations for its own IPv6 addresses (ARP replies
// are arp_reply_for() in udp_frame.h), and reads what any received ARP or
// ND frame says about who is where. Pure functions on caller memory, like
// udp_frame.h; every offset is checked before it is read.
#pragma once

#include <array>
#include <cstddef>
#include <span>

#include "udp_frame.h"

namespace mtp::core {

/// An IP address and the link-layer address it is at.
struct neighbour {
  ip_address ip;
  std::array<uint8_t, 6> mac{};
};

inline constexpr std::size_t arp_request_size = 42;
inline constexpr std::size_t neighbour_solicitation_size = 86;
inline constexpr std::size_t neighbour_advert_size = 86;

/// Broadcast ARP request "who has `target`? tell `src_ip` at `src_mac`".
/// @return arp_request_size, or 0 if `out` is too small or an address is not IPv4.
std::size_t build_arp_request(std::span<std::byte> out, const std::array<uint8_t, 6> &src_mac,
                              const ip_address &src_ip, const ip_address &target);

/// Neighbour solicitation for `target`, sent to its solicited-node
/// multicast group, carrying our link-layer address.
/// @return neighbour_solicitation_size, or 0 as build_arp_request() for IPv6.
std::size_t build_neighbour_solicitation(std::span<std::byte> out, const std::array<uint8_t, 6> &src_mac,
                                         const ip_address &src_ip, const ip_address &target);

/// If `frame` is a valid neighbour solicitation for `ip` (hop limit 255,
/// good ICMPv6 checksum, not duplicate address detection), writes the
/// solicited advertisement that says `ip` is at `mac` into `reply`.
/// @return the reply's length (neighbour_advert_size), or 0.
std::size_t neighbour_advert_for(std::span<const std::byte> frame, const ip_address &ip,
                                 const std::array<uint8_t, 6> &mac, std::span<std::byte> reply);

/// What `frame` says about a neighbour: the sender of an ARP request or
/// reply; the source of a neighbour solicitation with a source link-layer
/// option; the target of an advertisement with a target link-layer option.
/// ND frames count only if valid (hop limit 255, good checksum).
/// @return true with `out` filled, or false.
bool learn_neighbour(std::span<const std::byte> frame, neighbour &out);

}  // namespace mtp::core
