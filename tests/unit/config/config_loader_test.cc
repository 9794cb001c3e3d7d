// SPDX-License-Identifier: BSD-3-Clause
// The config loader on every example, on the embedded default, and on each
// class of broken config, asserting the exact message an operator reads.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <sys/stat.h>

#include "config.h"

using namespace mtp::cfg;

namespace {

// Loads `text` as "t.yaml" and returns every problem, one string each.
std::vector<std::string> problems_of(const std::string &text) {
  auto r = load_config_string(text, "t.yaml");
  std::vector<std::string> out;
  if (!r)
    for (const auto &p : r.err()) out.push_back(p.to_string());
  return out;
}

std::string one_problem(const std::string &text) {
  auto ps = problems_of(text);
  EXPECT_EQ(ps.size(), 1u) << (ps.empty() ? "no problem" : ps[0]);
  return ps.empty() ? "" : ps[0];
}

const char minimal[] = "ports:\n  - name: p0\n    device: net_null0\n";
// Peers without keys need plaintext said explicitly (docs/security.md);
// appended last, so the lines of the problems above it do not move.
const char plaintext[] = "security: {mode: plaintext}\n";

config load_ok(const std::string &text) {
  auto r = load_config_string(text, "t.yaml");
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.err()[0].to_string());
  return r.ok() ? *r : config{};
}

}  // namespace

TEST(config_loader, every_example_loads) {
  std::size_t n = 0;
  for (const auto &e : std::filesystem::recursive_directory_iterator(MTP_EXAMPLES_DIR)) {
    if (e.path().extension() != ".yaml") continue;
    auto r = load_config_file(e.path().string());
    EXPECT_TRUE(r.ok()) << e.path() << ": " << (r.ok() ? "" : r.err()[0].to_string());
    ++n;
  }
  EXPECT_EQ(n, 11u) << "single-node, two-node-memif (2), four-node-netns (4), transfer-memif (2), apps-memif (2)";
}

TEST(config_loader, example_values_are_read) {
  auto r = load_config_file(std::string(MTP_EXAMPLES_DIR) + "/single-node.yaml");
  ASSERT_TRUE(r.ok());
  const config &c = *r;
  EXPECT_EQ(c.node.name, "single");
  EXPECT_EQ(c.node.udp_port, 7400);
  ASSERT_EQ(c.ports.size(), 1u);
  EXPECT_EQ(c.ports[0].device, "net_tap0,iface=mtp0");
  EXPECT_EQ(c.ports[0].eal_name(), "net_tap0");
  EXPECT_FALSE(c.ports[0].is_pci);
  ASSERT_EQ(c.ports[0].addresses.size(), 2u);
  EXPECT_EQ(c.ports[0].addresses[0].address.family, 4);
  EXPECT_EQ(c.ports[0].addresses[0].prefix_len, 24);
  EXPECT_EQ(c.ports[0].addresses[1].address.family, 6);
  EXPECT_EQ(c.ports[0].addresses[1].prefix_len, 64);
  EXPECT_EQ((*c.ports[0].mac)[5], 0x01);
  EXPECT_EQ(c.lcores.control, 0u);
  EXPECT_EQ(c.lcores.workers, std::vector<unsigned>{1});
  EXPECT_EQ(c.lcores.cpu(1), 1u);
  EXPECT_FALSE(c.memory.hugepages);
  EXPECT_EQ(c.eal.file_prefix, "mtpd-single");
  EXPECT_EQ(c.idle.policy, idle_policy::adaptive);
  EXPECT_EQ(c.app.socket_path, "/run/mtpd/single.sock");
  EXPECT_EQ(c.app.mode, 0660u);
  EXPECT_EQ(log_level_name(c.log.level), "info");
  EXPECT_EQ(log_level_name(c.log.eal_level), "notice");
  EXPECT_FALSE(c.test.generator.enabled);
}

TEST(config_loader, memif_example_has_generator_towards_peer) {
  auto r = load_config_file(std::string(MTP_EXAMPLES_DIR) + "/two-node-memif/node-a.yaml");
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->test.generator.enabled);
  EXPECT_EQ(r->test.generator.dst_ip.bytes[3], 2);
  EXPECT_EQ(r->test.generator.dst_port, 7400) << "defaults to node.udp_port";
  EXPECT_FALSE(r->test.generator.pingpong);
  EXPECT_EQ(r->eal.file_prefix, "mtpd-memif-a");
}

