// SPDX-License-Identifier: BSD-3-Clause
// Checks of a loaded config against this host: CPUs, directories, groups.
// Kept apart from the loader so the loader stays a pure function of the text
// (and fuzzable); these read the system. Start-up only, one thread.
#include <grp.h>
#include <pwd.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "config.h"

namespace mtp::cfg {

namespace {

std::string cpu_list(const cpu_set_t &set) {
  std::string out;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &set)) continue;
    int end = cpu;
    while (end + 1 < CPU_SETSIZE && CPU_ISSET(end + 1, &set)) ++end;
    if (!out.empty()) out.push_back(',');
    out.append(std::to_string(cpu));
    if (end > cpu) {
      out.push_back('-');
      out.append(std::to_string(end));
    }
    cpu = end;
  }
  return out.empty() ? "none" : out;
}

bool is_dir(const std::string &path) {
  struct stat st{};
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

/// A /proc/meminfo field in MiB, or 0 if it cannot be read.
uint64_t meminfo_mb(const char *field) {
  FILE *f = std::fopen("/proc/meminfo", "r");
  if (f == nullptr) return 0;
  char line[256];
  uint64_t kb = 0;
  const std::size_t n = std::strlen(field);
  while (std::fgets(line, sizeof line, f) != nullptr)
    if (std::strncmp(line, field, n) == 0 && line[n] == ':') {
      kb = std::strtoull(line + n + 1, nullptr, 10);
      break;
    }
  std::fclose(f);
  return kb / 1024;
}

std::string parent_of(const std::string &path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

namespace {
bool all_digits(const std::string &s) {
  return !s.empty() && s.size() <= 10 && std::all_of(s.begin(), s.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
}
}  // namespace

std::optional<uint32_t> resolve_user(const std::string &name_or_id) {
  if (all_digits(name_or_id)) {
    const unsigned long v = std::strtoul(name_or_id.c_str(), nullptr, 10);
    if (v < UINT32_MAX) return static_cast<uint32_t>(v);
    return std::nullopt;
  }
  char buf[4096];
  passwd pw{}, *found = nullptr;
  if (getpwnam_r(name_or_id.c_str(), &pw, buf, sizeof buf, &found) != 0 || found == nullptr) return std::nullopt;
  return static_cast<uint32_t>(pw.pw_uid);
}

std::optional<uint32_t> resolve_group(const std::string &name_or_id) {
  if (all_digits(name_or_id)) {
    const unsigned long v = std::strtoul(name_or_id.c_str(), nullptr, 10);
    if (v < UINT32_MAX) return static_cast<uint32_t>(v);
    return std::nullopt;
  }
  char buf[4096];
  group gr{}, *found = nullptr;
  if (getgrnam_r(name_or_id.c_str(), &gr, buf, sizeof buf, &found) != 0 || found == nullptr) return std::nullopt;
  return static_cast<uint32_t>(gr.gr_gid);
}

problems check_host(const config &c) {
  problems out;
  auto report = [&](const std::string &key, std::string msg) {
    out.push_back(problem{c.source, c.mark_of(key), key, std::move(msg)});
  };

  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (sched_getaffinity(0, sizeof allowed, &allowed) == 0) {
    std::vector<unsigned> lcores{c.lcores.control};
    lcores.insert(lcores.end(), c.lcores.workers.begin(), c.lcores.workers.end());
    for (std::size_t i = 0; i < lcores.size(); ++i) {
      const unsigned lc = lcores[i];
      const unsigned cpu = c.lcores.cpu(lc);
      if (cpu < CPU_SETSIZE && CPU_ISSET(cpu, &allowed)) continue;
      std::string key = c.lcores.cpu_of.count(lc) ? "lcores.cpus." + std::to_string(lc)
                        : i == 0                  ? "lcores.control"
                                                  : "lcores.workers";
      report(key, "lcore " + std::to_string(lc) + " would run on CPU " + std::to_string(cpu) +
                      ", which this process may not use (allowed CPUs: " + cpu_list(allowed) +
                      "); pin it with lcores.cpus");
    }
  }

  // The socket's directory is created at start-up if missing, so what must
  // exist is some ancestor we can create it under.
  std::string dir = parent_of(c.app.socket_path);
  while (!is_dir(dir) && dir != "/") {
    struct stat st{};
    if (stat(dir.c_str(), &st) == 0) {
      report("app.socket", "'" + dir + "' exists but is not a directory");
      break;
    }
    dir = parent_of(dir);
  }

  if (!c.log.file.empty() && !is_dir(parent_of(c.log.file)))
    report("log.file", "directory '" + parent_of(c.log.file) + "' does not exist");

  if (!c.app.group.empty() && getgrnam(c.app.group.c_str()) == nullptr)
    report("app.group", "no group named '" + c.app.group + "' on this host");
  for (std::size_t i = 0; i < c.app.users.size(); ++i)
    if (!resolve_user(c.app.users[i]))
      report("app.users[" + std::to_string(i) + "]", "no user named '" + c.app.users[i] + "' on this host");
  for (std::size_t i = 0; i < c.app.groups.size(); ++i)
    if (!resolve_group(c.app.groups[i]))
      report("app.groups[" + std::to_string(i) + "]", "no group named '" + c.app.groups[i] + "' on this host");

  for (std::size_t i = 0; i < c.ports.size(); ++i) {
    // net_memif creates its socket file but not the directory it sits in.
    const std::string &dev = c.ports[i].device;
    if (dev.rfind("net_memif", 0) != 0) continue;
    const auto pos = dev.find(",socket=");
    if (pos == std::string::npos) continue;
    const std::string sock = dev.substr(pos + 8, dev.find(',', pos + 8) - (pos + 8));
    if (dev.find("socket-abstract=no") == std::string::npos) continue;  // abstract names have no directory
    if (!is_dir(parent_of(sock)))
      report("ports[" + std::to_string(i) + "].device",
             "memif socket directory '" + parent_of(sock) + "' does not exist");
  }

  // Session memory is taken as traffic needs it, up to this budget per
  // worker: the host must have it to give (docs/operations.md).
  const uint64_t session_mb = uint64_t{c.limits.session_memory_mb} * c.lcores.workers.size();
  const uint64_t heap_mb = session_mb + (c.memory.hugepages ? 0 : c.memory.size_mb);
  if (const uint64_t avail = meminfo_mb("MemAvailable"); avail != 0 && heap_mb > avail)
    report("limits.session_memory_mb",
           std::to_string(c.lcores.workers.size()) + " worker(s) x " + std::to_string(c.limits.session_memory_mb) +
               " MiB of session memory" + (c.memory.hugepages ? "" : " + " + std::to_string(c.memory.size_mb) +
                                                                         " MiB of EAL memory without hugepages") +
               " = " + std::to_string(heap_mb) + " MiB, but this host has " + std::to_string(avail) +
               " MiB available (MemAvailable); lower limits.session_memory_mb");
  return out;
}

}  // namespace mtp::cfg
