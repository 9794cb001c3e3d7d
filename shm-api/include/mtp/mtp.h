/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * libmtp: the C API applications use to talk MTP through mtpd.
 *
 * The model (TAPS, RFC 9622, in C): an application attaches to the local
 * mtpd (mtp_attach) and gets one *channel* per thread that will use MTP.
 * On a channel it describes what it wants in a preconnection (remote
 * endpoints: a group of member ids or a group named in mtpd's config;
 * transport properties; security properties), then initiates a connection
 * or listens for incoming ones. Everything afterwards is asynchronous:
 * actions (send, clone, close, abort) are posted to mtpd and return at
 * once; what happens arrives as events (Ready, ConnectionReceived,
 * Received, Sent, Expired, SendError, MemberJoined, MemberLeft, Closed,
 * ConnectionError, ...) from mtp_poll(). docs/api.md tells the whole
 * story with examples.
 *
 * Threads: a channel is single-threaded: one thread at a time calls the
 * functions taking it (no locks inside). Use one channel per thread;
 * connections belong to the channel that made or accepted them.
 * mtp_attach / mtp_detach and mtp_channel are for the owning thread.
 *
 * Errors: every function returns an mtp_status (0 = MTP_OK) or a value
 * whose documentation says how it reports failure; nothing throws, nothing
 * aborts. mtp_status_text() gives a sentence. Failures that happen later,
 * in mtpd, arrive as events carrying an mtp_reason.
 *
 * Buffers and back-pressure: sends copy the message into the channel's
 * shared send buffers (mtp_send) or take a buffer the application filled
 * (mtp_buffer_get + mtp_send_buffer, no copy); mtpd builds its packets
 * from the buffer in place, so each buffer returns to the channel only
 * once its message is stable (Sent), given up (Expired) or failed
 * (SendError), or its connection closed: the channel's send buffers bound
 * what is in flight, as a socket's send buffer does. When mtpd's send buffer for a
 * stream is full, mtpd holds that send (and the channel's later commands,
 * in order) until Sent events free room; the command ring then fills, and
 * when it or the channel's buffers are exhausted sends return MTP_EAGAIN:
 * poll, then retry. Nothing is reordered or dropped. A command on a
 * connection whose Closed or ConnectionError the application has not
 * polled yet is dropped without an event. Received messages sit in
 * mtpd's receive buffers until mtp_release(): an application that does not
 * release stops receiving, and its peers are slowed by flow control;
 * nothing mtpd acknowledged is lost.
 *
 * ABI: C, stable within MTP_API_VERSION; structs passed in or filled in
 * carry their size in their first field so they can grow.
 */
#ifndef MTP_MTP_H
#define MTP_MTP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MTP_API_VERSION 1

/* ---- status codes (return values) ---------------------------------- */

typedef enum mtp_status {
  MTP_OK = 0,
  MTP_EAGAIN = 1,      /* no room now (ring, buffers): mtp_poll() and retry */
  MTP_EINVAL = 2,      /* an argument is out of range or a handle unknown */
  MTP_ENOTSUP = 3,     /* asked for what this version does not do (security, causal/total order) */
  MTP_ECLOSED = 4,     /* the connection is closed or closing */
  MTP_EDAEMON = 5,     /* mtpd is gone or detached this application: re-attach */
  MTP_EDENIED = 6,     /* mtpd refused the attach: user or group not allowed */
  MTP_ELAYOUT = 7,     /* this libmtp and mtpd disagree on the shared layout: upgrade one */
  MTP_ETOOBIG = 8,     /* larger than a message or datagram may be */
  MTP_ENOMEM = 9,      /* no memory in this process */
  MTP_ECONNECT = 10,   /* the socket could not be reached (mtpd not running?) */
  MTP_EBROKEN = 11,    /* the channel's rings were corrupted; detach */
  MTP_EFULL = 12,      /* mtpd refused the attach: it serves as many applications as it may, or has
                          no memory for another region; attach again later, not in a tight loop */
  MTP_ETIMEDOUT = 13   /* mtp_wait: timeout_ms passed and nothing woke the channel (not an error) */
} mtp_status;

