// SPDX-License-Identifier: BSD-3-Clause
// The region layout: arithmetic, the application's check of a header it
// did not write, and memfd regions that no one can resize.
#include <fcntl.h>
#include <linux/memfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "mtp/shm_layout.h"
#include "mtp/shm_region.h"

using namespace mtp::shm;

namespace {

region_layout layout_of(const region_plan &p) {
  region_layout l;
  const char *why = region_layout_of(p, l);
  EXPECT_EQ(why, nullptr) << why;
  return l;
}

// A region in ordinary memory, aligned like a mapping, as mtpd pid 1234
// of node 77 would write it.
struct heap_region {
  explicit heap_region(const region_layout &l, uint32_t node_id = 77) : bytes(l.region_bytes) {
    base = std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096);
    init_region(base, l, 1234, node_id);
  }
  ~heap_region() { std::free(base); }
  region_header &header() { return *static_cast<region_header *>(base); }
  void *base;
  uint64_t bytes;
};

}  // namespace

TEST(shm_layout, sections_are_cache_aligned_and_disjoint) {
  region_plan p;
  p.channel_count = 3;
  p.to_daemon_slots = 256;
  p.to_app_slots = 512;
  p.buffer_count = 100;
  p.buffer_bytes = 2048;
  p.tx_buffers = 50;
  const region_layout l = layout_of(p);
  EXPECT_EQ(l.channels_offset, 256u);
  EXPECT_EQ(l.to_daemon_offset, sizeof(channel_header));
  // to_daemon: indices, then 256 descriptors; to_app follows on its own line.
  EXPECT_EQ(l.to_app_offset, sizeof(channel_header) + sizeof(ring_indices) + 256 * 64);
  EXPECT_EQ(l.channel_bytes, l.to_app_offset + sizeof(ring_indices) + 512 * 64);
  EXPECT_EQ(l.buffers_offset, 256 + 3ull * l.channel_bytes);
  EXPECT_EQ(l.region_bytes, l.buffers_offset + 100ull * 2048);
  for (uint64_t off : {l.channels_offset, l.to_daemon_offset, l.to_app_offset, uint64_t{l.channel_bytes}, l.buffers_offset})
    EXPECT_EQ(off % cache_line_bytes, 0u) << off;

  heap_region r(l);
  channel_header *c0 = channel_at(r.base, l, 0), *c2 = channel_at(r.base, l, 2);
  EXPECT_EQ(reinterpret_cast<std::byte *>(to_app_slots(c2, l) + 512), buffer_at(r.base, l, 0));
  EXPECT_EQ(reinterpret_cast<std::byte *>(to_daemon_slots(c0, l) + 256),
            reinterpret_cast<std::byte *>(to_app_indices(c0, l)));
  EXPECT_EQ(buffer_at(r.base, l, 99) + 2048, static_cast<std::byte *>(r.base) + l.region_bytes);
}

TEST(shm_layout, init_writes_a_header_the_check_accepts) {
  const region_layout l = layout_of(region_plan{});
  heap_region r(l);
  EXPECT_EQ(r.header().magic, region_magic);
  EXPECT_EQ(std::memcmp(r.base, "MTPSHM\0\1", 8), 0);
  EXPECT_EQ(r.header().layout_version, layout_version);
  EXPECT_EQ(r.header().daemon_pid, 1234u);
  EXPECT_EQ(r.header().node_id, 77u);
  uint32_t at_76 = 0;  // where reserved0 was: the layout is unchanged
  std::memcpy(&at_76, static_cast<const std::byte *>(r.base) + 76, sizeof at_76);
  EXPECT_EQ(at_76, 77u);
  region_layout seen;
  ASSERT_EQ(check_region(r.base, r.bytes, seen), nullptr);
  EXPECT_EQ(seen.region_bytes, l.region_bytes);
  EXPECT_EQ(seen.buffers_offset, l.buffers_offset);
  EXPECT_EQ(seen.to_app_offset, l.to_app_offset);
  EXPECT_EQ(seen.plan.tx_buffers, l.plan.tx_buffers);
  // A region from an mtpd that wrote no node id (0 there) is as valid.
  heap_region older(l, 0);
  EXPECT_EQ(older.header().node_id, 0u);
  EXPECT_EQ(check_region(older.base, older.bytes, seen), nullptr);
}

TEST(shm_layout, bad_plans_are_refused_with_a_reason) {
  const auto refused = [](auto change, const char *expect) {
    region_plan p;
    change(p);
    region_layout l;
    const char *why = region_layout_of(p, l);
    ASSERT_NE(why, nullptr) << expect;
    EXPECT_NE(std::strstr(why, expect), nullptr) << why;
  };
  refused([](region_plan &p) { p.channel_count = 0; }, "channel_count");
  refused([](region_plan &p) { p.channel_count = max_channels + 1; }, "channel_count");
  refused([](region_plan &p) { p.to_daemon_slots = 1000; }, "to_daemon_slots");
  refused([](region_plan &p) { p.to_daemon_slots = 1; }, "to_daemon_slots");
  refused([](region_plan &p) { p.to_app_slots = max_ring_slots * 2; }, "to_app_slots");
  refused([](region_plan &p) { p.buffer_count = 0; }, "buffer_count");
  refused([](region_plan &p) { p.buffer_bytes = 2000; }, "buffer_bytes");
  refused([](region_plan &p) { p.buffer_headroom = p.buffer_bytes; }, "headroom");
  refused([](region_plan &p) { p.tx_buffers = p.buffer_count + 1; }, "tx_buffers");
}

