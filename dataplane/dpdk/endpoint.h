// SPDX-License-Identifier: BSD-3-Clause
// The MTP engine on a worker lcore: sessions (one core::connection each)
// keyed by connection id, member addresses, the frames in and the packets
// out, and the applications' channels (app_service.cc), the daemon's
// built-in test source and sink among them (test_app.h).
//
// One endpoint per worker, holding the sessions whose connection id that
// worker owns (runtime::session_owner; the worker loop hands other frames
// over). Sessions are found through an rte_hash; their timers sit in a
// timing wheel; a session is only touched when a frame, a timer or its
// application gives it work. A session is created only by a connection's
// opening packet (protocol.md 5.1), answers only its members' bound
// addresses, costs memory from the worker's session budget as its traffic
// needs it, and is removed once it has closed and drained (its connection
// id may then open a new connection); when the table is full, the oldest
// session whose peer never proved its address makes room. The engine
// writes each packet straight into an mbuf behind room for its headers;
// further members of a group get their own headers chained to a clone of
// that payload (no copy) where the port sends chained mbufs. Checksums go
// to the port where it computes them. Owned by one worker; no locks.
#pragma once

#include <rte_hash.h>
#include <rte_mbuf.h>

#include <array>
#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

#include "aead.h"
#include "connection.h"
#include "handshake.h"
#include "key_schedule.h"
#include "replay_window.h"
#include "mtp/shm_commands.h"
#include "mtp/shm_ledger.h"
#include "mtp/shm_ring.h"
#include "runtime.h"
#include "test_app.h"
#include "timer_wheel.h"
#include "udp_frame.h"

namespace mtp::dp {

class endpoint {
 public:
  endpoint(const runtime &rt, worker_context &w, core::time_ns now_ns);
  ~endpoint();

  /// Where a frame goes after on_frame(): to worker `to` with `tag` (a
  /// redirect, see below), or nowhere (-1: taken or dropped here).
  struct onward {
    int to = -1;
    uint32_t tag = 0;
  };
  /// An MTP datagram received on port `port_index` (to this node: the
  /// worker checked its destination). The payload stays valid until the
  /// caller frees the mbuf, after this returns. `redirect_tag` is 0 for a
  /// frame whose connection id this worker owns, else the tag its owner
  /// redirected it with.
  ///
  /// Redirects: an application listens on the one worker serving it, but
  /// a connection's opening packet reaches the worker owning its id. With
  /// no listener there and one on another worker, the owner sends the
  /// opening on (onward) and remembers the id -> worker, so the frames
  /// that follow go the same way; the session lives on that worker. When
  /// it is removed there, its owner forgets the redirect (redirect_ends).
  onward on_frame(std::size_t port_index, const core::udp_frame_view &v, core::time_ns now_ns,
                  uint32_t redirect_tag = 0);

  /// Runs timers, feeds the source, sends what the sessions have to send,
  /// removes the sessions that finished.
  /// @return work done (packets sent), for the idle strategy.
  unsigned poll(core::time_ns now_ns);

  /// Closes every session (abort) and sends the CLOSEs; at shutdown.
  void shutdown(core::time_ns now_ns);

  /// The worker's idle sleep when it serves applications: tells them it
  /// sleeps (channel_header::daemon_sleeping), so a command they post
  /// signals its eventfd and wakes it at once, then sleeps on those
  /// eventfds for at most ns. @return false if a command was already
  /// waiting (no sleep).
  bool sleep(uint64_t ns);
  bool serves_apps() const { return !apps_.empty(); }

