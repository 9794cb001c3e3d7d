// SPDX-License-Identifier: BSD-3-Clause
// The engine's half of native security (protocol.md 9): sealed packets
// (the S flag, a 16-byte tag's room, no CRC), refusing plaintext on a
// secured connection, and GROUP_KEY frames: handed to every live member,
// repaired when lost, acknowledged, and handed out anew when a member
// leaves. The AEAD itself is the caller's (dataplane/crypto); here the
// packets are passed as the caller would after opening them.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "connection.h"
#include "crc32c.h"

using namespace mtp::core;

namespace {

connection_config sealed_client(std::vector<uint32_t> members) {
  connection_config c;
  c.connection_id = 77;
  c.local_id = 100;
  c.members = std::move(members);
  c.max_sent_packets = 256;
  c.max_messages = 256;
  c.stream_buffer_bytes = 1 << 16;
  c.pacing = false;
  c.packet_protection = protection::sealed;
  return c;
}

connection_config sealed_server(uint32_t id) {
  connection_config c = sealed_client({100});
  c.local_id = id;
  c.side = role::server;
  return c;
}

std::vector<std::byte> secret(uint8_t fill) { return std::vector<std::byte>(group_secret_size, std::byte{fill}); }

struct group_keys_seen {
  std::vector<uint64_t> epochs;
  std::vector<std::vector<std::byte>> secrets;
  std::vector<std::vector<std::byte>> messages;
};

void collect(connection &c, group_keys_seen &seen) {
  for (event e; c.poll_event(e);) {
    if (e.type == event_type::group_key) {
      seen.epochs.push_back(e.message_id);
      seen.secrets.emplace_back(e.data.begin(), e.data.end());
    } else if (e.type == event_type::received && e.end_of_message) {
      seen.messages.emplace_back(e.data.begin(), e.data.end());
    }
  }
}

// Does this packet carry a GROUP_KEY frame (as its receiver parses it)?
bool carries_group_key(std::span<const std::byte> pkt) {
  packet_header h;
  std::span<const std::byte> frames;
  if (parse_packet(pkt, h, frames, protection::sealed) != parse_status::ok) return false;
  frame_reader rd(frames, true);
  frame f;
  while (!rd.done()) {
    if (rd.next(f) != parse_status::ok) return false;
    if (f.type == frame_type::group_key) return true;
  }
  return false;
}

// Moves packets until quiet; `drop_to` says whether to lose a client
// packet on its way to member m.
template <class Drop>
void exchange(connection &client, std::vector<connection *> servers, std::vector<group_keys_seen> &seen, time_ns now,
              Drop drop_to) {
  std::vector<std::byte> buf(1500);
  for (int r = 0; r < 20; ++r) {
    bool any = false;
    for (transmit t; (t = client.poll_transmit(buf, now)).bytes;) {
      any = true;
      for (std::size_t m = 0; m < servers.size(); ++m)
        if ((t.member_mask >> m & 1) && !drop_to(m, std::span<const std::byte>(buf.data(), t.bytes))) {
          servers[m]->on_packet({buf.data(), t.bytes}, now);
          collect(*servers[m], seen[m]);
        }
    }
    for (connection *s : servers)
      for (transmit t; (t = s->poll_transmit(buf, now)).bytes;) {
        any = true;
        client.on_packet({buf.data(), t.bytes}, now);
        for (event e; client.poll_event(e);) {
        }
      }
    if (!any) break;
  }
}

void exchange(connection &client, std::vector<connection *> servers, std::vector<group_keys_seen> &seen, time_ns now) {
  exchange(client, servers, seen, now, [](std::size_t, std::span<const std::byte>) { return false; });
}

}  // namespace

TEST(sealed, packets_carry_the_s_flag_and_room_for_the_tag_not_a_crc) {
  const time_ns now = 1'000'000;
  connection client(sealed_client({1}), now);
  std::vector<std::byte> buf(1500);
  const transmit t = client.poll_transmit(buf, now);
  ASSERT_GT(t.bytes, header_size + tag_size);
  const auto flags = std::to_integer<uint8_t>(buf[2]);
  EXPECT_TRUE(flags & flag_sealed);
  EXPECT_FALSE(flags & flag_crc);
  EXPECT_TRUE(flags & flag_opening);
  EXPECT_EQ(std::to_integer<uint8_t>(buf[3]), 0u) << "the key byte is the caller's to write";
  for (std::size_t i = t.bytes - tag_size; i < t.bytes; ++i) EXPECT_EQ(buf[i], std::byte{0});
  // As a plaintext packet it is refused: no C flag.
  packet_header h;
  std::span<const std::byte> frames;
  EXPECT_EQ(parse_packet({buf.data(), t.bytes}, h, frames), parse_status::no_crc);
  EXPECT_EQ(parse_packet({buf.data(), t.bytes}, h, frames, protection::sealed), parse_status::ok);
  EXPECT_EQ(frames.size(), t.bytes - header_size - tag_size);
  // 12 bytes less room for a datagram than a CRC packet.
  connection_config plain = sealed_client({1});
  plain.packet_protection = protection::crc;
  EXPECT_EQ(connection(plain, now).max_datagram_bytes() - client.max_datagram_bytes(), tag_size - crc_size);
}

