// SPDX-License-Identifier: BSD-3-Clause
// The poll-mode worker loop, launched on each worker lcore.
#pragma once

namespace mtp::dp {

/// rte_eal_remote_launch() entry; `arg` is this lcore's worker_context.
/// Returns 0 when runtime::stop is set.
int worker_main(void *arg);

}  // namespace mtp::dp
