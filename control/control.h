// SPDX-License-Identifier: BSD-3-Clause
// The control lcore's loop (it runs on the EAL main lcore): serves the
// application socket, watches link state, logs counters periodically, and
// turns a stop signal into runtime::stop for the workers. Later issues add
// membership, handshakes and NAT traversal here; workers are never blocked
// by it.
#pragma once

#include <atomic>
#include <functional>

#include "app_listener.h"
#include "runtime.h"

namespace mtp::ctl {

/// Runs until `stop_requested` is true or `tick` (called about every 10 ms
/// with the ms since start, may be empty) returns true; then sets rt.stop.
void control_run(dp::runtime &rt, app_listener &app, const std::atomic<bool> &stop_requested,
                 const std::function<bool(const dp::runtime &, uint64_t)> &tick = {});

}  // namespace mtp::ctl
