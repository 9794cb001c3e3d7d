// SPDX-License-Identifier: BSD-3-Clause
// The MTP protocol engine: one connection between this endpoint and a group
// of n >= 1 members (docs/protocol.md sections 5 to 8).
//
// Sans-I/O. Packets come in with on_packet(); packets go out when the
// caller asks poll_transmit(), which returns the bytes and the members they
// are for (one copy serves every member in the mask, so a group packet is
// built once). Time is a parameter; timers surface as next_expiry() and
// on_expiry(). Events for the application queue up for poll_event().
// Spans handed out in events stay valid until the next call into the
// connection.
//
// Memory grows with use (memory.h): a connection that carries no data
// holds a few KiB; buffers and tables grow with the data actually queued
// or received within the credit granted, up to the limits below, and are
// given back as data is released. Everything is charged to the
// session_memory in the config (a worker's budget); when it refuses, the
// engine waits (sending), drops unacknowledged (receiving: the sender
// repairs) or fails the call, and says so.
//
// Thread-safety: none; one owner (a worker lcore, or a test) per connection.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "congestion.h"
#include "memory.h"
#include "range_set.h"
#include "rtt.h"
#include "types.h"
#include "wire.h"

namespace mtp::core {

enum class reliability : uint8_t { reliable, partial, unreliable };
/// causal, total and total_fifo come with group ordering (ORDER frames);
/// open_stream() answers `unsupported` for them until then.
enum class ordering : uint8_t { none, fifo, causal, total, total_fifo };
enum class stream_mode : uint8_t { message, bytes };
/// The client opens the connection to its group; a server is one member,
/// created by the client's opening packet (protocol.md 5.1).
enum class role : uint8_t { client, server };

struct message_options {
  reliability rel = reliability::reliable;
  uint32_t max_retransmissions = 0;  ///< partial: at most this many per member
  time_ns lifetime_ns = 0;           ///< partial: give up this long after send(); 0 = no limit
  bool low_latency = false;          ///< send now: no coalescing wait
};

struct connection_config {
  uint64_t connection_id = 0;
  uint32_t local_id = 0;              ///< our member id, carried as sender id
  role side = role::client;
  std::vector<uint32_t> members;      ///< the peers' ids (client: the group; server: the client)
  uint32_t threshold = 0;             ///< t of n; 0 means all
  uint16_t max_packet_bytes = 1400;   ///< UDP payload size
  uint16_t max_streams = 16;          ///< per direction (a transport parameter, 6.5)
  /// Send buffer and receive window per stream (power of two); the
  /// initial stream credit, a transport parameter (protocol.md 6.5).
  uint32_t stream_buffer_bytes = 1u << 22;
  uint64_t connection_window_bytes = 1ull << 26;  ///< receive window over all streams of a peer
  uint32_t max_messages = 1u << 15;   ///< message records per stream (power of two)
  uint32_t max_sent_packets = 1u << 14;  ///< packets tracked until acknowledged (power of two)
  uint32_t max_events = 1u << 15;
  uint32_t max_datagrams = 256;       ///< datagrams queued for sending
  uint32_t max_ack_ranges = 256;      ///< received packet-number ranges remembered per peer
  /// A packet numbered more than this above the largest received from its
  /// sender is dropped (pn_out_of_window, 3.2).
  uint64_t pn_window = uint64_t{1} << 24;
  time_ns ack_delay_ns = 1'000'000;
  /// ACK at once when this many ack-eliciting packets are pending (in
  /// order); the sender asks for an ACK with a PING where waiting would
  /// stall it (protocol.md 6.2).
  uint32_t ack_every_packets = 8;
  time_ns coalesce_delay_ns = 50'000;
  time_ns initial_rtt_ns = 10'000'000;
  time_ns heartbeat_interval_ns = 100'000'000;
  time_ns member_timeout_ns = 1'000'000'000;
  cc_algorithm cc = cc_algorithm::cubic;
  bool pacing = true;
  message_options defaults;           ///< per-connection reliability, used by send() without options
  /// Where buffers and tables are charged; null: a private, unlimited one.
  session_memory *memory = nullptr;
  /// Received events of whole in-order messages and datagrams point into
  /// the packet handed to on_packet(): the caller polls every event before
  /// its next call into the connection (the daemon does). Off: every data
  /// span points into the connection's own buffers and stays valid until
  /// the event was polled and the next call begins, however late the
  /// application polls (a copy more per message).
  bool zero_copy_delivery = true;
  /// Fifo message streams, with zero copy: a message of at most this many
  /// bytes that spans packets is delivered fragment by fragment straight
  /// from each packet while it arrives in order (Received events with
  /// end_of_message false, then true), one such message at a time per
  /// connection; behind a loss its rest comes from the buffer. If a
  /// FORWARD skips the rest, or its member leaves, an empty Received with
  /// `abandoned` says to drop the fragments. 0: only whole messages are
  /// delivered in place.
  uint32_t in_place_fragments_max_bytes = 0;
  /// crc: plaintext, every packet ends with CRC32C (3.4). sealed: packets
  /// carry the S flag and a 16-byte tag the caller fills (seals) after
  /// poll_transmit and verifies (opens) before on_packet; a packet without
  /// S is dropped (not_sealed), GROUP_KEY frames are known (protocol.md 9).
  protection packet_protection = protection::crc;
  /// Seeds the initial packet number and the packet numbers skipped to
  /// catch optimistic ACKs (3.2). Give every connection its own.
  uint64_t seed = 0;
};

/// What an API call returns; each value says what the caller does next.
enum class status : uint8_t {
  ok,           ///< done
  would_block,  ///< send buffer, message records or memory full: retry after Sent events
  bad_stream,   ///< no such open stream, or the wrong mode for the call
  too_large,    ///< larger than the stream buffer (or a datagram larger than a packet)
  closed,       ///< the connection is closing or closed
  unsupported,  ///< the option is not implemented yet (causal/total ordering)
  invalid,      ///< arguments out of range
};

enum class event_type : uint8_t {
  ready,             ///< enough members accepted (t, or all)
  received,          ///< data: stream_id, offset, data, end_of_message
  datagram,          ///< a DATAGRAM frame's payload
  sent,              ///< message message_id is stable: count members acknowledged it
  expired,           ///< message message_id was given up: count members miss it
  send_error,        ///< message message_id cannot be sent (connection failed)
  member_left,       ///< member left: reason (member_left_reason); error_code its CLOSE's code
  closed,            ///< the connection closed: error_code (0 = normal)
  connection_error,  ///< the connection failed: error_code
  /// (member side of a sealed connection) the client's group secret of
  /// epoch `message_id`: `data` (32 bytes, valid for the next 3 epochs)
  group_key,
};

/// Why a member left (event::reason, protocol.md 5.2).
enum class member_left_reason : uint32_t {
  timeout = 1,             ///< nothing valid from it for member_timeout
  closed = 2,              ///< it sent CLOSE
  protocol_violation = 3,  ///< it broke the protocol (we sent it CLOSE)
  version_mismatch = 4,    ///< it answered with version negotiation without our version
};

struct event {
  event_type type = event_type::ready;
  uint32_t member = 0;  ///< member id, where one is concerned
  uint64_t stream_id = 0;
  uint64_t message_id = 0;
  uint64_t offset = 0;
  std::span<const std::byte> data;  ///< received, datagram (see connection_config::zero_copy_delivery)
  bool end_of_message = false;
  uint32_t count = 0;
  uint64_t error_code = 0;
  uint32_t reason = 0;
  bool in_packet = false;  ///< data points into the packet given to on_packet() (zero copy)
  /// received, empty: the message whose fragments came in place (see
  /// connection_config::in_place_fragments_max_bytes) will not be
  /// completed; drop what was gathered of it.
  bool abandoned = false;
  uint64_t arena_end = 0;  ///< internal: data copied to the connection's arena ends there (0: not in it)
};

/// Error codes carried in CLOSE (protocol.md 7).
enum class error_code : uint64_t {
  no_error = 0,
  internal = 1,
  flow_control = 3,
  protocol_violation = 10,
  member_timeout = 20,
  threshold_lost = 21,
  version_mismatch = 22,
  refused = 23,  ///< no application accepts connections at this member
  application = 0x100,
};

/// Counters, one writer (the owner). Names via MTP_CONNECTION_COUNTERS;
/// drops by reason in connection_stats::drops (MTP_DROP_REASONS).
#define MTP_CONNECTION_COUNTERS(X)                                             \
  X(packets_sent)                                                              \
  X(packets_received)                                                          \
  X(bytes_sent)                                                                \
  X(stream_bytes_sent)                                                         \
  X(stream_bytes_retransmitted)                                                \
  X(retransmitted_frames)                                                      \
  X(forwards_sent)                                                             \
  X(packets_lost)                                                              \
  X(spurious_losses)                                                           \
  X(pto_probes)                                                                \
  X(acks_sent)                                                                 \
  X(packet_numbers_skipped)                                                    \
  X(messages_delivered)                                                        \
  X(messages_abandoned)                                                        \
  X(fragments_in_place)                                                        \
  X(messages_expired)                                                          \
  X(messages_stable)                                                           \
  X(messages_skipped_by_slow_members)                                          \
  X(datagrams_dropped)                                                         \
  X(sends_blocked_by_amplification)                                            \
  X(members_left)                                                              \
  X(closes_sent)                                                               \
  X(closes_received)                                                           \
  X(group_keys_sent)                                                           \
  X(group_keys_received)

struct connection_stats {
#define MTP_X(name) uint64_t name = 0;
  MTP_CONNECTION_COUNTERS(MTP_X)
#undef MTP_X
  uint64_t drops[drop_reason_count] = {};
  uint64_t drops_total() const {
    uint64_t n = 0;
    for (uint64_t d : drops) n += d;
    return n;
  }
};

/// Where a packet goes: one copy to every member whose bit is set.
struct transmit {
  std::size_t bytes = 0;  ///< 0: nothing to send now
  uint64_t member_mask = 0;
  /// New data for the group (one copy serves all; a sealed client seals it
  /// with the group key); else a packet for its one member (ACKs, repairs,
  /// probes, CLOSE: the pairwise key).
  bool group = false;
};

class connection {
 public:
  static constexpr std::size_t max_members = 64;
  /// Repairable frames one packet may carry (a packet of tiny messages
  /// stops there).
  static constexpr std::size_t max_frames_per_packet = 64;
  /// Packets a sender can always track, whatever the memory budget says.
  static constexpr std::size_t min_tracked_packets = 64;