 private:
  // -- applications (app_service.cc) ------------------------------------
  /// One channel of an attached application: its rings, as this worker
  /// sees them (own indices kept here), and its connections by handle.
  struct app_channel {
    shm::channel_header *header = nullptr;
    shm::ring_consumer<shm::descriptor> commands;
    shm::ring_producer<shm::descriptor> events;
    std::unordered_map<uint64_t, uint32_t> handles;  ///< handle -> session slot
    uint64_t last_handle = 0;  ///< the last handle found (0: none), and its slot
    uint32_t last_index = 0;
    bool broken = false;  ///< its rings were corrupted: no longer served
    bool posted = false;  ///< events posted since the last wake-up check
    /// Commands taken from the ring but not run yet: from a send its
    /// connection had no room for on. They run, in order, before any new
    /// command is taken (so the ring fills: back-pressure).
    std::vector<shm::descriptor> backlog;
    std::size_t backlog_head = 0;
  };
  /// An application this worker serves (handed over by the control lcore).
  struct app_link {
    explicit app_link(app_handoff *h) : handoff(h), ledger(h->layout) {}
    app_handoff *handoff;
    shm::buffer_ledger ledger;
    std::vector<app_channel> channels;
    uint64_t next_accept_handle = uint64_t{1} << 63;
    bool builtin = false;  ///< the daemon's own test application (test_app.h)
  };
  struct listener {
    app_link *link = nullptr;
    uint32_t channel = 0;
    uint64_t handle = 0;
    uint32_t streams = 1;
    core::ordering order = core::ordering::fifo;
    core::stream_mode mode = core::stream_mode::message;
    uint32_t window_bytes = 1u << 22;
  };
  /// Received bytes for an application: whose, and where in the stream
  /// the first of them is.
  struct rx_piece {
    uint64_t stream = 0, offset = 0;
    uint32_t member = 0;
    uint16_t flags = 0;  ///< shm::end_of_message, shm::is_datagram
  };
  struct peer {
    bool known = false;      ///< its MAC is known: frames can be sent
    core::udp_endpoints to;  ///< headers for frames to it; dst_ip/dst_port are its bound address
    std::size_t port = 0;
    std::size_t config_index = 0;  ///< in config.peers (source members only)
  };
  // -- native security (secure.cc; docs/security.md) -----------------------
  /// A packet built for a member still in its handshake (a secured
  /// client's): held until its keys exist, then sealed if need be and sent.
  struct held_packet {
    rte_mbuf *mb = nullptr;  ///< the packet at tx_headroom
    uint32_t bytes = 0;
    bool sealed = false;  ///< a group packet, sealed already
  };
  static constexpr std::size_t held_max = 64;
  /// One member's half of a secured session: its handshake (client side),
  /// the pairwise keys each way, its replay window.
  struct secure_member {
    crypto::initiator_state init;  ///< client: the handshake with it
    bool keyed = false;            ///< the handshake finished: tx and rx hold keys
    bool gave_up = false;          ///< client: no answer within member_timeout
    core::time_ns next_init_ns = 0;
    core::time_ns first_init_ns = 0;
    crypto::traffic_keys tx, rx;
    crypto::replay_window replay;
    uint64_t tx_packets = 0;          ///< sealed under tx's current epoch
    core::time_ns tx_epoch_ns = 0;    ///< when tx's epoch began
    uint8_t identity[crypto::key_bytes] = {};  ///< its static public key
    std::vector<held_packet> held;
    // Early data (protocol.md 9.8). Client: the key of its latest
    // initiation. Member: the key of the initiation it accepted, taken
    // until a packet under the handshake's keys confirms them.
    crypto::aead_key early_tx{}, early_rx{};
    bool early_tx_ready = false, early_rx_ready = false;
    bool confirmed = false;  ///< member: a packet under the handshake's keys opened
  };
  struct secure_state {
    std::vector<secure_member> members;
    // Client: the group key it seals group packets with (epoch = the
    // GROUP_KEY frame's). Member: the client's last two.
    uint64_t group_epoch = 0;
    crypto::aead_key group_tx{};
    uint64_t group_packets = 0;
    core::time_ns group_since_ns = 0;
    struct group_key {
      bool set = false;
      uint64_t epoch = 0;
      crypto::aead_key key{};
    };
    group_key group_rx[2];
    core::time_ns next_ns = core::never;  ///< the next handshake retry
    uint64_t charged_bytes = 0;  ///< taken from the worker's session memory budget
  };
  struct built_packet {
    rte_mbuf *mb = nullptr;  ///< the packet at tx_headroom
    core::transmit t;
    bool sealed = false;
    uint64_t early_mask = 0;  ///< members already sent their own early copy
  };
  /// Room in front of a packet for the largest headers.
  static constexpr std::size_t tx_headroom = core::udp_headers_size(6);

