// SPDX-License-Identifier: BSD-3-Clause
// mtpd's buffer ledger: what an application may name, and what it may not.
#include <gtest/gtest.h>

#include "mtp/shm_ledger.h"

using namespace mtp::shm;

namespace {

region_layout small_layout() {
  region_plan p;
  p.buffer_count = 8;
  p.tx_buffers = 4;
  p.buffer_bytes = 1024;
  p.buffer_headroom = 128;
  region_layout l;
  EXPECT_EQ(region_layout_of(p, l), nullptr);
  return l;
}

descriptor ref(uint32_t buffer, uint32_t offset, uint32_t length) {
  descriptor d{};
  d.buffer = buffer;
  d.offset = offset;
  d.length = length;
  return d;
}

}  // namespace

TEST(shm_ledger, a_send_takes_the_buffer_until_its_completion) {
  buffer_ledger led(small_layout());
  EXPECT_EQ(led.app_held_send(), 4u);
  EXPECT_EQ(led.take_for_send(ref(2, 128, 896)), buffer_check::ok);  // the whole data area
  EXPECT_EQ(led.app_held_send(), 3u);
  EXPECT_EQ(led.daemon_held_send(), 1u);
  EXPECT_EQ(led.take_for_send(ref(2, 128, 10)), buffer_check::not_held_by_app) << "sent twice";
  EXPECT_TRUE(led.complete_send(2));
  EXPECT_FALSE(led.complete_send(2)) << "completed twice";
  EXPECT_EQ(led.take_for_send(ref(2, 500, 10)), buffer_check::ok) << "the application's again";
  EXPECT_TRUE(led.consistent());
}

TEST(shm_ledger, bad_send_references_are_refused_and_change_nothing) {
  buffer_ledger led(small_layout());
  EXPECT_EQ(led.take_for_send(ref(4, 128, 10)), buffer_check::bad_buffer_index) << "a receive buffer";
  EXPECT_EQ(led.take_for_send(ref(8, 128, 10)), buffer_check::bad_buffer_index) << "beyond the region";
  EXPECT_EQ(led.take_for_send(ref(no_buffer, 128, 10)), buffer_check::bad_buffer_index);
  EXPECT_EQ(led.take_for_send(ref(0, 127, 10)), buffer_check::bad_range) << "into the headroom";
  EXPECT_EQ(led.take_for_send(ref(0, 128, 897)), buffer_check::bad_range) << "one byte past the end";
  EXPECT_EQ(led.take_for_send(ref(0, UINT32_MAX, 2)), buffer_check::bad_range) << "wraps in 32 bits";
  EXPECT_EQ(led.take_for_send(ref(0, 200, UINT32_MAX)), buffer_check::bad_range);
  EXPECT_EQ(led.take_for_send(ref(0, 200, 0)), buffer_check::empty);
  EXPECT_EQ(led.app_held_send(), 4u);
  EXPECT_EQ(led.daemon_held_send(), 0u);
  EXPECT_TRUE(led.consistent());
  EXPECT_STREQ(buffer_check_name(buffer_check::bad_range), "bad_range");
}

TEST(shm_ledger, receive_buffers_are_lent_and_come_back_once) {
  buffer_ledger led(small_layout());
  EXPECT_EQ(led.free_receive(), 4u);
  const uint32_t a = led.lend_for_receive(), b = led.lend_for_receive();
  EXPECT_EQ(a, 4u);
  EXPECT_EQ(b, 5u);
  EXPECT_EQ(led.lend_for_receive(), 6u);
  EXPECT_EQ(led.lend_for_receive(), 7u);
  EXPECT_EQ(led.lend_for_receive(), no_buffer) << "all lent: the receiver waits (back-pressure)";
  EXPECT_EQ(led.release(ref(a, 0, 0)), buffer_check::ok);
  EXPECT_EQ(led.release(ref(a, 0, 0)), buffer_check::not_held_by_app) << "released twice";
  EXPECT_EQ(led.release(ref(1, 0, 0)), buffer_check::bad_buffer_index) << "a send buffer";
  EXPECT_EQ(led.release(ref(8, 0, 0)), buffer_check::bad_buffer_index);
  EXPECT_EQ(led.lend_for_receive(), a);
  EXPECT_EQ(led.app_held_receive(), 4u);
  EXPECT_TRUE(led.consistent());
}

TEST(shm_ledger, a_buffer_being_filled_is_neither_free_nor_the_applications) {
  buffer_ledger led(small_layout());
  const uint32_t f = led.take_for_filling();
  EXPECT_EQ(f, 4u);
  EXPECT_EQ(led.free_receive(), 3u);
  EXPECT_EQ(led.filling(), 1u);
  EXPECT_EQ(led.release(ref(f, 0, 0)), buffer_check::not_held_by_app) << "released before it was lent";
  EXPECT_TRUE(led.consistent());
  led.lend_filled(f);
  EXPECT_EQ(led.app_held_receive(), 1u);
  EXPECT_EQ(led.filling(), 0u);
  EXPECT_EQ(led.release(ref(f, 0, 0)), buffer_check::ok);
  EXPECT_TRUE(led.consistent());
  // Abandoned: back to the free buffers, never lent.
  const uint32_t g = led.take_for_filling();
  led.put_back(g);
  EXPECT_EQ(led.free_receive(), 4u);
  EXPECT_EQ(led.app_held_receive(), 0u);
  EXPECT_TRUE(led.consistent());
  for (int i = 0; i < 4; ++i) EXPECT_NE(led.take_for_filling(), no_buffer);
  EXPECT_EQ(led.take_for_filling(), no_buffer);
  EXPECT_TRUE(led.consistent());
}
