// SPDX-License-Identifier: BSD-3-Clause
// YAML -> config: reads every section, then checks what spans sections.
// Every problem is collected (not just the first) so one run of
// --check-config lists all of them. Runs once at start-up, on one thread.
#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <regex>
#include <optional>
#include <set>
#include <sstream>

#include "config.h"
#include "keyfile.h"
#include "yaml_reader.h"

namespace mtp::cfg {

namespace {

/// Whether `ip` lies in the subnet of port address `a`.
bool same_subnet(const ip_prefix &a, const core::ip_address &ip) {
  if (a.address.family != ip.family) return false;
  unsigned bits = a.prefix_len;
  for (std::size_t i = 0; bits > 0 && i < ip.bytes.size(); ++i) {
    const unsigned take = bits >= 8 ? 8 : bits;
    const auto mask = static_cast<uint8_t>(0xff00u >> take);
    if ((a.address.bytes[i] ^ ip.bytes[i]) & mask) return false;
    bits -= take;
  }
  return true;
}

const std::vector<std::string> log_levels = {"emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"};

std::optional<ip_prefix> parse_prefix(const std::string &text) {
  const auto slash = text.find('/');
  if (slash == std::string::npos) return std::nullopt;
  const std::string addr = text.substr(0, slash);
  const std::string len = text.substr(slash + 1);
  ip_prefix p;
  p.text = text;
  unsigned max = 0;
  if (inet_pton(AF_INET, addr.c_str(), p.address.bytes.data()) == 1) {
    p.address.family = 4;
    max = 32;
  } else if (inet_pton(AF_INET6, addr.c_str(), p.address.bytes.data()) == 1) {
    p.address.family = 6;
    max = 128;
  } else {
    return std::nullopt;
  }
  if (len.empty() || len.size() > 3 || !std::all_of(len.begin(), len.end(), ::isdigit)) return std::nullopt;
  const unsigned n = static_cast<unsigned>(std::stoul(len));
  if (n > max) return std::nullopt;
  p.prefix_len = static_cast<uint8_t>(n);
  return p;
}

std::optional<core::ip_address> parse_ip(const std::string &text) {
  core::ip_address a;
  if (inet_pton(AF_INET, text.c_str(), a.bytes.data()) == 1) {
    a.family = 4;
    return a;
  }
  if (inet_pton(AF_INET6, text.c_str(), a.bytes.data()) == 1) {
    a.family = 6;
    return a;
  }
  return std::nullopt;
}

std::optional<std::array<uint8_t, 6>> parse_mac(const std::string &text) {
  static const std::regex re("^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$");
  if (!std::regex_match(text, re)) return std::nullopt;
  std::array<uint8_t, 6> mac{};
  for (std::size_t i = 0; i < 6; ++i) mac[i] = static_cast<uint8_t>(std::stoul(text.substr(i * 3, 2), nullptr, 16));
  return mac;
}

bool is_pci_address(const std::string &s) {
  static const std::regex re("^([0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\\.[0-7]$");
  return std::regex_match(s, re);
}

bool is_vdev(const std::string &s) {
  static const std::regex re("^net_[A-Za-z0-9_]+(,[A-Za-z0-9_-]+=[^,]*)*$");
  return std::regex_match(s, re);
}

bool is_name(const std::string &s, std::size_t max) {
  static const std::regex re("^[A-Za-z0-9_.-]+$");
  return !s.empty() && s.size() <= max && std::regex_match(s, re);
}

bool is_power_of_two(uint64_t v) { return v && !(v & (v - 1)); }

struct loader {
  yaml_reader r;
  config &c;

  /// Reads map[key] as an IP address (no prefix) into `out` if present.
  void read_ip(const YAML::Node &map, const std::string &path, const char *key, core::ip_address &out) {
    const std::string kp = yaml_reader::join(path, key);
    if (auto v = r.child(map, path, key))
      if (auto s = r.as_string(*v, kp, "an IP address")) {
        if (auto ip = parse_ip(*s))
          out = *ip;
        else
          r.report(*v, kp, "expected an IPv4 or IPv6 address, found '" + *s + "'");
      }
  }

  /// Reads map[key] as a MAC address into `out` if present.
  template <class Mac>
  void read_mac(const YAML::Node &map, const std::string &path, const char *key, Mac &out) {
    const std::string kp = yaml_reader::join(path, key);
    if (auto v = r.child(map, path, key))
      if (auto s = r.as_string(*v, kp, "a MAC address")) {
        if (auto mac = parse_mac(*s))
          out = *mac;
        else
          r.report(*v, kp, "expected a MAC address like 02:00:00:00:00:01, found '" + *s + "'");
      }
  }

  void read_node(const YAML::Node &n) {
    const std::string p = "node";
    if (!r.check_map(n, p, {"name", "id", "udp_port", "max_packet_bytes"})) return;
    if (auto v = r.child(n, p, "name"))
      if (auto s = r.as_string(*v, p + ".name", "a name")) {
        if (is_name(*s, 32))
          c.node.name = *s;
        else
          r.report(*v, p + ".name", "expected 1 to 32 of A-Z a-z 0-9 _ . -, found '" + *s + "'");
      }
    r.read_uint(n, p, "id", c.node.id, 1, 0xfffffffeu);
    r.read_uint(n, p, "udp_port", c.node.udp_port, 1, 65535);
    r.read_uint(n, p, "max_packet_bytes", c.node.max_packet_bytes, 256, 9000);
  }