  struct session {
    std::unique_ptr<core::connection> conn;
    /// Secured (security.mode required): keys and handshakes; null in plaintext.
    std::unique_ptr<secure_state> sec;
    std::vector<peer> members;
    uint64_t cid = 0;
    uint32_t index = 0;  ///< in sessions_, and its timer's id
    uint64_t generation = 0;  ///< bumped each time the slot is reused
    bool source = false;                ///< the test source's (an opening packet never replaces it)
    /// Every message given to it so far was idempotent: new data may go
    /// to a member in its handshake as early data (secured client).
    bool early_ok = true;
    bool dirty = false;                 ///< on the dirty_ list
    bool blocked = false;               ///< on the blocked_ list
    core::connection_stats seen;        ///< the engine counters already added to the worker's
    /// Hosted for the worker owning its id (a redirect): the owner's tag,
    /// from the latest frame (0: the id is owned here).
    uint32_t redirect_tag = 0;
    // An application's connection (libmtp): its channel and handle there.
    // `app` is null for the test source and sink, and once the handle is
    // gone (Closed, ConnectionError, the application detached).
    app_link *app = nullptr;
    uint32_t channel = 0;
    uint64_t handle = 0;
    uint64_t listener_handle = 0;  ///< accepted: the listener it came through
    core::reliability conn_default_rel = core::reliability::reliable;  ///< the preconnection's
    bool app_owned = false;      ///< made for an application (events are its, or dropped)
    bool announced = true;       ///< accepted: ConnectionReceived posted
    bool app_stalled = false;    ///< on app_stalled_: events wait for ring or buffer room
    bool resolving = false;      ///< members without a known MAC
    uint64_t joined_mask = 0;    ///< members reported as MemberJoined
    uint32_t last_left = 0;      ///< shm::reason of the last MemberLeft
    core::time_ns next_resolve_ns = 0;
    /// Per stream, the `user` values of messages queued, in message order
    /// (Sent, Expired and SendError come in that order per stream).
    std::vector<std::deque<uint64_t>> cookies;
    /// A message arriving in pieces (send_more): the buffers of its pieces
    /// (held by mtpd, token = buffer index) until its last.
    std::vector<core::connection::send_piece> gather;
    uint64_t gather_bytes = 0;
    uint64_t gather_stream = 0;
    bool gathering = false;
    /// A received piece the application had no buffer or ring room for,
    /// copied out of the engine (only under back-pressure).
    struct {
      bool active = false;
      rx_piece piece;
      std::size_t done = 0;
      std::vector<std::byte> bytes;
    } stage;
    /// A message being received: its bytes fill a receive buffer before
    /// its event (one buffer, one Received, for a message that fits; a
    /// longer one posts each full buffer as ReceivedPartial). Two: a
    /// message coming in fragments may be open while the engine hands
    /// over another's.
    struct rx_fill {
      bool active = false;               ///< a message of (member, stream) is in progress
      bool partial_posted = false;       ///< the application has seen pieces of it
      uint32_t buffer = shm::no_buffer;  ///< the buffer being filled (no_buffer: none yet)
      uint32_t length = 0;
      uint32_t member = 0;
      uint64_t stream = 0;
      uint64_t offset = 0;  ///< the stream offset of the buffer's first byte
    };
    std::array<rx_fill, 2> fill;
  };

