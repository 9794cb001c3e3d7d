// SPDX-License-Identifier: BSD-3-Clause
// libmtp: the C API of mtp.h over the shared region (shm_layout.h). It owns
// the application's side of each channel: the to_daemon producer and the
// to_app consumer, the channel's share of the send buffers, and the handles
// it knows to be live. Each channel is used by one thread at a time; the
// only state shared between channels is the context's read-only layout,
// the socket, the eventfds and an atomic "daemon gone" flag.
//
// Trust: mtpd is trusted to be honest, not to be bug-free. Every buffer
// index, offset and length in an event is checked before it becomes a
// pointer or goes back on a free list, so a broken daemon costs dropped
// events, never a read outside the region or a buffer used twice.
//
// Hot path (send, send_burst, poll, release): no allocation, no locks, no
// syscalls, except an eventfd write when mtpd said it sleeps, a socket
// check at most once per millisecond while mtp_poll finds nothing, and the
// growth of a handle table when the count of live connections doubles.
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

// The C API is what the shared library exports; everything else in it
// (the mtp::shm code it is built from) stays hidden.
#pragma GCC visibility push(default)
#include "mtp/mtp.h"
#pragma GCC visibility pop

#include "mtp/shm_attach.h"
#include "mtp/shm_commands.h"
#include "mtp/shm_ring.h"

namespace shm = mtp::shm;
using shm::descriptor;

