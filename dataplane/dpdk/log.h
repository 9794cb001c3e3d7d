// SPDX-License-Identifier: BSD-3-Clause
// mtpd's own rte_log type ("mtp.daemon"), so `--log-level=mtp.*:debug`
// works like it does for DPDK's libraries. Call log_init() once after EAL.
#pragma once

#include <rte_log.h>

namespace mtp::dp {

/// The registered log type; valid after log_init().
extern int log_type;

/// Registers the log type at `level` (an RTE_LOG_* value).
void log_init(uint32_t level);

}  // namespace mtp::dp

#define MTP_LOG(level, ...) rte_log(RTE_LOG_##level, ::mtp::dp::log_type, "mtpd: " __VA_ARGS__)
