// SPDX-License-Identifier: BSD-3-Clause
// The one typed, validated mtpd configuration.
//
// load_config_*() turn YAML (a file, or the embedded default) into a config
// whose every field has been range-checked, or into a list of problems, one
// per mistake, each naming file:line:column, the key path, what was expected
// and what was found. check_host() then checks what depends on this machine
// (CPUs, directories, groups) in the same format. Nothing here starts EAL;
// all of it runs before. Thread-safety: plain values, build once at start-up.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "result.h"
#include "udp_frame.h"

namespace mtp::cfg {

/// Where a key sits in its source (1-based, as editors count).
struct source_mark {
  int line = 1;
  int column = 1;
};

/// One problem in a config, printable as one line.
struct problem {
  std::string file;
  source_mark mark;
  std::string key_path;  ///< "ports[1].mtu"; empty for syntax errors
  std::string message;   ///< "expected ..., found ..."
  std::string to_string() const;
};

using problems = std::vector<problem>;

/// An IP address with a prefix length ("10.0.0.1/24").
struct ip_prefix {
  core::ip_address address;
  uint8_t prefix_len = 0;
  std::string text;  ///< as written, for messages and logs
};

struct node_config {
  std::string name = "mtpd";  ///< [A-Za-z0-9_.-]{1,32}; names logs, socket, file prefix
  uint32_t id = 1;            ///< 1 .. 2^32-2, unique in a deployment
  uint16_t udp_port = 7400;   ///< the MTP UDP port
  /// Largest MTP packet (UDP payload) this node sends (protocol.md 2);
  /// also capped by every port's MTU and the mbuf data room.
  uint16_t max_packet_bytes = 1400;
};

struct port_config {
  std::string name;    ///< unique; names counters and log lines
  std::string device;  ///< PCI address or vdev string ("net_tap0,iface=mtp0")
  bool is_pci = false;
  uint16_t mtu = 1500;
  std::optional<std::array<uint8_t, 6>> mac;  ///< set on the port when given
  std::vector<ip_prefix> addresses;
  uint16_t rx_descriptors = 1024;
  uint16_t tx_descriptors = 1024;
  /// Receive frames longer than one mbuf as chains (RX scatter, where the
  /// device can); the worker gathers them to parse. Off: frames must fit one mbuf.
  bool rx_scatter = false;
  source_mark mark;
  /// The device name EAL knows the port by: the vdev name without its
  /// arguments, or the PCI address.
  std::string eal_name() const;
};

struct lcore_config {
  unsigned control = 0;
  std::vector<unsigned> workers{1};
  std::map<unsigned, unsigned> cpu_of;  ///< lcore -> CPU when pinned explicitly
  unsigned cpu(unsigned lcore) const {
    auto it = cpu_of.find(lcore);
    return it == cpu_of.end() ? lcore : it->second;
  }
};

struct memory_config {
  bool hugepages = true;
  uint32_t size_mb = 256;        ///< EAL memory; reserved up front with --no-huge
  uint32_t mbufs = 16383;        ///< packet pool size (2^n - 1 is best for rte_mempool)
  uint32_t mbuf_cache = 256;     ///< per-lcore mempool cache
  uint32_t mbuf_data_room = 2176;  ///< bytes per mbuf including 128 B headroom
};

struct eal_config {
  std::string file_prefix;  ///< default: "mtpd-" + node.name
  bool in_memory = false;
  std::vector<std::string> args;  ///< extra EAL arguments, appended as given
};

enum class idle_policy { busy, adaptive };

struct idle_config {
  idle_policy policy = idle_policy::adaptive;
  uint32_t spin_loops = 512;   ///< empty loops spent spinning before backing off
  uint32_t max_sleep_us = 500;  ///< longest sleep of an idle adaptive lcore
};

struct limits_config {
  uint32_t sessions = 4096;          ///< per worker
  /// Streams per direction of a connection: a transport parameter both
  /// ends must agree on (protocol.md 6.5), 16 by default.
  uint32_t streams_per_session = 16;
  uint32_t members_per_group = 64;
  uint32_t app_buffers = 8192;
  /// Memory each worker may spend on its sessions' buffers and tables
  /// (docs/operations.md "Session memory"): the budget no traffic, however
  /// hostile, can push a worker past.
  uint32_t session_memory_mb = 256;
};

struct app_config {
  std::string socket_path;  ///< default: /run/mtpd/<node.name>.sock
  uint32_t mode = 0660;
  std::string group;  ///< owning group of the socket; empty keeps root's
  /// Who may attach, by user and by group (names or numeric ids); both
  /// empty: whoever can open the socket. Resolved at start-up.
  std::vector<std::string> users;
  std::vector<std::string> groups;
};

struct log_config {
  uint32_t level = 7;      ///< rte_log level: 1 emerg .. 8 debug; 7 = info
  uint32_t eal_level = 6;  ///< level for DPDK's own log types; 6 = notice
  std::string file;        ///< empty: stderr
};

struct telemetry_config {
  bool enabled = true;
  uint32_t stats_interval_ms = 0;  ///< periodic counters in the log; 0 = off
};

/// Test-only traffic source: each worker sends UDP frames on every port.
struct generator_config {
  bool enabled = false;
  uint32_t rate_pps = 1000;  ///< per port, summed over workers
  uint16_t payload_bytes = 64;
  core::ip_address dst_ip;
  std::array<uint8_t, 6> dst_mac{0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  uint16_t dst_port = 0;  ///< default: node.udp_port
  /// One frame at a time from the first worker: the next leaves when the
  /// reflection of the last (a reflector such as testpmd macswap sends it
  /// back) arrives, or after 10 ms; round trips go to the RTT histogram.
  /// The raw-UDP half of the round-trip benchmark pair.
  bool pingpong = false;
};

/// Test-only application inside the daemon: sends a verifiable byte
/// pattern to a group over one MTP connection (issue 4's first slice,
/// before libmtp).
struct source_config {
  bool enabled = false;
  uint64_t connection_id = 1;
  std::vector<uint32_t> members;  ///< member ids, each listed in `peers`
  uint32_t threshold = 0;
  uint64_t total_bytes = 1u << 20;
  uint32_t message_bytes = 1024;
  uint32_t streams = 1;
  uint32_t reliability = 0;     ///< 0 reliable, 1 partial, 2 unreliable (core::reliability)
  uint32_t max_retransmissions = 2;  ///< partial
  bool unordered = false;       ///< ordering none instead of fifo
  uint32_t window_bytes = 4u << 20;  ///< stream buffer and receive window (both ends must agree)
  bool pingpong = false;        ///< one message at a time, timed until its echo returns
  uint64_t rate_bytes_per_s = 0;  ///< queue at most this fast (0: as fast as the connection takes)
};

/// Test-only application: accepts connections, verifies and counts data.
struct sink_config {
  bool enabled = false;
  bool echo = false;  ///< send every received message back (ping-pong peer)
  bool verify = true;  ///< check every byte against the source's pattern
  uint32_t window_bytes = 4u << 20;  ///< must match the source's
};

/// Seeded fault injection on received frames (this kernel has no netem).
struct faults_config {
  uint64_t seed = 1;
  double drop = 0, duplicate = 0, reorder = 0, corrupt = 0;
  uint32_t delay_us = 0;  ///< every received frame is held this long first
  bool any() const { return drop > 0 || duplicate > 0 || reorder > 0 || corrupt > 0 || delay_us > 0; }
};

struct test_config {
  generator_config generator;
  source_config source;
  sink_config sink;
  faults_config faults;
};

/// Native security (docs/security.md, protocol.md 9).
enum class security_mode {
  required,   ///< every connection is sealed; plaintext packets are dropped
  plaintext,  ///< no handshake, CRC only: tests and benchmarks, said explicitly
};

using key_bytes = std::array<uint8_t, 32>;

struct security_config {
  security_mode mode = security_mode::required;
  /// This node's static private key (base64, one line, mode 0600).
  /// Default: /var/lib/mtpd/<node.name>.key.
  std::string key_file;
  /// Missing key_file: write a new key pair there (the embedded default
  /// does, so it starts with no set-up). Off: a missing file is an error.
  bool generate_key = false;
  /// Traffic keys roll to a new epoch after this many packets or seconds
  /// under one key, without a handshake (protocol.md 9.5).
  uint64_t rekey_after_packets = uint64_t{1} << 24;
  uint32_t rekey_after_s = 120;
  /// A client repeats its initiation this often until answered.
  uint32_t handshake_retry_ms = 200;
  /// Initiations a worker takes per second before it demands cookies
  /// (address validation, 9.3); 0: always demand them.
  uint32_t cookie_after_handshakes_per_s = 1000;
};

/// A member this node talks to: its id and where it is.
struct peer_config {
  uint32_t id = 0;
  core::ip_address ip;
  /// Its static public key: who it must prove to be, and whom we accept
  /// as it (security.mode required).
  std::optional<key_bytes> public_key;
  /// Or a file holding it (base64, as `mtpd keygen` prints it), read at
  /// start (load_peer_keys in mtpd) into public_key.
  std::string public_key_file;
  /// Mixed into the handshake with it when set (Noise psk2, as WireGuard).
  std::optional<key_bytes> preshared_key;
  /// A static neighbour entry; without it the worker resolves `ip` by ARP
  /// (IPv4) or neighbour discovery (IPv6) on the peer's port.
  std::optional<std::array<uint8_t, 6>> mac;
  std::string port;  ///< local port name to reach it; default: the first port
};

/// A group applications can name instead of listing members (libmtp's
/// preconnection `group`).
struct group_config {
  std::string name;               ///< 1 .. 31 characters
  std::vector<uint32_t> members;  ///< member ids, each listed in `peers`
  uint32_t threshold = 0;         ///< t of n; 0: all
};

struct config {
  std::string source;  ///< file name, or "<embedded default>"
  node_config node;
  std::vector<port_config> ports;
  std::vector<peer_config> peers;
  std::vector<group_config> groups;
  lcore_config lcores;
  memory_config memory;
  eal_config eal;
  idle_config idle;
  limits_config limits;
  app_config app;
  log_config log;
  telemetry_config telemetry;
  security_config security;
  test_config test;
  std::map<std::string, source_mark> marks;  ///< key path -> where it was written