/* A sentence for a status. Never NULL. */
const char *mtp_status_text(int status);

/* ---- reasons (in events) -------------------------------------------- */

/* Values equal mtp::shm::reason (shm_commands.h). */
typedef enum mtp_reason {
  MTP_REASON_NONE = 0,
  MTP_REASON_BAD_HANDLE = 1,
  MTP_REASON_HANDLE_IN_USE = 2,
  MTP_REASON_BAD_BUFFER = 3,
  MTP_REASON_BAD_PARAMS = 4,
  MTP_REASON_UNKNOWN_MEMBER = 5,
  MTP_REASON_UNKNOWN_GROUP = 6,
  MTP_REASON_NOT_SUPPORTED = 7,
  MTP_REASON_TOO_LARGE = 8,
  MTP_REASON_WOULD_BLOCK = 9,
  MTP_REASON_BAD_STREAM = 10,
  MTP_REASON_CLOSED = 11,
  MTP_REASON_NO_RESOURCES = 12,
  MTP_REASON_BAD_COMMAND = 13,
  MTP_REASON_LISTENER_EXISTS = 14,
  MTP_REASON_TIMEOUT = 20,
  MTP_REASON_PEER_CLOSED = 21,
  MTP_REASON_PROTOCOL_VIOLATION = 22,
  MTP_REASON_VERSION_MISMATCH = 23,
  MTP_REASON_THRESHOLD_LOST = 24,
  MTP_REASON_ABORTED = 25,
  MTP_REASON_DAEMON_GONE = 26,
  MTP_REASON_REFUSED = 27,
  MTP_REASON_CHANNEL_BROKEN = 28,
  MTP_REASON_GIVEN_UP = 29,
  MTP_REASON_SECURITY_MISMATCH = 30,  /* security required on a plaintext mtpd, or prohibited on a secured one */
  MTP_REASON_PEER_NOT_ALLOWED = 31    /* a member_keys entry is not the key mtpd's config names for that member */
} mtp_reason;

/* A sentence for a reason. Never NULL. */
const char *mtp_reason_text(uint32_t reason);

/* ---- attach ---------------------------------------------------------- */

typedef struct mtp_context mtp_context;
typedef struct mtp_channel mtp_channel;
/* A connection or listener handle, unique within its channel; 0 is none. */
typedef uint64_t mtp_connection;

/*
 * Attaches to the mtpd listening at `socket_path` (its app.socket; NULL:
 * $MTP_SOCKET, else /run/mtpd/mtpd.sock) with `channels` channels (1 ..
 * 64, one per thread that will use MTP). Blocks up to about 2 s.
 * On failure returns the status and writes a sentence to `error` (when
 * non-NULL, at most error_bytes with its NUL): MTP_ECONNECT (no mtpd
 * there), MTP_EDENIED (this user may not attach), MTP_ELAYOUT (another
 * shared layout), MTP_EFULL (mtpd has no room for another application:
 * its app limit, or no memory for the region; `error` says which),
 * MTP_EINVAL, MTP_ENOMEM.
 */
int mtp_attach(const char *socket_path, uint32_t channels, mtp_context **out, char *error, size_t error_bytes);

/*
 * Detaches: closes the socket (mtpd then aborts every connection of this
 * application: their peers see MemberLeft or Closed) and unmaps the
 * region. Every channel and pointer into it is invalid afterwards.
 */
void mtp_detach(mtp_context *ctx);

/* Channel `index` (< channels given to mtp_attach), or NULL. */
mtp_channel *mtp_channel_get(mtp_context *ctx, uint32_t index);

/* mtpd's number for this attachment (its logs say "application <id>"). */
uint64_t mtp_app_id(const mtp_context *ctx);

