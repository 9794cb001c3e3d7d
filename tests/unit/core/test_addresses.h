// SPDX-License-Identifier: BSD-3-Clause
// Addresses for the framing tests: 10.0.0.x / a.b.c.d and fd00::x.
#pragma once

#include "udp_frame.h"

namespace mtp::core::test {

inline ip_address v4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  ip_address ip;
  ip.family = 4;
  ip.bytes[0] = a, ip.bytes[1] = b, ip.bytes[2] = c, ip.bytes[3] = d;
  return ip;
}

inline ip_address v4(uint8_t last) { return v4(10, 0, 0, last); }

inline ip_address v6(uint8_t last) {
  ip_address ip;
  ip.family = 6;
  ip.bytes[0] = 0xfd;
  ip.bytes[15] = last;
  return ip;
}

}  // namespace mtp::core::test
