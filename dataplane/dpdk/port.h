// SPDX-License-Identifier: BSD-3-Clause
// Bringing ethdev ports up and down from the config. Start-up and shutdown
// only, on the main lcore.
#pragma once

#include "result.h"
#include "runtime.h"

namespace mtp::dp {

/// Creates (vdev) or finds (PCI) the device of `pc`, configures one rx and
/// one tx queue per worker, sets MTU and MAC, starts it.
/// @return the started port, or an error naming the port and the cause.
result<port_runtime> port_start(const cfg::port_config &pc, const cfg::node_config &node, unsigned workers,
                                rte_mempool *pool);

/// Logs the port's link state ("Link up at 10 Gbps FDX").
/// @return 1 up, 0 down, -1 unknown.
int port_log_link(const port_runtime &p);

/// Stops and closes the port and removes its device. Never fails loudly:
/// shutdown goes on with the other ports.
void port_stop(const port_runtime &p);

}  // namespace mtp::dp