TEST(sealed, a_plaintext_packet_on_a_secured_connection_is_dropped_not_sealed) {
  const time_ns now = 1'000'000;
  connection_config plain_cfg = sealed_client({1});
  plain_cfg.packet_protection = protection::crc;
  connection plain_client(plain_cfg, now);
  connection server(sealed_server(1), now);
  std::vector<std::byte> buf(1500);
  const transmit t = plain_client.poll_transmit(buf, now);
  ASSERT_GT(t.bytes, 0u);
  server.on_packet({buf.data(), t.bytes}, now);
  EXPECT_EQ(server.stats().drops[static_cast<std::size_t>(drop_reason::not_sealed)], 1u);
  EXPECT_EQ(server.stats().packets_received, 0u);
  std::vector<std::byte> out(1500);
  EXPECT_EQ(server.poll_transmit(out, now).bytes, 0u) << "nothing answers a downgrade";
}

TEST(sealed, a_transfer_goes_through_and_group_packets_say_so) {
  time_ns now = 1'000'000;
  connection client(sealed_client({1, 2}), now);
  connection s1(sealed_server(1), now), s2(sealed_server(2), now);
  std::vector<group_keys_seen> seen(2);
  ASSERT_EQ(client.open_stream(0, stream_mode::message, ordering::fifo), status::ok);
  exchange(client, {&s1, &s2}, seen, now);
  std::vector<std::byte> msg(3000);
  for (std::size_t i = 0; i < msg.size(); ++i) msg[i] = static_cast<std::byte>(i * 7);
  ASSERT_EQ(client.send(0, msg, now), status::ok);
  client.flush();
  std::vector<std::byte> buf(1500);
  std::size_t group = 0, member = 0;
  for (transmit t; (t = client.poll_transmit(buf, now)).bytes;) {
    (t.group ? group : member)++;
    if (t.group) {
      EXPECT_EQ(t.member_mask, 3u);
    }
    for (connection *s : {&s1, &s2}) {
      s->on_packet({buf.data(), t.bytes}, now);
      collect(*s, seen[s == &s1 ? 0 : 1]);
    }
  }
  EXPECT_EQ(group, 3u) << "3000 bytes: three group packets";
  for (auto &g : seen) {
    ASSERT_EQ(g.messages.size(), 1u);
    EXPECT_EQ(g.messages[0], msg);
  }
}

TEST(sealed, the_group_key_reaches_every_member_and_is_acknowledged) {
  time_ns now = 1'000'000;
  connection client(sealed_client({1, 2}), now);
  connection s1(sealed_server(1), now), s2(sealed_server(2), now);
  const auto k1 = secret(0x11);
  ASSERT_EQ(client.set_group_key(1, k1), status::ok);
  EXPECT_FALSE(client.member_has_group_key(0));
  std::vector<group_keys_seen> seen(2);
  exchange(client, {&s1, &s2}, seen, now);
  for (auto &g : seen) {
    ASSERT_EQ(g.epochs, std::vector<uint64_t>{1});
    EXPECT_EQ(g.secrets[0], k1);
  }
  EXPECT_TRUE(client.member_has_group_key(0));
  EXPECT_TRUE(client.member_has_group_key(1));
  EXPECT_EQ(client.stats().group_keys_sent, 2u) << "one per member, over its own packet";
  EXPECT_EQ(s1.stats().group_keys_received, 1u);
}

