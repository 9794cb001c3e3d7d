// SPDX-License-Identifier: BSD-3-Clause
// See shm_region.h.
#include "mtp/shm_region.h"

#include <fcntl.h>
#include <linux/memfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace mtp::shm {

namespace {

constexpr uint64_t huge_page_bytes = uint64_t{2} << 20;
constexpr unsigned int seals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;

std::string errno_text(const char *what) { return std::string(what) + ": " + std::strerror(errno); }

}  // namespace

mapped_region &mapped_region::operator=(mapped_region &&o) noexcept {
  if (this != &o) {
    reset();
    fd_ = o.fd_;
    base_ = o.base_;
    mapped_bytes_ = o.mapped_bytes_;
    hugepages_ = o.hugepages_;
    layout_ = o.layout_;
    o.fd_ = -1;
    o.base_ = nullptr;
    o.mapped_bytes_ = 0;
  }
  return *this;
}

void mapped_region::reset() {
  if (base_ != nullptr) munmap(base_, mapped_bytes_);
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  base_ = nullptr;
  mapped_bytes_ = 0;
  hugepages_ = false;
}

std::string mapped_region::create(const region_plan &plan, uint64_t daemon_pid, uint32_t node_id, bool try_hugepages) {
  reset();
  region_layout l;
  if (const char *why = region_layout_of(plan, l)) return std::string("region plan: ") + why;
  for (const bool huge : {true, false}) {
    if (huge && !try_hugepages) continue;
    const unsigned int flags = MFD_CLOEXEC | MFD_ALLOW_SEALING | (huge ? MFD_HUGETLB : 0u);
    const int fd = memfd_create("mtpd-app-region", flags);
    if (fd < 0) {
      if (huge) continue;  // no hugetlbfs support: normal pages
      return errno_text("memfd_create");
    }
    const uint64_t bytes = huge ? (l.region_bytes + huge_page_bytes - 1) / huge_page_bytes * huge_page_bytes
                                : l.region_bytes;
    void *base = MAP_FAILED;
    if (ftruncate(fd, static_cast<off_t>(bytes)) == 0 && fcntl(fd, F_ADD_SEALS, seals) == 0)
      base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
      // Too few free hugepages (the reservation fails at mmap) or no
      // sealing there: fall back to normal pages.
      const std::string why = errno_text(huge ? "hugepage region" : "region");
      ::close(fd);
      if (huge) continue;
      return why;
    }
    init_region(base, l, daemon_pid, node_id);
    fd_ = fd;
    base_ = base;
    mapped_bytes_ = bytes;
    hugepages_ = huge;
    layout_ = l;
    return {};
  }
  return "region: no way to create it";
}

std::string mapped_region::attach(int fd) {
  reset();
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    const std::string why = errno_text("fstat");
    ::close(fd);
    return why;
  }
  // The size must stay as it is while mapped: refuse a region whose size
  // anyone could still change.
  const int have = fcntl(fd, F_GET_SEALS);
  if (have < 0 || (static_cast<unsigned int>(have) & (F_SEAL_SHRINK | F_SEAL_GROW)) != (F_SEAL_SHRINK | F_SEAL_GROW)) {
    ::close(fd);
    return "the region is not sealed against resizing";
  }
  if (st.st_size < static_cast<off_t>(sizeof(region_header))) {
    ::close(fd);
    return "the region is smaller than its header";
  }
  const uint64_t bytes = static_cast<uint64_t>(st.st_size);
  void *base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    const std::string why = errno_text("mmap");
    ::close(fd);
    return why;
  }
  region_layout l;
  if (const char *why = check_region(base, bytes, l)) {
    munmap(base, bytes);
    ::close(fd);
    return why;
  }
  fd_ = fd;
  base_ = base;
  mapped_bytes_ = bytes;
  layout_ = l;
  return {};
}

}  // namespace mtp::shm
