// SPDX-License-Identifier: BSD-3-Clause
// See eal.h.
#include "eal.h"

#include <dirent.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>

namespace mtp::dp {

namespace {

std::vector<std::string> hugetlbfs_mounts() {
  std::vector<std::string> out;
  std::ifstream in("/proc/mounts");
  std::string dev, dir, type, rest;
  while (in >> dev >> dir >> type && std::getline(in, rest))
    if (type == "hugetlbfs") out.push_back(dir);
  return out;
}

uint64_t meminfo_value(const std::string &key) {
  std::ifstream in("/proc/meminfo");
  std::string k;
  uint64_t v = 0;
  std::string unit;
  while (in >> k >> v) {
    std::getline(in, unit);
    if (k == key + ":") return v;
  }
  return 0;
}

void remove_prefixed(const std::string &dir, const std::string &prefix) {
  DIR *d = opendir(dir.c_str());
  if (d == nullptr) return;
  while (dirent *e = readdir(d)) {
    const std::string name = e->d_name;
    if (name.rfind(prefix, 0) == 0) unlink((dir + "/" + name).c_str());
  }
  closedir(d);
}

}  // namespace

std::vector<std::string> eal_arguments(const cfg::config &c, const std::vector<std::string> &extra) {
  std::vector<std::string> a{"mtpd"};
  std::string lcores = std::to_string(c.lcores.control) + "@" + std::to_string(c.lcores.cpu(c.lcores.control));
  for (unsigned w : c.lcores.workers) lcores += "," + std::to_string(w) + "@" + std::to_string(c.lcores.cpu(w));
  a.insert(a.end(), {"--lcores", lcores, "--main-lcore", std::to_string(c.lcores.control), "--file-prefix",
                     c.eal.file_prefix});
  if (c.eal.in_memory) a.push_back("--in-memory");
  if (!c.memory.hugepages) a.insert(a.end(), {"--no-huge", "-m", std::to_string(c.memory.size_mb)});
  bool any_pci = false;
  for (const auto &p : c.ports)
    if (p.is_pci) {
      a.insert(a.end(), {"-a", p.device});
      any_pci = true;
    }
  if (!any_pci) a.push_back("--no-pci");
  if (!c.telemetry.enabled) a.push_back("--no-telemetry");
  // rte_log prints a message only under both the global level and its
  // type's level: the global one is the higher of ours and DPDK's.
  a.push_back("--log-level=" + std::to_string(std::max(c.log.level, c.log.eal_level)));
  for (const char *types : {"lib.*", "pmd.*", "user*", "bus.*"})
    a.push_back(std::string("--log-level=") + types + ":" + std::to_string(c.log.eal_level));
  a.push_back("--log-level=mtp.*:" + std::to_string(c.log.level));
  a.insert(a.end(), c.eal.args.begin(), c.eal.args.end());
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

result<void> check_hugepages(const cfg::config &c) {
  if (!c.memory.hugepages) return {};
  const uint64_t free_pages = meminfo_value("HugePages_Free");
  const uint64_t page_kb = meminfo_value("Hugepagesize");
  if (free_pages == 0)
    return make_error(
        "no free hugepages (HugePages_Free is 0): run tools/setup-hugepages.sh, or set memory.hugepages: false");
  // The packet pool plus what EAL, ethdev and the rings take for themselves.
  const uint64_t pool_mb =
      uint64_t{c.memory.mbufs} * (c.memory.mbuf_data_room + 128 /* rte_mbuf */ + 64 /* header */) >> 20;
  const uint64_t need_mb = pool_mb + 64;
  const uint64_t free_mb = free_pages * page_kb / 1024;
  if (free_mb < need_mb)
    return make_error("about " + std::to_string(need_mb) + " MB of hugepages needed for " +
                      std::to_string(c.memory.mbufs) + " mbufs, only " + std::to_string(free_mb) +
                      " MB free: reserve more (tools/setup-hugepages.sh), lower memory.mbufs, or set "
                      "memory.hugepages: false");
  if (!c.eal.in_memory && hugetlbfs_mounts().empty())
    return make_error(
        "no hugetlbfs mounted: run tools/setup-hugepages.sh, or set eal.in_memory: true, or memory.hugepages: false");
  return {};
}

result<void> eal_start(const std::vector<std::string> &args) {
  std::vector<char *> argv;
  // rte_eal_init may permute argv; keep the strings alive in a copy it owns.
  static std::vector<std::string> storage;
  storage = args;
  for (auto &s : storage) argv.push_back(s.data());
  argv.push_back(nullptr);
  const int rc = rte_eal_init(static_cast<int>(storage.size()), argv.data());
  if (rc < 0) {
    const int err = rte_errno;
    std::string hint;
    if (err == EALREADY) hint = " (EAL already initialised)";
    if (err == EACCES) hint = " (permission denied: run as root)";
    if (err == EBUSY || err == EEXIST)
      hint = " (another DPDK process uses this file prefix: set eal.file_prefix or node.name)";
    return make_error(std::string("EAL initialisation failed: ") + rte_strerror(err) + hint +
                      "; EAL's own message above says which step");
  }
  return {};
}

void eal_stop(const cfg::config &c) {
  rte_eal_cleanup();
  // EAL keeps hugepage files and its runtime directory for secondary
  // processes; once the primary is gone they are only litter.
  if (c.memory.hugepages && !c.eal.in_memory)
    for (const auto &dir : hugetlbfs_mounts()) remove_prefixed(dir, c.eal.file_prefix + "map_");
  const std::string run_dir = "/var/run/dpdk/" + c.eal.file_prefix;
  remove_prefixed(run_dir, "");
  rmdir(run_dir.c_str());
}

}  // namespace mtp::dp