TEST(config_loader, transfer_example_has_source_peers_and_sink) {
  auto src = load_config_file(std::string(MTP_EXAMPLES_DIR) + "/transfer-memif/source.yaml");
  ASSERT_TRUE(src.ok()) << src.err()[0].to_string();
  EXPECT_TRUE(src->test.source.enabled);
  EXPECT_EQ(src->test.source.members, std::vector<uint32_t>{2});
  EXPECT_EQ(src->test.source.total_bytes, 256u << 20);
  ASSERT_EQ(src->peers.size(), 1u);
  EXPECT_EQ(src->peers[0].id, 2u);
  EXPECT_EQ(src->peers[0].port, "m0");
  EXPECT_FALSE(src->peers[0].mac.has_value()) << "resolved by ARP";
  auto sink = load_config_file(std::string(MTP_EXAMPLES_DIR) + "/transfer-memif/sink.yaml");
  ASSERT_TRUE(sink.ok());
  EXPECT_TRUE(sink->test.sink.enabled);
  EXPECT_FALSE(sink->test.faults.any());
}

TEST(config_errors, source_members_must_be_peers) {
  EXPECT_EQ(one_problem(std::string(minimal) + "test:\n  source: {enabled: true, members: [5]}\n"),
            "t.yaml:5:36: test.source.members: member 5 is not in peers (give its id and ip there)");
  EXPECT_EQ(one_problem(std::string(minimal) + "peers:\n  - {id: 5, mac: 02:00:00:00:00:05}\n"),
            "t.yaml:5:5: peers[0]: missing required key: a peer needs id and ip (and mac unless it is resolved on the link)");
  EXPECT_EQ(one_problem(std::string(minimal) + "test:\n  faults: {drop: 1.5}\n"),
            "t.yaml:5:18: test.faults.drop: expected a probability from 0 to 1, found '1.5'");
}

// A peer without a MAC is resolved on its port's link, so it must be on a
// subnet of that port; with a MAC it may be anywhere.
TEST(config_errors, peer_without_mac_must_be_on_link) {
  const std::string ports =
      "ports:\n  - name: p0\n    device: net_null0\n    addresses: [10.0.0.1/24, fd00:1::1/64]\n"
      "  - name: p1\n    device: net_null1\n    addresses: [10.0.9.1/24]\n";
  auto c = load_ok(ports + "peers:\n  - {id: 5, ip: 10.0.0.5}\n  - {id: 6, ip: 'fd00:1::6'}\n"
                           "  - {id: 7, ip: 10.0.9.7, port: p1}\n  - {id: 8, ip: 192.168.0.8, mac: 02:00:00:00:00:08}\n" +
                   plaintext);
  ASSERT_EQ(c.peers.size(), 4u);
  EXPECT_FALSE(c.peers[0].mac.has_value());
  EXPECT_TRUE(c.peers[3].mac.has_value());
  EXPECT_EQ(one_problem(ports + "peers:\n  - {id: 5, ip: 10.0.9.5}\n" + plaintext),
            "t.yaml:9:17: peers[0].ip: expected an address on a subnet of port 'p0' to resolve it there (or give the "
            "peer's mac), found 10.0.9.5");
  EXPECT_EQ(one_problem(ports + "peers:\n  - {id: 6, ip: 'fd00:2::6', port: p0}\n" + plaintext),
            "t.yaml:9:17: peers[0].ip: expected an address on a subnet of port 'p0' to resolve it there (or give the "
            "peer's mac), found fd00:2::6");
}

TEST(config_loader, embedded_default_loads_and_needs_no_hugepages) {
  auto r = load_default_config();
  ASSERT_TRUE(r.ok()) << r.err()[0].to_string();
  EXPECT_EQ(r->source, "<embedded default>");
  EXPECT_FALSE(r->memory.hugepages);
  ASSERT_EQ(r->ports.size(), 1u);
  EXPECT_EQ(r->ports[0].device, "net_tap0,iface=mtp0");
  EXPECT_EQ(r->app.socket_path, "/run/mtpd/mtpd.sock");
}

TEST(config_loader, embedded_default_is_the_shipped_file) {
  std::ifstream in(std::string(MTP_SOURCE_ROOT) + "/config/default.yaml");
  std::stringstream s;
  s << in.rdbuf();
  EXPECT_EQ(default_config_text(), s.str());
}