  unsigned serve_apps(core::time_ns now_ns);
  void take_app(app_handoff *h);
  void leave_app(app_link &link, core::time_ns now_ns);
  void break_channel(app_link &link, app_channel &ch, const char *why, core::time_ns now_ns);
  void channel_corrupt(app_link &link, uint32_t c, const char *which, core::time_ns now_ns);
  unsigned serve_channel(app_link &link, uint32_t c, core::time_ns now_ns);
  /// @return false: the command waits (held) for room in its connection.
  bool run_command(app_link &link, uint32_t c, const shm::descriptor &d, core::time_ns now_ns);
  void command_error(app_link &link, app_channel &ch, const shm::descriptor &d, shm::reason why, bool give_back);
  bool post(app_channel &ch, const shm::descriptor &d);
  void initiate(app_link &link, uint32_t c, const shm::descriptor &d, core::time_ns now_ns);
  void listen(app_link &link, uint32_t c, const shm::descriptor &d);
  /// @return false: no room in the connection now (the caller holds it).
  bool app_send(app_link &link, app_channel &ch, session &s, const shm::descriptor &d, core::time_ns now_ns);
  session *app_session(app_channel &ch, uint64_t handle);
  void forget_handle(session &s);
  void drop_fills(session &s);
  void drain_app_events(session &s, core::time_ns now_ns);
  bool deliver_stage(session &s, app_channel &ch);
  /// Copies `bytes` from `done` on into receive buffers: a datagram into
  /// its own, a message's into the buffer gathering that message (its
  /// Received posted at the message's end or when the buffer is full).
  /// @return all of it went (else `done` says how far).
  bool post_received(session &s, app_channel &ch, const rx_piece &p, std::span<const std::byte> bytes,
                     std::size_t &done);
  /// Send buffers the engine reads no more go back (buffer_returned).
  /// @return all went; false: the event ring is full (or, with `force`,
  /// their events were lost: the ledger has them back anyway).
  bool return_buffers(session &s, bool force = false);
  /// Forgets the gathered pieces of an unfinished send_more message; with
  /// `give_back` their buffers go back to the application (buffer_returned).
  void drop_gather(session &s, bool give_back);
  /// The application is not known to be short of room: its Received
  /// events may point into the packet (zero copy; what it cannot take at
  /// once the engine keeps, keep_packet_data).
  bool app_has_room(const session &s);
  void note_joined(session &s, app_channel &ch);
  session *accept_for_app(std::size_t port_index, const core::udp_frame_view &v, uint64_t cid, uint32_t sender,
                          core::time_ns now_ns);
  /// A configured peer (config.peers[config_index]) as a member to send to.
  peer peer_of(std::size_t config_index) const;
  /// The sender of an opening frame as the member to answer.
  peer peer_from(std::size_t port_index, const core::udp_frame_view &v) const;
  void ask_neighbour(const peer &p);
  void resolve_app_peers(core::time_ns now_ns);
  session *find(uint64_t connection_id);
  /// A frame for a connection id owned here and no session here: is it
  /// (or its connection) redirected? @return true: decided (`o` says
  /// where, or -1: refused); false: this worker takes it.
  bool redirect(uint64_t cid, bool opening, onward &o);
  /// Another worker with an application listening, chosen by `cid`; -1: none.
  int listening_worker(uint64_t cid) const;
  /// Tells the owner of `cid` that the session it redirected here is gone.
  void end_redirect(uint64_t cid, uint32_t tag);
  /// Forgets the redirects whose sessions ended. @return how many.
  unsigned take_redirect_ends();
  void set_listener(const listener &l);
  session *add(std::unique_ptr<session> s);
  void remove(session &s);
  bool make_room(core::time_ns now_ns);
  session *accept(std::size_t port_index, const core::udp_frame_view &v, uint64_t cid, uint32_t sender,
                  core::time_ns now_ns);
  bool from_member(const session &s, const core::udp_frame_view &v, uint32_t sender) const;
  void answer_version(std::size_t port_index, const core::udp_frame_view &v, uint64_t cid, core::time_ns now_ns);
  core::connection_config base_config(uint64_t cid, uint32_t window_bytes);
  void mark_dirty(session &s);
  void service(session &s, core::time_ns now_ns);
  void account(session &s);
  void drain_events(session &s, core::time_ns now_ns);
  void transmit(session &s, core::time_ns now_ns);
  void emit(const peer &p, rte_mbuf *head, std::byte *headers, std::span<const std::byte> payload);
  void queue_tx(std::size_t port, rte_mbuf *mb, bool mtp = true);
  void flush_port(std::size_t port);
  void flush_tx();
  bool backlogged(const session &s) const;

