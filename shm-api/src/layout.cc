// SPDX-License-Identifier: BSD-3-Clause
// Layout arithmetic, initialisation and the application's check of a
// region (shm_layout.h). Every quantity is bounded before it is
// multiplied, so a hostile header cannot overflow the arithmetic.
#include <cstring>

#include "mtp/shm_layout.h"

namespace mtp::shm {

namespace {

constexpr bool power_of_two(uint32_t v) { return v != 0 && (v & (v - 1)) == 0; }
constexpr uint64_t align_up(uint64_t v) { return (v + cache_line_bytes - 1) & ~uint64_t{cache_line_bytes - 1}; }

}  // namespace

const char *region_layout_of(const region_plan &p, region_layout &out) {
  if (p.channel_count == 0 || p.channel_count > max_channels) return "channel_count is not within 1..64";
  if (!power_of_two(p.to_daemon_slots) || p.to_daemon_slots < min_ring_slots || p.to_daemon_slots > max_ring_slots)
    return "to_daemon_slots is not a power of two within 2..65536";
  if (!power_of_two(p.to_app_slots) || p.to_app_slots < min_ring_slots || p.to_app_slots > max_ring_slots)
    return "to_app_slots is not a power of two within 2..65536";
  if (p.buffer_count == 0 || p.buffer_count > max_buffers) return "buffer_count is not within 1..1048576";
  if (p.buffer_bytes == 0 || p.buffer_bytes > max_buffer_bytes || p.buffer_bytes % cache_line_bytes)
    return "buffer_bytes is not a multiple of 64 within 64..1048576";
  if (p.buffer_headroom >= p.buffer_bytes) return "buffer_headroom leaves no room for data";
  if (p.tx_buffers > p.buffer_count) return "tx_buffers exceeds buffer_count";

  region_layout l;
  l.plan = p;
  l.channels_offset = align_up(sizeof(region_header));
  l.to_daemon_offset = sizeof(channel_header);
  l.to_app_offset = align_up(l.to_daemon_offset + sizeof(ring_indices) + uint64_t{p.to_daemon_slots} * sizeof(descriptor));
  const uint64_t channel = align_up(l.to_app_offset + sizeof(ring_indices) + uint64_t{p.to_app_slots} * sizeof(descriptor));
  l.channel_bytes = static_cast<uint32_t>(channel);  // at most ~8.4 MB by the bounds above
  l.buffers_offset = l.channels_offset + uint64_t{p.channel_count} * l.channel_bytes;
  l.region_bytes = l.buffers_offset + uint64_t{p.buffer_count} * p.buffer_bytes;
  out = l;
  return nullptr;
}

void init_region(void *base, const region_layout &l, uint64_t daemon_pid, uint32_t node_id) {
  std::memset(base, 0, l.buffers_offset);  // header and channels; buffers are left as the kernel gave them (zero)
  auto *h = static_cast<region_header *>(base);
  h->magic = region_magic;
  h->layout_version = layout_version;
  h->header_bytes = sizeof(region_header);
  h->region_bytes = l.region_bytes;
  h->channels_offset = l.channels_offset;
  h->channel_count = l.plan.channel_count;
  h->channel_bytes = l.channel_bytes;
  h->to_daemon_slots = l.plan.to_daemon_slots;
  h->to_app_slots = l.plan.to_app_slots;
  h->descriptor_bytes = sizeof(descriptor);
  h->buffer_count = l.plan.buffer_count;
  h->buffers_offset = l.buffers_offset;
  h->buffer_bytes = l.plan.buffer_bytes;
  h->buffer_headroom = l.plan.buffer_headroom;
  h->tx_buffers = l.plan.tx_buffers;
  h->node_id = node_id;
  h->daemon_pid = daemon_pid;
}

const char *check_region(const void *base, uint64_t mapped_bytes, region_layout &out) {
  if (mapped_bytes < sizeof(region_header)) return "the region is smaller than its header";
  region_header h;
  std::memcpy(&h, base, sizeof h);  // one copy: the checks and the use see the same values
  if (h.magic != region_magic) return "not an mtpd region (bad magic)";
  if (h.layout_version != layout_version) return "the region's layout version differs from this library's";
  if (h.header_bytes != sizeof(region_header) || h.descriptor_bytes != sizeof(descriptor))
    return "the region's header or descriptor size differs from this library's";
  region_plan p;
  p.channel_count = h.channel_count;
  p.to_daemon_slots = h.to_daemon_slots;
  p.to_app_slots = h.to_app_slots;
  p.buffer_count = h.buffer_count;
  p.buffer_bytes = h.buffer_bytes;
  p.buffer_headroom = h.buffer_headroom;
  p.tx_buffers = h.tx_buffers;
  region_layout l;
  if (const char *why = region_layout_of(p, l)) return why;
  // The offsets must be exactly what this library computes: the same
  // layout on both sides, not merely a plausible one.
  if (h.channels_offset != l.channels_offset || h.channel_bytes != l.channel_bytes ||
      h.buffers_offset != l.buffers_offset || h.region_bytes != l.region_bytes)
    return "the region's section offsets differ from the layout of its parameters";
  if (l.region_bytes > mapped_bytes) return "the region is longer than what was mapped";
  out = l;
  return nullptr;
}

}  // namespace mtp::shm
