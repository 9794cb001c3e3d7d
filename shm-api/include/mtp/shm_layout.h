// SPDX-License-Identifier: BSD-3-Clause
// The shared-memory region between mtpd and one application: the one
// layout both sides compile. mtpd creates the region (a memfd), passes it
// over the application socket, and trusts nothing in it afterwards: every
// index, offset and length it reads from here is checked before use, and
// it never reads back a value only it writes (it keeps its own copy).
//
// Region (offsets from its start; every section starts on a cache line):
//
//   0                +-------------------------------+
//                    | region_header                 |  256 B, written once by mtpd
//   channels_offset  +-------------------------------+
//                    | channel 0                     |  channel_bytes each:
//                    |   channel_header              |    heartbeats, wake-up flags
//                    |   to_daemon: ring_indices     |    commands, app -> mtpd
//                    |              descriptor[]     |      to_daemon_slots
//                    |   to_app:    ring_indices     |    events and completions,
//                    |              descriptor[]     |      mtpd -> app, to_app_slots
//                    | channel 1 ...                 |
//   buffers_offset   +-------------------------------+
//                    | buffer 0                      |  buffer_bytes each:
//                    |   [headroom | data ...      ] |    headroom for MTP/UDP/IP/
//                    | buffer 1 ...                  |    Ethernet headers first
//   region_bytes     +-------------------------------+
//
// Buffers [0, tx_buffers) belong to the application to send from: it
// writes a message, names the buffer in a send command, and gets it back
// in a completion once the message is stable (or expired, or failed).
// Buffers [tx_buffers, buffer_count) are mtpd's receive area: mtpd copies
// each received message into one and names it in an event; the
// application hands it back with a release command. Ownership is by
// convention in the region and by record in mtpd: a buffer index the
// application names that it does not own is refused, not used.
//
// Only fixed-width integers and lock-free atomics live here (both are
// address-free, so they work between processes); every struct's size and
// offsets are static_asserted below. The layout version changes with any
// change to this file that either side could observe.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace mtp::shm {

/// "MTPSHM" then 0x00 0x01, little-endian: the first 8 bytes of a region.
inline constexpr uint64_t region_magic = 0x0100'4d48'5350'544dull;
inline constexpr uint32_t layout_version = 2;  // 2: buffer batches (shm_commands.h)
inline constexpr uint32_t cache_line_bytes = 64;

/// Bounds mtpd applies when it plans a region (and the application when it
/// checks one): large enough for any sane use, small enough that a bad
/// header cannot make either side compute past 2^63.
inline constexpr uint32_t max_channels = 64;
inline constexpr uint32_t max_ring_slots = 1u << 16;
inline constexpr uint32_t min_ring_slots = 2;
inline constexpr uint32_t max_buffers = 1u << 20;
inline constexpr uint32_t max_buffer_bytes = 1u << 20;
inline constexpr uint32_t no_buffer = UINT32_MAX;

static_assert(std::atomic<uint32_t>::is_always_lock_free && std::atomic<uint64_t>::is_always_lock_free,
              "shared indices must be lock-free atomics to work across processes");

/// Offset 0 of a region. Written by mtpd before the region is passed on;
/// read-only afterwards for both sides.
struct region_header {
  uint64_t magic;             ///< region_magic
  uint32_t layout_version;    ///< layout_version
  uint32_t header_bytes;      ///< sizeof(region_header)
  uint64_t region_bytes;      ///< the whole region; the mapping is at least this long
  uint64_t channels_offset;   ///< first channel; a multiple of cache_line_bytes
  uint32_t channel_count;     ///< 1 .. max_channels
  uint32_t channel_bytes;     ///< stride between channels; a multiple of cache_line_bytes
  uint32_t to_daemon_slots;   ///< capacity of each command ring: a power of two
  uint32_t to_app_slots;      ///< capacity of each event ring: a power of two
  uint32_t descriptor_bytes;  ///< sizeof(descriptor)
  uint32_t buffer_count;      ///< 1 .. max_buffers
  uint64_t buffers_offset;    ///< first buffer; after the last channel
  uint32_t buffer_bytes;      ///< stride between buffers, headroom included; a multiple of cache_line_bytes
  uint32_t buffer_headroom;   ///< bytes at a buffer's start reserved for headers; < buffer_bytes
  uint32_t tx_buffers;        ///< buffers [0, tx_buffers) are the application's; the rest, mtpd's
  uint32_t node_id;           ///< the node's MTP member id (config node.id), for the application to know itself;
                              ///< 0 from an mtpd older than this field: unknown
  uint64_t daemon_pid;        ///< for diagnostics only
  uint8_t reserved[256 - 88];
};
static_assert(sizeof(region_header) == 256);
static_assert(offsetof(region_header, channels_offset) == 24);
static_assert(offsetof(region_header, buffers_offset) == 56);
static_assert(offsetof(region_header, node_id) == 76);  // was reserved0: no layout_version change
static_assert(offsetof(region_header, daemon_pid) == 80);

/// Producer and consumer indices of one single-producer single-consumer
/// ring, a cache line apart so the two sides do not share a line.
/// Indices run free (wrapping at 2^32); slot = index & (capacity - 1).
/// Invariant kept by an honest pair: 0 <= head - tail <= capacity.
struct ring_indices {
  alignas(cache_line_bytes) std::atomic<uint32_t> head;  ///< written by the producer only: slots [tail, head) are full
  uint8_t pad0[cache_line_bytes - sizeof(std::atomic<uint32_t>)];
  alignas(cache_line_bytes) std::atomic<uint32_t> tail;  ///< written by the consumer only: slots before tail are free
  uint8_t pad1[cache_line_bytes - sizeof(std::atomic<uint32_t>)];
};
static_assert(sizeof(ring_indices) == 2 * cache_line_bytes);
static_assert(offsetof(ring_indices, tail) == cache_line_bytes);