/*
 * This node's MTP member id (mtpd's node.id): the id peers know it by, e.g.
 * in their MemberJoined / Received events; 0 if mtpd did not say (an older
 * mtpd) or ctx is NULL.
 */
uint32_t mtp_node_id(const mtp_context *ctx);

/* ---- preconnection --------------------------------------------------- */

typedef enum mtp_reliability {
  /* Message properties: the connection's (its preconnection's) reliability.
   * In a preconnection: the same as MTP_RELIABLE. */
  MTP_RELIABILITY_DEFAULT = 0,
  MTP_RELIABLE = 1,    /* every byte arrives (in message properties: on any connection) */
  MTP_PARTIAL = 2,     /* given up after a lifetime or a number of retransmissions */
  MTP_UNRELIABLE = 3   /* sent once */
} mtp_reliability;

typedef enum mtp_ordering {
  MTP_ORDER_NONE = 0,
  MTP_ORDER_FIFO = 1,    /* default: per stream, in send order */
  MTP_ORDER_CAUSAL = 2,  /* not yet: MTP_ENOTSUP */
  MTP_ORDER_TOTAL = 3    /* not yet: MTP_ENOTSUP */
} mtp_ordering;

typedef enum mtp_preference {
  MTP_PROHIBIT = 0,
  MTP_AVOID = 1,
  MTP_NO_PREFERENCE = 2,
  MTP_PREFER = 3,
  MTP_REQUIRE = 4
} mtp_preference;

typedef struct mtp_preconnection {
  uint32_t struct_size;          /* sizeof(mtp_preconnection): set by mtp_preconnection_init */
  /* Remote endpoints: member node ids (each one of mtpd's peers) ... */
  const uint32_t *members;
  uint32_t member_count;         /* 1 .. 64 */
  /* ... or a group named in mtpd's config (used when member_count is 0). */
  const char *group;
  /* Transport properties. */
  uint32_t threshold;            /* t of n: Ready when t members accepted, alive while t live; 0: all */
  mtp_reliability reliability;   /* the default of every message (MTP_RELIABILITY_DEFAULT: reliable) */
  mtp_ordering ordering;         /* of every stream */
  int byte_stream;               /* 0: messages (default); 1: stream 0 is a byte stream */
  int congestion_newreno;        /* 0: CUBIC (default); 1: NewReno */
  mtp_preference multicast;      /* anything but REQUIRE: copies are sent per member */
  uint32_t streams;              /* streams opened with the connection (ids 0 .. streams-1), 1 .. 16 */
  /* Security properties (docs/security.md). mtpd seals every connection
   * or none (its security.mode): REQUIRE on a plaintext mtpd, or PROHIBIT
   * on a secured one, is refused with CommandError
   * MTP_REASON_SECURITY_MISMATCH; AVOID, NO_PREFERENCE and PREFER take
   * what mtpd does. */
  mtp_preference security;
  /* The identity each member must prove: its 32-byte static public key,
   * parallel to `members` (not with `group`); NULL: the keys mtpd's config
   * names. A key that is not the one the config allows for that member is
   * refused with CommandError MTP_REASON_PEER_NOT_ALLOWED (mtpd accepts
   * only the peers its config lists). */
  const uint8_t (*member_keys)[32];
} mtp_preconnection;

/* Defaults: reliable, fifo, message mode, CUBIC, 1 stream, no threshold. */
void mtp_preconnection_init(mtp_preconnection *p);

/*
 * Opens a connection to the preconnection's group. Returns at once with
 * the handle in *out; Ready follows when enough members accepted, or
 * ConnectionError. `user` comes back in a CommandError if mtpd refuses.
 * Errors now: MTP_EINVAL (no members, more than 64, threshold > n),
 * MTP_ENOTSUP (security required, causal/total order, multicast
 * required), MTP_EAGAIN (ring or buffers full), MTP_EDAEMON.
 */
int mtp_initiate(mtp_channel *ch, const mtp_preconnection *p, mtp_connection *out);