  /// @param now  creation time; the client side starts by probing members
  connection(const connection_config &cfg, time_ns now);
  ~connection();
  connection(const connection &) = delete;
  connection &operator=(const connection &) = delete;

  // -- application side --------------------------------------------------

  /// Opens stream `id` (< max_streams) for sending.
  /// @return ok; bad_stream (id too high); invalid (already open);
  /// unsupported (ordering); closed; would_block (memory refused)
  status open_stream(uint64_t id, stream_mode mode, ordering ord);
  /// Queues a message (message mode) or bytes (byte mode) on a stream.
  /// @param message_id set to the id Sent/Expired events will carry
  status send(uint64_t stream_id, std::span<const std::byte> data, const message_options &opt, time_ns now,
              uint64_t *message_id = nullptr);
  /// The same with the connection's default options (connection_config::defaults).
  status send(uint64_t stream_id, std::span<const std::byte> data, time_ns now) {
    return send(stream_id, data, cfg_.defaults, now);
  }
  /// Bytes the caller keeps unchanged, not copied, until the connection
  /// hands `token` back through poll_released().
  struct send_piece {
    std::span<const std::byte> data;
    uint64_t token = 0;
  };
  /// Queues one message (or bytes, on a byte stream) made of `pieces`
  /// without copying them: packets are built from the caller's memory.
  /// Each piece is referenced until its bytes are stable, given up or the
  /// connection closed; poll_released() then returns its token. On any
  /// status but ok nothing is referenced. Status as send().
  status send_pieces(uint64_t stream_id, std::span<const send_piece> pieces, const message_options &opt,
                     time_ns now, uint64_t *message_id = nullptr);
  /// Tokens of pieces the connection reads no more, in the order they
  /// were queued per stream. @return how many were written to `out`.
  std::size_t poll_released(std::span<uint64_t> out);
  /// Pieces wait in poll_released().
  bool has_released() const { return pieces_released_ != 0; }
  /// Before the caller destroys a connection that is not closed: every
  /// piece is released, and the connection sends nothing any more.
  void release_all_pieces(time_ns now);
  /// Ends a byte stream after what was queued.
  status finish_stream(uint64_t stream_id);
  /// Queues an unreliable, unordered datagram (at most max_datagram_bytes()).
  status send_datagram(std::span<const std::byte> data, time_ns now);
  /// The same without a copy: the bytes are read in place when its packet
  /// is built, and the token comes back (poll_released) once it was sent
  /// or dropped.
  status send_datagram_piece(const send_piece &piece, time_ns now);
  /// The largest datagram one packet carries (protocol.md 4.6).
  std::size_t max_datagram_bytes() const;
  /// Turns zero-copy delivery (connection_config::zero_copy_delivery) on
  /// or off from the next packet on, for a caller that cannot always poll
  /// every event before its next call: after a packet, keep_packet_data()
  /// makes what it left unpolled outlive the packet. Zero copy is then
  /// used only while the connection has room to keep a packet's data.
  void set_zero_copy_delivery(bool on) {
    cfg_.zero_copy_delivery = on;
    keepable_ = true;
  }
  /// Copies the data of unpolled events that point into the last packet
  /// into the connection's memory (reserved before the packet was taken),
  /// so they stay valid until polled like any other.
  void keep_packet_data();
  /// Sends what is queued without waiting to fill packets (end of a burst).
  void flush() { flush_requested_ = true; }
  /// Closes gracefully: refuses new data, finishes sending and repairing
  /// what is queued until it is stable, then sends CLOSE(code, reason) to
  /// every live member and reports Closed.
  void close(error_code code, std::string_view reason, time_ns now);
  /// Closes now: CLOSE at the next poll_transmit; every message not yet
  /// stable is reported as SendError.
  void abort(error_code code, std::string_view reason, time_ns now);
  /// Client of a sealed connection: the group secret of `epoch` (> every
  /// earlier one) goes to every live member in a GROUP_KEY frame over its
  /// pairwise key, repaired until acknowledged (protocol.md 9.6). The
  /// caller seals group packets with it from now on.
  /// @return ok; invalid (not a sealed client, wrong size, old epoch)
  status set_group_key(uint64_t epoch, std::span<const std::byte> secret);
  /// The member acknowledged the GROUP_KEY of the current epoch.
  bool member_has_group_key(std::size_t index) const;

