// SPDX-License-Identifier: BSD-3-Clause
// Fuzzes mtpd's check of the parameters an application writes for
// initiate and listen (shm::check_initiate_params): any 320 bytes, any
// stream limit. Whatever it accepts must be something mtpd can act on:
// a NUL-terminated group name, fields in range, at most 64 members, none
// twice, no zero id, a threshold within the list, expected keys only for
// listed members.
#include <algorithm>
#include <cstring>

#include "mtp/shm_commands.h"

using namespace mtp::shm;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  const uint32_t max_streams = 1 + data[0] % 64;
  const bool listen = data[1] & 1;
  initiate_params ip{};
  std::memcpy(&ip, data + 2, std::min(size - 2, sizeof ip));
  if (data[1] & 2) ip.magic = initiate_params::current_magic;  // reach past the first check
  const reason r = check_initiate_params(ip, max_streams, listen);
  if (r != reason::none) return 0;
  if (ip.magic != initiate_params::current_magic) __builtin_trap();
  if (std::memchr(ip.group, 0, sizeof ip.group) == nullptr) __builtin_trap();
  if (ip.stream_mode > 1 || ip.reliability > 2 || ip.congestion > 1 || ip.streams > max_streams) __builtin_trap();
  // Security 0-2 is the node's to judge against its mode (mtpd does).
  if (ip.security > 2 || ip.member_keys > 1 || ip.ordering > 1 || ip.multicast > 1) __builtin_trap();
  if (listen) return 0;
  if (ip.member_count > initiate_params::max_members) __builtin_trap();
  if (ip.member_count == 0 && ip.group[0] == '\0') __builtin_trap();
  if (ip.member_count == 0 && ip.member_keys) __builtin_trap();  // a group's keys are the config's
  if (ip.member_count != 0 && ip.threshold > ip.member_count) __builtin_trap();
  for (uint32_t i = 0; i < ip.member_count; ++i) {
    if (ip.members[i] == 0) __builtin_trap();
    for (uint32_t k = 0; k < i; ++k)
      if (ip.members[k] == ip.members[i]) __builtin_trap();
  }
  return 0;
}