TEST(config_loader, minimal_config_takes_defaults) {
  const config c = load_ok(minimal);
  EXPECT_EQ(c.node.name, "mtpd");
  EXPECT_EQ(c.ports[0].mtu, 1500);
  EXPECT_EQ(c.ports[0].rx_descriptors, 1024);
  EXPECT_TRUE(c.memory.hugepages);
  EXPECT_EQ(c.memory.mbufs, 16383u);
  EXPECT_EQ(c.eal.file_prefix, "mtpd-mtpd");
}

TEST(config_loader, pci_device) {
  const config c = load_ok("ports:\n  - {name: p0, device: '0000:3b:00.1'}\n");
  EXPECT_TRUE(c.ports[0].is_pci);
  EXPECT_EQ(c.ports[0].eal_name(), "0000:3b:00.1");
}

// --- each class of broken config, with its exact message ---

TEST(config_errors, yaml_syntax) {
  EXPECT_EQ(one_problem("ports:\n  - name: [p0\n"),
            "t.yaml:3:1: YAML syntax error: end of sequence flow not found");
}

TEST(config_errors, empty_file) {
  EXPECT_EQ(one_problem(""), "t.yaml:1:1: the file is empty; expected at least a 'ports' list");
}

TEST(config_errors, top_level_not_a_mapping) {
  EXPECT_EQ(one_problem("- a\n- b\n"),
            "t.yaml:1:1: expected a mapping with the sections node, ports, lcores, ..., found a list");
}

TEST(config_errors, unknown_key_with_suggestion) {
  EXPECT_EQ(one_problem(std::string(minimal) + "lcores:\n  worker: [1]\n"),
            "t.yaml:5:3: lcores.worker: unknown key; did you mean 'workers'?");
}

TEST(config_errors, unknown_section_with_suggestion) {
  EXPECT_EQ(one_problem(std::string(minimal) + "memroy:\n  mbufs: 4095\n"),
            "t.yaml:4:1: memroy: unknown key; did you mean 'memory'?");
}

TEST(config_errors, unknown_key_without_suggestion) {
  EXPECT_EQ(one_problem(std::string(minimal) + "idle:\n  colour: blue\n"),
            "t.yaml:5:3: idle.colour: unknown key (known keys: policy, spin_loops, max_sleep_us)");
}

TEST(config_errors, duplicate_key) {
  EXPECT_EQ(one_problem(std::string(minimal) + "node:\n  id: 1\n  id: 2\n"),
            "t.yaml:6:3: node.id: duplicate key (first at line 5)");
}

TEST(config_errors, integer_out_of_range) {
  EXPECT_EQ(one_problem("ports:\n  - name: p0\n    device: net_null0\n    mtu: 70000\n"),
            "t.yaml:4:10: ports[0].mtu: expected an integer from 68 to 9600, found 70000");
}

TEST(config_errors, integer_wrong_type) {
  EXPECT_EQ(one_problem("ports:\n  - name: p0\n    device: net_null0\n    mtu: big\n"),
            "t.yaml:4:10: ports[0].mtu: expected an integer from 68 to 9600, found 'big'");
  EXPECT_EQ(one_problem("ports:\n  - name: p0\n    device: net_null0\n    mtu: [1500]\n"),
            "t.yaml:4:10: ports[0].mtu: expected an integer from 68 to 9600, found a list");
  EXPECT_EQ(one_problem(std::string(minimal) + "node:\n  id: -1\n"),
            "t.yaml:5:7: node.id: expected an integer from 1 to 4294967294, found -1");
}

TEST(config_errors, bool_wrong_value) {
  EXPECT_EQ(one_problem(std::string(minimal) + "memory:\n  hugepages: maybe\n"),
            "t.yaml:5:14: memory.hugepages: expected true or false, found 'maybe'");
}

TEST(config_errors, enum_with_suggestion) {
  EXPECT_EQ(one_problem(std::string(minimal) + "idle:\n  policy: adaptiv\n"),
            "t.yaml:5:11: idle.policy: expected one of busy, adaptive, found 'adaptiv'; did you mean 'adaptive'?");
  EXPECT_EQ(one_problem(std::string(minimal) + "log:\n  level: loud\n"),
            "t.yaml:5:10: log.level: expected one of emerg, alert, crit, err, warning, notice, info, debug, "
            "found 'loud'");
}

TEST(config_errors, ports_missing_or_empty) {
  EXPECT_EQ(one_problem("node:\n  name: x\n"),
            "t.yaml:1:1: ports: missing required key: expected a list of at least one port");
  EXPECT_EQ(one_problem("ports: []\n"), "t.yaml:1:8: ports: expected a list of at least one port, found an empty list");
  EXPECT_EQ(one_problem("ports: net_tap0\n"), "t.yaml:1:8: ports: expected a list of ports, found 'net_tap0'");
}

