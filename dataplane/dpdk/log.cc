// SPDX-License-Identifier: BSD-3-Clause
#include "log.h"

namespace mtp::dp {

int log_type = RTE_LOGTYPE_USER1;

void log_init(uint32_t level) {
  const int t = rte_log_register_type_and_pick_level("mtp.daemon", level);
  if (t >= 0) {
    log_type = t;
    rte_log_set_level(t, level);
  }
}

}  // namespace mtp::dp
