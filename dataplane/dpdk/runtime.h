// SPDX-License-Identifier: BSD-3-Clause
// What the daemon holds while it runs: the config, the started ports, the
// packet pool and one context per worker lcore.
//
// Ownership: main.cc builds it before launching lcores and tears it down
// after joining them. Each worker writes only its own worker_context; the
// control lcore and the telemetry thread read the counters (relaxed atomics,
// one writer each) and write nothing but `stop`.
#pragma once

#include <rte_ether.h>
#include <rte_mempool.h>
#include <rte_ring.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "config.h"
#include "handshake.h"
#include "keyfile.h"
#include "mtp/shm_layout.h"
#include "udp_frame.h"
#include "wire.h"

namespace mtp::dp {

/// A counter with one writer and any number of readers. Relaxed load+store
/// compiles to a plain add on x86: no lock prefix on the fast path.
class counter {
 public:
  void add(uint64_t n) { v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
  void inc() { add(1); }
  /// For gauges (a level, not a count).
  void set(uint64_t v) { v_.store(v, std::memory_order_relaxed); }
  uint64_t get() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> v_{0};
};

/// Per-worker counters, one X-macro list for the struct and their names.
#define MTP_WORKER_COUNTERS(X)                                                 \
  X(rx_pkts, "frames received")                                                \
  X(rx_bytes, "bytes received")                                                \
  X(rx_bursts, "rx bursts that returned at least one frame")                   \
  X(tx_pkts, "frames sent")                                                    \
  X(tx_bytes, "bytes sent")                                                    \
  X(tx_dropped, "frames a partial tx burst could not send (freed)")            \
  X(tx_nombuf, "frames not sent because the pool was empty")                   \
  X(loops, "poll loop iterations")                                             \
  X(idle_loops, "loop iterations that found no work")                          \
  X(sleeps, "adaptive idle sleeps")                                            \
  X(mtp_packets_in, "MTP packets handed to the engine")                        \
  X(mtp_packets_out, "MTP packet copies sent (one per member)")                \
  X(mtp_no_session, "MTP packets for no session that do not open one")         \
  X(mtp_wrong_address, "MTP packets from an address other than the member's")  \
  X(mtp_wrong_destination, "MTP packets to a MAC or IP that is not this port's") \
  X(mtp_other_version, "MTP packets of another version (answered by VN)")      \
  X(vn_sent, "version negotiation packets sent")                               \
  X(vn_rate_limited, "version negotiation replies not sent (rate limit)")     \
  X(handoff_out, "MTP frames passed to the worker owning their session")      \
  X(handoff_in, "MTP frames taken from other workers for sessions owned here") \
  X(handoff_dropped, "MTP frames dropped because the owner's ring was full")   \
  X(sessions_redirected, "opening packets sent on to the worker where an application listens") \
  X(redirects_ended, "redirects forgotten: the hosting worker's session ended") \
  X(redirects_refused, "opening packets refused: the redirect table was full") \
  X(redirect_ends_lost, "redirect ends not told: the owner's ring was full")   \
  X(mtp_unknown_peer, "packet copies for a member with no known address")      \
  X(sessions_opened, "MTP sessions created")                                   \
  X(sessions_removed, "MTP sessions closed, drained and removed")              \
  X(sessions_evicted, "unvalidated sessions evicted for a new one (table full)") \
  X(sessions_replaced, "closed sessions replaced by a new opening packet")     \
  X(sessions_refused, "opening packets refused: table or memory full")         \
  X(sessions_live, "MTP sessions held now (a gauge)")                          \
  X(session_memory_bytes, "bytes of session memory in use now (a gauge)")      \
  X(session_memory_peak, "most bytes of session memory ever in use (a gauge)") \
  X(session_memory_refusals, "times the session memory budget said no")       \
  X(members_left, "MemberLeft events")                                         \
  X(closes_sent, "CLOSE frames sent")                                          \
  X(closes_received, "CLOSE frames received (a peer closed or left)")          \
  X(connections_failed, "ConnectionError events (timeout, threshold lost, violation)") \
  X(source_bytes_queued, "test source: bytes queued on its connection")        \
  X(source_bytes_stable, "test source: bytes acknowledged (Sent)")             \
  X(source_complete_us, "test source: microseconds to all stable (0: not yet)") \
  X(sink_bytes, "test sink: bytes received and checked")                       \
  X(sink_messages, "test sink: whole messages received")                       \
  X(sink_verify_errors, "test sink: bytes that differ from the pattern")       \
  X(sink_order_errors, "test sink: data out of stream order")                  \
  X(sink_closed, "test sink: connections closed by their sender")              \
  X(fault_dropped, "fault stage: frames dropped")                              \
  X(fault_duplicated, "fault stage: frames duplicated")                        \
  X(fault_reordered, "fault stage: frames held back one burst")                \
  X(fault_corrupted, "fault stage: frames with one bit flipped")              \
  X(mtp_retransmitted, "engine frames retransmitted (all sessions)")           \
  X(source_messages_stable, "test source: messages acknowledged (Sent)")       \
  X(source_messages_expired, "test source: messages given up (Expired)")       \
  X(pingpong_rtts, "ping-pong round trips measured")                          \
  X(arp_replies, "ARP requests for our addresses answered")                   \
  X(nd_replies, "IPv6 neighbour solicitations for our addresses answered")    \
  X(neighbour_requests, "ARP requests and solicitations sent for members")    \
  X(neighbours_learned, "peer addresses learnt or changed from ARP / ND")      \
  X(tx_csum_offload, "frames sent with their checksums left to the port")     \
  X(tx_prepare_failed, "frames rte_eth_tx_prepare refused (freed)")           \
  X(fanout_attached, "member copies sent as own headers + the shared payload") \
  X(fanout_copied, "member copies made by copying (port cannot chain mbufs)") \
  X(rx_linearized, "multi-segment frames gathered into one buffer to parse")  \
  X(timers_fired, "session timers fired by the timer wheel")                 \
  X(app_links, "applications served by this worker now (a gauge)")          \
  X(app_commands, "application commands taken from channels")                \
  X(app_command_errors, "application commands refused (command_error)")      \
  X(app_events, "events posted to applications")                             \
  X(app_sends, "application messages queued on connections")                 \
  X(app_send_bytes, "application bytes queued on connections")               \
  X(app_received_bytes, "bytes copied into applications' receive buffers")   \
  X(app_buffers_held, "applications' send buffers mtpd reads from until stable (a gauge)") \
  X(app_received_in_place, "of those, copied straight from the packet (zero copy in the engine)") \
  X(app_messages_abandoned, "messages gathered from their fragments and skipped before their end") \
  X(app_backpressure, "polls an application's full ring or buffers held back") \
  X(app_channels_broken, "channels whose ring indices an application broke") \
  X(app_connections, "application connections open now (a gauge)")          \
  X(sessions_no_listener, "opening packets refused: no application listens") \
  X(app_wakeups, "idle sleeps an application's command cut short (eventfd)") \
  X(auth_failed, "packets refused on a secured node: plaintext (a downgrade), a bad tag, or no member's key") \
  X(replayed, "sealed packets already accepted, or behind the replay window")  \
  X(no_key, "sealed packets under a key epoch not held (yet): the sender repairs") \
  X(packets_sealed, "packets sealed (AES-256-GCM), once per group packet")   \
  X(packets_opened, "sealed packets opened and authentic")                   \
  X(handshakes_initiated, "handshake initiations sent (retries included)")    \
  X(handshakes_completed, "handshakes finished, either role")                 \
  X(handshakes_failed, "members whose handshake never finished (gave up)")   \
  X(cookies_sent, "cookie replies: an initiation under load without a valid mac2") \
  X(group_rekeys, "new group keys handed out (a member left, or the key aged)") \
  X(key_rolls, "pairwise traffic keys rolled to a new epoch (count or age)") \
  X(group_keys_installed, "group keys a member took from its client (one per epoch)") \
  X(held_dropped, "packets for a member still in its handshake, over its queue") \
  X(seal_failed, "packet copies not sent because sealing failed (never expected)") \
  X(early_sent, "early-data copies sent: idempotent data to a member still in its handshake") \
  X(early_opened, "early-data packets opened (member side)")

/// Round-trip times in log-linear buckets: sixteen per power of two, so a
/// percentile is read within 6.25%. Bucket i covers [bucket_low(i),
/// bucket_high(i)); below 16 ns every nanosecond has its own bucket.
struct rtt_histogram {
  static constexpr unsigned sub_bits = 4;
  static constexpr std::size_t per_octave = std::size_t{1} << sub_bits;
  static constexpr std::size_t buckets = per_octave * 44;
  static std::size_t bucket_of(uint64_t ns) {
    if (ns < per_octave) return static_cast<std::size_t>(ns);
    const unsigned e = 63u - static_cast<unsigned>(__builtin_clzll(ns));
    const std::size_t i = e * per_octave + ((ns >> (e - sub_bits)) & (per_octave - 1));
    return i < buckets ? i : buckets - 1;
  }
  static uint64_t bucket_low(std::size_t i) {
    if (i < per_octave) return i;  // indices per_octave .. 4 * per_octave - 1 are never used
    const unsigned e = static_cast<unsigned>(i / per_octave);
    return (per_octave | (i & (per_octave - 1))) << (e - sub_bits);
  }
  static uint64_t bucket_high(std::size_t i) {
    if (i < per_octave) return i + 1;
    const unsigned e = static_cast<unsigned>(i / per_octave);
    return ((per_octave | (i & (per_octave - 1))) + 1) << (e - sub_bits);
  }
  std::array<counter, buckets> count;
};

struct alignas(64) worker_counters {
#define MTP_X(name, text) counter name;
  MTP_WORKER_COUNTERS(MTP_X)
#undef MTP_X
  /// Received frames by what parse_udp_frame() made of them.
  std::array<counter, core::frame_verdict_count> rx_verdict;
  /// MTP packets the engine dropped, by reason (core::drop_reason,
  /// protocol.md 3.5), summed over this worker's sessions.
  std::array<counter, core::drop_reason_count> mtp_drops;
  /// Handshake packets refused, by crypto::hs_error (docs/security.md).
  std::array<counter, crypto::hs_error_count> hs_drops;
  rtt_histogram rtt;