  void read_port(const YAML::Node &n, const std::string &p) {
    port_config port;
    port.mark = yaml_reader::mark(n);
    if (!r.check_map(n, p, {"name", "device", "mtu", "mac", "addresses", "rx_descriptors", "tx_descriptors", "rx_scatter"})) return;
    if (n.IsNull()) {
      r.report(n, p, "expected a port with at least name and device, found nothing");
      return;
    }
    if (auto v = r.child(n, p, "name")) {
      if (auto s = r.as_string(*v, p + ".name", "a port name")) {
        if (is_name(*s, 32))
          port.name = *s;
        else
          r.report(*v, p + ".name", "expected 1 to 32 of A-Z a-z 0-9 _ . -, found '" + *s + "'");
      }
    } else {
      r.report(n, p, "missing required key 'name'");
    }
    if (auto v = r.child(n, p, "device")) {
      if (auto s = r.as_string(*v, p + ".device", "a device")) {
        if (is_pci_address(*s)) {
          port.device = *s;
          port.is_pci = true;
        } else if (is_vdev(*s)) {
          port.device = *s;
        } else {
          r.report(*v, p + ".device",
                   "expected a PCI address (0000:01:00.0) or a virtual device (net_tap0,iface=mtp0), found '" + *s +
                       "'");
        }
      }
    } else {
      r.report(n, p, "missing required key 'device'");
    }
    r.read_uint(n, p, "mtu", port.mtu, 68, 9600);
    r.read_bool(n, p, "rx_scatter", port.rx_scatter);
    read_mac(n, p, "mac", port.mac);
    if (auto v = r.child(n, p, "addresses"); v && r.check_list(*v, p + ".addresses", "addresses")) {
      for (std::size_t i = 0; i < v->size(); ++i) {
        const YAML::Node a = (*v)[i];
        const std::string ap = yaml_reader::index(p + ".addresses", i);
        r.remember(ap, a);
        if (auto s = r.as_string(a, ap, "an address")) {
          if (auto pre = parse_prefix(*s))
            port.addresses.push_back(*pre);
          else
            r.report(a, ap, "expected an IPv4 or IPv6 address with prefix length like 10.0.0.1/24, found '" + *s + "'");
        }
      }
    }
    for (auto [key, field] : {std::pair{"rx_descriptors", &port.rx_descriptors}, {"tx_descriptors", &port.tx_descriptors}}) {
      auto v = r.child(n, p, key);
      if (!v) continue;
      const std::string kp = yaml_reader::join(p, key);
      uint64_t d = 0;
      const bool number = v->IsScalar() && !v->Scalar().empty() &&
                          std::all_of(v->Scalar().begin(), v->Scalar().end(), ::isdigit) && v->Scalar().size() < 10;
      if (number) d = std::stoull(v->Scalar());
      if (number && is_power_of_two(d) && d >= 64 && d <= 16384)
        *field = static_cast<uint16_t>(d);
      else
        r.report(*v, kp, "expected a power of two from 64 to 16384, found " + yaml_reader::describe(*v));
    }
    c.ports.push_back(std::move(port));
  }

  void read_ports(const YAML::Node &root) {
    auto n = r.child(root, "", "ports");
    if (!n) {
      r.report(source_mark{}, "ports", "missing required key: expected a list of at least one port");
      return;
    }
    if (!r.check_list(*n, "ports", "ports")) return;
    if (n->size() == 0) {
      r.report(*n, "ports", "expected a list of at least one port, found an empty list");
      return;
    }
    for (std::size_t i = 0; i < n->size(); ++i) read_port((*n)[i], yaml_reader::index("ports", i));
  }

  void read_lcores(const YAML::Node &n) {
    const std::string p = "lcores";
    if (!r.check_map(n, p, {"control", "workers", "cpus"})) return;
    r.read_uint(n, p, "control", c.lcores.control, 0, 127);
    if (auto v = r.child(n, p, "workers"); v && r.check_list(*v, p + ".workers", "lcore ids")) {
      c.lcores.workers.clear();
      if (v->size() == 0) r.report(*v, p + ".workers", "expected a list of at least one worker lcore, found an empty list");
      for (std::size_t i = 0; i < v->size(); ++i)
        if (auto w = r.as_uint((*v)[i], yaml_reader::index(p + ".workers", i), 0, 127)) {
          const auto lc = static_cast<unsigned>(*w);
          const std::string wp = yaml_reader::index(p + ".workers", i);
          if (lc == c.lcores.control)
            r.report((*v)[i], wp,
                     "lcore " + std::to_string(lc) + " is the control lcore; workers need lcores of their own");
          else if (std::find(c.lcores.workers.begin(), c.lcores.workers.end(), lc) != c.lcores.workers.end())
            r.report((*v)[i], wp, "duplicate worker lcore " + std::to_string(lc));
          else
            c.lcores.workers.push_back(lc);
        }
    }
    if (auto v = r.child(n, p, "cpus"); v) {
      if (!v->IsMap()) {
        r.report(*v, p + ".cpus", "expected a mapping of lcore: cpu, found " + yaml_reader::describe(*v));
        return;
      }
      for (auto it = v->begin(); it != v->end(); ++it) {
        const std::string kp = p + ".cpus." + (it->first.IsScalar() ? it->first.Scalar() : "?");
        auto lc = r.as_uint(it->first, kp, 0, 127);
        auto cpu = r.as_uint(it->second, kp, 0, 1023);
        if (!lc || !cpu) continue;
        const auto l = static_cast<unsigned>(*lc);
        if (l != c.lcores.control &&
            std::find(c.lcores.workers.begin(), c.lcores.workers.end(), l) == c.lcores.workers.end()) {
          r.report(it->first, kp, "lcore " + std::to_string(l) + " is neither the control lcore nor a worker");
          continue;
        }
        c.lcores.cpu_of[l] = static_cast<unsigned>(*cpu);
        c.marks[kp] = yaml_reader::mark(it->second);
      }
    }
  }