#define MTP_SAME_REASON(upper, lower) \
  static_assert(MTP_REASON_##upper == static_cast<uint32_t>(shm::reason::lower), "mtp.h and shm_commands.h disagree");
MTP_SAME_REASON(NONE, none)
MTP_SAME_REASON(BAD_HANDLE, bad_handle)
MTP_SAME_REASON(HANDLE_IN_USE, handle_in_use)
MTP_SAME_REASON(BAD_BUFFER, bad_buffer)
MTP_SAME_REASON(BAD_PARAMS, bad_params)
MTP_SAME_REASON(UNKNOWN_MEMBER, unknown_member)
MTP_SAME_REASON(UNKNOWN_GROUP, unknown_group)
MTP_SAME_REASON(NOT_SUPPORTED, not_supported)
MTP_SAME_REASON(TOO_LARGE, too_large)
MTP_SAME_REASON(WOULD_BLOCK, would_block)
MTP_SAME_REASON(BAD_STREAM, bad_stream)
MTP_SAME_REASON(CLOSED, closed)
MTP_SAME_REASON(NO_RESOURCES, no_resources)
MTP_SAME_REASON(BAD_COMMAND, bad_command)
MTP_SAME_REASON(LISTENER_EXISTS, listener_exists)
MTP_SAME_REASON(GIVEN_UP, given_up)
MTP_SAME_REASON(TIMEOUT, timeout)
MTP_SAME_REASON(PEER_CLOSED, peer_closed)
MTP_SAME_REASON(PROTOCOL_VIOLATION, protocol_violation)
MTP_SAME_REASON(VERSION_MISMATCH, version_mismatch)
MTP_SAME_REASON(THRESHOLD_LOST, threshold_lost)
MTP_SAME_REASON(ABORTED, aborted)
MTP_SAME_REASON(DAEMON_GONE, daemon_gone)
MTP_SAME_REASON(REFUSED, refused)
MTP_SAME_REASON(CHANNEL_BROKEN, channel_broken)
#undef MTP_SAME_REASON

// mtp_channel_stats_get copies field by field: a field added to the struct
// must be added there too (then update these: seven counters, two buffer
// counts, nothing after them).
static_assert(offsetof(mtp_channel_stats, send_buffers_total) ==
                      offsetof(mtp_channel_stats, commands_posted) + 7 * sizeof(uint64_t) + sizeof(uint32_t) &&
                  sizeof(mtp_channel_stats) - offsetof(mtp_channel_stats, send_buffers_total) - sizeof(uint32_t) <
                      alignof(mtp_channel_stats),
              "mtp_channel_stats changed: update mtp_channel_stats_get");

namespace {

/// mtpd gathers a message sent in pieces in one buffer of at most this
/// (app_service.cc, app_send: 1 << 22), and its stream send buffer is as
/// large; a larger message could never be taken.
constexpr uint64_t daemon_message_limit = uint64_t{1} << 22;
/// Descriptors taken from to_app at a time, and posted to to_daemon at a
/// time by mtp_send_burst (a burst of 64 small messages is one push).
constexpr uint32_t poll_burst = 32;
constexpr uint32_t post_burst = 64;
/// How often an idle mtp_poll asks the socket whether mtpd is still there.
constexpr uint64_t liveness_check_ns = 1'000'000;
constexpr uint64_t daemon_handle_bit = uint64_t{1} << 63;

uint64_t monotonic_ns() {
  timespec t{};
  clock_gettime(CLOCK_MONOTONIC, &t);  // a vDSO call: no syscall
  return static_cast<uint64_t>(t.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(t.tv_nsec);
}

/// The live connection and listener handles of one channel, with what the
/// library must know of each. Open addressing with linear probing and
/// backward-shift deletion (no tombstones, so lookups stay short however
/// many connections came and went); load at most 1/2. Only grow()
/// allocates, and callers grow before they pop or post, so an insert never
/// fails halfway through.
class handle_table {
 public:
  enum flag : uint8_t {
    listener = 1 << 0,
    closing = 1 << 1,      ///< mtp_close posted: no more sends or closes
    aborted = 1 << 2,      ///< mtp_abort posted: no more aborts either
    byte_stream = 1 << 3,  ///< stream 0 is a byte stream (final_message, mtp_finish)
  };
  struct entry {
    uint64_t handle;  ///< 0: empty slot
    uint8_t flags;
    bool has_identity;
    uint8_t identity[32];  ///< an accepted connection's client, proved in the handshake
  };

  handle_table() = default;
  /// `slots` a power of two.
  void init(std::size_t slots) {
    slots_.assign(slots, entry{0, 0, false, {}});
    size_ = 0;
  }
  std::size_t size() const { return size_; }
  std::size_t capacity() const { return slots_.size(); }
  /// Inserts possible without growing.
  std::size_t room() const { return slots_.size() / 2 - size_; }
  /// Makes room for `n` more inserts. Throws std::bad_alloc.
  void reserve(std::size_t n) {
    if (room() >= n) return;
    std::size_t want = slots_.size();
    while (want / 2 < size_ + n) want *= 2;
    std::vector<entry> old(want, entry{0, 0, false, {}});
    old.swap(slots_);
    for (const entry &e : old)
      if (e.handle != 0) place(e);
  }
  entry *find(uint64_t h) {
    if (h == 0) return nullptr;
    for (std::size_t i = home(h);; i = (i + 1) & mask()) {
      if (slots_[i].handle == h) return &slots_[i];
      if (slots_[i].handle == 0) return nullptr;
    }
  }
  /// Inserts a handle not present; room() must be > 0.
  void insert(uint64_t h, uint8_t flags) {
    place(entry{h, flags, false, {}});
    ++size_;
  }
  void erase(uint64_t h) {
    entry *e = find(h);
    if (e == nullptr) return;
    std::size_t hole = static_cast<std::size_t>(e - slots_.data());
    // Backward shift: an entry after the hole moves into it unless its home
    // lies cyclically in (hole, j], where it is still reachable.
    for (std::size_t j = (hole + 1) & mask(); slots_[j].handle != 0; j = (j + 1) & mask()) {
      const std::size_t k = home(slots_[j].handle);
      const bool stays = hole <= j ? (hole < k && k <= j) : (hole < k || k <= j);
      if (stays) continue;
      slots_[hole] = slots_[j];
      hole = j;
    }
    slots_[hole] = entry{0, 0, false, {}};
    --size_;
  }
  const entry &slot(std::size_t i) const { return slots_[i]; }
  void clear() {
    std::fill(slots_.begin(), slots_.end(), entry{0, 0, false, {}});
    size_ = 0;
  }

 private:
  std::size_t mask() const { return slots_.size() - 1; }
  std::size_t home(uint64_t h) const { return static_cast<std::size_t>((h * 0x9e3779b97f4a7c15ull) >> 32) & mask(); }
  void place(const entry &e) {
    std::size_t i = home(e.handle);
    while (slots_[i].handle != 0) i = (i + 1) & mask();
    slots_[i] = e;
  }

  std::vector<entry> slots_;
  std::size_t size_ = 0;
};

enum class channel_state : uint8_t {
  alive,
  ending,  ///< mtpd is gone or the rings broke: synthetic CONNECTION_ERRORs are being handed out
  dead,    ///< every call says dead_status; mtp_poll returns 0
};

/// Who holds one of the channel's send buffers.
enum class send_buffer : uint8_t { free, app, daemon };

}  // namespace

struct mtp_context {
  shm::attach_result att;
  shm::region_layout layout;
  void *base = nullptr;
  uint32_t payload_bytes = 0;  ///< per buffer, after the headroom
  uint32_t node_id = 0;        ///< the region header's, read once at attach: mtp_node_id
  /// An epoll set of the app eventfd and the socket: mtp_channel_fd. It is
  /// readable when mtpd signalled or when the socket hung up (mtpd gone),
  /// so an application sleeping in its own epoll notices both.
  int wait_fd = -1;
  /// Set by whichever channel's thread first sees the socket closed; every
  /// channel then winds down on its own thread.
  std::atomic<uint32_t> daemon_gone{0};
  std::vector<std::unique_ptr<mtp_channel>> channels;

  ~mtp_context() {
    // The socket first: mtpd aborts our connections at once; the region
    // is unmapped by att.region's destructor after.
    for (int *fd : {&att.socket_fd, &att.app_eventfd, &att.daemon_eventfd, &wait_fd}) {
      if (*fd >= 0) ::close(*fd);
      *fd = -1;
    }
  }
};

struct alignas(shm::cache_line_bytes) mtp_channel {
  mtp_context *ctx = nullptr;
  uint32_t index = 0;
  shm::channel_header *header = nullptr;
  shm::ring_producer<descriptor> tx;  ///< to_daemon: commands
  shm::ring_consumer<descriptor> rx;  ///< to_app: events

  // Send buffers [first_buffer, first_buffer + buffer_total): a free stack
  // and who holds each (so a buffer returned twice, or one that is not
  // ours, never lands on the stack).
  uint32_t first_buffer = 0, buffer_total = 0;
  uint64_t max_message = 0;  ///< mtp_max_message_bytes
  std::vector<uint32_t> free_stack;
  uint32_t free_count = 0;
  std::vector<send_buffer> holder;
  /// Receive buffers (bit i: buffer tx_buffers + i) lent to this channel
  /// and not yet released, and those released while the ring was full
  /// (posted by the next mtp_poll). Bitmaps: the receive area may be 2^20
  /// buffers. A release of a buffer not held is ignored, so a buffer is
  /// pending at most once and no release is ever dropped.
  std::vector<uint64_t> held_bits;
  std::vector<uint64_t> pending_bits;
  uint32_t pending_count = 0;
  /// Released since the last poll, posted together (post_releases).
  uint32_t releases[shm::buffer_batch::max_buffers];
  uint32_t release_count = 0;
  uint32_t pending_word = 0;  ///< where the next flush starts looking

  handle_table handles;
  uint64_t next_handle = 1;
  /// The last handles that ended (Closed, ConnectionError): a command
  /// posted before the application saw the end is refused by mtpd as
  /// bad_handle, which is no news. A small ring, no allocation.
  struct recently_ended {
    static constexpr uint32_t size = 64;
    uint64_t h[size] = {};
    uint32_t next = 0;
    std::size_t count(uint64_t handle) const {
      for (uint64_t x : h)
        if (x == handle) return 1;
      return 0;
    }
  } ended;
  void note_ended(uint64_t handle) { ended.h[ended.next++ % recently_ended::size] = handle; }

  // Popped from to_app and not yet handed out (mtp_poll's `max` ran out).
  descriptor stash[poll_burst];
  uint32_t stash_head = 0, stash_count = 0;

  channel_state state = channel_state::alive;
  int dead_status = MTP_OK;
  uint32_t dead_reason = MTP_REASON_NONE;
  bool synthesizing = false;    ///< the ring is drained; handing out CONNECTION_ERRORs
  std::size_t synth_cursor = 0;  ///< next handle-table slot to report

  uint64_t heartbeat = 0;
  uint64_t last_check_ns = 0;
  bool armed = false;  ///< app_sleeping is set
  uint64_t events_dropped = 0;  ///< from a broken daemon: bad buffers, duplicates, unknown types
  mtp_channel_stats stats{};
};

namespace {

// -- channel state -----------------------------------------------------------

void begin_ending(mtp_channel &ch, int status, uint32_t why) {
  if (ch.state != channel_state::alive) return;
  ch.state = channel_state::ending;
  ch.dead_status = status;
  ch.dead_reason = why;
}

/// MTP_OK when the channel can take commands, else what the call returns.
int usable(mtp_channel &ch) {
  if (ch.state != channel_state::alive) return ch.dead_status;
  if (ch.ctx->daemon_gone.load(std::memory_order_relaxed) != 0) {
    begin_ending(ch, MTP_EDAEMON, MTP_REASON_DAEMON_GONE);
    return MTP_EDAEMON;
  }
  return MTP_OK;
}

/// Asks the socket whether mtpd is still there. Any thread may call it.
/// mtpd writes nothing after the attach reply, so readable means EOF (or
/// junk, which is discarded).
bool check_daemon(mtp_context &ctx) {
  if (ctx.daemon_gone.load(std::memory_order_acquire) != 0) return true;
  pollfd p{ctx.att.socket_fd, POLLIN | POLLRDHUP, 0};
  if (::poll(&p, 1, 0) <= 0) return false;  // nothing, or EINTR: look again next time
  bool gone = (p.revents & (POLLHUP | POLLERR | POLLRDHUP | POLLNVAL)) != 0;
  if (!gone && (p.revents & POLLIN)) {
    char junk[64];
    const ssize_t n = recv(ctx.att.socket_fd, junk, sizeof junk, MSG_DONTWAIT);
    gone = n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
  }
  if (gone) ctx.daemon_gone.store(1, std::memory_order_release);
  return gone;
}

/// After posting: signal mtpd's eventfd if its worker sleeps. The fence
/// orders our head store before the load of daemon_sleeping (the other
/// half of the protocol in shm_layout.h channel_header).
void wake_daemon(mtp_channel &ch) {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (ch.header->daemon_sleeping.load(std::memory_order_relaxed) != 0) {
    const uint64_t one = 1;
    [[maybe_unused]] const ssize_t n = ::write(ch.ctx->att.daemon_eventfd, &one, sizeof one);
  }
}

/// A push that came up short although room was checked, or a producer that
/// turned corrupt: mtpd's tail index is broken.
int ring_broken(mtp_channel &ch) {
  begin_ending(ch, MTP_EBROKEN, MTP_REASON_CHANNEL_BROKEN);
  return MTP_EBROKEN;
}

/// Posts one command. @return MTP_OK, MTP_EAGAIN (ring full) or MTP_EBROKEN.
int post_one(mtp_channel &ch, const descriptor &d) {
  if (!ch.tx.push(d)) return ch.tx.state() == shm::ring_state::ok ? MTP_EAGAIN : ring_broken(ch);
  ++ch.stats.commands_posted;
  wake_daemon(ch);
  return MTP_OK;
}

descriptor command_for(shm::command type, uint64_t handle) {
  descriptor d{};
  d.type = static_cast<uint16_t>(type);
  d.buffer = shm::no_buffer;
  d.connection = handle;
  return d;
}

// -- buffers -----------------------------------------------------------------

bool owns_send_buffer(const mtp_channel &ch, uint32_t b) {
  return b >= ch.first_buffer && b - ch.first_buffer < ch.buffer_total;
}

uint32_t take_buffer(mtp_channel &ch, send_buffer to) {
  const uint32_t b = ch.free_stack[--ch.free_count];
  ch.holder[b - ch.first_buffer] = to;
  return b;
}

void give_buffer(mtp_channel &ch, uint32_t b) {
  ch.holder[b - ch.first_buffer] = send_buffer::free;
  ch.free_stack[ch.free_count++] = b;
}

/// A buffer mtpd names in an event as returned: back on the stack if it
/// is ours and mtpd held it; anything else is a broken daemon's, ignored.
void returned_by_daemon(mtp_channel &ch, uint32_t b) {
  if (b == shm::no_buffer) return;
  if (!owns_send_buffer(ch, b) || ch.holder[b - ch.first_buffer] != send_buffer::daemon) {
    ++ch.events_dropped;
    return;
  }
  give_buffer(ch, b);
}

std::byte *payload_of(const mtp_channel &ch, uint32_t b) {
  return shm::buffer_at(ch.ctx->base, ch.ctx->layout, b) + ch.ctx->layout.plan.buffer_headroom;
}

bool test_bit(const std::vector<uint64_t> &bits, uint32_t i) { return (bits[i / 64] >> (i % 64)) & 1; }
void set_bit(std::vector<uint64_t> &bits, uint32_t i) { bits[i / 64] |= uint64_t{1} << (i % 64); }
void clear_bit(std::vector<uint64_t> &bits, uint32_t i) { bits[i / 64] &= ~(uint64_t{1} << (i % 64)); }

/// Posts the releases that found the ring full, as many as fit now, up to
/// 15 buffers per command. Only runs when the ring was full at a release:
/// rare, so a scan of the bitmap is fine.
void flush_releases(mtp_channel &ch) {
  const uint32_t tx_buffers = ch.ctx->layout.plan.tx_buffers;
  const uint32_t words = static_cast<uint32_t>(ch.pending_bits.size());
  constexpr uint32_t per = shm::buffer_batch::max_buffers;
  while (ch.pending_count > 0) {
    shm::buffer_batch b[poll_burst];
    uint32_t k = 0, in = 0;  // batches, buffers in the last one
    for (uint32_t seen = 0; seen < words && k < poll_burst; ++seen) {
      const uint32_t w = ch.pending_word;
      uint64_t bits = ch.pending_bits[w];
      for (; bits != 0 && k < poll_burst; bits &= bits - 1) {
        if (in == 0) b[k] = {static_cast<uint16_t>(shm::command::release_batch), 0, {}};
        b[k].buffers[in++] = tx_buffers + w * 64 + static_cast<uint32_t>(__builtin_ctzll(bits));
        b[k].count = static_cast<uint16_t>(in);
        if (in == per) {
          ++k;
          in = 0;
        }
      }
      if (bits == 0) ch.pending_word = (w + 1) % words;
    }
    if (in != 0) ++k;
    descriptor d[poll_burst];
    for (uint32_t i = 0; i < k; ++i) d[i] = shm::descriptor_of(b[i]);
    const uint32_t n = ch.tx.push_burst(d, k);
    for (uint32_t i = 0; i < n; ++i)
      for (uint32_t j = 0; j < b[i].count; ++j) {
        clear_bit(ch.pending_bits, b[i].buffers[j] - tx_buffers);
        --ch.pending_count;
      }
    ch.stats.commands_posted += n;
    if (n > 0) wake_daemon(ch);
    if (n < k || k == 0) {
      if (ch.tx.state() != shm::ring_state::ok) ring_broken(ch);
      return;
    }
  }
}

/// Posts the releases gathered since the last poll (one command for up to
/// 15 buffers); what the ring has no room for waits as pending.
void post_releases(mtp_channel &ch) {
  if (ch.release_count == 0) return;
  shm::buffer_batch b{};
  b.type = static_cast<uint16_t>(shm::command::release_batch);
  b.count = static_cast<uint16_t>(ch.release_count);
  std::memcpy(b.buffers, ch.releases, sizeof(uint32_t) * ch.release_count);
  if (post_one(ch, shm::descriptor_of(b)) == MTP_EAGAIN)
    for (uint32_t i = 0; i < ch.release_count; ++i) {
      set_bit(ch.pending_bits, ch.releases[i] - ch.ctx->layout.plan.tx_buffers);
      ++ch.pending_count;
    }
  ch.release_count = 0;
}

uint64_t max_message_bytes_of(const mtp_channel &ch) {
  // Every piece takes a buffer and a ring slot, and all are checked before
  // the first is posted: a message needing more than the channel has could
  // never go. One slot stays for the finish of a final_message.
  const uint64_t pieces = std::min<uint64_t>(ch.buffer_total, ch.ctx->layout.plan.to_daemon_slots - 1);
  return std::min<uint64_t>(daemon_message_limit, pieces * ch.ctx->payload_bytes);
}

// -- sending -----------------------------------------------------------------

/// An enum field of a struct the application filled, as the integer it
/// wrote: C may store any int there, and C++ may not load a value outside
/// the enum's range as the enum (undefined; UBSan says so).
template <class E>
int32_t raw_enum(const E &field) {
  static_assert(sizeof(E) == sizeof(int32_t));
  int32_t v;
  std::memcpy(&v, &field, sizeof v);
  return v;
}

struct send_options {
  uint16_t flags = 0;
  uint64_t lifetime_ns = 0;
  uint32_t max_retransmissions = 0;
  bool final_message = false;
};

int options_of(const mtp_message_properties *p, send_options &o) {
  o = send_options{};
  if (p == nullptr) return MTP_OK;
  if (p->struct_size < sizeof(mtp_message_properties)) return MTP_EINVAL;  // not from mtp_message_properties_init
  switch (raw_enum(p->reliability)) {
    case MTP_RELIABILITY_DEFAULT:
      break;  // no flag: mtpd applies the connection's default
    case MTP_RELIABLE:
      o.flags |= shm::send_reliable;  // fully reliable whatever the connection's default
      break;
    case MTP_PARTIAL:
      o.flags |= shm::send_partial;
      break;
    case MTP_UNRELIABLE:
      o.flags |= shm::send_unreliable;
      break;
    default:
      return MTP_EINVAL;
  }
  if (p->low_latency) o.flags |= shm::send_low_latency;
  if (p->idempotent) o.flags |= shm::send_idempotent;
  o.lifetime_ns = p->lifetime_ns;
  o.max_retransmissions = p->max_retransmissions;
  o.final_message = p->final_message != 0;
  return MTP_OK;
}

/// A connection commands may name: live, not a listener, not closing.
int check_connection(mtp_channel &ch, mtp_connection c, handle_table::entry *&e) {
  if (e == nullptr || e->handle != c) e = ch.handles.find(c);
  if (e == nullptr || (e->flags & handle_table::listener)) return MTP_EINVAL;
  if (e->flags & handle_table::closing) return MTP_ECLOSED;
  return MTP_OK;
}

/// What mtp_send checks before it takes anything. `e` caches the last
/// lookup (a burst mostly names one connection).
int check_send(mtp_channel &ch, mtp_connection c, uint64_t stream, const void *data, uint64_t length,
               const send_options &o, handle_table::entry *&e) {
  if (const int st = check_connection(ch, c, e); st != MTP_OK) return st;
  if (length != 0 && data == nullptr) return MTP_EINVAL;
  // Only stream 0 can be a byte stream (mtp_clone opens message streams).
  if (o.final_message && (stream != 0 || !(e->flags & handle_table::byte_stream))) return MTP_EINVAL;
  if (length == 0 && !o.final_message) return MTP_EINVAL;  // mtpd refuses empty sends
  if (length > ch.max_message) return MTP_ETOOBIG;
  return MTP_OK;
}

/// Descriptors of one or more messages, pushed to to_daemon in one burst
/// when they fit in `post_burst`. `room` is the ring's free slots as of the
/// last look, minus what was pushed since.
struct post_batch {
  descriptor d[post_burst];
  uint32_t n = 0;
  uint32_t room = 0;
};

/// @return false: the ring broke under us (the channel is ending).
bool flush_batch(mtp_channel &ch, post_batch &b) {
  if (b.n == 0) return true;
  const uint32_t k = ch.tx.push_burst(b.d, b.n);
  ch.stats.commands_posted += k;
  if (k > 0) wake_daemon(ch);
  b.room -= k;
  if (k != b.n) {
    // Room was checked, so only a broken tail gets here: the channel is
    // dead; the buffers of what did not go are ours again.
    for (uint32_t i = k; i < b.n; ++i)
      if (b.d[i].buffer != shm::no_buffer) give_buffer(ch, b.d[i].buffer);
    b.n = 0;
    ring_broken(ch);
    return false;
  }
  b.n = 0;
  return true;
}

bool stage(mtp_channel &ch, post_batch &b, const descriptor &d) {
  if (b.n == post_burst && !flush_batch(ch, b)) return false;
  b.d[b.n++] = d;
  return true;
}

/// Stages one message (checked by check_send): copies it into as many
/// buffers as it needs, all pieces but the last with send_more, then a
/// finish for a final_message. Nothing is taken unless everything fits.
/// @return MTP_OK, MTP_EAGAIN or MTP_EBROKEN.
int stage_message(mtp_channel &ch, post_batch &b, mtp_connection c, uint64_t stream, const void *data,
                  uint64_t length, const send_options &o, uint64_t user) {
  const uint32_t payload = ch.ctx->payload_bytes;
  // 0 only for a bare final_message; no division for the common one piece.
  const uint64_t pieces = length <= payload ? (length != 0) : (length + payload - 1) / payload;
  const uint64_t slots = pieces + (o.final_message ? 1 : 0);
  if (pieces > ch.free_count) return MTP_EAGAIN;
  if (slots > b.room - b.n) {
    if (!flush_batch(ch, b)) return MTP_EBROKEN;
    b.room = ch.tx.room();
    if (ch.tx.state() != shm::ring_state::ok) return ring_broken(ch);
    if (slots > b.room) return MTP_EAGAIN;
  }
  const auto *src = static_cast<const std::byte *>(data);
  descriptor d = command_for(shm::command::send, c);
  d.offset = ch.ctx->layout.plan.buffer_headroom;
  d.stream = stream;
  d.value = o.lifetime_ns;
  d.member = o.max_retransmissions;
  d.user = user;
  for (uint64_t i = 0, done = 0; i < pieces; ++i) {
    const uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(payload, length - done));
    d.buffer = take_buffer(ch, send_buffer::daemon);
    std::memcpy(payload_of(ch, d.buffer), src + done, n);
    d.length = n;
    done += n;
    d.flags = static_cast<uint16_t>(o.flags | (done < length ? shm::send_more : 0));
    if (!stage(ch, b, d)) return MTP_EBROKEN;
  }
  if (o.final_message) {
    descriptor f = command_for(shm::command::finish, c);
    f.stream = stream;
    if (!stage(ch, b, f)) return MTP_EBROKEN;
  }
  ++ch.stats.sends;
  ch.stats.bytes_sent += length;
  return MTP_OK;
}

// -- preconnections ----------------------------------------------------------

bool valid_preference(mtp_preference p) { return p >= MTP_PROHIBIT && p <= MTP_REQUIRE; }

/// Checks a preconnection and fills initiate_params. `members` false for
/// listen, which ignores them.
int params_of(const mtp_preconnection *p, bool members, shm::initiate_params &ip) {
  if (p->struct_size < sizeof(mtp_preconnection)) return MTP_EINVAL;  // not from mtp_preconnection_init
  const int32_t reliability = raw_enum(p->reliability);
  if (reliability < MTP_RELIABILITY_DEFAULT || reliability > MTP_UNRELIABLE) return MTP_EINVAL;
  if (p->ordering < MTP_ORDER_NONE || p->ordering > MTP_ORDER_TOTAL) return MTP_EINVAL;
  if (!valid_preference(p->multicast) || !valid_preference(p->security)) return MTP_EINVAL;
  if (p->ordering == MTP_ORDER_CAUSAL || p->ordering == MTP_ORDER_TOTAL) return MTP_ENOTSUP;
  if (p->multicast == MTP_REQUIRE) return MTP_ENOTSUP;
  if (p->streams > 16) return MTP_EINVAL;
  ip = shm::initiate_params{};
  ip.magic = shm::initiate_params::current_magic;
  ip.stream_mode = p->byte_stream ? 1 : 0;
  ip.ordering = static_cast<uint8_t>(p->ordering);
  // initiate_params: 0 reliable, 1 partial, 2 unreliable.
  ip.reliability = reliability == MTP_PARTIAL ? 1 : reliability == MTP_UNRELIABLE ? 2 : 0;
  ip.congestion = p->congestion_newreno ? 1 : 0;
  // mtpd holds the node's mode: it refuses what contradicts it.
  ip.security = p->security == MTP_PROHIBIT ? 0 : p->security == MTP_REQUIRE ? 2 : 1;
  ip.multicast = p->multicast == MTP_PROHIBIT ? 0 : 1;
  ip.streams = std::max<uint32_t>(p->streams, 1);
  if (!members) return MTP_OK;
  if (p->member_count > shm::initiate_params::max_members) return MTP_EINVAL;
  if (p->member_keys != nullptr && p->member_count == 0) return MTP_EINVAL;  // a group's keys are mtpd's
  ip.member_keys = p->member_keys != nullptr ? 1 : 0;
  if (p->member_count > 0) {
    if (p->members == nullptr || p->threshold > p->member_count) return MTP_EINVAL;
    for (uint32_t i = 0; i < p->member_count; ++i)
      for (uint32_t k = 0; k < i; ++k)
        if (p->members[k] == p->members[i]) return MTP_EINVAL;  // mtpd refuses a member listed twice
    ip.member_count = p->member_count;
    std::memcpy(ip.members, p->members, sizeof(uint32_t) * p->member_count);
  } else {
    // A group; its size (and so the threshold's bound) is in mtpd's config.
    if (p->group == nullptr) return MTP_EINVAL;
    const std::size_t n = strnlen(p->group, sizeof ip.group);
    if (n == 0 || n == sizeof ip.group) return MTP_EINVAL;
    std::memcpy(ip.group, p->group, n);
  }
  ip.threshold = p->threshold;
  return MTP_OK;
}

/// Posts initiate or listen with `ip` in a send buffer (or none) under a
/// new handle.
int open_handle(mtp_channel &ch, shm::command type, const shm::initiate_params *ip, uint8_t flags,
                mtp_connection *out, const uint8_t (*keys)[32] = nullptr) {
  if (ch.next_handle >= daemon_handle_bit) return MTP_ENOMEM;  // 2^63 handles used: never in practice
  if (ip != nullptr && ch.free_count == 0) return MTP_EAGAIN;
  try {
    ch.handles.reserve(1);
  } catch (const std::bad_alloc &) {
    return MTP_ENOMEM;
  }
  descriptor d = command_for(type, ch.next_handle);
  if (ip != nullptr) {
    d.buffer = take_buffer(ch, send_buffer::daemon);
    d.offset = ch.ctx->layout.plan.buffer_headroom;
    d.length = sizeof *ip;
    std::memcpy(payload_of(ch, d.buffer), ip, sizeof *ip);
    if (keys != nullptr) {
      // The expected keys follow the parameters (checked to fit by the caller).
      std::memcpy(payload_of(ch, d.buffer) + sizeof *ip, keys, std::size_t{32} * ip->member_count);
      d.length += 32 * ip->member_count;
    }
  }
  if (const int st = post_one(ch, d); st != MTP_OK) {
    if (d.buffer != shm::no_buffer) give_buffer(ch, d.buffer);
    return st;
  }
  ch.handles.insert(ch.next_handle, flags);
  *out = ch.next_handle++;
  return MTP_OK;
}

// -- events ------------------------------------------------------------------

/// A secured mtpd lends a receive buffer holding the client's 32-byte
/// static key with ConnectionReceived: kept with the handle, the buffer
/// given straight back (the application never sees it).
void take_identity(mtp_channel &ch, const descriptor &d) {
  const shm::region_layout &l = ch.ctx->layout;
  if (d.buffer < l.plan.tx_buffers || d.buffer >= l.plan.buffer_count || d.length != 32 ||
      uint64_t{d.offset} + d.length > l.plan.buffer_bytes)
    return;
  const uint32_t i = d.buffer - l.plan.tx_buffers;
  if (test_bit(ch.held_bits, i) || test_bit(ch.pending_bits, i)) return;  // lent twice: not ours to give back
  if (handle_table::entry *h = ch.handles.find(d.connection)) {
    std::memcpy(h->identity, shm::buffer_at(ch.ctx->base, l, d.buffer) + d.offset, 32);
    h->has_identity = true;
  }
  ch.releases[ch.release_count++] = d.buffer;
  if (ch.release_count == shm::buffer_batch::max_buffers) post_releases(ch);
}

/// Turns one event descriptor into what the application sees, applying its
/// effects on buffers and handles. @return false when it is not for the
/// application (a buffer return, or dropped as broken).
bool translate(mtp_channel &ch, const descriptor &d, mtp_event &e) {
  const shm::region_layout &l = ch.ctx->layout;
  e = mtp_event{};
  e.connection = d.connection;
  e.stream = d.stream;
  e.user = d.user;
  e.reason = d.reason;
  e.buffer = shm::no_buffer;
  switch (static_cast<shm::event>(d.type)) {
    case shm::event::received: {
      // A receive buffer, data inside it; it is ours until released.
      if (d.buffer < l.plan.tx_buffers || d.buffer >= l.plan.buffer_count ||
          uint64_t{d.offset} + d.length > l.plan.buffer_bytes) {
        ++ch.events_dropped;
        return false;
      }
      const uint32_t i = d.buffer - l.plan.tx_buffers;
      if (test_bit(ch.held_bits, i) || test_bit(ch.pending_bits, i)) {
        ++ch.events_dropped;  // lent twice: the earlier event's release covers it
        return false;
      }
      set_bit(ch.held_bits, i);
      e.type = d.flags & shm::is_datagram      ? MTP_EVENT_DATAGRAM
               : d.flags & shm::end_of_message ? MTP_EVENT_RECEIVED
                                               : MTP_EVENT_RECEIVED_PARTIAL;
      e.offset = d.value;
      e.member = d.member;
      e.length = d.length;
      e.data = shm::buffer_at(ch.ctx->base, l, d.buffer) + d.offset;
      e.buffer = d.buffer;
      e.user = 0;
      if (e.type != MTP_EVENT_RECEIVED_PARTIAL) ++ch.stats.messages_received;
      ch.stats.bytes_received += d.length;
      return true;
    }
    case shm::event::buffer_returned:
      returned_by_daemon(ch, d.buffer);
      return false;
    case shm::event::buffers_returned: {
      const shm::buffer_batch b = shm::batch_of(d);
      if (b.count > shm::buffer_batch::max_buffers) {
        ++ch.events_dropped;
        return false;
      }
      for (uint32_t k = 0; k < b.count; ++k) returned_by_daemon(ch, b.buffers[k]);
      return false;
    }
    case shm::event::command_error:
      returned_by_daemon(ch, d.buffer);
      // A command posted before the application polled its connection's
      // Closed or ConnectionError meets a handle mtpd already forgot: the
      // application knows the end from that event, so this says nothing.
      if (d.reason == static_cast<uint32_t>(shm::reason::bad_handle) && d.connection != 0 &&
          ch.handles.find(d.connection) == nullptr && ch.ended.count(d.connection) != 0)
        return false;
      // A refused initiate or listen made no handle in mtpd.
      if (d.value == static_cast<uint64_t>(shm::command::initiate) ||
          d.value == static_cast<uint64_t>(shm::command::listen))
        ch.handles.erase(d.connection);
      e.type = MTP_EVENT_COMMAND_ERROR;
      e.code = d.value;  // the refused command's type (shm::command)
      return true;
    case shm::event::ready:
      e.type = MTP_EVENT_READY;
      return true;
    case shm::event::connection_received: {
      if ((d.connection & daemon_handle_bit) == 0 || ch.handles.find(d.connection) != nullptr) {
        ++ch.events_dropped;  // mtpd's handles have bit 63 set and are new
        return false;
      }
      // Stream 0's mode comes from the listener's preconnection.
      const handle_table::entry *listener = ch.handles.find(d.value);
      const uint8_t flags = listener != nullptr ? (listener->flags & handle_table::byte_stream) : 0;
      ch.handles.insert(d.connection, flags);  // room reserved by mtp_poll
      if (d.buffer != shm::no_buffer) take_identity(ch, d);
      e.type = MTP_EVENT_CONNECTION_RECEIVED;
      e.listener = d.value;
      e.member = d.member;
      return true;
    }
    case shm::event::sent:
    case shm::event::expired:
      e.type = d.type == static_cast<uint16_t>(shm::event::sent) ? MTP_EVENT_SENT : MTP_EVENT_EXPIRED;
      e.message = d.message;
      e.code = d.value;
      return true;
    case shm::event::send_error:
      returned_by_daemon(ch, d.buffer);  // a send refused before it was queued gives its buffer back here
      e.type = MTP_EVENT_SEND_ERROR;
      e.message = d.message;
      return true;
    case shm::event::member_joined:
    case shm::event::member_left:
      e.type = d.type == static_cast<uint16_t>(shm::event::member_joined) ? MTP_EVENT_MEMBER_JOINED
                                                                           : MTP_EVENT_MEMBER_LEFT;
      e.member = d.member;
      e.code = d.value;
      return true;
    case shm::event::receive_error:
      e.type = MTP_EVENT_RECEIVE_ERROR;
      e.member = d.member;
      e.offset = d.value;
      return true;
    case shm::event::closed:
    case shm::event::connection_error:
      e.type = d.type == static_cast<uint16_t>(shm::event::closed) ? MTP_EVENT_CLOSED : MTP_EVENT_CONNECTION_ERROR;
      e.code = d.value;
      ch.handles.erase(d.connection);
      ch.note_ended(d.connection);
      return true;
  }
  ++ch.events_dropped;  // a type this library does not know
  return false;
}

/// Hands out the stash and then the ring, in order, until `max` events
/// went out or the ring is empty. Buffer returns are applied even when
/// max is reached, up to the first event for the application.
std::size_t drain_ring(mtp_channel &ch, mtp_event *events, std::size_t max) {
  std::size_t n = 0;
  uint32_t budget = ch.rx.capacity();  // bounded work: a busy daemon cannot keep us here
  for (;;) {
    if (ch.stash_count == 0) {
      if (budget == 0) break;
      // Every descriptor popped may be a connection_received: make room
      // first, or take fewer when memory is short.
      uint32_t want = std::min(poll_burst, budget);
      if (ch.handles.room() < want) {
        try {
          ch.handles.reserve(want);
        } catch (const std::bad_alloc &) {
          want = static_cast<uint32_t>(std::min<std::size_t>(want, ch.handles.room()));
        }
      }
      ch.stash_head = 0;
      ch.stash_count = want ? ch.rx.pop_burst(ch.stash, want) : 0;
      budget -= ch.stash_count;
      if (ch.stash_count == 0) break;
    }
    while (ch.stash_count > 0) {
      const descriptor &d = ch.stash[ch.stash_head];
      if (d.type == static_cast<uint16_t>(shm::event::buffer_returned)) {
        // The common completion of a send; never the application's business.
        returned_by_daemon(ch, d.buffer);
      } else {
        if (n == max) return n;
        if (translate(ch, d, events[n])) ++n;
      }
      ++ch.stash_head;
      --ch.stash_count;
    }
  }
  if (ch.rx.state() != shm::ring_state::ok) begin_ending(ch, MTP_EBROKEN, MTP_REASON_CHANNEL_BROKEN);
  return n;
}

/// mtpd is gone or the rings broke: one CONNECTION_ERROR per live
/// connection and listener, then the channel is dead.
std::size_t synthesize(mtp_channel &ch, mtp_event *events, std::size_t max) {
  ch.synthesizing = true;
  std::size_t n = 0;
  for (; ch.synth_cursor < ch.handles.capacity() && n < max; ++ch.synth_cursor) {
    const handle_table::entry &s = ch.handles.slot(ch.synth_cursor);
    if (s.handle == 0) continue;
    mtp_event &e = events[n++];
    e = mtp_event{};
    e.type = MTP_EVENT_CONNECTION_ERROR;
    e.reason = ch.dead_reason;
    e.connection = s.handle;
    if (s.flags & handle_table::listener) e.listener = s.handle;
    e.buffer = shm::no_buffer;
  }
  if (ch.synth_cursor == ch.handles.capacity()) {
    ch.handles.clear();
    ch.state = channel_state::dead;
  }
  return n;
}

/// Reads the shared app eventfd. Other channels' threads may sleep on the
/// same one: if any of them sleeps with events waiting, its signal may
/// have been the one read here, so it is raised again (a spurious wake-up
/// at worst, never a lost one).
void drain_eventfd(mtp_context &ctx, const mtp_channel *self) {
  uint64_t v = 0;
  [[maybe_unused]] const ssize_t r = ::read(ctx.att.app_eventfd, &v, sizeof v);
  for (const auto &other : ctx.channels) {
    if (other.get() == self) continue;
    if (other->header->app_sleeping.load(std::memory_order_seq_cst) == 0) continue;
    const shm::ring_indices *idx = shm::to_app_indices(other->header, ctx.layout);
    if (idx->head.load(std::memory_order_acquire) != idx->tail.load(std::memory_order_acquire)) {
      const uint64_t one = 1;
      [[maybe_unused]] const ssize_t w = ::write(ctx.att.app_eventfd, &one, sizeof one);
      return;
    }
  }
}

void disarm(mtp_channel &ch) {
  if (!ch.armed) return;
  ch.header->app_sleeping.store(0, std::memory_order_relaxed);
  ch.armed = false;
}

/// The first half of sleeping: app_sleeping set, then the ring looked at
/// again (mtpd posts, then looks at app_sleeping: one of us sees the
/// other). @return 1: sleep; 0: poll first; < 0: -status of a dead channel.
int prepare_sleep(mtp_channel &ch) {
  if (ch.state == channel_state::dead) return -ch.dead_status;
  if (ch.state == channel_state::ending || usable(ch) != MTP_OK) return 0;
  post_releases(ch);
  flush_releases(ch);
  if (ch.pending_count > 0 || ch.stash_count > 0) return 0;
  ch.header->app_sleeping.store(1, std::memory_order_seq_cst);
  ch.armed = true;
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (ch.rx.size() != 0 || ch.rx.state() != shm::ring_state::ok ||
      ch.ctx->daemon_gone.load(std::memory_order_acquire) != 0) {
    disarm(ch);
    return 0;
  }
  return 1;
}

void write_error(char *error, std::size_t bytes, const std::string &why) {
  if (error != nullptr && bytes > 0) std::snprintf(error, bytes, "%s", why.c_str());
}

int status_of(const shm::attach_result &r) {
  switch (r.status) {
    case shm::attach_status::ok:
      return MTP_OK;
    case shm::attach_status::not_allowed:
      return MTP_EDENIED;
    case shm::attach_status::layout_mismatch:
      return MTP_ELAYOUT;
    case shm::attach_status::timeout:
      return MTP_ECONNECT;
    case shm::attach_status::bad_request:
      return MTP_ECONNECT;  // not an mtpd socket, or a malformed reply
    case shm::attach_status::no_resources:
      // attach_client says no_resources both when it cannot reach the
      // socket and when mtpd refused for lack of room; only the latter's
      // sentence starts so. mtpd's no_resources (app_listener through
      // attach_server) is its app limit, a region it could not make, or
      // eventfds it could not open; the reply's reason text says which.
      return r.error.rfind("mtpd refused", 0) == 0 ? MTP_EFULL : MTP_ECONNECT;
  }
  return MTP_ECONNECT;
}

void init_channel(mtp_context &ctx, mtp_channel &ch, uint32_t c, uint32_t per_channel) {
  const shm::region_layout &l = ctx.layout;
  ch.ctx = &ctx;
  ch.index = c;
  ch.header = shm::channel_at(ctx.base, l, c);
  ch.tx = shm::ring_producer<descriptor>(shm::to_daemon_indices(ch.header, l), shm::to_daemon_slots(ch.header, l),
                                         l.plan.to_daemon_slots);
  ch.rx = shm::ring_consumer<descriptor>(shm::to_app_indices(ch.header, l), shm::to_app_slots(ch.header, l),
                                         l.plan.to_app_slots);
  ch.first_buffer = c * per_channel;
  ch.buffer_total = per_channel;
  ch.free_stack.resize(per_channel);
  for (uint32_t i = 0; i < per_channel; ++i) ch.free_stack[i] = ch.first_buffer + per_channel - 1 - i;  // lowest on top
  ch.free_count = per_channel;
  ch.holder.assign(per_channel, send_buffer::free);
  const uint32_t receive_words = (l.plan.buffer_count - l.plan.tx_buffers + 63) / 64;
  ch.held_bits.assign(receive_words, 0);
  ch.pending_bits.assign(receive_words, 0);
  ch.handles.init(64);
  ch.heartbeat = ch.header->app_heartbeat.load(std::memory_order_relaxed);
  ch.stats.struct_size = sizeof ch.stats;
  ch.stats.send_buffers_total = per_channel;
  ch.max_message = max_message_bytes_of(ch);
}

}  // namespace

// -- the C API ---------------------------------------------------------------

extern "C" {

const char *mtp_status_text(int status) {
  switch (status) {
    case MTP_OK: return "success";
    case MTP_EAGAIN: return "no room now (ring or buffers full): poll, then retry";
    case MTP_EINVAL: return "an argument is out of range or a handle is unknown";
    case MTP_ENOTSUP: return "not supported by this version (security, causal or total order, multicast required)";
    case MTP_ECLOSED: return "the connection is closed or closing";
    case MTP_EDAEMON: return "mtpd is gone or detached this application: attach again";
    case MTP_EDENIED: return "mtpd refused the attach: this user or group is not allowed";
    case MTP_ELAYOUT: return "this libmtp and mtpd disagree on the shared layout: upgrade one of them";
    case MTP_ETOOBIG: return "larger than a message or datagram may be";
    case MTP_ENOMEM: return "out of memory in this process";
    case MTP_ECONNECT: return "mtpd's socket could not be reached (is mtpd running?)";
    case MTP_EBROKEN: return "the channel's rings were corrupted: detach";
    case MTP_EFULL: return "mtpd has no room for another application (application limit or memory): attach again later";
    case MTP_ETIMEDOUT: return "the wait timed out: nothing woke the channel";
    default: return "unknown status";
  }
}

const char *mtp_reason_text(uint32_t reason) {
  switch (reason) {
#define MTP_X(name, value, text) \
  case value: return text;
    MTP_SHM_REASONS(MTP_X)
#undef MTP_X
    default: return "unknown reason";
  }
}

int mtp_attach(const char *socket_path, uint32_t channels, mtp_context **out, char *error, size_t error_bytes) {
  write_error(error, error_bytes, "");
  if (out == nullptr) return MTP_EINVAL;
  *out = nullptr;
  try {
    if (channels == 0 || channels > shm::max_channels) {
      write_error(error, error_bytes, "channels must be 1 to " + std::to_string(shm::max_channels));
      return MTP_EINVAL;
    }
    const char *path = socket_path;
    if (path == nullptr) path = std::getenv("MTP_SOCKET");
    if (path == nullptr || *path == '\0') path = "/run/mtpd/mtpd.sock";
    auto ctx = std::make_unique<mtp_context>();
    ctx->att = shm::attach_client(path, channels);
    if (!ctx->att.error.empty()) {
      write_error(error, error_bytes, ctx->att.error);
      return status_of(ctx->att);
    }
    ctx->layout = ctx->att.region.layout();  // checked by check_region in attach_client
    ctx->base = ctx->att.region.base();
    // Read once: the header is mtpd's and read-only, but a copy is all the
    // application ever needs (0 from an mtpd that does not write it).
    ctx->node_id = static_cast<const shm::region_header *>(ctx->base)->node_id;
    const shm::region_plan &p = ctx->layout.plan;
    ctx->payload_bytes = p.buffer_bytes - p.buffer_headroom;
    if (ctx->payload_bytes < sizeof(shm::initiate_params)) {
      write_error(error, error_bytes, "mtpd's buffers are too small for initiate parameters");
      return MTP_ELAYOUT;
    }
    // Send buffers split evenly; the remainder of the division is unused.
    const uint32_t per_channel = p.tx_buffers / channels;
    if (per_channel == 0) {
      write_error(error, error_bytes, "mtpd's region has fewer send buffers than channels");
      return MTP_ELAYOUT;
    }
    ctx->wait_fd = epoll_create1(EPOLL_CLOEXEC);
    epoll_event ev_app{}, ev_sock{};
    ev_app.events = EPOLLIN;
    ev_app.data.fd = ctx->att.app_eventfd;
    ev_sock.events = EPOLLIN | EPOLLRDHUP;
    ev_sock.data.fd = ctx->att.socket_fd;
    if (ctx->wait_fd < 0 || epoll_ctl(ctx->wait_fd, EPOLL_CTL_ADD, ctx->att.app_eventfd, &ev_app) != 0 ||
        epoll_ctl(ctx->wait_fd, EPOLL_CTL_ADD, ctx->att.socket_fd, &ev_sock) != 0) {
      write_error(error, error_bytes, std::string("epoll: ") + std::strerror(errno));
      return MTP_ENOMEM;
    }
    ctx->channels.reserve(channels);
    for (uint32_t c = 0; c < channels; ++c) {
      ctx->channels.push_back(std::make_unique<mtp_channel>());
      init_channel(*ctx, *ctx->channels.back(), c, per_channel);
    }
    *out = ctx.release();
    return MTP_OK;
  } catch (const std::bad_alloc &) {
    write_error(error, error_bytes, "out of memory");
    return MTP_ENOMEM;
  } catch (...) {
    write_error(error, error_bytes, "out of memory");
    return MTP_ENOMEM;
  }
}

void mtp_detach(mtp_context *ctx) { delete ctx; }

mtp_channel *mtp_channel_get(mtp_context *ctx, uint32_t index) {
  if (ctx == nullptr || index >= ctx->channels.size()) return nullptr;
  return ctx->channels[index].get();
}

uint64_t mtp_app_id(const mtp_context *ctx) { return ctx != nullptr ? ctx->att.app_id : 0; }

uint32_t mtp_node_id(const mtp_context *ctx) { return ctx != nullptr ? ctx->node_id : 0; }

void mtp_preconnection_init(mtp_preconnection *p) {
  if (p == nullptr) return;
  *p = mtp_preconnection{};
  p->struct_size = sizeof *p;
  p->reliability = MTP_RELIABLE;  // MTP_RELIABILITY_DEFAULT would say the same here
  p->ordering = MTP_ORDER_FIFO;
  p->multicast = MTP_NO_PREFERENCE;
  p->streams = 1;
  p->security = MTP_NO_PREFERENCE;
}

int mtp_initiate(mtp_channel *ch, const mtp_preconnection *p, mtp_connection *out) {
  if (out != nullptr) *out = 0;
  if (ch == nullptr || p == nullptr || out == nullptr) return MTP_EINVAL;
  if (const int st = usable(*ch); st != MTP_OK) return st;
  shm::initiate_params ip;
  if (const int st = params_of(p, true, ip); st != MTP_OK) return st;
  if (p->member_keys != nullptr &&
      sizeof ip + std::size_t{32} * ip.member_count + ch->ctx->layout.plan.buffer_headroom > ch->ctx->layout.plan.buffer_bytes)
    return MTP_EINVAL;  // more keys than one buffer holds
  return open_handle(*ch, shm::command::initiate, &ip, p->byte_stream ? handle_table::byte_stream : 0, out,
                     p->member_keys);
}

int mtp_listen(mtp_channel *ch, const mtp_preconnection *p, mtp_connection *out) {
  if (out != nullptr) *out = 0;
  if (ch == nullptr || out == nullptr) return MTP_EINVAL;
  if (const int st = usable(*ch); st != MTP_OK) return st;
  if (p == nullptr) return open_handle(*ch, shm::command::listen, nullptr, handle_table::listener, out);
  shm::initiate_params ip;
  if (const int st = params_of(p, false, ip); st != MTP_OK) return st;
  const uint8_t flags = handle_table::listener | (p->byte_stream ? handle_table::byte_stream : 0);
  return open_handle(*ch, shm::command::listen, &ip, flags, out);
}

int mtp_peer_identity(mtp_channel *ch, mtp_connection c, uint8_t key[32]) {
  if (ch == nullptr || key == nullptr) return MTP_EINVAL;
  const handle_table::entry *e = ch->handles.find(c);
  if (e == nullptr || !e->has_identity) return MTP_EINVAL;
  std::memcpy(key, e->identity, 32);
  return MTP_OK;
}

int mtp_stop_listen(mtp_channel *ch, mtp_connection listener) {
  if (ch == nullptr) return MTP_EINVAL;
  if (const int st = usable(*ch); st != MTP_OK) return st;
  const handle_table::entry *e = ch->handles.find(listener);
  if (e == nullptr || !(e->flags & handle_table::listener)) return MTP_EINVAL;
  if (const int st = post_one(*ch, command_for(shm::command::stop_listen, listener)); st != MTP_OK) return st;
  ch->handles.erase(listener);  // mtpd answers nothing when it succeeds
  return MTP_OK;
}

void mtp_message_properties_init(mtp_message_properties *m) {
  if (m == nullptr) return;
  *m = mtp_message_properties{};
  m->struct_size = sizeof *m;
  m->reliability = MTP_RELIABILITY_DEFAULT;  // the connection's
}

size_t mtp_max_message_bytes(const mtp_channel *ch) {
  return ch != nullptr ? static_cast<size_t>(ch->max_message) : 0;
}

int mtp_send(mtp_channel *ch, mtp_connection c, uint64_t stream, const void *data, size_t length,
             const mtp_message_properties *props, uint64_t user) {
  if (ch == nullptr) return MTP_EINVAL;
  if (const int st = usable(*ch); st != MTP_OK) return st;
  send_options o;
  if (const int st = options_of(props, o); st != MTP_OK) return st;
  handle_table::entry *e = nullptr;
  if (const int st = check_send(*ch, c, stream, data, length, o, e); st != MTP_OK) return st;
  int st;
  if (length <= ch->ctx->payload_bytes && !o.final_message) {
    // One piece: no look at the ring's tail unless it seems full.
    if (ch->free_count == 0) {
      st = MTP_EAGAIN;
    } else {
      descriptor d = command_for(shm::command::send, c);
      d.buffer = take_buffer(*ch, send_buffer::daemon);
      d.offset = ch->ctx->layout.plan.buffer_headroom;
      d.length = static_cast<uint32_t>(length);
      d.stream = stream;
      d.flags = o.flags;
      d.value = o.lifetime_ns;
      d.member = o.max_retransmissions;
      d.user = user;
      std::memcpy(payload_of(*ch, d.buffer), data, length);
      st = post_one(*ch, d);
      if (st == MTP_OK) {
        ++ch->stats.sends;
        ch->stats.bytes_sent += length;
      } else {
        give_buffer(*ch, d.buffer);
      }
    }
  } else {
    post_batch b;
    b.room = ch->tx.room();
    st = stage_message(*ch, b, c, stream, data, length, o, user);
    if (st == MTP_OK && !flush_batch(*ch, b)) st = MTP_EBROKEN;
  }
  if (st == MTP_EAGAIN) ++ch->stats.send_eagain;
  return st;
}

int mtp_buffer_get(mtp_channel *ch, mtp_buffer *out) {
  if (ch == nullptr || out == nullptr) return MTP_EINVAL;
  if (const int st = usable(*ch); st != MTP_OK) return st;
  if (ch->free_count == 0) {
    ++ch->stats.send_eagain;
    return MTP_EAGAIN;
  }
  out->index = take_buffer(*ch, send_buffer::app);
  out->data = payload_of(*ch, out->index);
  out->capacity = ch->ctx->payload_bytes;
  return MTP_OK;
}

void mtp_buffer_put(mtp_channel *ch, const mtp_buffer *b) {
  if (ch == nullptr || b == nullptr || !owns_send_buffer(*ch, b->index)) return;
  if (ch->holder[b->index - ch->first_buffer] != send_buffer::app) return;  // not taken, or put twice
  give_buffer(*ch, b->index);
}

int mtp_send_buffer(mtp_channel *ch, mtp_connection c, uint64_t stream, const mtp_buffer *b, uint32_t length,
                    const mtp_message_properties *props, uint64_t user) {
  if (ch == nullptr || b == nullptr || !owns_send_buffer(*ch, b->index) ||
      ch->holder[b->index - ch->first_buffer] != send_buffer::app)
    return MTP_EINVAL;
  // Whatever happens below, the buffer is the channel's again.
  const uint32_t index = b->index;
  give_buffer(*ch, index);
  if (const int st = usable(*ch); st != MTP_OK) return st;
  send_options o;
  if (const int st = options_of(props, o); st != MTP_OK) return st;
  handle_table::entry *e = nullptr;
  if (const int st = check_send(*ch, c, stream, b->data, length, o, e); st != MTP_OK) return st;
  if (length > ch->ctx->payload_bytes) return MTP_ETOOBIG;
  descriptor d[2];
  uint32_t n = 0;
  if (length > 0) {
    d[n] = command_for(shm::command::send, c);
    d[n].buffer = index;
    d[n].offset = ch->ctx->layout.plan.buffer_headroom;
    d[n].length = length;
    d[n].stream = stream;
    d[n].flags = o.flags;
    d[n].value = o.lifetime_ns;
    d[n].member = o.max_retransmissions;
    d[n].user = user;
    ++n;
  }
  if (o.final_message) {
    d[n] = command_for(shm::command::finish, c);
    d[n].stream = stream;
    ++n;
  }
  const uint32_t room = ch->tx.room();
  if (ch->tx.state() != shm::ring_state::ok) return ring_broken(*ch);
  if (room < n) {
    ++ch->stats.send_eagain;
    return MTP_EAGAIN;
  }
  if (length > 0) {
    // Off the free stack again (it is on top) and mtpd's until returned.
    --ch->free_count;
    ch->holder[index - ch->first_buffer] = send_buffer::daemon;
  }
  if (ch->tx.push_burst(d, n) != n) return ring_broken(*ch);  // room was checked
  ch->stats.commands_posted += n;
  wake_daemon(*ch);
  if (length > 0) {
    ++ch->stats.sends;
    ch->stats.bytes_sent += length;
  }
  return MTP_OK;
}

size_t mtp_send_burst(mtp_channel *ch, const mtp_send_request *sends, size_t n, const mtp_message_properties *props,
                      int *status) {
  int st = MTP_OK;
  std::size_t done = 0;
  send_options o;
  if (ch == nullptr || (sends == nullptr && n > 0)) {
    st = MTP_EINVAL;
  } else if ((st = usable(*ch)) == MTP_OK && (st = options_of(props, o)) == MTP_OK && n > 0) {
    post_batch b;
    b.room = ch->tx.room();
    handle_table::entry *e = nullptr;
    for (; done < n; ++done) {
      const mtp_send_request &r = sends[done];
      if ((st = check_send(*ch, r.connection, r.stream, r.data, r.length, o, e)) != MTP_OK) break;
      if ((st = stage_message(*ch, b, r.connection, r.stream, r.data, r.length, o, r.user)) != MTP_OK) break;
    }
    if (st != MTP_EBROKEN && !flush_batch(*ch, b)) st = MTP_EBROKEN;
    if (st == MTP_EAGAIN) ++ch->stats.send_eagain;
  }
  if (status != nullptr) *status = st;
  return done;
}

int mtp_send_datagram(mtp_channel *ch, mtp_connection c, const void *data, size_t length) {
  if (ch == nullptr) return MTP_EINVAL;
  if (const int st = usable(*ch); st != MTP_OK) return st;
  handle_table::entry *e = nullptr;
  if (const int st = check_connection(*ch, c, e); st != MTP_OK) return st;
  if (length == 0 || data == nullptr) return MTP_EINVAL;
  // One buffer at most; mtpd refuses (too_large) one above a packet's payload.
  if (length > ch->ctx->payload_bytes) return MTP_ETOOBIG;
  if (ch->free_count == 0) {
    ++ch->stats.send_eagain;
    return MTP_EAGAIN;
  }
  descriptor d = command_for(shm::command::datagram, c);
  d.buffer = take_buffer(*ch, send_buffer::daemon);
  d.offset = ch->ctx->layout.plan.buffer_headroom;
  d.length = static_cast<uint32_t>(length);
  std::memcpy(payload_of(*ch, d.buffer), data, length);
  const int st = post_one(*ch, d);
  if (st != MTP_OK) {
    give_buffer(*ch, d.buffer);
    if (st == MTP_EAGAIN) ++ch->stats.send_eagain;
    return st;
  }
  ++ch->stats.sends;
  ch->stats.bytes_sent += length;
  return MTP_OK;
}

int mtp_clone(mtp_channel *ch, mtp_connection c, uint64_t stream, int unordered) {
  if (ch == nullptr) return MTP_EINVAL;
  if (const int st = usable(*ch); st != MTP_OK) return st;
  handle_table::entry *e = nullptr;
  if (const int st = check_connection(*ch, c, e); st != MTP_OK) return st;
  descriptor d = command_for(shm::command::open_stream, c);
  d.stream = stream;
  d.flags = unordered ? shm::stream_unordered : 0;
  return post_one(*ch, d);
}

int mtp_finish(mtp_channel *ch, mtp_connection c, uint64_t stream) {
  if (ch == nullptr) return MTP_EINVAL;
  if (const int st = usable(*ch); st != MTP_OK) return st;
  handle_table::entry *e = nullptr;
  if (const int st = check_connection(*ch, c, e); st != MTP_OK) return st;
  if (stream != 0 || !(e->flags & handle_table::byte_stream)) return MTP_EINVAL;
  descriptor d = command_for(shm::command::finish, c);
  d.stream = stream;
  return post_one(*ch, d);
}

int mtp_close(mtp_channel *ch, mtp_connection c) {
  if (ch == nullptr) return MTP_EINVAL;
  if (const int st = usable(*ch); st != MTP_OK) return st;
  handle_table::entry *e = nullptr;
  if (const int st = check_connection(*ch, c, e); st != MTP_OK) return st;
  if (const int st = post_one(*ch, command_for(shm::command::close, c)); st != MTP_OK) return st;
  e->flags |= handle_table::closing;
  return MTP_OK;
}

int mtp_abort(mtp_channel *ch, mtp_connection c, uint64_t code) {
  if (ch == nullptr) return MTP_EINVAL;
  if (const int st = usable(*ch); st != MTP_OK) return st;
  handle_table::entry *e = ch->handles.find(c);
  if (e == nullptr || (e->flags & handle_table::listener)) return MTP_EINVAL;
  if (e->flags & handle_table::aborted) return MTP_ECLOSED;  // a close in progress may still be cut short
  descriptor d = command_for(shm::command::abort, c);
  d.value = code;
  if (const int st = post_one(*ch, d); st != MTP_OK) return st;
  e->flags |= handle_table::closing | handle_table::aborted;
  return MTP_OK;
}

size_t mtp_poll(mtp_channel *ch, mtp_event *events, size_t max) {
  if (ch == nullptr || (events == nullptr && max > 0) || ch->state == channel_state::dead) return 0;
  ch->header->app_heartbeat.store(++ch->heartbeat, std::memory_order_relaxed);
  disarm(*ch);
  std::size_t n = 0;
  if (ch->state == channel_state::alive) {
    post_releases(*ch);
    if (ch->pending_count > 0) flush_releases(*ch);
    if (ch->ctx->daemon_gone.load(std::memory_order_relaxed) != 0)
      begin_ending(*ch, MTP_EDAEMON, MTP_REASON_DAEMON_GONE);
  }
  // A gone daemon's last events are still good: handed out before the
  // synthetic ones. A broken channel is not read any more, stash included.
  const bool daemon_gone = ch->dead_reason == MTP_REASON_DAEMON_GONE;
  if (ch->state == channel_state::ending && !daemon_gone) ch->stash_count = 0;
  if (ch->state == channel_state::alive || (!ch->synthesizing && daemon_gone)) {
    n = drain_ring(*ch, events, max);
    if (n == 0 && ch->state == channel_state::alive) {
      const uint64_t now = monotonic_ns();
      if (now - ch->last_check_ns >= liveness_check_ns) {
        ch->last_check_ns = now;
        if (check_daemon(*ch->ctx)) begin_ending(*ch, MTP_EDAEMON, MTP_REASON_DAEMON_GONE);
      }
    }
  }
  if (ch->state == channel_state::ending && n < max && (ch->synthesizing || ch->stash_count == 0))
    n += synthesize(*ch, events + n, max - n);
  ch->stats.events_polled += n;
  return n;
}

void mtp_release(mtp_channel *ch, const mtp_event *e) {
  if (ch == nullptr || e == nullptr) return;
  if (e->type != MTP_EVENT_RECEIVED && e->type != MTP_EVENT_RECEIVED_PARTIAL && e->type != MTP_EVENT_DATAGRAM) return;
  const shm::region_plan &p = ch->ctx->layout.plan;
  if (e->buffer < p.tx_buffers || e->buffer >= p.buffer_count) return;
  const uint32_t i = e->buffer - p.tx_buffers;
  if (!test_bit(ch->held_bits, i)) return;  // released already, or not lent to this channel
  clear_bit(ch->held_bits, i);
  if (ch->state != channel_state::alive) return;  // nobody to hand it to
  // Gathered, posted by the next poll or wait (or now, when 15 wait):
  // one command for many small messages' buffers.
  ch->releases[ch->release_count++] = e->buffer;
  if (ch->release_count == shm::buffer_batch::max_buffers) post_releases(*ch);
}

int mtp_wait(mtp_channel *ch, int timeout_ms) {
  if (ch == nullptr) return MTP_EINVAL;
  const int r = prepare_sleep(*ch);
  if (r < 0) return -r;
  if (r == 0) {
    // Releases waiting for room in the command ring: only mtpd's worker
    // makes that room, and on a shared CPU a spin here keeps it off. A
    // short nap instead (mtpd does not signal ring room); then MTP_OK, so
    // the caller polls and the next poll posts them.
    if (ch->pending_count > 0 && ch->stash_count == 0 && ch->rx.size() == 0 && timeout_ms != 0)
      ::poll(nullptr, 0, 1);
    return MTP_OK;
  }
  mtp_context &ctx = *ch->ctx;
  pollfd fds[2] = {{ctx.att.app_eventfd, POLLIN, 0}, {ctx.att.socket_fd, POLLIN | POLLRDHUP, 0}};
  const int got = ::poll(fds, 2, timeout_ms);
  disarm(*ch);
  if (got == 0) return MTP_ETIMEDOUT;
  if (got > 0) {
    if (fds[0].revents & POLLIN) drain_eventfd(ctx, ch);
    if (fds[1].revents != 0) check_daemon(ctx);
  }
  return MTP_OK;  // woken (perhaps for another channel) or interrupted: poll
}

int mtp_channel_fd(const mtp_channel *ch) { return ch != nullptr ? ch->ctx->wait_fd : -1; }

int mtp_arm(mtp_channel *ch) {
  if (ch == nullptr) return -MTP_EINVAL;
  // The fd is level-triggered: what woke the last sleep is read here, and
  // the socket looked at, before the next one.
  drain_eventfd(*ch->ctx, ch);
  check_daemon(*ch->ctx);
  return prepare_sleep(*ch);
}

void mtp_channel_stats_get(const mtp_channel *ch, mtp_channel_stats *out) {
  if (out == nullptr) return;
  mtp_channel_stats s{};
  if (ch != nullptr) {
    s = ch->stats;
    s.send_buffers_free = ch->free_count;
    s.send_buffers_total = ch->buffer_total;
  }
  // Whole fields within the caller's struct_size only: an older caller's
  // struct ends before our newer fields, and a field cut in two is not
  // written at all.
  const std::size_t size = out->struct_size;
#define MTP_FILL(field)                                                                   \
  if (offsetof(mtp_channel_stats, field) + sizeof s.field <= size) out->field = s.field;
  MTP_FILL(commands_posted)
  MTP_FILL(events_polled)
  MTP_FILL(sends)
  MTP_FILL(send_eagain)
  MTP_FILL(bytes_sent)
  MTP_FILL(messages_received)
  MTP_FILL(bytes_received)
  MTP_FILL(send_buffers_free)
  MTP_FILL(send_buffers_total)
#undef MTP_FILL
}

}  // extern "C"