  /// One ping-pong round trip (MTP or raw UDP) measured.
  void record_rtt(uint64_t rtt_ns) {
    rtt.count[rtt_histogram::bucket_of(rtt_ns)].inc();
    pingpong_rtts.inc();
  }
};

/// A started ethdev port.
struct port_runtime {
  std::string name;
  uint16_t port_id = 0;
  rte_ether_addr mac{};
  uint16_t mtu = 0;
  const cfg::port_config *config = nullptr;
  bool rx_ip_csum = false;  ///< NIC reports IPv4 header checksum verdicts
  bool rx_l4_csum = false;  ///< NIC reports UDP checksum verdicts
  bool tx_ip_csum = false;  ///< port computes IPv4 header checksums
  bool tx_udp_csum = false; ///< port computes UDP checksums
  bool tx_multi_seg = false;  ///< port sends chained mbufs (fan-out without copies)
  bool flow_steered = false;  ///< rte_flow rules deliver each session's frames to its owner's queue
  int link_up = -1;         ///< last logged link state; control lcore only
};

struct runtime;

/// An attached application handed by the control lcore to the worker that
/// serves it (shm_attach.h). The control lcore owns it and keeps its
/// region mapped until the worker says `released`: the worker may touch
/// the region only between taking it from app_inbox and storing released.
struct app_handoff {
  enum : uint32_t { handed = 0, leave = 1, released = 2 };
  uint64_t app_id = 0;
  int pid = 0;
  void *base = nullptr;       ///< the mapped region
  shm::region_layout layout;  ///< from mtpd's own plan, never read back from the region
  int app_eventfd = -1;       ///< signalled after posting when a channel's app_sleeping is set
  int daemon_eventfd = -1;    ///< the application signals it when daemon_sleeping is set
  /// handed -> leave (control: the application detached) -> released
  /// (worker: its connections are aborted and it no longer touches the region).
  std::atomic<uint32_t> state{handed};
};

/// A redirect that ended (worker_context::redirect_ends): its connection
/// id and the tag its owner gave it, so that an end arriving after the id
/// opened anew (a newer tag) forgets nothing.
struct redirect_end {
  uint64_t cid;
  uint64_t tag;
};

/// One worker lcore: it owns rx and tx queue `queue` on every port.
struct alignas(64) worker_context {
  unsigned lcore = 0;
  uint16_t queue = 0;
  const runtime *rt = nullptr;
  /// MTP frames other workers received for sessions this worker owns
  /// (multi-producer, single consumer); null with one worker.
  rte_ring *handoff = nullptr;
  /// Applications the control lcore hands to this worker (app_handoff *;
  /// single producer, single consumer).
  rte_ring *app_inbox = nullptr;
  /// Connection ids this worker owns whose sessions another worker hosted
  /// (for the application listening there) and has removed: the owner
  /// forgets their redirects (redirect_end elements; multi-producer, single
  /// consumer); null with one worker.
  rte_ring *redirect_ends = nullptr;
  /// An application listens on this worker (set and cleared by this
  /// worker, read by the others): where an opening packet goes when the
  /// worker owning its connection id has no listener.
  std::atomic<bool> app_listening{false};
  worker_counters counters;
};

struct runtime {
  cfg::config config;
  /// This node's static key pair (security.mode required; zero otherwise),
  /// and the peers' public keys in config.peers order.
  crypto::static_keypair identity{};
  bool secured() const { return config.security.mode == cfg::security_mode::required; }
  std::vector<port_runtime> ports;
  rte_mempool *pool = nullptr;
  /// Small mbufs: headers of fan-out copies and the indirect mbufs that
  /// attach them to the shared payload.
  rte_mempool *header_pool = nullptr;
  std::vector<worker_context *> workers;