  void read_memory(const YAML::Node &n) {
    const std::string p = "memory";
    if (!r.check_map(n, p, {"hugepages", "size_mb", "mbufs", "mbuf_cache", "mbuf_data_room"})) return;
    r.read_bool(n, p, "hugepages", c.memory.hugepages);
    r.read_uint(n, p, "size_mb", c.memory.size_mb, 64, 65536);
    r.read_uint(n, p, "mbufs", c.memory.mbufs, 1023, 16u << 20);
    r.read_uint(n, p, "mbuf_cache", c.memory.mbuf_cache, 0, 512);
    r.read_uint(n, p, "mbuf_data_room", c.memory.mbuf_data_room, 1024, 65535);
  }

  void read_eal(const YAML::Node &n) {
    const std::string p = "eal";
    if (!r.check_map(n, p, {"file_prefix", "in_memory", "args"})) return;
    if (auto v = r.child(n, p, "file_prefix"))
      if (auto s = r.as_string(*v, p + ".file_prefix", "a file prefix")) {
        if (is_name(*s, 64))
          c.eal.file_prefix = *s;
        else
          r.report(*v, p + ".file_prefix", "expected 1 to 64 of A-Z a-z 0-9 _ . -, found '" + *s + "'");
      }
    r.read_bool(n, p, "in_memory", c.eal.in_memory);
    // Options the config owns: letting args set them too would make the
    // config lie about what runs.
    static const std::vector<std::pair<std::string, std::string>> owned = {
        {"-l", "lcores"},           {"--lcores", "lcores"},        {"-c", "lcores"},
        {"--main-lcore", "lcores.control"}, {"--file-prefix", "eal.file_prefix"}, {"--in-memory", "eal.in_memory"},
        {"--no-huge", "memory.hugepages"}, {"-m", "memory.size_mb"}, {"--vdev", "ports"},
        {"--no-telemetry", "telemetry.enabled"}};
    if (auto v = r.child(n, p, "args"); v && r.check_list(*v, p + ".args", "EAL arguments")) {
      for (std::size_t i = 0; i < v->size(); ++i) {
        const std::string ap = yaml_reader::index(p + ".args", i);
        auto s = r.as_string((*v)[i], ap, "an EAL argument");
        if (!s) continue;
        const std::string opt = s->substr(0, s->find('='));
        auto hit = std::find_if(owned.begin(), owned.end(), [&](auto &o) { return o.first == opt; });
        if (hit != owned.end())
          r.report((*v)[i], ap, "'" + opt + "' is set from " + hit->second + "; set it there");
        else
          c.eal.args.push_back(*s);
      }
    }
  }

  void read_idle(const YAML::Node &n) {
    const std::string p = "idle";
    if (!r.check_map(n, p, {"policy", "spin_loops", "max_sleep_us"})) return;
    if (auto v = r.child(n, p, "policy"))
      if (auto i = r.as_choice(*v, p + ".policy", {"busy", "adaptive"})) c.idle.policy = static_cast<idle_policy>(*i);
    r.read_uint(n, p, "spin_loops", c.idle.spin_loops, 0, 1000000);
    r.read_uint(n, p, "max_sleep_us", c.idle.max_sleep_us, 1, 100000);
  }

  void read_limits(const YAML::Node &n) {
    const std::string p = "limits";
    if (!r.check_map(n, p, {"sessions", "streams_per_session", "members_per_group", "app_buffers", "session_memory_mb"}))
      return;
    r.read_uint(n, p, "sessions", c.limits.sessions, 1, 16u << 20);
    r.read_uint(n, p, "streams_per_session", c.limits.streams_per_session, 1, 256);
    r.read_uint(n, p, "members_per_group", c.limits.members_per_group, 1, 1024);
    r.read_uint(n, p, "app_buffers", c.limits.app_buffers, 64, 16u << 20);
    r.read_uint(n, p, "session_memory_mb", c.limits.session_memory_mb, 1, 1u << 20);
  }