/*
 * Listens: connections from clients to this node raise ConnectionReceived
 * on this channel with a new handle. One listener per daemon (MTP version
 * 1 has no service names; the secured handshake will carry them): a
 * second gets CommandError MTP_REASON_LISTENER_EXISTS. `p` may be NULL
 * (its members are ignored; streams and ordering apply to what the
 * accepted connections send back).
 */
int mtp_listen(mtp_channel *ch, const mtp_preconnection *p, mtp_connection *out);
int mtp_stop_listen(mtp_channel *ch, mtp_connection listener);

/*
 * The identity of the client of an accepted connection (one from
 * CONNECTION_RECEIVED) on a secured mtpd: the 32-byte static public key
 * it proved in the handshake, one of mtpd's allowed peers (the event's
 * `member` names which). MTP_OK; MTP_EINVAL (not an accepted connection,
 * or mtpd runs plaintext: no identity was proved).
 */
int mtp_peer_identity(mtp_channel *ch, mtp_connection c, uint8_t key[32]);

/* ---- sending --------------------------------------------------------- */

/*
 * Per message. Zero in a field (as mtp_message_properties_init leaves it)
 * means the connection's default. reliability: MTP_RELIABILITY_DEFAULT
 * follows the connection's preconnection; MTP_RELIABLE makes this message
 * fully reliable even on a partially reliable or unreliable connection;
 * MTP_PARTIAL and MTP_UNRELIABLE make it so on any connection.
 */
typedef struct mtp_message_properties {
  uint32_t struct_size;          /* set by mtp_message_properties_init */
  mtp_reliability reliability;   /* MTP_RELIABILITY_DEFAULT (0): the connection's */
  uint64_t lifetime_ns;          /* partial: give up this long after the send; 0 none */
  uint32_t max_retransmissions;  /* partial: per member */
  int low_latency;               /* send at once, without waiting to fill a packet */
  int final_message;             /* byte stream: end the stream after this */
  /* Idempotent: receiving it twice does no harm. On a secured mtpd,
   * messages sent before the handshake with a member finished go at once
   * as early data (sealed with a key from the first flight, which a replay
   * could repeat) while every message the connection was given so far is
   * idempotent; otherwise they wait for the handshake. docs/security.md. */
  int idempotent;
} mtp_message_properties;

void mtp_message_properties_init(mtp_message_properties *m);

/* A send buffer of the channel, filled by the application. */
typedef struct mtp_buffer {
  void *data;          /* where to write */
  uint32_t capacity;   /* bytes available at data */
  uint32_t index;      /* the region's buffer number */
} mtp_buffer;

/* The largest message one mtp_send takes (pieces are gathered by mtpd). */
size_t mtp_max_message_bytes(const mtp_channel *ch);

/*
 * Sends a message on `stream` (0 .. streams opened - 1). The bytes are
 * copied into the channel's buffers; the call returns once they are
 * posted. `user` returns in Sent / Expired / SendError of this message.
 * props may be NULL (the connection's defaults). Returns MTP_EAGAIN when
 * buffers or the ring are short (nothing was posted: retry after
 * mtp_poll), MTP_ETOOBIG (above mtp_max_message_bytes), MTP_EINVAL
 * (unknown handle, a listener, length 0 without final_message,
 * final_message on a stream that is not a byte stream), MTP_ECLOSED
 * (after mtp_close or mtp_abort).
 */
int mtp_send(mtp_channel *ch, mtp_connection c, uint64_t stream, const void *data, size_t length,
             const mtp_message_properties *props, uint64_t user);

/* A free send buffer to fill (zero copy), or MTP_EAGAIN. */
int mtp_buffer_get(mtp_channel *ch, mtp_buffer *out);
/* Gives back a buffer from mtp_buffer_get without sending it. */
void mtp_buffer_put(mtp_channel *ch, const mtp_buffer *b);
/* Sends the first `length` bytes of a filled buffer; the buffer is the
 * channel's again (do not touch it) whatever this returns. */