  /// Where each configured peer (config.peers, same index) is on its
  /// link: bit 48 set = known, bits 0-47 the MAC. Static MACs from the
  /// config start known; the others are learnt from ARP and neighbour
  /// discovery by whichever worker receives them (they all write the same
  /// value) and read by the owners of the sessions that send to them.
  mutable std::vector<std::atomic<uint64_t>> peer_macs;

  /// An attached application listens (on some worker): MTP version 1
  /// carries no service name, so one per daemon (the built-in sink, which
  /// listens on every worker, is not counted). Set by the worker that
  /// took the listen, cleared by it.
  mutable std::atomic<bool> app_listens{false};

  static uint64_t pack_mac(const std::array<uint8_t, 6> &mac) {
    uint64_t v = uint64_t{1} << 48;
    for (int i = 0; i < 6; ++i) v |= uint64_t{mac[i]} << (8 * i);
    return v;
  }
  bool peer_mac(std::size_t peer, std::array<uint8_t, 6> &mac) const {
    const uint64_t v = peer_macs[peer].load(std::memory_order_acquire);
    for (int i = 0; i < 6; ++i) mac[i] = static_cast<uint8_t>(v >> (8 * i));
    return v >> 48;
  }

  /// The worker that owns connection `cid`: every frame of it is processed
  /// there. A local choice, salted with the node id (two nodes need not
  /// agree). With a power-of-two number of workers it is the low bits of
  /// the id's last byte, salted: what an rte_flow rule can match (one byte
  /// under a mask, port.cc), so a port that takes such rules delivers each
  /// frame to its owner's queue; elsewhere (RSS, memif rings, kernel queue
  /// choice) the worker that received a frame hands it to the owner.
  unsigned session_owner(uint64_t cid) const { return owner_of(cid, config.node.id, static_cast<unsigned>(workers.size())); }

  static unsigned owner_of(uint64_t cid, uint32_t node_id, unsigned n) {
    if ((n & (n - 1)) == 0) return static_cast<unsigned>(((cid & 0xff) ^ steer_salt(node_id)) & (n - 1));
    uint64_t x = (cid ^ (uint64_t{node_id} * 0x9e3779b97f4a7c15ull)) * 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return static_cast<unsigned>(x % n);
  }
  static uint8_t steer_salt(uint32_t node_id) {
    uint32_t x = node_id * 0x9e3779b9u;
    x ^= x >> 15;
    return static_cast<uint8_t>(x ^ (x >> 8) ^ (x >> 16) ^ (x >> 24));
  }

  /// Applications on app.socket (shm_attach.h), written by the control
  /// lcore after each poll, read by telemetry and the final counters.
  struct app_counters {
    std::atomic<uint64_t> attached_now{0};  ///< gauge
    std::atomic<uint64_t> attached{0}, detached{0}, refused{0}, timed_out{0}, shed{0};
  } apps;

  /// Set once by the control lcore; workers leave their loop when they see it.
  alignas(64) std::atomic<bool> stop{false};
};

}  // namespace mtp::dp