TEST(config_errors, port_missing_keys) {
  auto ps = problems_of("ports:\n  - mtu: 1500\n");
  ASSERT_EQ(ps.size(), 2u);
  EXPECT_EQ(ps[0], "t.yaml:2:5: ports[0]: missing required key 'name'");
  EXPECT_EQ(ps[1], "t.yaml:2:5: ports[0]: missing required key 'device'");
}

TEST(config_errors, bad_device) {
  EXPECT_EQ(one_problem("ports:\n  - {name: p0, device: eth0}\n"),
            "t.yaml:2:24: ports[0].device: expected a PCI address (0000:01:00.0) or a virtual device "
            "(net_tap0,iface=mtp0), found 'eth0'");
  EXPECT_EQ(one_problem("ports:\n  - {name: p0, device: 'net_tap0,iface'}\n"),
            "t.yaml:2:24: ports[0].device: expected a PCI address (0000:01:00.0) or a virtual device "
            "(net_tap0,iface=mtp0), found 'net_tap0,iface'");
}

TEST(config_errors, duplicate_ports) {
  auto ps = problems_of(
      "ports:\n"
      "  - {name: p0, device: 'net_tap0,iface=a', mac: '02:00:00:00:00:01', addresses: [10.0.0.1/24]}\n"
      "  - {name: p0, device: 'net_tap0,iface=b', mac: '02:00:00:00:00:01', addresses: [10.0.0.1/16]}\n");
  ASSERT_EQ(ps.size(), 4u);
  EXPECT_EQ(ps[0], "t.yaml:3:12: ports[1].name: duplicate port name 'p0' (first in ports[0])");
  EXPECT_EQ(ps[1], "t.yaml:3:24: ports[1].device: duplicate device 'net_tap0' (first in ports[0])");
  EXPECT_EQ(ps[2], "t.yaml:3:49: ports[1].mac: duplicate MAC address '02:00:00:00:00:01' (first in ports[0])");
  EXPECT_EQ(ps[3], "t.yaml:3:82: ports[1].addresses[0]: duplicate address '10.0.0.1' (first in ports[0])");
}

TEST(config_errors, bad_addresses) {
  EXPECT_EQ(one_problem("ports:\n  - {name: p0, device: net_null0, addresses: [10.0.0.300/24]}\n"),
            "t.yaml:2:47: ports[0].addresses[0]: expected an IPv4 or IPv6 address with prefix length like "
            "10.0.0.1/24, found '10.0.0.300/24'");
  EXPECT_EQ(one_problem("ports:\n  - {name: p0, device: net_null0, addresses: [10.0.0.1]}\n"),
            "t.yaml:2:47: ports[0].addresses[0]: expected an IPv4 or IPv6 address with prefix length like "
            "10.0.0.1/24, found '10.0.0.1'");
  EXPECT_EQ(one_problem("ports:\n  - {name: p0, device: net_null0, mac: 'zz:00:00:00:00:01'}\n"),
            "t.yaml:2:40: ports[0].mac: expected a MAC address like 02:00:00:00:00:01, found 'zz:00:00:00:00:01'");
}

TEST(config_errors, ipv6_needs_mtu_1280) {
  EXPECT_EQ(one_problem("ports:\n  - {name: p0, device: net_null0, mtu: 1000, addresses: ['fd00::1/64']}\n"),
            "t.yaml:2:40: ports[0].mtu: expected at least 1280 on a port with an IPv6 address (fd00::1/64), found 1000");
}

TEST(config_errors, mtu_must_fit_one_mbuf) {
  EXPECT_EQ(one_problem("ports:\n  - {name: p0, device: net_null0, mtu: 9000}\n"),
            "t.yaml:2:40: ports[0].mtu: expected at most 2030 so a frame fits one mbuf (memory.mbuf_data_room 2176 "
            "less 128 B headroom; or set rx_scatter), found 9000");
  auto c = load_ok("ports:\n  - {name: p0, device: net_null0, mtu: 9000, rx_scatter: true}\n");
  EXPECT_TRUE(c.ports[0].rx_scatter);
}

TEST(config_errors, descriptors_power_of_two) {
  EXPECT_EQ(one_problem("ports:\n  - {name: p0, device: net_null0, rx_descriptors: 1000}\n"),
            "t.yaml:2:51: ports[0].rx_descriptors: expected a power of two from 64 to 16384, found 1000");
  EXPECT_EQ(one_problem("ports:\n  - {name: p0, device: net_null0, tx_descriptors: 32768}\n"),
            "t.yaml:2:51: ports[0].tx_descriptors: expected a power of two from 64 to 16384, found 32768");
}