TEST(shm_layout, the_check_refuses_each_broken_field) {
  const region_layout l = layout_of(region_plan{});
  const auto refused = [&](auto change, uint64_t mapped_delta = 0) {
    heap_region r(l);
    change(r.header());
    region_layout seen;
    return check_region(r.base, r.bytes - mapped_delta, seen) != nullptr;
  };
  EXPECT_TRUE(refused([](region_header &h) { h.magic ^= 1; }));
  EXPECT_TRUE(refused([](region_header &h) { h.layout_version = layout_version + 1; }));
  EXPECT_TRUE(refused([](region_header &h) { h.header_bytes = 128; }));
  EXPECT_TRUE(refused([](region_header &h) { h.descriptor_bytes = 32; }));
  EXPECT_TRUE(refused([](region_header &h) { h.channel_count = 0; }));
  EXPECT_TRUE(refused([](region_header &h) { h.channel_count = 2; }));  // offsets then differ
  EXPECT_TRUE(refused([](region_header &h) { h.channels_offset += 64; }));
  EXPECT_TRUE(refused([](region_header &h) { h.channel_bytes -= 64; }));
  EXPECT_TRUE(refused([](region_header &h) { h.buffers_offset = 0; }));
  EXPECT_TRUE(refused([](region_header &h) { h.to_app_slots = 3; }));
  EXPECT_TRUE(refused([](region_header &h) { h.buffer_count = UINT32_MAX; }));
  EXPECT_TRUE(refused([](region_header &h) { h.tx_buffers = h.buffer_count + 1; }));
  EXPECT_TRUE(refused([](region_header &h) { h.region_bytes *= 2; }));
  EXPECT_TRUE(refused([](region_header &) {}, 1));  // mapped one byte short
  EXPECT_FALSE(refused([](region_header &) {}));
  region_layout seen;
  char tiny[16] = {};
  EXPECT_NE(check_region(tiny, sizeof tiny, seen), nullptr);
}

// Whatever garbage a header holds, a layout the check accepts lies within
// the mapping: 20,000 headers with random bytes flipped.
TEST(shm_layout, an_accepted_layout_always_fits_the_mapping) {
  region_plan p;
  p.buffer_count = 64;
  p.tx_buffers = 32;
  const region_layout l = layout_of(p);
  heap_region r(l);
  std::vector<std::byte> pristine(sizeof(region_header));
  std::memcpy(pristine.data(), r.base, pristine.size());
  std::mt19937_64 rng(7);
  int accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    std::memcpy(r.base, pristine.data(), pristine.size());
    auto *bytes = static_cast<uint8_t *>(r.base);
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) bytes[rng() % 96] ^= static_cast<uint8_t>(1u << (rng() % 8));
    region_layout seen;
    if (check_region(r.base, r.bytes, seen) != nullptr) continue;
    ++accepted;
    EXPECT_LE(seen.region_bytes, r.bytes);
    EXPECT_LE(seen.buffers_offset + uint64_t{seen.plan.buffer_count} * seen.plan.buffer_bytes, r.bytes);
    EXPECT_LE(seen.plan.tx_buffers, seen.plan.buffer_count);
  }
  // Flips in node_id and daemon_pid leave valid headers.
  EXPECT_GT(accepted, 0);
}

TEST(shm_region, created_regions_attach_and_share_memory) {
  for (const bool huge : {false, true}) {
    SCOPED_TRACE(huge ? "hugepages if the host has them" : "normal pages");
    region_plan p;
    p.buffer_count = 256;
    p.tx_buffers = 128;
    mapped_region daemon;
    ASSERT_EQ(daemon.create(p, 42, 7, huge), "");
    if (!huge) {
      EXPECT_FALSE(daemon.hugepages());
    } else {
      std::printf("hugepage-backed region: %s\n", daemon.hugepages() ? "yes" : "no (normal pages)");
    }
    EXPECT_GE(daemon.mapped_bytes(), daemon.layout().region_bytes);
    mapped_region app;
    ASSERT_EQ(app.attach(dup(daemon.fd())), "");
    EXPECT_EQ(app.layout().buffers_offset, daemon.layout().buffers_offset);
    EXPECT_EQ(static_cast<const region_header *>(app.base())->node_id, 7u) << "the node id reaches the application";
    EXPECT_NE(app.base(), daemon.base());
    std::memcpy(buffer_at(app.base(), app.layout(), 255), "hello", 5);
    EXPECT_EQ(std::memcmp(buffer_at(daemon.base(), daemon.layout(), 255), "hello", 5), 0);
    // Sealed: the application cannot shrink the region under mtpd.
    EXPECT_NE(ftruncate(app.fd(), 0), 0);
    EXPECT_EQ(errno, EPERM);
  }
}

TEST(shm_region, attach_refuses_what_is_not_a_sealed_region) {
  mapped_region app;
  // An unsealed memfd: its owner could truncate it under us.
  int fd = memfd_create("t", MFD_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, 1 << 20), 0);
  EXPECT_NE(app.attach(fd), "");
  // Sealed, but not a region.
  fd = memfd_create("t", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  ASSERT_EQ(ftruncate(fd, 1 << 20), 0);
  ASSERT_EQ(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);
  EXPECT_NE(app.attach(fd).find("magic"), std::string::npos);
  // Not a memfd at all.
  EXPECT_NE(app.attach(open("/dev/null", O_RDWR)), "");
  EXPECT_EQ(app.base(), nullptr);
}