int mtp_send_buffer(mtp_channel *ch, mtp_connection c, uint64_t stream, const mtp_buffer *b, uint32_t length,
                    const mtp_message_properties *props, uint64_t user);

/* A burst of small messages: sends[i] like mtp_send. Returns how many were
 * posted (they are posted in order; the first not posted failed with
 * MTP_EAGAIN or an error written to *status when non-NULL). */
typedef struct mtp_send_request {
  mtp_connection connection;
  uint64_t stream;
  const void *data;
  uint32_t length;
  uint64_t user;
} mtp_send_request;
size_t mtp_send_burst(mtp_channel *ch, const mtp_send_request *sends, size_t n, const mtp_message_properties *props,
                      int *status);

/*
 * An unreliable datagram (at most one packet's payload), copied into a
 * send buffer that comes back once mtpd built it into a packet. mtpd
 * queues a connection's datagrams only up to a bound (256): one that
 * finds the queue full is refused with COMMAND_ERROR (WOULD_BLOCK) and
 * never sent, so a sender of many paces itself, e.g. by keeping few
 * send buffers outstanding (mtp_channel_stats).
 */
int mtp_send_datagram(mtp_channel *ch, mtp_connection c, const void *data, size_t length);

/* Opens stream `stream` of the connection (TAPS Clone: a new ordered
 * flow in the same group). Its ordering is the connection's unless
 * unordered is 1. */
int mtp_clone(mtp_channel *ch, mtp_connection c, uint64_t stream, int unordered);

/* Ends a byte stream after what was sent. */
int mtp_finish(mtp_channel *ch, mtp_connection c, uint64_t stream);

/* Closes gracefully: queued messages are delivered, then Closed. */
int mtp_close(mtp_channel *ch, mtp_connection c);
/* Aborts: CLOSE at once with `code` (>= 256 for the application's own
 * codes), unsent messages come back as SendError, then Closed. */
int mtp_abort(mtp_channel *ch, mtp_connection c, uint64_t code);

/* ---- events ----------------------------------------------------------- */

typedef enum mtp_event_type {
  MTP_EVENT_READY = 1,
  MTP_EVENT_CONNECTION_RECEIVED = 2,  /* connection: the new handle; listener; member: the client */
  MTP_EVENT_RECEIVED = 3,             /* a whole message (or its last piece): data, length */
  MTP_EVENT_RECEIVED_PARTIAL = 4,     /* a piece of a message; more follow */
  MTP_EVENT_SENT = 5,                 /* the message is stable (acknowledged by t or all members) */
  MTP_EVENT_EXPIRED = 6,              /* a partial/unreliable message given up */
  MTP_EVENT_SEND_ERROR = 7,           /* the message was not sent: reason */
  MTP_EVENT_MEMBER_JOINED = 8,        /* member accepted the connection */
  MTP_EVENT_MEMBER_LEFT = 9,          /* member left: reason, code */
  MTP_EVENT_CLOSED = 10,              /* the connection ended normally; the handle is gone */
  MTP_EVENT_CONNECTION_ERROR = 11,    /* the connection failed: reason, code; the handle is gone */
  MTP_EVENT_COMMAND_ERROR = 12,       /* mtpd refused an action: reason; user as given; code: which action */
  MTP_EVENT_DATAGRAM = 13,            /* an unreliable datagram: data, length */
  MTP_EVENT_RECEIVE_ERROR = 14        /* the message whose RECEIVED_PARTIAL pieces came on (member,
                                         stream) will not be completed (reason GIVEN_UP: a partially
                                         reliable message whose rest its sender gave up, or the member
                                         left): drop the pieces; offset: where they stopped */
} mtp_event_type;

