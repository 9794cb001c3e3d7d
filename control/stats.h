// SPDX-License-Identifier: BSD-3-Clause
// Counters as text: one JSON document (telemetry, the final summary line,
// tests) and a human table (the log). Reads counters with relaxed loads;
// callable from the control lcore or the telemetry thread.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include "runtime.h"

namespace mtp::ctl {

struct named_value {
  const char *name;
  uint64_t value;
};

/// ethdev counters of a port; empty if the port has none to give.
std::vector<named_value> port_counters(const dp::port_runtime &p);
/// One worker's counters, in MTP_WORKER_COUNTERS order.
std::vector<named_value> worker_counter_values(const dp::worker_counters &c);
/// Received frames by verdict, summed over workers.
std::vector<named_value> verdict_totals(const dp::runtime &rt);
/// Applications on app.socket: attached_now, attached, detached, refused,
/// timed_out, shed.
std::vector<named_value> app_counter_values(const dp::runtime &rt);

/// {"node":..., "ports":{name:{...}}, "workers":[{...}], "rx_verdicts":{...}}
std::string counters_json(const dp::runtime &rt);

/// Writes the counters as an indented table, one line per port and worker.
void print_counters(const dp::runtime &rt, FILE *out);

}  // namespace mtp::ctl