  // secure.cc
  /// The security state of a session of `members` members, charged to the
  /// worker's session memory budget (keys and replay windows, a few KiB a
  /// member); null when the budget says no.
  std::unique_ptr<secure_state> make_secure(std::size_t members);
  /// Client: keys for the session's members, initiations sent as their
  /// addresses resolve, the first group key handed out.
  void start_security(session &s, std::unique_ptr<secure_state> sec, core::time_ns now_ns);
  /// Client: (re)sends initiations that are due. @return the next due time.
  void service_handshakes(session &s, core::time_ns now_ns);
  /// A handshake packet (types 2-4): from an initiator, a responder, or a
  /// responder's cookie. May create a session (an initiation, accepted).
  onward on_handshake(std::size_t port_index, const core::udp_frame_view &v, uint64_t cid, uint32_t sender,
                      core::time_ns now_ns, uint32_t redirect_tag);
  /// Verifies and decrypts a packet of a secured session in place (its
  /// replay window, its key). @return false: dropped and counted.
  bool open_sealed(session &s, const core::udp_frame_view &v, uint32_t sender);
  /// Seals a burst of built packets: group packets with the group key,
  /// the others with their member's pairwise key (if it has one yet).
  void seal_built(session &s, std::span<built_packet> pkts, core::time_ns now_ns);
  void fan_out(session &s, const built_packet &bp);
  bool member_keyed(const session &s, std::size_t m) const { return s.sec->members[m].keyed; }
  void hold(session &s, std::size_t m, std::span<const std::byte> payload, bool sealed);
  /// Client: a copy of a group packet (plaintext) for member m, which is
  /// still in its handshake, sealed with its early key and sent now.
  /// @return it went.
  bool send_early(session &s, std::size_t m, std::span<const std::byte> payload);
  /// Client: a group key that sealed rekey_after_packets packets or is
  /// rekey_after_s old is replaced, before the packets of a transmit are
  /// built (so its GROUP_KEY frames leave ahead of the group packets
  /// sealed with it).
  void age_group_key(session &s, core::time_ns now_ns);
  /// The member's handshake finished: what waited for it is sealed and sent.
  void release_held(session &s, std::size_t m, core::time_ns now_ns);
  /// Client: a new random group secret, epoch + 1, handed to every live member.
  void rekey_group(session &s, core::time_ns now_ns);
  /// Member: the client's group secret of an epoch (core::event_type::group_key).
  void install_group_key(session &s, const core::event &e);
  /// The engine's next event, with the security ones handled here
  /// (group_key installed, member_left rekeys the group).
  bool next_event(session &s, core::event &e, core::time_ns now_ns);
  /// Sends a handshake packet back where `v` came from.
  void send_reply(std::size_t port_index, const core::udp_frame_view &v, std::span<const uint8_t> bytes);
  void send_to_member(session &s, std::size_t m, std::span<const uint8_t> bytes);
  /// Allowed-peer table for the responder (config.peers with a key).
  static bool lookup_peer(void *ctx, const uint8_t static_pub[crypto::key_bytes], uint32_t sender_member_id,
                          crypto::hs_peer_entry &out);
  bool under_load(core::time_ns now_ns);