TEST(sealed, a_lost_group_key_is_sent_again_until_acknowledged) {
  time_ns now = 1'000'000;
  connection client(sealed_client({1}), now);
  connection s1(sealed_server(1), now);
  ASSERT_EQ(client.set_group_key(1, secret(0x22)), status::ok);
  std::vector<group_keys_seen> seen(1);
  int lost = 0;
  // Every packet carrying the key is lost the first time.
  exchange(client, {&s1}, seen, now, [&](std::size_t, std::span<const std::byte> p) {
    if (!carries_group_key(p) || lost > 0) return false;
    ++lost;
    return true;
  });
  EXPECT_EQ(lost, 1);
  EXPECT_TRUE(seen[0].epochs.empty());
  EXPECT_FALSE(client.member_has_group_key(0));
  for (int i = 0; i < 20 && !client.member_has_group_key(0); ++i) {
    now += 50'000'000;  // past the probe timeout: the loss is found, the key repaired
    client.on_expiry(now);
    s1.on_expiry(now);
    exchange(client, {&s1}, seen, now);
  }
  EXPECT_TRUE(client.member_has_group_key(0));
  ASSERT_EQ(seen[0].epochs.size(), 1u);
  EXPECT_EQ(seen[0].secrets[0], secret(0x22));
  EXPECT_GE(client.stats().group_keys_sent, 2u);
}

TEST(sealed, a_new_group_key_goes_only_to_the_members_still_there) {
  time_ns now = 1'000'000;
  connection client(sealed_client({1, 2}), now);
  connection s1(sealed_server(1), now), s2(sealed_server(2), now);
  ASSERT_EQ(client.set_group_key(1, secret(1)), status::ok);
  std::vector<group_keys_seen> seen(2);
  exchange(client, {&s1, &s2}, seen, now);
  // Member 2 leaves (CLOSE), then the caller rekeys the group.
  s2.close(error_code::no_error, "bye", now);
  std::vector<std::byte> buf(1500);
  for (transmit t; (t = s2.poll_transmit(buf, now)).bytes;) client.on_packet({buf.data(), t.bytes}, now);
  ASSERT_FALSE(client.member_live(1));
  ASSERT_EQ(client.set_group_key(2, secret(2)), status::ok);
  exchange(client, {&s1, &s2}, seen, now);
  EXPECT_EQ(seen[0].epochs, (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(seen[0].secrets[1], secret(2));
  EXPECT_EQ(seen[1].epochs, std::vector<uint64_t>{1}) << "the departed member never gets epoch 2";
  EXPECT_TRUE(client.member_has_group_key(0));
  EXPECT_FALSE(client.member_has_group_key(1));
}

TEST(sealed, group_keys_are_refused_where_they_make_no_sense) {
  const time_ns now = 1'000'000;
  connection client(sealed_client({1}), now);
  EXPECT_EQ(client.set_group_key(1, secret(1)), status::ok);
  EXPECT_EQ(client.set_group_key(1, secret(1)), status::invalid) << "an epoch is never reused";
  EXPECT_EQ(client.set_group_key(2, std::vector<std::byte>(31)), status::invalid);
  connection server(sealed_server(1), now);
  EXPECT_EQ(server.set_group_key(1, secret(1)), status::invalid) << "only the client hands them out";
  connection_config plain = sealed_client({1});
  plain.packet_protection = protection::crc;
  connection plain_client(plain, now);
  EXPECT_EQ(plain_client.set_group_key(1, secret(1)), status::invalid);
}

TEST(sealed, group_key_frames_parse_only_in_sealed_packets_and_only_from_the_client) {
  // A GROUP_KEY frame in a plaintext packet is the reserved type it always was.
  std::vector<std::byte> frame_bytes = {std::byte{0x19}, std::byte{0x01}};
  const auto k = secret(9);
  frame_bytes.insert(frame_bytes.end(), k.begin(), k.end());
  frame f;
  EXPECT_EQ(frame_reader(frame_bytes).next(f), parse_status::unknown_frame);
  frame_reader sealed_reader(frame_bytes, true);
  ASSERT_EQ(sealed_reader.next(f), parse_status::ok);
  EXPECT_EQ(f.type, frame_type::group_key);
  EXPECT_EQ(f.key_epoch, 1u);
  EXPECT_EQ(std::vector<std::byte>(f.group_secret.begin(), f.group_secret.end()), k);
  // Truncated: malformed.
  frame_bytes.pop_back();
  EXPECT_EQ(frame_reader(frame_bytes, true).next(f), parse_status::malformed_frame);

  // A member sending the client a GROUP_KEY breaks the protocol: dropped.
  const time_ns now = 1'000'000;
  connection client(sealed_client({1}), now);
  std::vector<std::byte> pkt(200);
  packet_header h;
  h.sender_id = 1;
  h.connection_id = 77;
  h.packet_number = 5;
  packet_builder b(pkt, h, protection::sealed);
  ASSERT_TRUE(b.append_group_key(3, secret(3)));
  const std::size_t len = b.finish();
  client.on_packet({pkt.data(), len}, now);
  EXPECT_EQ(client.stats().drops[static_cast<std::size_t>(drop_reason::malformed_frame)], 1u);
  EXPECT_EQ(client.stats().packets_received, 0u);
}