  void read_app(const YAML::Node &n) {
    const std::string p = "app";
    if (!r.check_map(n, p, {"socket", "mode", "group", "users", "groups"})) return;
    if (auto v = r.child(n, p, "socket"))
      if (auto s = r.as_string(*v, p + ".socket", "a socket path")) {
        if (s->empty() || (*s)[0] != '/' || s->size() > 107)
          r.report(*v, p + ".socket", "expected an absolute path of at most 107 bytes, found '" + *s + "'");
        else
          c.app.socket_path = *s;
      }
    if (auto v = r.child(n, p, "mode"))
      if (auto s = r.as_string(*v, p + ".mode", "an octal mode")) {
        const bool octal = !s->empty() && s->size() <= 4 && std::all_of(s->begin(), s->end(), [](char ch) {
          return ch >= '0' && ch <= '7';
        });
        if (octal)
          c.app.mode = static_cast<uint32_t>(std::stoul(*s, nullptr, 8));
        else
          r.report(*v, p + ".mode", "expected an octal mode from 0000 to 0777 like \"0660\", found '" + *s + "'");
      }
    if (auto v = r.child(n, p, "group"))
      if (auto s = r.as_string(*v, p + ".group", "a group name")) c.app.group = *s;
    const auto read_names = [&](const char *key, std::vector<std::string> &out, const char *what) {
      const std::string kp = p + "." + key;
      if (auto v = r.child(n, p, key); v && r.check_list(*v, kp, what)) {
        for (std::size_t i = 0; i < v->size(); ++i) {
          const std::string ip = yaml_reader::index(kp, i);
          r.remember(ip, (*v)[i]);  // check_host reports unknown names here
          if (auto s = r.as_string((*v)[i], ip, "a name or a numeric id")) {
            if (s->empty() || s->size() > 64)
              r.report((*v)[i], ip, "expected a name or a numeric id of 1 to 64 characters");
            else
              out.push_back(*s);
          }
        }
      }
    };
    read_names("users", c.app.users, "user names or uids");
    read_names("groups", c.app.groups, "group names or gids");
  }

  void read_log(const YAML::Node &n) {
    const std::string p = "log";
    if (!r.check_map(n, p, {"level", "eal_level", "file"})) return;
    if (auto v = r.child(n, p, "level"))
      if (auto i = r.as_choice(*v, p + ".level", log_levels)) c.log.level = static_cast<uint32_t>(*i + 1);
    if (auto v = r.child(n, p, "eal_level"))
      if (auto i = r.as_choice(*v, p + ".eal_level", log_levels)) c.log.eal_level = static_cast<uint32_t>(*i + 1);
    if (auto v = r.child(n, p, "file"))
      if (auto s = r.as_string(*v, p + ".file", "a file path")) c.log.file = *s;
  }

  void read_telemetry(const YAML::Node &n) {
    const std::string p = "telemetry";
    if (!r.check_map(n, p, {"enabled", "stats_interval_ms"})) return;
    r.read_bool(n, p, "enabled", c.telemetry.enabled);
    r.read_uint(n, p, "stats_interval_ms", c.telemetry.stats_interval_ms, 0, 3600000);
  }

  std::optional<double> read_probability(const YAML::Node &map, const std::string &path, const char *key) {
    auto v = r.child(map, path, key);
    if (!v) return std::nullopt;
    const std::string kp = yaml_reader::join(path, key);
    try {
      if (v->IsScalar()) {
        const double d = std::stod(v->Scalar());
        if (d >= 0 && d <= 1) return d;
      }
    } catch (const std::exception &) {
    }
    r.report(*v, kp, "expected a probability from 0 to 1, found " + yaml_reader::describe(*v));
    return std::nullopt;
  }

  // A 32-byte key in base64 (44 characters, as `mtpd keygen` and wg print).
  void read_key(const YAML::Node &map, const std::string &path, const char *key, std::optional<key_bytes> &out) {
    auto v = r.child(map, path, key);
    if (!v) return;
    const std::string kp = yaml_reader::join(path, key);
    auto s = r.as_string(*v, kp, "a base64 key of 32 bytes (44 characters)");
    if (!s) return;
    key_bytes k{};
    std::string why;
    if (!crypto::key_from_base64(*s, k.data(), why)) {
      r.report(*v, kp, "expected a base64 key of 32 bytes (44 characters, as `mtpd keygen` prints), found '" + *s +
                           "': " + why);
      return;
    }
    out = k;
  }

  void read_security(const YAML::Node &n) {
    const std::string p = "security";
    if (!r.check_map(n, p, {"mode", "key_file", "generate_key", "rekey_after_packets", "rekey_after_s",
                            "handshake_retry_ms", "cookie_after_handshakes_per_s"}))
      return;
    if (auto v = r.child(n, p, "mode"))
      if (auto i = r.as_choice(*v, p + ".mode", {"required", "plaintext"})) c.security.mode = static_cast<security_mode>(*i);
    if (auto v = r.child(n, p, "key_file"))
      if (auto s = r.as_string(*v, p + ".key_file", "a file path")) c.security.key_file = *s;
    r.read_bool(n, p, "generate_key", c.security.generate_key);
    r.read_uint(n, p, "rekey_after_packets", c.security.rekey_after_packets, 16, uint64_t{1} << 40);
    r.read_uint(n, p, "rekey_after_s", c.security.rekey_after_s, 1, 86400);
    r.read_uint(n, p, "handshake_retry_ms", c.security.handshake_retry_ms, 10, 10000);
    r.read_uint(n, p, "cookie_after_handshakes_per_s", c.security.cookie_after_handshakes_per_s, 0, 10000000);
  }