  // -- network side ------------------------------------------------------

  /// Processes one received UDP payload from one of this connection's
  /// members (the caller checked its address). The caller keeps the bytes
  /// unchanged until its next call into this connection: Received events
  /// of in-order messages and datagram events point into them (zero copy).
  /// A version negotiation packet (version 0) is taken here too.
  void on_packet(std::span<const std::byte> packet, time_ns now);
  /// Builds the next packet into `out` (at least max_packet_bytes).
  transmit poll_transmit(std::span<std::byte> out, time_ns now);
  time_ns next_expiry() const;
  void on_expiry(time_ns now);

  // -- observation -------------------------------------------------------

  bool poll_event(event &out);
  /// Received data events not yet polled (without zero copy, their
  /// buffer space is kept until they are).
  const connection_stats &stats() const { return stats_; }
  std::size_t member_count() const { return members_.size(); }
  uint32_t member_id(std::size_t index) const;
  /// Index of member `id`, or member_count() if it is not one.
  std::size_t member_index(uint32_t id) const;
  bool member_live(std::size_t index) const;
  /// The member proved it receives our packets (it acknowledged one).
  bool member_validated(std::size_t index) const;
  /// The member accepted the connection: it sent a valid packet on it
  /// (protocol.md 5.1), and has not left since.
  bool member_accepted(std::size_t index) const;
  /// Bytes held in send buffers awaiting acknowledgement (0 when all is stable).
  uint64_t send_buffered_bytes() const;
  /// Packets awaiting acknowledgement.
  uint64_t packets_in_flight() const;
  /// Repairs or FORWARDs owed to a live member and not yet sent (waiting
  /// for its credit or window): the transfer is not over while they are.
  bool owes_members() const;
  /// Closed: nothing more will be sent or delivered (it may still drain).
  bool is_closed() const { return state_ >= state::draining; }
  /// Closed and drained (protocol.md 5.1): the owner may forget it, and
  /// its connection id may open a new connection.
  bool finished() const { return state_ == state::finished; }
  uint64_t id() const { return cfg_.connection_id; }
  role side() const { return cfg_.side; }
  /// Bytes this connection holds now: tables and data chunks.
  uint64_t memory_bytes() const { return acct_.used(); }
  /// Writes the connection's internal state, for debugging and mtpctl.
  void dump(FILE *out) const;
  const rtt_estimator &member_rtt(std::size_t index) const;
  uint64_t member_cwnd(std::size_t index) const;
  uint64_t member_bytes_in_flight(std::size_t index) const;

