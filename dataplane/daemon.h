// SPDX-License-Identifier: BSD-3-Clause
// run_daemon(): from a validated config to a running daemon and back to a
// clean exit, shared by mtpd and mtp-perf. Main thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "config.h"
#include "runtime.h"

namespace mtp::dp {

inline constexpr int exit_ok = 0;
inline constexpr int exit_runtime = 1;
inline constexpr int exit_usage = 2;

struct run_hooks {
  const char *name = "mtpd";  ///< prefixes messages
  /// Called by the control loop about every 10 ms with the ms since start;
  /// returning true stops the daemon as a signal would.
  std::function<bool(const runtime &, uint64_t elapsed_ms)> tick;
  /// Called after the workers stopped, before the final counters print.
  std::function<void(const runtime &)> at_exit;
};

/// This node's static key pair for security.mode required: read from
/// security.key_file (mode 0600 checked), or, if it is missing and
/// security.generate_key is set, generated and written there (its
/// directory made, mode 0700). @return false with a message in `error`.
/// Nothing to do (true) in plaintext mode.
bool load_identity(const cfg::config &c, crypto::static_keypair &out, std::string &error, bool *generated = nullptr);

/// Reads every peers[].public_key_file into peers[].public_key (security
/// required). @return false with a message naming the peer and the file.
bool load_peer_keys(cfg::config &c, std::string &error);

/// Runs until SIGINT/SIGTERM or hooks.tick says stop.
/// @return exit_ok, or exit_runtime after one clear message on stderr.
int run_daemon(cfg::config config, const std::vector<std::string> &eal_extra, const run_hooks &hooks);

}  // namespace mtp::dp