  void read_peers(const YAML::Node &n) {
    if (!r.check_list(n, "peers", "peers")) return;
    for (std::size_t i = 0; i < n.size(); ++i) {
      const YAML::Node e = n[i];
      const std::string p = yaml_reader::index("peers", i);
      if (!r.check_map(e, p, {"id", "ip", "mac", "port", "public_key", "public_key_file", "preshared_key"})) continue;
      peer_config peer;
      if (!e["id"].IsDefined() || !e["ip"].IsDefined()) {
        r.report(e, p, "missing required key: a peer needs id and ip (and mac unless it is resolved on the link)");
        continue;
      }
      r.read_uint(e, p, "id", peer.id, 1, 0xfffffffeu);
      read_ip(e, p, "ip", peer.ip);
      read_mac(e, p, "mac", peer.mac);
      if (auto v = r.child(e, p, "port"))
        if (auto s = r.as_string(*v, p + ".port", "a port name")) peer.port = *s;
      read_key(e, p, "public_key", peer.public_key);
      if (auto v = r.child(e, p, "public_key_file"))
        if (auto s = r.as_string(*v, p + ".public_key_file", "a file path")) {
          if (peer.public_key)
            r.report(*v, p + ".public_key_file", "give public_key or public_key_file, not both");
          else
            peer.public_key_file = *s;
        }
      read_key(e, p, "preshared_key", peer.preshared_key);
      c.peers.push_back(peer);
    }
  }

  void read_groups(const YAML::Node &n) {
    if (!r.check_list(n, "groups", "groups")) return;
    for (std::size_t i = 0; i < n.size(); ++i) {
      const YAML::Node e = n[i];
      const std::string p = yaml_reader::index("groups", i);
      if (!r.check_map(e, p, {"name", "members", "threshold"})) continue;
      group_config g;
      if (auto v = r.child(e, p, "name"))
        if (auto s = r.as_string(*v, p + ".name", "a group name")) g.name = *s;
      if (auto v = r.child(e, p, "members"); v && r.check_list(*v, p + ".members", "member ids"))
        for (std::size_t k = 0; k < v->size(); ++k)
          if (auto id = r.as_uint((*v)[k], yaml_reader::index(p + ".members", k), 1, 0xfffffffeu))
            g.members.push_back(static_cast<uint32_t>(*id));
      r.read_uint(e, p, "threshold", g.threshold, 0, 64);
      c.groups.push_back(g);
    }
  }

  void read_source(const YAML::Node &n) {
    const std::string p = "test.source";
    if (!r.check_map(n, p, {"enabled", "connection_id", "members", "threshold", "total_bytes", "message_bytes",
                            "streams", "reliability", "max_retransmissions", "ordering", "window_bytes", "pingpong",
                            "rate_bytes_per_s"}))
      return;
    auto &s = c.test.source;
    r.read_bool(n, p, "enabled", s.enabled);
    r.read_uint(n, p, "connection_id", s.connection_id, 1, UINT64_MAX - 1);
    r.read_uint(n, p, "threshold", s.threshold, 0, 64);
    r.read_uint(n, p, "total_bytes", s.total_bytes, 1, uint64_t{1} << 44);
    r.read_uint(n, p, "message_bytes", s.message_bytes, 16, 65536);
    r.read_uint(n, p, "streams", s.streams, 1, 16);
    r.read_uint(n, p, "max_retransmissions", s.max_retransmissions, 0, 255);
    r.read_uint(n, p, "window_bytes", s.window_bytes, 4096, 1u << 30);
    r.read_bool(n, p, "pingpong", s.pingpong);
    r.read_uint(n, p, "rate_bytes_per_s", s.rate_bytes_per_s, 0, uint64_t{1} << 40);
    if (auto v = r.child(n, p, "reliability"))
      if (auto i = r.as_choice(*v, p + ".reliability", {"reliable", "partial", "unreliable"}))
        s.reliability = static_cast<uint32_t>(*i);
    if (auto v = r.child(n, p, "ordering"))
      if (auto i = r.as_choice(*v, p + ".ordering", {"fifo", "none"})) s.unordered = *i == 1;
    if (auto v = r.child(n, p, "members"); v && r.check_list(*v, p + ".members", "member ids"))
      for (std::size_t i = 0; i < v->size(); ++i)
        if (auto id = r.as_uint((*v)[i], yaml_reader::index(p + ".members", i), 1, 0xfffffffeu))
          s.members.push_back(static_cast<uint32_t>(*id));
  }

  void read_test(const YAML::Node &n) {
    const std::string p = "test";
    if (!r.check_map(n, p, {"generator", "source", "sink", "faults"})) return;
    if (auto s = r.child(n, p, "source")) read_source(*s);
    if (auto s = r.child(n, p, "sink")) {
      if (r.check_map(*s, "test.sink", {"enabled", "echo", "verify", "window_bytes"})) {
        r.read_bool(*s, "test.sink", "verify", c.test.sink.verify);
        r.read_bool(*s, "test.sink", "enabled", c.test.sink.enabled);
        r.read_bool(*s, "test.sink", "echo", c.test.sink.echo);
        r.read_uint(*s, "test.sink", "window_bytes", c.test.sink.window_bytes, 4096, 1u << 30);
      }
    }
    if (auto f = r.child(n, p, "faults")) {
      const std::string fp = "test.faults";
      if (r.check_map(*f, fp, {"seed", "drop", "duplicate", "reorder", "corrupt", "delay_us"})) {
        auto &ft = c.test.faults;
        r.read_uint(*f, fp, "seed", ft.seed, 0, UINT64_MAX);
        r.read_uint(*f, fp, "delay_us", ft.delay_us, 0, 1000000);
        if (auto d = read_probability(*f, fp, "drop")) ft.drop = *d;
        if (auto d = read_probability(*f, fp, "duplicate")) ft.duplicate = *d;
        if (auto d = read_probability(*f, fp, "reorder")) ft.reorder = *d;
        if (auto d = read_probability(*f, fp, "corrupt")) ft.corrupt = *d;
      }
    }
    auto g = r.child(n, p, "generator");
    if (!g) return;
    const std::string gp = "test.generator";
    if (!r.check_map(*g, gp, {"enabled", "rate_pps", "payload_bytes", "dst_ip", "dst_mac", "dst_port", "pingpong"}))
      return;
    auto &gen = c.test.generator;
    r.read_bool(*g, gp, "enabled", gen.enabled);
    r.read_bool(*g, gp, "pingpong", gen.pingpong);
    r.read_uint(*g, gp, "rate_pps", gen.rate_pps, 1, 100000000);
    r.read_uint(*g, gp, "payload_bytes", gen.payload_bytes, 0, 9000);
    r.read_uint(*g, gp, "dst_port", gen.dst_port, 1, 65535);
    read_ip(*g, gp, "dst_ip", gen.dst_ip);
    read_mac(*g, gp, "dst_mac", gen.dst_mac);
  }