TEST(config_errors, impossible_lcores) {
  EXPECT_EQ(one_problem(std::string(minimal) + "lcores:\n  control: 1\n  workers: [1]\n"),
            "t.yaml:6:13: lcores.workers[0]: lcore 1 is the control lcore; workers need lcores of their own");
  EXPECT_EQ(one_problem(std::string(minimal) + "lcores:\n  workers: [1, 2, 1]\n"),
            "t.yaml:5:19: lcores.workers[2]: duplicate worker lcore 1");
  EXPECT_EQ(one_problem(std::string(minimal) + "lcores:\n  workers: []\n"),
            "t.yaml:5:12: lcores.workers: expected a list of at least one worker lcore, found an empty list");
  EXPECT_EQ(one_problem(std::string(minimal) + "lcores:\n  workers: [200]\n"),
            "t.yaml:5:13: lcores.workers[0]: expected an integer from 0 to 127, found 200");
  EXPECT_EQ(one_problem(std::string(minimal) + "lcores:\n  workers: [1]\n  cpus: {5: 0}\n"),
            "t.yaml:6:10: lcores.cpus.5: lcore 5 is neither the control lcore nor a worker");
}

TEST(config_errors, too_few_mbufs) {
  EXPECT_EQ(one_problem(std::string(minimal) + "memory:\n  mbufs: 2047\n"),
            "t.yaml:5:10: memory.mbufs: expected at least 2880 to fill 1 port(s) x 1 worker(s) of rx and tx "
            "descriptors plus the lcore caches, found 2047");
}

TEST(config_errors, eal_args_cannot_override_the_config) {
  EXPECT_EQ(one_problem(std::string(minimal) + "eal:\n  args: ['--file-prefix=x', '--log-level=7']\n"),
            "t.yaml:5:10: eal.args[0]: '--file-prefix' is set from eal.file_prefix; set it there");
  EXPECT_EQ(one_problem(std::string(minimal) + "eal:\n  args: [--vdev, net_null1]\n"),
            "t.yaml:5:10: eal.args[0]: '--vdev' is set from ports; set it there");
}

TEST(config_errors, app_socket_and_mode) {
  EXPECT_EQ(one_problem(std::string(minimal) + "app:\n  socket: mtpd.sock\n"),
            "t.yaml:5:11: app.socket: expected an absolute path of at most 107 bytes, found 'mtpd.sock'");
  EXPECT_EQ(one_problem(std::string(minimal) + "app:\n  mode: '0999'\n"),
            "t.yaml:5:9: app.mode: expected an octal mode from 0000 to 0777 like \"0660\", found '0999'");
}

TEST(config_errors, app_users_and_groups) {
  const config c = load_ok(std::string(minimal) + "app:\n  users: [root, '1000']\n  groups: [root]\n");
  EXPECT_EQ(c.app.users, (std::vector<std::string>{"root", "1000"}));
  EXPECT_EQ(c.app.groups, (std::vector<std::string>{"root"}));
  EXPECT_EQ(one_problem(std::string(minimal) + "app:\n  users: root\n"),
            "t.yaml:5:10: app.users: expected a list of user names or uids, found 'root'");
  EXPECT_EQ(one_problem(std::string(minimal) + "app:\n  groups: ['']\n"),
            "t.yaml:5:12: app.groups[0]: expected a name or a numeric id of 1 to 64 characters");
  EXPECT_EQ(resolve_user("root"), 0u);
  EXPECT_EQ(resolve_user("4242"), 4242u);
  EXPECT_EQ(resolve_group("root"), 0u);
  EXPECT_FALSE(resolve_user("no-such-user-mtp"));
  EXPECT_FALSE(resolve_group("no-such-group-mtp"));
}

TEST(config_errors, generator_needs_a_destination_of_a_known_family) {
  EXPECT_EQ(one_problem(std::string(minimal) + "test:\n  generator: {enabled: true}\n"),
            "t.yaml:5:14: test.generator: missing required key 'dst_ip' when enabled is true");
  EXPECT_EQ(one_problem(std::string(minimal) + "test:\n  generator: {enabled: true, dst_ip: 10.0.0.2}\n"),
            "t.yaml:5:38: test.generator.dst_ip: expected an address family some port has an address of, found "
            "IPv4 and no port has one");
}