  /// Where `key_path` was written, or 1:1 when it was not.
  source_mark mark_of(const std::string &key_path) const;
};

/// Parses and validates YAML text. `source` names it in messages.
result<config, problems> load_config_string(const std::string &text, const std::string &source);

/// Reads and validates a file. A missing, unreadable or non-regular file
/// (a directory, a FIFO, a device) or one over max_config_file_bytes is one
/// problem with no position, saying which.
inline constexpr std::size_t max_config_file_bytes = 1u << 20;
result<config, problems> load_config_file(const std::string &path);

/// The embedded default: one node on a net_tap virtual port.
const std::string &default_config_text();
result<config, problems> load_default_config();

/// Checks what depends on this host: the CPUs of the lcores are ones this
/// process may run on, directories of the socket and log file exist, the
/// socket's group exists. Empty when all is well.
problems check_host(const config &c);

/// A user or a group given by name or numeric id (app.users, app.groups),
/// looked up on this host: a numeric id is taken as it is.
std::optional<uint32_t> resolve_user(const std::string &name_or_id);
std::optional<uint32_t> resolve_group(const std::string &name_or_id);

/// The lowest mbuf count that can fill every descriptor ring and cache.
uint32_t minimum_mbufs(const config &c);

/// "info", "debug", ... for an rte_log level.
std::string log_level_name(uint32_t level);

}  // namespace mtp::cfg