/// One ring slot: a command (to mtpd), an event or completion (to the
/// application). The meaning of the fields is per type (mtp.h); a field a
/// type does not use is zero.
struct descriptor {
  uint16_t type;        ///< command or event type
  uint16_t flags;
  uint32_t buffer;      ///< buffer index, or no_buffer
  uint32_t offset;      ///< data start within the buffer (>= buffer_headroom for sends)
  uint32_t length;      ///< data bytes from offset
  uint64_t connection;  ///< connection handle
  uint64_t stream;      ///< stream id
  uint64_t message;     ///< message id
  uint64_t value;       ///< per type: an error code, a count, a lifetime in ns
  uint64_t user;        ///< the application's cookie, echoed in the completion
  uint32_t member;      ///< member id, where one is concerned
  uint32_t reason;      ///< per type: an error reason
};
static_assert(sizeof(descriptor) == 64);
static_assert(offsetof(descriptor, connection) == 16);
static_assert(offsetof(descriptor, member) == 56);

/// The start of each channel: liveness and wake-up words, each on its own
/// cache line (one writer each).
struct channel_header {
  alignas(cache_line_bytes) std::atomic<uint64_t> app_heartbeat;  ///< the application counts up while it lives
  uint8_t pad0[cache_line_bytes - 8];
  /// mtpd counts up at every control loop (about every 10 ms) while the
  /// application is attached; standing still for long means a hung daemon.
  alignas(cache_line_bytes) std::atomic<uint64_t> daemon_heartbeat;
  uint8_t pad1[cache_line_bytes - 8];
  /// Set by the application before it sleeps on its eventfd: mtpd then
  /// signals the eventfd after it posts to to_app. Cleared by the
  /// application when it wakes.
  alignas(cache_line_bytes) std::atomic<uint32_t> app_sleeping;
  uint8_t pad2[cache_line_bytes - 4];
  /// Set by mtpd when its worker sleeps (adaptive idle): the application
  /// then signals mtpd's eventfd after it posts to to_daemon.
  alignas(cache_line_bytes) std::atomic<uint32_t> daemon_sleeping;
  uint8_t pad3[cache_line_bytes - 4];
};
static_assert(sizeof(channel_header) == 4 * cache_line_bytes);

/// Where everything is, computed from a plan by mtpd and from a header by
/// the application; both use region_layout_of() so they agree.
struct region_plan {
  uint32_t channel_count = 1;
  uint32_t to_daemon_slots = 1024;
  uint32_t to_app_slots = 1024;
  uint32_t buffer_count = 4096;
  uint32_t buffer_bytes = 2048;  ///< headroom included
  uint32_t buffer_headroom = 128;
  uint32_t tx_buffers = 2048;
};

struct region_layout {
  region_plan plan;
  uint64_t channels_offset = 0;
  uint32_t channel_bytes = 0;
  uint64_t to_daemon_offset = 0;  ///< within a channel: its ring_indices, then the slots
  uint64_t to_app_offset = 0;     ///< within a channel
  uint64_t buffers_offset = 0;
  uint64_t region_bytes = 0;
};

/// Computes the layout of a plan. @return nullptr, or why the plan is not
/// one (a static string: "to_daemon_slots is not a power of two", ...).
const char *region_layout_of(const region_plan &plan, region_layout &out);

/// Writes the header (with this node's MTP member id, `node_id`) and
/// zeroes every channel of a region of layout.region_bytes at `base`.
void init_region(void *base, const region_layout &layout, uint64_t daemon_pid, uint32_t node_id);

/// Checks a region the application mapped (`mapped_bytes` long): magic,
/// version, sizes, and that every section lies inside the mapping.
/// @return nullptr and the layout, or why the region cannot be used.
const char *check_region(const void *base, uint64_t mapped_bytes, region_layout &out);

/// Section addresses of channel `c` (c < channel_count; not checked).
inline channel_header *channel_at(void *base, const region_layout &l, uint32_t c) {
  return reinterpret_cast<channel_header *>(static_cast<std::byte *>(base) + l.channels_offset +
                                            uint64_t{c} * l.channel_bytes);
}
inline ring_indices *to_daemon_indices(channel_header *ch, const region_layout &l) {
  return reinterpret_cast<ring_indices *>(reinterpret_cast<std::byte *>(ch) + l.to_daemon_offset);
}
inline descriptor *to_daemon_slots(channel_header *ch, const region_layout &l) {
  return reinterpret_cast<descriptor *>(to_daemon_indices(ch, l) + 1);
}
inline ring_indices *to_app_indices(channel_header *ch, const region_layout &l) {
  return reinterpret_cast<ring_indices *>(reinterpret_cast<std::byte *>(ch) + l.to_app_offset);
}
inline descriptor *to_app_slots(channel_header *ch, const region_layout &l) {
  return reinterpret_cast<descriptor *>(to_app_indices(ch, l) + 1);
}
inline std::byte *buffer_at(void *base, const region_layout &l, uint32_t index) {
  return static_cast<std::byte *>(base) + l.buffers_offset + uint64_t{index} * l.plan.buffer_bytes;
}

}  // namespace mtp::shm