 private:
  struct member_state;
  struct send_stream;
  struct stream_member;
  struct recv_stream;
  struct message_record;
  struct frame_record;
  struct sent_packet;
  enum class state : uint8_t { open, closing, draining, finished };

  // connection.cc
  bool push_event(const event &e);
  bool push_data_event(const event &e);
  bool data_events_room(std::size_t n);
  void begin_call(time_ns now);
  void member_failed(std::size_t m, member_left_reason reason, time_ns now, uint64_t code = 0);
  time_ns close_copy_interval() const;
  void fail_connection(error_code code, bool tell_members, time_ns now);
  void enter_draining(time_ns now);
  uint32_t needed_members() const;
  uint32_t live_members() const;
  void check_ready();
  void report_send_errors();
  void drop(drop_reason r) { ++stats_.drops[static_cast<std::size_t>(r)]; }
  void on_version_negotiation(std::span<const std::byte> packet, time_ns now);
  void trim_memory();

  // send.cc
  packet_header next_header(uint64_t mask) const;
  transmit build_member_packet(std::size_t m, std::span<std::byte> out, time_ns now);
  transmit build_group_packet(std::span<std::byte> out, time_ns now);
  transmit build_close_packet(std::size_t m, std::span<std::byte> out);
  void owe_close(std::size_t m, error_code code);
  std::span<std::byte> amplification_limit(uint64_t mask, std::span<std::byte> out);
  void on_sent(uint64_t mask, std::size_t bytes);
  std::size_t lone_member() const;
  bool only_ack_owed(const member_state &m) const;
  bool group_may_send(std::size_t bytes) const;
  bool pacer_allows(std::size_t bytes, time_ns now);
  void pacer_on_sent(std::size_t bytes, time_ns now);
  uint64_t pacing_rate_bytes_per_s() const;
  bool new_data_pending(time_ns now, time_ns *wait_until) const;
  bool tracking_room(bool new_data);
  sent_packet *record_packet(uint64_t pn, std::size_t bytes, uint64_t mask, bool ack_eliciting, time_ns now);
  bool member_may_carry(std::size_t m, uint64_t stream, uint64_t end, uint64_t *conn_growth) const;
  void note_sent_to(std::size_t m, uint64_t stream, uint64_t end);
  /// What became of one frame's repair: settled (built, or nothing to
  /// send), no room left in the packet, or beyond the member's credit.
  enum class repair_result : uint8_t { done, full, no_credit };
  repair_result repair_frame(std::size_t m, const frame_record &f, packet_builder &b, time_ns now,
                             uint64_t *done_end = nullptr);
  bool repair_from_ranges(std::size_t m, packet_builder &b, time_ns now, bool &eliciting);
  bool unpin_head();
  bool repairs_to_ranges(std::size_t m, const sent_packet &p, uint32_t first_frame = 0);
  uint64_t message_at(const send_stream &s, uint64_t offset) const;
  void resend_credits(std::size_t m);
  bool retx_counted(uint64_t stream, uint64_t seq) const;
  void note_retx_counted(uint64_t stream, uint64_t seq);
  void advance_over_expired(send_stream &s);
  bool add_forwards(std::size_t m, packet_builder &b);
  uint64_t stream_send_limit(uint64_t stream_id) const;
  uint64_t connection_send_room() const;
  message_record *find_message(send_stream &s, uint64_t seq);
  /// Copies stream bytes [off, off + out.size()) from pieces or the buffer.
  void read_stream(const send_stream &s, uint64_t off, std::span<std::byte> out) const;
  void release_pieces_below(send_stream &s);
  status prepare_send(uint64_t stream_id, uint64_t size, const message_options &opt, send_stream **out);
  void commit_message(send_stream &s, uint64_t size, const message_options &opt, time_ns now, uint64_t *message_id);