typedef struct mtp_event {
  mtp_event_type type;
  uint32_t reason;            /* mtp_reason, where one applies */
  mtp_connection connection;
  mtp_connection listener;    /* CONNECTION_RECEIVED */
  uint64_t stream;
  uint64_t message;           /* SENT, EXPIRED, SEND_ERROR: per stream, in send order from 0 */
  uint64_t offset;            /* RECEIVED*: where data starts in the stream */
  uint64_t user;              /* SENT, EXPIRED, SEND_ERROR, COMMAND_ERROR: the send's user value */
  uint64_t code;              /* CLOSED, CONNECTION_ERROR, MEMBER_LEFT: the CLOSE error code;
                                 SENT: members that hold it; EXPIRED: members that miss it */
  uint32_t member;            /* MEMBER_*, CONNECTION_RECEIVED, RECEIVED* and DATAGRAM: who sent it */
  uint32_t length;            /* RECEIVED*, DATAGRAM */
  const void *data;           /* RECEIVED*, DATAGRAM: valid until mtp_release(ch, &event) */
  uint32_t buffer;            /* for mtp_release */
} mtp_event;

/*
 * Takes up to `max` events without blocking. Returns how many. Also
 * notices a daemon that went away: every connection then gets
 * CONNECTION_ERROR with MTP_REASON_DAEMON_GONE (once), and later calls
 * return 0 and mtp_send etc. MTP_EDAEMON.
 */
size_t mtp_poll(mtp_channel *ch, mtp_event *events, size_t max);

/* Hands back the receive buffer of a RECEIVED, RECEIVED_PARTIAL or
 * DATAGRAM event (other events: no-op). `data` is invalid from here on.
 * Releases are gathered and reach mtpd together: when 15 wait, else with
 * the channel's next mtp_poll, mtp_wait or mtp_arm. */
void mtp_release(mtp_channel *ch, const mtp_event *e);

/*
 * Blocking use. mtp_wait() sleeps until an event may be ready or
 * `timeout_ms` passes (-1: no limit; 0: only looks). It returns
 *   MTP_OK         woken, or events were waiting already: mtp_poll() now
 *                  (a wake-up may be spurious: a signal, another
 *                  channel's event, a release that waited for ring room);
 *   MTP_ETIMEDOUT  timeout_ms passed and nothing woke it;
 *   MTP_EDAEMON / MTP_EBROKEN  the channel is dead (after its last events
 *                  were polled; a daemon that just went away wakes it with
 *                  MTP_OK first, for the CONNECTION_ERRORs);
 *   MTP_EINVAL     ch is NULL.
 * For epoll:
 * mtp_channel_fd() is readable when events may be ready, after mtp_arm()
 * said 1 (it returns 0 when events are waiting already: poll instead of
 * sleeping; -MTP_EDAEMON or -MTP_EBROKEN when the channel is dead). The
 * fd is one for all channels of the context (it also turns readable when
 * mtpd goes away), so a thread may wake for another channel's events.
 * Call mtp_poll() after every wake-up.
 */
int mtp_wait(mtp_channel *ch, int timeout_ms);
int mtp_channel_fd(const mtp_channel *ch);
int mtp_arm(mtp_channel *ch);

/* Counters of the channel (this process's view). */
typedef struct mtp_channel_stats {
  uint32_t struct_size;  /* set by the caller: sizeof(mtp_channel_stats) */
  uint64_t commands_posted, events_polled, sends, send_eagain, bytes_sent, messages_received, bytes_received;
  uint32_t send_buffers_free, send_buffers_total;
} mtp_channel_stats;
/*
 * Fills the fields of *out that lie wholly within out->struct_size bytes
 * (all of them: 0 when ch is NULL) and leaves the rest, and struct_size,
 * as they were: a struct_size from an older header gets what that header
 * knew, a newer header's fields this library does not know keep what the
 * caller put there (zero-initialise the struct), and a struct_size too
 * small for commands_posted leaves *out untouched.
 */
void mtp_channel_stats_get(const mtp_channel *ch, mtp_channel_stats *out);

#ifdef __cplusplus
}
#endif

#endif /* MTP_MTP_H */