TEST(config_errors, every_problem_is_reported_not_just_the_first) {
  auto ps = problems_of(
      "node: {id: 0, udp_port: 0}\n"
      "ports:\n  - {name: p0, device: net_null0, mtu: 10}\n"
      "idle: {policy: lazy}\n");
  ASSERT_EQ(ps.size(), 4u);
  EXPECT_EQ(ps[0], "t.yaml:1:12: node.id: expected an integer from 1 to 4294967294, found 0");
  EXPECT_EQ(ps[1], "t.yaml:1:25: node.udp_port: expected an integer from 1 to 65535, found 0");
  EXPECT_EQ(ps[2], "t.yaml:3:40: ports[0].mtu: expected an integer from 68 to 9600, found 10");
  EXPECT_EQ(ps[3], "t.yaml:4:16: idle.policy: expected one of busy, adaptive, found 'lazy'");
}

TEST(config_errors, missing_file) {
  auto r = load_config_file("/nonexistent/mtp.yaml");
  ASSERT_FALSE(r.ok());
  ASSERT_EQ(r.err().size(), 1u);
  EXPECT_EQ(r.err()[0].to_string(), "/nonexistent/mtp.yaml:1:1: cannot read config file: No such file or directory");
}

// --- host checks ---

TEST(host_check, cpu_not_available) {
  const config c = load_ok(std::string(minimal) + "lcores:\n  workers: [1]\n  cpus: {1: 999}\n");
  auto ps = check_host(c);
  ASSERT_EQ(ps.size(), 1u);
  const std::string s = ps[0].to_string();
  EXPECT_EQ(s.substr(0, s.find("(allowed")),
            "t.yaml:6:13: lcores.cpus.1: lcore 1 would run on CPU 999, which this process may not use ");
  EXPECT_NE(s.find("); pin it with lcores.cpus"), std::string::npos) << s;
}

TEST(host_check, missing_directories_and_group) {
  const config c = load_ok(std::string(minimal) +
                           "lcores: {control: 0, workers: [1], cpus: {0: 0, 1: 0}}\n"
                           "log: {file: /nonexistent/dir/mtpd.log}\n"
                           "app: {group: no-such-group-mtp}\n");
  auto ps = check_host(c);
  ASSERT_EQ(ps.size(), 2u);
  EXPECT_EQ(ps[0].to_string(), "t.yaml:5:13: log.file: directory '/nonexistent/dir' does not exist");
  EXPECT_EQ(ps[1].to_string(), "t.yaml:6:14: app.group: no group named 'no-such-group-mtp' on this host");
}

TEST(host_check, unknown_app_users_and_groups) {
  const config c = load_ok(std::string(minimal) +
                           "lcores: {control: 0, workers: [1], cpus: {0: 0, 1: 0}}\n"
                           "app: {users: [root, no-such-user-mtp], groups: [no-such-group-mtp]}\n");
  auto ps = check_host(c);
  ASSERT_EQ(ps.size(), 2u);
  EXPECT_EQ(ps[0].to_string(), "t.yaml:5:21: app.users[1]: no user named 'no-such-user-mtp' on this host");
  EXPECT_EQ(ps[1].to_string(), "t.yaml:5:49: app.groups[0]: no group named 'no-such-group-mtp' on this host");
}

TEST(host_check, memif_socket_directory) {
  const config c = load_ok(
      "ports:\n  - {name: m, device: 'net_memif0,role=server,socket=/nonexistent/m.sock,socket-abstract=no'}\n"
      "lcores: {control: 0, workers: [1], cpus: {0: 0, 1: 0}}\n");
  auto ps = check_host(c);
  ASSERT_EQ(ps.size(), 1u);
  EXPECT_EQ(ps[0].to_string(), "t.yaml:2:23: ports[0].device: memif socket directory '/nonexistent' does not exist");
}

TEST(host_check, good_config_has_no_problems) {
  const config c = load_ok(std::string(minimal) + "lcores: {control: 0, workers: [1], cpus: {0: 0, 1: 0}}\n");
  EXPECT_TRUE(check_host(c).empty());
}