  // Checks across sections, after every field read cleanly on its own.
  void cross_check() {
    // EAL's --in-memory keeps hugepage files off the filesystem; it has
    // nothing to do without hugepages and EAL refuses the pair.
    if (c.eal.in_memory && !c.memory.hugepages)
      r.report(c.mark_of("eal.in_memory"), "eal.in_memory",
               "in_memory needs hugepages; with memory.hugepages: false, leave in_memory out (or false)");
    std::map<std::string, std::size_t> names, devices, macs, addrs;
    for (std::size_t i = 0; i < c.ports.size(); ++i) {
      const auto &port = c.ports[i];
      const std::string p = yaml_reader::index("ports", i);
      auto dup = [&](std::map<std::string, std::size_t> &seen, const std::string &key, const std::string &kp,
                     const std::string &what) {
        if (key.empty()) return;
        auto [it, fresh] = seen.emplace(key, i);
        if (!fresh)
          r.report(c.mark_of(kp), kp,
                   "duplicate " + what + " '" + key + "' (first in ports[" + std::to_string(it->second) + "])");
      };
      dup(names, port.name, p + ".name", "port name");
      dup(devices, port.eal_name(), p + ".device", "device");
      if (port.mac) {
        char buf[18];
        std::snprintf(buf, sizeof buf, "%02x:%02x:%02x:%02x:%02x:%02x", (*port.mac)[0], (*port.mac)[1],
                      (*port.mac)[2], (*port.mac)[3], (*port.mac)[4], (*port.mac)[5]);
        dup(macs, buf, p + ".mac", "MAC address");
      }
      for (std::size_t a = 0; a < port.addresses.size(); ++a) {
        const auto &pre = port.addresses[a];
        const std::string ap = yaml_reader::index(p + ".addresses", a);
        dup(addrs, pre.text.substr(0, pre.text.find('/')), ap, "address");
        if (pre.address.family == 6 && port.mtu < 1280)
          r.report(c.mark_of(p + ".mtu"), p + ".mtu",
                   "expected at least 1280 on a port with an IPv6 address (" + pre.text + "), found " +
                       std::to_string(port.mtu));
      }
      const uint32_t frame_max = port.mtu + 18u;  // Ethernet header, VLAN tag, no FCS
      const uint32_t room = c.memory.mbuf_data_room - 128u;  // RTE_PKTMBUF_HEADROOM
      if (frame_max > room && !port.rx_scatter)
        r.report(c.mark_of(p + ".mtu"), p + ".mtu",
                 "expected at most " + std::to_string(room - 18) + " so a frame fits one mbuf (memory.mbuf_data_room " +
                     std::to_string(c.memory.mbuf_data_room) + " less 128 B headroom; or set rx_scatter), found " +
                     std::to_string(port.mtu));
    }

    const uint32_t need = minimum_mbufs(c);
    if (c.memory.mbufs < need && !c.ports.empty())
      r.report(c.mark_of("memory.mbufs"), "memory.mbufs",
               "expected at least " + std::to_string(need) + " to fill " + std::to_string(c.ports.size()) +
                   " port(s) x " + std::to_string(c.lcores.workers.size()) +
                   " worker(s) of rx and tx descriptors plus the lcore caches, found " +
                   std::to_string(c.memory.mbufs));
    if (c.memory.mbuf_cache > 0 && c.memory.mbuf_cache * 3 / 2 > c.memory.mbufs)
      r.report(c.mark_of("memory.mbuf_cache"), "memory.mbuf_cache",
               "expected at most mbufs/1.5 = " + std::to_string(c.memory.mbufs * 2 / 3) + ", found " +
                   std::to_string(c.memory.mbuf_cache));

    auto &gen = c.test.generator;
    if (gen.enabled) {
      if (gen.dst_ip.family == 0) {
        r.report(c.mark_of("test.generator"), "test.generator", "missing required key 'dst_ip' when enabled is true");
      } else {
        bool has_source = false;
        for (const auto &port : c.ports)
          for (const auto &a : port.addresses) has_source |= a.address.family == gen.dst_ip.family;
        if (!has_source)
          r.report(c.mark_of("test.generator.dst_ip"), "test.generator.dst_ip",
                   std::string("expected an address family some port has an address of, found IPv") +
                       (gen.dst_ip.family == 4 ? "4" : "6") + " and no port has one");
      }
      uint32_t min_mtu = 9600;
      for (const auto &port : c.ports) min_mtu = std::min<uint32_t>(min_mtu, port.mtu);
      const uint32_t max_payload = min_mtu - (gen.dst_ip.family == 6 ? 48u : 28u);
      if (gen.payload_bytes > max_payload)
        r.report(c.mark_of("test.generator.payload_bytes"), "test.generator.payload_bytes",
                 "expected at most " + std::to_string(max_payload) + " to fit the smallest port MTU (" +
                     std::to_string(min_mtu) + "), found " + std::to_string(gen.payload_bytes));
    }
    if (gen.dst_port == 0) gen.dst_port = c.node.udp_port;

    std::map<uint32_t, std::size_t> peer_ids;
    for (std::size_t i = 0; i < c.peers.size(); ++i) {
      const std::string pp = yaml_reader::index("peers", i);
      if (!peer_ids.emplace(c.peers[i].id, i).second)
        r.report(c.mark_of(pp + ".id"), pp + ".id", "duplicate peer id " + std::to_string(c.peers[i].id));
      if (c.peers[i].id == c.node.id)
        r.report(c.mark_of(pp + ".id"), pp + ".id", "peer id " + std::to_string(c.peers[i].id) + " is node.id");
      bool port_ok = c.peers[i].port.empty();
      for (const auto &port : c.ports) port_ok |= port.name == c.peers[i].port;
      if (!port_ok)
        r.report(c.mark_of(pp + ".port"), pp + ".port", "no port named '" + c.peers[i].port + "'");
      // Resolution asks on the link: the peer must be on a subnet of its port.
      const port_config *via = nullptr;
      for (const auto &port : c.ports)
        if (port.name == c.peers[i].port || (c.peers[i].port.empty() && via == nullptr)) via = &port;
      if (port_ok && via != nullptr && !c.peers[i].mac) {
        bool on_link = false;
        for (const auto &a : via->addresses) on_link |= same_subnet(a, c.peers[i].ip);
        if (!on_link)
          r.report(c.mark_of(pp + ".ip"), pp + ".ip",
                   "expected an address on a subnet of port '" + via->name +
                       "' to resolve it there (or give the peer's mac), found " + core::format_ip(c.peers[i].ip));
      }
    }
    const auto &src = c.test.source;
    if (src.enabled) {
      if (src.members.empty())
        r.report(c.mark_of("test.source"), "test.source", "expected at least one member in members when enabled");
      if (src.members.size() > 64)
        r.report(c.mark_of("test.source.members"), "test.source.members", "expected at most 64 members");
      for (uint32_t id : src.members)
        if (!peer_ids.count(id))
          r.report(c.mark_of("test.source.members"), "test.source.members",
                   "member " + std::to_string(id) + " is not in peers (give its id and ip there)");
      if (src.threshold > src.members.size())
        r.report(c.mark_of("test.source.threshold"), "test.source.threshold",
                 "expected at most the number of members (" + std::to_string(src.members.size()) + "), found " +
                     std::to_string(src.threshold));
    }
    std::set<std::string> group_names;
    for (std::size_t i = 0; i < c.groups.size(); ++i) {
      const group_config &g = c.groups[i];
      const std::string gp = yaml_reader::index("groups", i);
      if (g.name.empty() || g.name.size() > 31)
        r.report(c.mark_of(gp + ".name"), gp + ".name", "expected a name of 1 to 31 characters, found '" + g.name + "'");
      else if (!group_names.insert(g.name).second)
        r.report(c.mark_of(gp + ".name"), gp + ".name", "duplicate group name '" + g.name + "'");
      if (g.members.empty() || g.members.size() > 64)
        r.report(c.mark_of(gp), gp, "expected 1 to 64 members, found " + std::to_string(g.members.size()));
      for (uint32_t id : g.members)
        if (!peer_ids.count(id))
          r.report(c.mark_of(gp + ".members"), gp + ".members",
                   "member " + std::to_string(id) + " is not in peers (give its id and ip there)");
      if (g.threshold > g.members.size())
        r.report(c.mark_of(gp + ".threshold"), gp + ".threshold",
                 "expected at most the number of members (" + std::to_string(g.members.size()) + "), found " +
                     std::to_string(g.threshold));
    }
    if (c.security.mode == security_mode::required)
      for (std::size_t i = 0; i < c.peers.size(); ++i)
        if (!c.peers[i].public_key && c.peers[i].public_key_file.empty()) {
          const std::string pp = yaml_reader::index("peers", i);
          r.report(c.mark_of(pp + ".id"), pp + ".public_key",
                   "peer " + std::to_string(c.peers[i].id) +
                       " has no public_key: security.mode is required, so every peer must be named by its key "
                       "(public_key or public_key_file; or set security.mode: plaintext explicitly)");
        }
    if (c.security.key_file.empty()) c.security.key_file = "/var/lib/mtpd/" + c.node.name + ".key";
    if (c.eal.file_prefix.empty()) c.eal.file_prefix = "mtpd-" + c.node.name;
    if (c.app.socket_path.empty()) c.app.socket_path = "/run/mtpd/" + c.node.name + ".sock";
  }

