// SPDX-License-Identifier: BSD-3-Clause
// What travels in a channel's rings (shm_layout.h `descriptor`): the
// commands an application posts to mtpd and the events mtpd posts back.
// libmtp and mtpd both compile this file; applications use mtp.h, which
// is built on it. A change here that either side could observe changes
// shm::layout_version.
//
// Handles. A connection handle names a connection within one channel.
// The application chooses the handles of connections it initiates and of
// its listeners (1 .. 2^63 - 1, each unused in that channel); mtpd
// chooses those of connections it accepts for a listener (bit 63 set).
// A command naming a handle the channel does not have gets a
// command_error event (reason bad_handle) and changes nothing.
//
// Buffers. A command that carries bytes names one of the application's
// send buffers (buffer, offset, length; offset >= the region's headroom).
// mtpd takes the buffer and hands it back with a buffer_returned event (or
// in a buffers_returned batch with others):
// at once for initiate and listen (their bytes are copied); for send only
// once the message's bytes are stable, given up or the connection closed,
// and for datagram once its packet was built (or it was dropped), since
// mtpd builds its packets from the buffer in place (every piece of a
// send_more message is held until then). A
// refused command returns its buffer in its command_error event. Received
// bytes arrive in mtpd's receive buffers, named in `received` events; the
// application hands each back with cmd_release once it has read it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "mtp/shm_layout.h"