// Config input that is not a config file: a clear refusal before a byte is
// parsed, never an unbounded read or a hang.
TEST(config_errors, file_that_is_not_a_regular_file) {
  auto message = [](const std::string &path) {
    auto r = load_config_file(path);
    EXPECT_FALSE(r.ok()) << path;
    return r.ok() ? std::string() : r.err()[0].to_string();
  };
  const std::string dir = ::testing::TempDir() + "/mtp-config-dir";
  std::filesystem::create_directories(dir);
  EXPECT_NE(message(dir).find("cannot read config file: it is a directory, not a file"), std::string::npos)
      << message(dir);
  EXPECT_NE(message("/dev/zero").find("it is not a regular file (a character device)"), std::string::npos)
      << message("/dev/zero");
  EXPECT_NE(message("/dev/urandom").find("not a regular file"), std::string::npos);
  // A FIFO with no writer: opening it must not block.
  const std::string fifo = ::testing::TempDir() + "/mtp-config-fifo";
  std::filesystem::remove(fifo);
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_NE(message(fifo).find("it is not a regular file (a FIFO)"), std::string::npos) << message(fifo);
  std::filesystem::remove(fifo);
  EXPECT_NE(message("/nonexistent/mtp.yaml").find("No such file or directory"), std::string::npos);
}

TEST(config_errors, file_over_one_mebibyte) {
  const std::string path = ::testing::TempDir() + "/mtp-config-big.yaml";
  {
    std::ofstream out(path);
    out << minimal;
    out << std::string(max_config_file_bytes, '#');
  }
  auto r = load_config_file(path);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.err()[0].to_string().find("a config is at most 1048576 bytes (1 MiB)"), std::string::npos)
      << r.err()[0].to_string();
  // Exactly at the limit is fine (comments pad it).
  std::filesystem::resize_file(path, max_config_file_bytes);
  EXPECT_TRUE(load_config_file(path).ok());
  std::filesystem::remove(path);
}

TEST(config_errors, in_memory_without_hugepages) {
  EXPECT_EQ(one_problem(std::string(minimal) + "memory:\n  hugepages: false\neal:\n  in_memory: true\n"),
            "t.yaml:7:14: eal.in_memory: in_memory needs hugepages; with memory.hugepages: false, leave in_memory "
            "out (or false)");
}

TEST(config_loader, packet_size_streams_and_session_memory) {
  const config d = load_ok(minimal);
  EXPECT_EQ(d.node.max_packet_bytes, 1400);  // protocol.md 2
  EXPECT_EQ(d.limits.streams_per_session, 16u);  // protocol.md 4.5
  EXPECT_EQ(d.limits.session_memory_mb, 256u);
  const config c = load_ok(std::string(minimal) +
                           "node:\n  max_packet_bytes: 1200\nlimits:\n  streams_per_session: 4\n  session_memory_mb: 64\n");
  EXPECT_EQ(c.node.max_packet_bytes, 1200);
  EXPECT_EQ(c.limits.streams_per_session, 4u);
  EXPECT_EQ(c.limits.session_memory_mb, 64u);
  EXPECT_NE(one_problem(std::string(minimal) + "node:\n  max_packet_bytes: 100\n").find("expected an integer from 256 to 9000"),
            std::string::npos);
  EXPECT_NE(one_problem(std::string(minimal) + "limits:\n  streams_per_session: 300\n").find("from 1 to 256"),
            std::string::npos);
}

// Groups name members for applications (libmtp's preconnection `group`).
TEST(config_loader, groups_are_read) {
  const config c = load_ok(std::string(minimal) +
                           "peers:\n  - {id: 2, ip: 10.0.0.2, mac: 02:00:00:00:00:02}\n"
                           "  - {id: 3, ip: 10.0.0.3, mac: 02:00:00:00:00:03}\n"
                           "groups:\n  - {name: pair, members: [2, 3], threshold: 1}\n" + plaintext);
  ASSERT_EQ(c.groups.size(), 1u);
  EXPECT_EQ(c.groups[0].name, "pair");
  EXPECT_EQ(c.groups[0].members, (std::vector<uint32_t>{2, 3}));
  EXPECT_EQ(c.groups[0].threshold, 1u);
}

TEST(config_errors, group_members_must_be_peers_and_names_unique) {
  const std::string peers = "peers:\n  - {id: 2, ip: 10.0.0.2, mac: 02:00:00:00:00:02}\n";
  EXPECT_NE(one_problem(std::string(minimal) + peers + "groups:\n  - {name: g, members: [2, 9]}\n" + plaintext)
                .find("member 9 is not in peers"),
            std::string::npos);
  EXPECT_NE(one_problem(std::string(minimal) + peers + "groups:\n  - {name: g, members: [2]}\n  - {name: g, members: [2]}\n" +
                        plaintext)
                .find("duplicate group name 'g'"),
            std::string::npos);
  EXPECT_NE(one_problem(std::string(minimal) + peers + "groups:\n  - {name: g, members: [2], threshold: 2}\n" +
                        plaintext)
                .find("expected at most the number of members (1)"),
            std::string::npos);
  EXPECT_NE(one_problem(std::string(minimal) + peers + "groups:\n  - {name: g, members: []}\n" + plaintext)
                .find("expected 1 to 64 members"),
            std::string::npos);
}

