// SPDX-License-Identifier: BSD-3-Clause
// See shm_commands.h. mtpd runs this on bytes an application controls:
// no field is trusted, nothing is read past the struct.
#include <algorithm>

#include "mtp/shm_commands.h"

namespace mtp::shm {

reason check_initiate_params(initiate_params &ip, uint32_t max_streams, bool listen) {
  if (ip.magic != initiate_params::current_magic) return reason::bad_params;
  ip.group[sizeof ip.group - 1] = '\0';
  // Asked for what this version does not do: causal or total order,
  // multicast required. Said so, never silently ignored.
  if (ip.ordering == 2 || ip.ordering == 3 || ip.multicast == 2) return reason::not_supported;
  if (ip.security > 2 || ip.ordering > 3 || ip.multicast > 2 || ip.member_keys > 1) return reason::bad_params;
  if (ip.stream_mode > 1 || ip.reliability > 2 || ip.congestion > 1 || ip.streams > max_streams)
    return reason::bad_params;
  if (ip.window_log2 != 0 && (ip.window_log2 < 12 || ip.window_log2 > 26)) return reason::bad_params;
  if (listen) return reason::none;
  if (ip.member_count > initiate_params::max_members) return reason::bad_params;
  // Expected keys name listed members (a group's come from the config).
  if (ip.member_count == 0) return ip.group[0] == '\0' || ip.member_keys ? reason::bad_params : reason::none;
  if (ip.threshold > ip.member_count) return reason::bad_params;
  for (uint32_t i = 0; i < ip.member_count; ++i) {
    if (ip.members[i] == 0 || ip.members[i] == UINT32_MAX) return reason::unknown_member;
    if (std::find(ip.members, ip.members + i, ip.members[i]) != ip.members + i) return reason::bad_params;
  }
  return reason::none;
}

}  // namespace mtp::shm