  const runtime &rt_;
  worker_context &w_;
  // Native security: this worker's AEAD engine, our identity, cookies,
  // each peer's greatest initiation timestamp, and the initiation rate
  // that decides when cookies are demanded.
  std::unique_ptr<crypto::aead_engine> aead_;
  std::unique_ptr<crypto::hs_identity> identity_;
  std::unique_ptr<crypto::cookie_checker> cookies_;
  std::vector<std::array<uint8_t, crypto::hs_timestamp_bytes>> peer_timestamps_;
  /// DH(our static key, each peer's), once: an initiation then costs the
  /// responder one X25519 less. Empty entries: not computed (no key).
  std::vector<std::array<uint8_t, crypto::key_bytes>> peer_static_static_;
  std::vector<bool> peer_static_static_ok_;
  double hs_tokens_ = 0;
  core::time_ns hs_last_ns_ = 0;
  uint64_t last_wall_ns_ = 0;  ///< the last initiation's timestamp (strictly increasing)
  void drop_held(session &s);
  std::vector<std::unique_ptr<app_link>> apps_;
  listener listener_;
  std::vector<uint32_t> app_stalled_;  ///< sessions whose events wait for their application
  std::vector<uint32_t> resolving_;    ///< application sessions with members still unresolved
  std::size_t app_connections_ = 0;
  /// Send buffers taken from applications and not handed back yet.
  uint64_t app_buffers_held_ = 0;
  void note_held(int64_t delta) {
    app_buffers_held_ += static_cast<uint64_t>(delta);
    w_.counters.app_buffers_held.set(app_buffers_held_);
  }
  core::session_memory memory_;  ///< every session's buffers and tables
  rte_hash *table_ = nullptr;    ///< connection id -> session index
  /// Connection ids owned here whose sessions another worker hosts ->
  /// (tag << 8 | worker); null with one worker. A tag is new for each
  /// opening packet sent on, so an end told for an earlier one is ignored.
  rte_hash *redirects_ = nullptr;
  uint32_t last_redirect_tag_ = 0;  ///< 24 bits, never 0
  std::vector<std::unique_ptr<session>> sessions_;  ///< slots; null when free
  std::vector<uint32_t> free_slots_;
  uint64_t next_generation_ = 1;
  std::size_t live_ = 0;
  /// Sessions created by a peer that has not proved its address yet, in
  /// creation order (slot, generation): the first evicted when full.
  std::deque<std::pair<uint32_t, uint64_t>> unvalidated_;
  core::timer_wheel wheel_;
  std::vector<uint32_t> dirty_;  ///< sessions with work since the last poll
  std::vector<uint32_t> blocked_;  ///< sessions waiting for a full TX ring
  std::vector<uint32_t> finished_;  ///< sessions to remove at the end of this poll
  /// The test source and sink, served like any application (test_app.h).
  std::unique_ptr<test_app> test_app_;
  std::size_t builtin_links_ = 0;
  // Version negotiation replies: a token bucket, so a flood of packets of
  // other versions cannot make this worker a reflector.
  double vn_tokens_ = 0;
  core::time_ns vn_last_ns_ = 0;
  static constexpr double vn_per_second = 1000;
  // TX buffers per port, drained at the end of each poll; what a full ring
  // does not take waits (backpressure), beyond tx_backlog_max it drops.
  static constexpr uint16_t tx_burst = 32;
  static constexpr std::size_t tx_backlog_max = 1024;
  static constexpr core::time_ns tx_stall_ns = 20'000'000;  ///< no progress this long: the port is not backpressure
  core::time_ns now_ns_ = 0;  ///< of the current poll or frame
  std::vector<std::vector<rte_mbuf *>> tx_;
  std::vector<core::time_ns> tx_progress_ns_;  ///< per port: last time it took frames (or had none)
};

}  // namespace mtp::dp
