// SPDX-License-Identifier: BSD-3-Clause
// A region in a memfd: mtpd creates and seals it, the application maps the
// descriptor it received and checks it (shm_layout.h). Slow path: errors
// are messages for the operator or the application's log.
#pragma once

#include <cstdint>
#include <string>

#include "mtp/shm_layout.h"

namespace mtp::shm {

/// A mapped region; owns its mapping and descriptor. Move-only.
class mapped_region {
 public:
  mapped_region() = default;
  mapped_region(const mapped_region &) = delete;
  mapped_region &operator=(const mapped_region &) = delete;
  mapped_region(mapped_region &&o) noexcept { *this = static_cast<mapped_region &&>(o); }
  mapped_region &operator=(mapped_region &&o) noexcept;
  ~mapped_region() { reset(); }

  /// Creates a region for `plan` in a new memfd: hugepage-backed when
  /// `try_hugepages` and the host has the pages (MFD_HUGETLB), else normal
  /// pages; sealed against shrinking and growing, so no one holding the
  /// descriptor can truncate it under the other side's mapping (a SIGBUS).
  /// Its header carries `daemon_pid` and `node_id` (this node's MTP member id).
  /// @return an empty string, or why it failed.
  std::string create(const region_plan &plan, uint64_t daemon_pid, uint32_t node_id, bool try_hugepages);

  /// Maps a region received as `fd` (taken over, closed on failure) and
  /// checks its header. @return an empty string, or why it cannot be used.
  std::string attach(int fd);

  void reset();

  void *base() const { return base_; }
  uint64_t mapped_bytes() const { return mapped_bytes_; }
  int fd() const { return fd_; }
  bool hugepages() const { return hugepages_; }
  const region_layout &layout() const { return layout_; }

 private:
  int fd_ = -1;
  void *base_ = nullptr;
  uint64_t mapped_bytes_ = 0;
  bool hugepages_ = false;
  region_layout layout_{};
};

}  // namespace mtp::shm
