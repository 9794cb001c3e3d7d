// SPDX-License-Identifier: BSD-3-Clause
// Fuzzes the ARP and Neighbor Discovery readers: any bytes. Beyond "no
// crash, no out-of-bounds read" (ASan): whatever frame gets an answer, the
// answer itself must teach exactly the address and MAC it was built for.
#include <array>
#include <cstring>
#include <vector>

#include "neighbour.h"

using namespace mtp::core;

namespace {

// Where the address asked for sits in an ARP request and in an NS.
ip_address asked(std::span<const std::byte> f, uint8_t family) {
  ip_address ip;
  ip.family = family;
  const std::size_t off = family == 4 ? 38 : 62, len = family == 4 ? 4 : 16;
  if (f.size() >= off + len) std::memcpy(ip.bytes.data(), f.data() + off, len);
  return ip;
}

void check_answer(std::span<const std::byte> answer, const ip_address &ip, const std::array<uint8_t, 6> &mac) {
  neighbour n;
  if (!learn_neighbour(answer, n) || !(n.ip == ip) || n.mac != mac) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::span<const std::byte> frame(reinterpret_cast<const std::byte *>(data), size);
  neighbour n;
  if (learn_neighbour(frame, n) && n.ip.family != 4 && n.ip.family != 6) __builtin_trap();
  const std::array<uint8_t, 6> mac = {0x02, 0x11, 0x22, 0x33, 0x44, 0x55};
  std::array<std::byte, 128> reply{};
  const ip_address ip4 = asked(frame, 4);
  if (const std::size_t len = arp_reply_for(frame, ip4, mac, reply); len != 0) check_answer({reply.data(), len}, ip4, mac);
  const ip_address ip6 = asked(frame, 6);
  if (const std::size_t len = neighbour_advert_for(frame, ip6, mac, reply); len != 0) {
    if (len != neighbour_advert_size) __builtin_trap();
    check_answer({reply.data(), len}, ip6, mac);
  }
  return 0;
}
