// SPDX-License-Identifier: BSD-3-Clause
// CRC32C (Castagnoli), the packet integrity check of unencrypted MTP
// (docs/protocol.md section 4). Uses the SSE4.2 crc32 instruction when the
// CPU has it, a table otherwise; both give the same value. Pure, any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace mtp::core {

/// CRC32C of `data` (initial value ~0, final xor ~0, as iSCSI and ext4).
uint32_t crc32c(std::span<const std::byte> data);

/// The table implementation, for tests that compare the two.
uint32_t crc32c_portable(std::span<const std::byte> data);

}  // namespace mtp::core