  void read(const YAML::Node &root) {
    static const std::vector<std::string> sections = {"node", "ports", "peers", "groups", "lcores", "memory", "eal", "idle",
                                                      "limits", "app", "log", "telemetry", "security", "test"};
    if (!root.IsMap()) {
      r.report(root, "", "expected a mapping with the sections node, ports, lcores, ..., found " +
                             yaml_reader::describe(root));
      return;
    }
    r.check_map(root, "", sections);
    if (auto n = r.child(root, "", "node")) read_node(*n);
    if (auto n = r.child(root, "", "lcores")) read_lcores(*n);
    if (auto n = r.child(root, "", "memory")) read_memory(*n);
    read_ports(root);
    if (auto n = r.child(root, "", "peers")) read_peers(*n);
    if (auto n = r.child(root, "", "groups")) read_groups(*n);
    if (auto n = r.child(root, "", "eal")) read_eal(*n);
    if (auto n = r.child(root, "", "idle")) read_idle(*n);
    if (auto n = r.child(root, "", "limits")) read_limits(*n);
    if (auto n = r.child(root, "", "app")) read_app(*n);
    if (auto n = r.child(root, "", "log")) read_log(*n);
    if (auto n = r.child(root, "", "telemetry")) read_telemetry(*n);
    if (auto n = r.child(root, "", "security")) read_security(*n);
    if (auto n = r.child(root, "", "test")) read_test(*n);
  }
};

}  // namespace

std::string problem::to_string() const {
  std::string s = file + ":" + std::to_string(mark.line) + ":" + std::to_string(mark.column) + ": ";
  if (!key_path.empty()) s += key_path + ": ";
  return s + message;
}

std::string port_config::eal_name() const { return device.substr(0, device.find(',')); }

source_mark config::mark_of(const std::string &key_path) const {
  auto it = marks.find(key_path);
  return it == marks.end() ? source_mark{} : it->second;
}

uint32_t minimum_mbufs(const config &c) {
  uint64_t n = 0;
  const uint64_t workers = c.lcores.workers.size();
  for (const auto &p : c.ports) n += workers * (uint64_t{p.rx_descriptors} + p.tx_descriptors);
  // Each lcore's cache may hold up to 1.5x its size, plus one burst in flight.
  n += (workers + 1) * (c.memory.mbuf_cache * 3 / 2 + 32);
  return static_cast<uint32_t>(std::min<uint64_t>(n, UINT32_MAX));
}

std::string log_level_name(uint32_t level) {
  return level >= 1 && level <= log_levels.size() ? log_levels[level - 1] : "unknown";
}

result<config, problems> load_config_string(const std::string &text, const std::string &source) {
  problems out;
  config c;
  c.source = source;
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::ParserException &e) {
    out.push_back(problem{source, {e.mark.line + 1, e.mark.column + 1}, "", "YAML syntax error: " + e.msg});
    return out;
  } catch (const YAML::Exception &e) {
    out.push_back(problem{source, {}, "", std::string("YAML error: ") + e.what()});
    return out;
  }
  if (!root.IsDefined() || root.IsNull()) {
    out.push_back(problem{source, {}, "", "the file is empty; expected at least a 'ports' list"});
    return out;
  }
  try {
    loader l{yaml_reader(source, out, c.marks), c};
    l.read(root);
    if (out.empty()) l.cross_check();
  } catch (const YAML::Exception &e) {
    // Reads above check node kinds first; this is a guard, not a path.
    out.push_back(problem{source, {e.mark.line + 1, e.mark.column + 1}, "", std::string("YAML error: ") + e.what()});
  }
  // Section order is the loader's; line order is the reader's.
  std::stable_sort(out.begin(), out.end(), [](const problem &a, const problem &b) {
    return a.mark.line != b.mark.line ? a.mark.line < b.mark.line : a.mark.column < b.mark.column;
  });
  if (!out.empty()) return out;
  return c;
}