  // ack.cc
  bool on_ack_frame(std::size_t m, const ack_frame &a, time_ns now);
  void detect_losses(std::size_t m, time_ns now);
  bool on_packet_lost(std::size_t m, sent_packet &p, uint64_t pn);
  void give_up(send_stream &s, std::size_t m, message_record &r);
  void expire_message(send_stream &s, uint64_t seq, time_ns now);
  void check_stability(send_stream &s, time_ns now);
  void check_lifetimes(time_ns now);
  void retire_packets();

  // recv.cc
  void on_stream_frame(std::size_t m, const stream_frame &f, bool &absorbed);
  void on_forward_frame(std::size_t m, const forward_frame &f, bool &absorbed);
  void on_datagram_frame(std::size_t m, std::span<const std::byte> data);
  bool on_close_frame(std::size_t m, const close_frame &f, time_ns now);
  recv_stream *recv_stream_for(std::size_t m, uint64_t id, bool &absorbed);
  void deliver(std::size_t m, recv_stream &r, uint64_t stream_id);
  bool emit_data(std::size_t m, recv_stream &r, uint64_t stream_id, uint64_t start, uint64_t end, bool eom);
  void release_delivered(std::size_t m);
  void note_received(member_state &m, uint64_t pn);
  bool append_ack(std::size_t m, packet_builder &b, time_ns now);
  bool append_credits(std::size_t m, packet_builder &b);

