// SPDX-License-Identifier: BSD-3-Clause
// mtpd's commands on the DPDK telemetry socket:
//   /mtp/info        node, version, ports, workers
//   /mtp/ports       ethdev counters per port
//   /mtp/workers     counters per worker lcore
//   /mtp/rx_verdicts received frames by verdict, summed over workers
// Query with: dpdk-telemetry.py -f <file prefix>, then e.g. /mtp/workers.
// The callbacks run on DPDK's telemetry thread and only read counters.
#pragma once

#include "runtime.h"

namespace mtp::ctl {

/// Registers the commands for `rt`, which must outlive telemetry_detach().
void telemetry_attach(const dp::runtime &rt);

/// Makes the commands answer "not running" from now on (shutdown).
void telemetry_detach();

}  // namespace mtp::ctl