// Native security (docs/security.md): on by default, peers named by their
// keys, every field checked.
TEST(config_loader, security_is_required_by_default_and_reads_keys) {
  const std::string key = "hVtW0Jq8tOB2Q7Y5aQxL0K1kD0z8A0kCk8X1f8qG6Tk=";
  const config c = load_ok(std::string(minimal) + "peers:\n  - {id: 2, ip: 10.0.0.2, mac: 02:00:00:00:00:02, public_key: '" +
                           key + "', preshared_key: '" + key + "'}\n");
  EXPECT_EQ(c.security.mode, security_mode::required);
  EXPECT_EQ(c.security.key_file, "/var/lib/mtpd/mtpd.key");
  EXPECT_FALSE(c.security.generate_key);
  ASSERT_TRUE(c.peers[0].public_key.has_value());
  EXPECT_EQ((*c.peers[0].public_key)[0], 0x85);  // 'hVtW' decodes to 85 5b 56
  EXPECT_EQ((*c.peers[0].public_key)[1], 0x5b);
  ASSERT_TRUE(c.peers[0].preshared_key.has_value());
  const config d = load_ok(std::string(minimal) +
                           "security: {mode: plaintext, key_file: /k, rekey_after_packets: 2048, rekey_after_s: 5, "
                           "handshake_retry_ms: 50, cookie_after_handshakes_per_s: 0, generate_key: true}\n");
  EXPECT_EQ(d.security.mode, security_mode::plaintext);
  EXPECT_EQ(d.security.key_file, "/k");
  EXPECT_EQ(d.security.rekey_after_packets, 2048u);
  EXPECT_EQ(d.security.rekey_after_s, 5u);
  EXPECT_EQ(d.security.handshake_retry_ms, 50u);
  EXPECT_EQ(d.security.cookie_after_handshakes_per_s, 0u);
  EXPECT_TRUE(d.security.generate_key);
  // The embedded default runs secured and makes its key on first start.
  auto def = load_default_config();
  ASSERT_TRUE(def.ok());
  EXPECT_EQ(def->security.mode, security_mode::required);
  EXPECT_TRUE(def->security.generate_key);
}

TEST(config_errors, security_fields_and_peer_keys_are_checked) {
  const std::string peer = "peers:\n  - {id: 2, ip: 10.0.0.2, mac: 02:00:00:00:00:02}\n";
  EXPECT_EQ(one_problem(std::string(minimal) + peer),
            "t.yaml:5:10: peers[0].public_key: peer 2 has no public_key: security.mode is required, so every peer "
            "must be named by its key (public_key or public_key_file; or set security.mode: plaintext explicitly)");
  EXPECT_NE(one_problem(std::string(minimal) + "peers:\n  - {id: 2, ip: 10.0.0.2, mac: 02:00:00:00:00:02, public_key: "
                                               "'hVtW0Jq8tOB2Q7Y5aQxL0K1kD0z8A0kCk8X1f8qG6Tk=', public_key_file: /k.pub}\n")
                .find("not both"),
            std::string::npos);
  EXPECT_EQ(load_ok(std::string(minimal) + "peers:\n  - {id: 2, ip: 10.0.0.2, mac: 02:00:00:00:00:02, "
                                           "public_key_file: /etc/mtpd/b.pub}\n")
                .peers[0]
                .public_key_file,
            "/etc/mtpd/b.pub");
  EXPECT_NE(one_problem(std::string(minimal) + "peers:\n  - {id: 2, ip: 10.0.0.2, mac: 02:00:00:00:00:02, public_key: abc}\n")
                .find("peers[0].public_key: expected a base64 key of 32 bytes (44 characters"),
            std::string::npos);
  EXPECT_NE(one_problem(std::string(minimal) + "security: {mode: maybe}\n").find("security.mode"), std::string::npos);
  EXPECT_NE(one_problem(std::string(minimal) + "security: {rekey_after_packets: 10}\n").find("security.rekey_after_packets"),
            std::string::npos);
  EXPECT_NE(one_problem(std::string(minimal) + "security: {keyfile: /k}\n").find("keyfile"), std::string::npos);
}
