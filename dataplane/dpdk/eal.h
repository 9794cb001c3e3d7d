// SPDX-License-Identifier: BSD-3-Clause
// EAL start and stop from the config: the argument list, the checks that
// turn EAL's failures into one clear message, and the cleanup that leaves
// no files behind. Main thread, start-up and shutdown only.
#pragma once

#include <string>
#include <vector>

#include "config.h"
#include "result.h"

namespace mtp::dp {

/// The EAL argument vector for `c`, followed by `extra` (from the command
/// line after `--`). argv[0] is "mtpd".
std::vector<std::string> eal_arguments(const cfg::config &c, const std::vector<std::string> &extra);

/// Checks hugepages before EAL would fail on them: enough free pages for the
/// pools and, unless in-memory, a hugetlbfs mount.
result<void> check_hugepages(const cfg::config &c);

/// rte_eal_init() with `args`.
result<void> eal_start(const std::vector<std::string> &args);

/// rte_eal_cleanup(), then removes what EAL leaves in the file system for
/// this prefix: hugepage map files and the runtime directory.
void eal_stop(const cfg::config &c);

}  // namespace mtp::dp