result<config, problems> load_config_file(const std::string &path) {
  auto fail = [&](const std::string &why) { return problems{problem{path, {}, "", "cannot read config file: " + why}}; };
  // Opened without blocking, so a FIFO cannot hang the daemon, and checked
  // before a byte is read: a config is a regular file of at most 1 MiB
  // (not a directory, a device such as /dev/zero, a pipe).
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return fail(std::strerror(errno));
  struct fd_closer {
    int fd;
    ~fd_closer() { ::close(fd); }
  } closer{fd};
  struct stat st{};
  if (::fstat(fd, &st) != 0) return fail(std::strerror(errno));
  if (S_ISDIR(st.st_mode)) return fail("it is a directory, not a file");
  if (!S_ISREG(st.st_mode))
    return fail(std::string("it is not a regular file (") +
                (S_ISFIFO(st.st_mode) ? "a FIFO" : S_ISCHR(st.st_mode) ? "a character device" :
                 S_ISBLK(st.st_mode) ? "a block device" : S_ISSOCK(st.st_mode) ? "a socket" : "not a file") + ")");
  if (static_cast<uint64_t>(st.st_size) > max_config_file_bytes)
    return fail("it is " + std::to_string(st.st_size) + " bytes; a config is at most " +
                std::to_string(max_config_file_bytes) + " bytes (1 MiB)");
  std::string text(static_cast<std::size_t>(st.st_size), '\0');
  std::size_t got = 0;
  while (got < text.size()) {
    const ssize_t n = ::read(fd, text.data() + got, text.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(std::strerror(errno));
    if (n == 0) break;  // shrank while we read: take what is there
    got += static_cast<std::size_t>(n);
  }
  text.resize(got);
  return load_config_string(text, path);
}

}  // namespace mtp::cfg