  connection_config cfg_;
  std::unique_ptr<session_memory> own_memory_;  ///< when the config gave none
  memory_account acct_;
  rng rng_;
  state state_ = state::open;
  std::vector<std::unique_ptr<member_state>> members_;
  std::vector<std::unique_ptr<send_stream>> send_streams_;
  seq_ring<event> events_;
  uint64_t event_head_ = 0, event_tail_ = 0;
  std::size_t notify_reserve_ = 0;  ///< event slots kept for notifications
  seq_ring<sent_packet> sent_;
  uint64_t sent_head_pn_ = 0, next_pn_ = 0, initial_pn_ = 0;
  uint64_t pn_until_skip_ = 0;
  static constexpr std::size_t skipped_kept = 8;
  uint64_t skipped_pns_[skipped_kept] = {};
  std::size_t skipped_count_ = 0;
  seq_ring<frame_record> frames_;
  uint64_t frame_head_ = 0, frame_tail_ = 0;
  // Datagrams queued, [dgram_head_, dgram_tail_): where their bytes are
  // (copies at seq * max_packet_bytes in dgram_bytes_, or the caller's);
  // [dgram_polled_, dgram_head_) went, their tokens not yet polled.
  struct queued_datagram {
    const std::byte *data = nullptr;
    uint64_t token = 0;
    uint16_t len = 0;
    bool lent = false;
  };
  seq_ring<queued_datagram> dgrams_;
  seq_ring<std::byte> dgram_bytes_;
  uint64_t dgram_polled_ = 0, dgram_head_ = 0, dgram_tail_ = 0;
  uint64_t dgram_stride_ = 0;  ///< bytes per copy in dgram_bytes_: max_packet_bytes to a power of two (no copy wraps)
  void datagrams_gone(uint64_t to);
  status queue_datagram(std::span<const std::byte> data, const send_piece *lent);
  // Received datagrams without zero copy: an arena of chunks, [arena_
  // released_, arena_tail_); a datagram never spans two chunks.
  stream_buffer rx_arena_;
  uint64_t arena_tail_ = 0, arena_polled_ = 0, arena_released_ = 0;
  uint64_t conn_bytes_sent_ = 0;  ///< sum over streams of sent_end: the group's connection-level offset
  uint64_t held_events_ = 0;      ///< unpolled data events pointing into the connection's buffers or arena
  uint32_t in_packet_events_ = 0;  ///< events of this call pointing into its packet
  bool zc_now_ = false;            ///< this packet's data may be delivered in place
  /// The member (index) whose stream has a message coming in place in
  /// fragments (in_place_fragments_max_bytes); -1: none.
  int streaming_member_ = -1;
  uint64_t streaming_stream_ = 0;
  /// Ends the message that came in fragments on (mi, r) unfinished: an
  /// abandoned event. @return false: no event room (retried later).
  bool abandon_streaming(std::size_t mi, recv_stream &r, uint64_t stream_id);
  bool keepable_ = false;          ///< set_zero_copy_delivery() was used: keep_packet_data() may follow
  bool arena_reserve(std::size_t bytes);
  /// The caller polls every event before its next call (zero copy by
  /// config): what events showed is free at the next call.
  bool polls_every_call() const { return cfg_.zero_copy_delivery && !keepable_; }
  uint64_t pieces_released_ = 0;  ///< over all streams: released pieces not yet polled
  bool flush_requested_ = false;
  bool send_blocked_ = false;  ///< new data waits for tracking room or validation: no timer wakes it
  bool ready_reported_ = false;
  bool close_pending_ = false;  ///< graceful close: CLOSE once all is stable
  bool abort_ = false;
  bool send_errors_pending_ = false;  ///< abort: SendError events still to report
  bool closed_reported_ = false;
  bool sent_close_ = false;      ///< we sent CLOSE: answer stragglers with it while draining
  bool recv_released_ = false;   ///< draining: receive buffers given back
  error_code close_code_ = error_code::no_error;
  std::string close_reason_;
  time_ns drain_until_ = never;
  static constexpr uint32_t max_close_copies = 3;
  time_ns next_close_copy_ns_ = never;  ///< draining: the next unprompted copy of our CLOSE
  uint32_t close_copies_ = 0;
  std::size_t next_member_rr_ = 0;
  std::size_t next_stream_rr_ = 0;
  time_ns last_now_ = 0;
  double pacer_tokens_ = 0;
  time_ns pacer_last_ = 0;
  time_ns next_lifetime_ns_ = never;
  struct counted_message {
    uint64_t stream, seq;
  };
  uint64_t counted_pn_ = UINT64_MAX;  ///< the repair packet counted_ belongs to
  counted_message counted_[max_frames_per_packet] = {};
  std::size_t counted_n_ = 0;
  drop_reason last_drop_ = drop_reason::not_absorbed;  ///< why the last frame was not absorbed
  // Group keys (sealed connections, protocol.md 9.6). The client's current
  // secret; a member's last few received (events point into this ring).
  uint64_t group_epoch_ = 0;
  bool group_key_set_ = false;
  std::byte group_secret_[group_secret_size] = {};
  static constexpr std::size_t group_keys_kept = 4;
  std::byte received_group_keys_[group_keys_kept][group_secret_size] = {};
  uint64_t group_keys_received_ = 0;
  bool append_group_key(std::size_t m, packet_builder &b);
  connection_stats stats_;
};

}  // namespace mtp::core
