// SPDX-License-Identifier: BSD-3-Clause
// check_initiate_params: what mtpd accepts of the bytes an application
// wrote as an initiate or listen command's parameters.
#include <gtest/gtest.h>

#include <cstring>

#include "mtp/shm_commands.h"

using namespace mtp::shm;

namespace {

initiate_params good() {
  initiate_params ip{};
  ip.magic = initiate_params::current_magic;
  ip.member_count = 3;
  ip.members[0] = 2;
  ip.members[1] = 3;
  ip.members[2] = 4;
  ip.threshold = 2;
  ip.ordering = 1;
  ip.streams = 4;
  return ip;
}

reason check(initiate_params ip, bool listen = false) { return check_initiate_params(ip, 16, listen); }

}  // namespace

TEST(initiate_params, a_good_one_passes) {
  EXPECT_EQ(check(good()), reason::none);
  initiate_params g = good();
  g.member_count = 0;
  std::strcpy(g.group, "trio");
  EXPECT_EQ(check(g), reason::none);
}

TEST(initiate_params, every_field_is_range_checked) {
  auto with = [](auto change) {
    initiate_params ip = good();
    change(ip);
    return check(ip);
  };
  EXPECT_EQ(with([](initiate_params &p) { p.magic ^= 1; }), reason::bad_params);
  EXPECT_EQ(with([](initiate_params &p) { p.stream_mode = 2; }), reason::bad_params);
  EXPECT_EQ(with([](initiate_params &p) { p.reliability = 3; }), reason::bad_params);
  EXPECT_EQ(with([](initiate_params &p) { p.congestion = 2; }), reason::bad_params);
  EXPECT_EQ(with([](initiate_params &p) { p.streams = 17; }), reason::bad_params);
  EXPECT_EQ(with([](initiate_params &p) { p.threshold = 4; }), reason::bad_params);
  EXPECT_EQ(with([](initiate_params &p) { p.member_count = 65; }), reason::bad_params);
  EXPECT_EQ(with([](initiate_params &p) { p.members[2] = 2; }), reason::bad_params);  // twice
  EXPECT_EQ(with([](initiate_params &p) { p.members[1] = 0; }), reason::unknown_member);
  EXPECT_EQ(with([](initiate_params &p) { p.members[1] = UINT32_MAX; }), reason::unknown_member);
  EXPECT_EQ(with([](initiate_params &p) { p.member_count = 0; }), reason::bad_params);  // nor a group
  // Security is the node's to judge (mtpd checks it against its mode).
  EXPECT_EQ(with([](initiate_params &p) { p.security = 2; }), reason::none);
  EXPECT_EQ(with([](initiate_params &p) { p.member_keys = 1; }), reason::none);
  EXPECT_EQ(with([](initiate_params &p) { p.member_keys = 2; }), reason::bad_params);
  EXPECT_EQ(with([](initiate_params &p) { p.member_keys = 1, p.member_count = 0, p.group[0] = 'g'; }),
            reason::bad_params);  // a group's keys are the config's
  // Asked for what this version does not do: said so.
  EXPECT_EQ(with([](initiate_params &p) { p.ordering = 3; }), reason::not_supported);
  EXPECT_EQ(with([](initiate_params &p) { p.multicast = 2; }), reason::not_supported);
  EXPECT_EQ(with([](initiate_params &p) { p.security = 3; }), reason::bad_params);
}

TEST(initiate_params, the_window_is_4_kib_to_64_mib_or_the_default) {
  for (unsigned w = 0; w < 40; ++w) {
    initiate_params ip = good();
    ip.window_log2 = static_cast<uint8_t>(w);
    EXPECT_EQ(check(ip), w == 0 || (w >= 12 && w <= 26) ? reason::none : reason::bad_params) << "log2 " << w;
    EXPECT_EQ(check(ip, true), w == 0 || (w >= 12 && w <= 26) ? reason::none : reason::bad_params) << "listen, log2 " << w;
  }
}

TEST(initiate_params, listen_ignores_members_and_the_group_is_terminated) {
  initiate_params ip = good();
  ip.member_count = 1000;
  ip.threshold = 7;
  EXPECT_EQ(check(ip, true), reason::none);
  initiate_params g = good();
  g.member_count = 0;
  std::memset(g.group, 'x', sizeof g.group);
  EXPECT_EQ(check_initiate_params(g, 16, false), reason::none);
  EXPECT_EQ(g.group[sizeof g.group - 1], '\0');
}