namespace mtp::shm {

/// descriptor::type of a command (application -> mtpd).
enum class command : uint16_t {
  /// Opens a connection to a group. connection: the new handle; buffer:
  /// an initiate_params; user: echoed in command_error if refused.
  initiate = 1,
  /// Accepts incoming connections. connection: the listener's handle;
  /// buffer: none (no_buffer) or initiate_params (stream defaults only).
  listen = 2,
  /// Stops accepting. connection: the listener's handle.
  stop_listen = 3,
  /// Sends a message (or, with flag more, the first pieces of one: mtpd
  /// gathers pieces until one without `more`). connection, stream,
  /// buffer/offset/length, flags (send_flags), value: lifetime in ns
  /// (0: none), member: max retransmissions (partial), user: echoed in
  /// sent / expired / send_error of this message.
  send = 4,
  /// Opens another stream of a connection (TAPS Clone). connection,
  /// stream: its id; flags: stream_flags.
  open_stream = 5,
  /// Graceful close: what is queued is delivered first. connection.
  close = 6,
  /// Abort: CLOSE now, unsent messages fail. connection; value: error code.
  abort = 7,
  /// Hands a receive buffer back. buffer.
  release = 8,
  /// An unreliable datagram. connection, buffer/offset/length.
  datagram = 9,
  /// Ends a byte stream. connection, stream.
  finish = 10,
  /// Hands several receive buffers back: a buffer_batch.
  release_batch = 11,
};

/// descriptor::type of an event (mtpd -> application).
enum class event : uint16_t {
  ready = 1,                ///< connection: enough members accepted (t, or all)
  connection_received = 2,  ///< connection: new (accepted) handle; value: listener handle; member: the client
  received = 3,             ///< connection, stream, buffer/offset/length, value: stream offset, flags: event_flags
  sent = 4,                 ///< connection, stream, message, user; value: members that hold it
  expired = 5,              ///< connection, stream, message, user; value: members that miss it
  send_error = 6,           ///< connection, stream, message, user; reason
  member_left = 7,          ///< connection, member, reason; value: its CLOSE's code
  closed = 8,               ///< connection; value: code (0 normal). The handle is gone after this.
  connection_error = 9,     ///< connection, reason, value: code. The handle is gone after this.
  command_error = 10,       ///< a command was refused: connection, stream, user as given; reason; buffer returned
  buffer_returned = 11,     ///< buffer: a send buffer is the application's again; user echoed
  member_joined = 12,       ///< connection, member: a member accepted (sent its first packet)
  receive_error = 13,       ///< connection, stream, member; value: stream offset it stopped at; reason:
                            ///< a message some of whose pieces came will not be completed
  buffers_returned = 14,    ///< a buffer_batch of send buffers that are the application's again
};

/// Several buffers in one descriptor (release_batch, buffers_returned):
/// a release or a return per buffer would cost a ring slot per small
/// message. `count` is 1..max_buffers; the rest of the slots mean nothing.
struct buffer_batch {
  static constexpr uint32_t max_buffers = 15;
  uint16_t type;
  uint16_t count;
  uint32_t buffers[max_buffers];
};
static_assert(sizeof(buffer_batch) == sizeof(descriptor));
static_assert(offsetof(buffer_batch, buffers) == 4);

inline buffer_batch batch_of(const descriptor &d) {
  buffer_batch b;
  std::memcpy(&b, &d, sizeof b);
  return b;
}
inline descriptor descriptor_of(const buffer_batch &b) {
  descriptor d;
  std::memcpy(&d, &b, sizeof d);
  return d;
}

/// send command flags.
enum send_flags : uint16_t {
  send_more = 1 << 0,        ///< more pieces of this message follow in later send commands
  send_unordered = 1 << 1,   ///< (reserved: ordering is per stream, chosen at open_stream)
  send_partial = 1 << 2,     ///< partially reliable: lifetime and max retransmissions apply
  send_unreliable = 1 << 3,  ///< sent once, never repaired
  send_low_latency = 1 << 4, ///< send now, without waiting to fill a packet
  send_reliable = 1 << 5,    ///< fully reliable, whatever the connection's default
  /// Idempotent: may go as early data, before the handshake with a member
  /// finished (replay harmless; protocol.md 9.8).
  send_idempotent = 1 << 6,
};

/// open_stream flags.
enum stream_flags : uint16_t {
  stream_unordered = 1 << 0,  ///< ordering none (default fifo)
  stream_bytes = 1 << 1,      ///< a byte stream (default message)
};

/// received event flags.
enum event_flags : uint16_t {
  end_of_message = 1 << 0,  ///< this piece ends its message (else ReceivedPartial)
  is_datagram = 1 << 1,     ///< a DATAGRAM's payload (stream is 0)
};

/// Why: command_error, send_error, member_left and connection_error
/// reasons (descriptor::reason). Names are counter and message names.
#define MTP_SHM_REASONS(X)                                                         \
  X(none, 0, "no error")                                                           \
  X(bad_handle, 1, "no such connection or listener in this channel")               \
  X(handle_in_use, 2, "the handle names a connection or listener already")        \
  X(bad_buffer, 3, "the buffer is not the application's, or the range is outside it") \
  X(bad_params, 4, "malformed parameters")                                         \
  X(unknown_member, 5, "a member id that is not in the daemon's peers")           \
  X(unknown_group, 6, "no group of that name in the daemon's config")              \
  X(not_supported, 7, "not supported by this version (causal or total order, security)") \
  X(too_large, 8, "larger than the stream's buffer, or a datagram larger than a packet") \
  X(would_block, 9, "the send buffer, message records or memory are full: retry after Sent") \
  X(bad_stream, 10, "no such stream, or the wrong mode for the command")          \
  X(closed, 11, "the connection is closing or closed")                            \
  X(no_resources, 12, "the daemon's session table or memory is full")             \
  X(bad_command, 13, "unknown command type or flags")                             \
  X(listener_exists, 14, "another application listens already")                  \
  X(timeout, 20, "a member sent nothing for member_timeout")                      \
  X(peer_closed, 21, "the peer closed (CLOSE)")                                   \
  X(protocol_violation, 22, "the peer broke the protocol")                       \
  X(version_mismatch, 23, "the peer does not speak MTP version 1")                \
  X(threshold_lost, 24, "fewer than t members are live")                         \
  X(aborted, 25, "the connection was aborted")                                   \
  X(daemon_gone, 26, "mtpd stopped or detached this application")                \
  X(refused, 27, "no application listens at the peer")                           \
  X(channel_broken, 28, "the channel's rings were corrupted: mtpd stopped serving it") \
  X(given_up, 29, "the sender gave up the rest of the message, or left") \
  X(security_mismatch, 30, "security required on a plaintext node, or prohibited on a secured one") \
  X(peer_not_allowed, 31, "a member's expected identity is not the public key the config allows for it")

enum class reason : uint32_t {
#define MTP_X(name, value, text) name = value,
  MTP_SHM_REASONS(MTP_X)
#undef MTP_X
};

/// The parameters of initiate (and the stream defaults of listen), in the
/// named send buffer at `offset`. Fixed layout; unused fields zero.
struct initiate_params {
  static constexpr uint32_t current_magic = 0x494e5450;  ///< "PTNI"
  static constexpr uint32_t max_members = 64;
  uint32_t magic;         ///< current_magic
  uint32_t member_count;  ///< members[] used; 0: `group` names them
  uint32_t threshold;     ///< t of n; 0: all
  uint8_t stream_mode;    ///< 0 message, 1 bytes (stream 0, opened with the connection)
  uint8_t ordering;       ///< 0 none, 1 fifo, 2 causal, 3 total (2, 3: not_supported)
  uint8_t reliability;    ///< default for messages: 0 reliable, 1 partial, 2 unreliable
  uint8_t congestion;     ///< 0 cubic, 1 newreno
  uint8_t security;       ///< 0 prohibited; 1 either; 2 required (against mtpd's security.mode)
  uint8_t multicast;      ///< 0 prohibited, 1 permitted (sent as unicast copies), 2 required (not_supported yet)
  /// Stream buffer and receive window per stream, 2^window_log2 bytes,
  /// 12 .. 26 (4 KiB .. 64 MiB); 0: mtpd's default (4 MiB). Both ends of a
  /// connection must agree until a handshake carries it.
  uint8_t window_log2;
  /// 1: member_count expected public keys (32 bytes each, members[]
  /// order) follow this struct in the buffer (initiate only).
  uint8_t member_keys;
  uint32_t streams;       ///< streams to open at once, 0 .. 16 (0 means 1)
  char group[32];         ///< NUL-terminated group name, when member_count is 0
  uint32_t members[max_members];  ///< member node ids, each one of the daemon's peers
  /// The connection id to use (initiate); 0: mtpd picks one. Refused
  /// (bad_params) unless the worker serving the channel owns it, and
  /// (handle_in_use) while a connection of this node has it.
  uint64_t connection_id;
};
static_assert(sizeof(initiate_params) == 320);

/// What mtpd accepts of an initiate_params (its own copy of the bytes the
/// application wrote), before it looks at members and groups in its
/// config. Checks the magic, the ranges of every field, that at most 64
/// members are listed, none twice, a threshold no larger than the list,
/// and NUL-terminates `group` in place. `listen`: only the stream fields
/// matter (members and threshold are ignored). @return reason::none, or
/// why the command is refused.
reason check_initiate_params(initiate_params &ip, uint32_t max_streams, bool listen);

}  // namespace mtp::shm
