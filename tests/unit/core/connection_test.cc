// SPDX-License-Identifier: BSD-3-Clause
// The engine by hand, time stepped explicitly: one client, one or two
// members, packets passed directly. The simulator covers loss and scale.
#include "connection.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <functional>
#include <memory>
#include <map>
#include <string>
#include <vector>

using namespace mtp::core;

namespace {

connection_config client_cfg(std::vector<uint32_t> members) {
  connection_config c;
  c.connection_id = 42;
  c.local_id = 100;
  c.members = std::move(members);
  c.max_sent_packets = 256;
  c.max_messages = 256;
  c.stream_buffer_bytes = 1 << 16;
  c.pacing = false;
  return c;
}

connection_config server_cfg(uint32_t id) {
  connection_config c = client_cfg({100});
  c.local_id = id;
  c.side = role::server;
  return c;
}

// An event with its data copied out: spans into packets last only until
// the next call into the connection.
struct copied_event {
  event e;
  std::vector<std::byte> data;
};

std::map<const connection *, std::vector<copied_event>> inbox;

// Keyed by address: a test's undrained events must not reach the next
// test's connection at the same stack address (--gtest_shuffle showed it).
struct inbox_reset : ::testing::EmptyTestEventListener {
  void OnTestStart(const ::testing::TestInfo &) override { inbox.clear(); }
};
const bool inbox_reset_installed = [] {
  ::testing::UnitTest::GetInstance()->listeners().Append(new inbox_reset);
  return true;
}();

void collect(connection &c) {
  for (event e; c.poll_event(e);) inbox[&c].push_back({e, {e.data.begin(), e.data.end()}});
}

// Moves every packet between the client and the servers until quiet. Each
// receiver's events are collected right after each packet, as the contract
// of on_packet() asks.
void exchange(connection &client, std::vector<connection *> servers, time_ns now, int rounds = 20) {
  std::vector<std::byte> buf(1500);
  for (int r = 0; r < rounds; ++r) {
    bool any = false;
    for (transmit t; (t = client.poll_transmit(buf, now)).bytes;) {
      any = true;
      for (std::size_t m = 0; m < servers.size(); ++m)
        if (t.member_mask & (1ull << m)) {
          servers[m]->on_packet({buf.data(), t.bytes}, now);
          collect(*servers[m]);
        }
    }
    for (connection *s : servers)
      for (transmit t; (t = s->poll_transmit(buf, now)).bytes;) {
        any = true;
        client.on_packet({buf.data(), t.bytes}, now);
        collect(client);
      }
    if (!any) break;
  }
}

std::vector<copied_event> drain(connection &c) {
  collect(c);
  auto out = std::move(inbox[&c]);
  inbox.erase(&c);
  return out;
}

// Probes and acceptances, then forgets their events: a connected group.
void connect(connection &client, std::vector<connection *> servers, time_ns now) {
  exchange(client, servers, now);
  drain(client);
  for (connection *s : servers) drain(*s);
}

}  // namespace

TEST(connection, ready_then_messages_in_order_then_sent) {
  time_ns now = 1'000'000;
  connection client(client_cfg({1, 2}), now);
  connection s1(server_cfg(1), now), s2(server_cfg(2), now);
  ASSERT_EQ(client.open_stream(0, stream_mode::message, ordering::fifo), status::ok);
  exchange(client, {&s1, &s2}, now);
  auto ev = drain(client);
  ASSERT_FALSE(ev.empty());
  EXPECT_EQ(ev[0].e.type, event_type::ready);
  EXPECT_EQ(ev[0].e.count, 2u);

  for (uint64_t i = 0; i < 50; ++i) {
    std::vector<std::byte> msg(64, static_cast<std::byte>(i));
    uint64_t id = 99;
    ASSERT_EQ(client.send(0, msg, {}, now, &id), status::ok);
    EXPECT_EQ(id, i);
  }
  client.flush();
  exchange(client, {&s1, &s2}, now);
  for (connection *s : {&s1, &s2}) {
    auto got = drain(*s);
    std::vector<uint8_t> seen;
    for (const auto &c : got)
      if (c.e.type == event_type::received) {
        EXPECT_TRUE(c.e.end_of_message);
        ASSERT_EQ(c.data.size(), 64u);
        seen.push_back(std::to_integer<uint8_t>(c.data[0]));
      }
    ASSERT_EQ(seen.size(), 50u);
    for (uint8_t i = 0; i < 50; ++i) EXPECT_EQ(seen[i], i);
  }
  // ACKs may be delayed: let the ACK timer fire.
  now += 2'000'000;
  s1.on_expiry(now);
  s2.on_expiry(now);
  exchange(client, {&s1, &s2}, now);
  auto sent = drain(client);
  std::size_t n = 0;
  for (const auto &c : sent)
    if (const event &e = c.e; e.type == event_type::sent) {
      EXPECT_EQ(e.message_id, n);
      EXPECT_EQ(e.count, 2u);
      ++n;
    }
  EXPECT_EQ(n, 50u);
  EXPECT_EQ(client.send_buffered_bytes(), 0u);
  EXPECT_EQ(client.packets_in_flight(), 0u);
  EXPECT_GT(client.stats().packets_sent, 0u);
  // 50 x 64 B messages coalesce into a few packets, not 50.
  EXPECT_LE(s1.stats().packets_received, 8u);
}

TEST(connection, api_errors) {
  connection c(client_cfg({1}), 0);
  EXPECT_EQ(c.open_stream(99, stream_mode::message, ordering::fifo), status::bad_stream);
  EXPECT_EQ(c.open_stream(0, stream_mode::message, ordering::total), status::unsupported);
  ASSERT_EQ(c.open_stream(0, stream_mode::message, ordering::fifo), status::ok);
  EXPECT_EQ(c.open_stream(0, stream_mode::message, ordering::fifo), status::invalid);
  std::vector<std::byte> big((1 << 16) + 1);
  EXPECT_EQ(c.send(0, big, {}, 0), status::too_large);
  EXPECT_EQ(c.send(1, {big.data(), 10}, {}, 0), status::bad_stream);
  EXPECT_EQ(c.send(0, {}, {}, 0), status::invalid);
  std::vector<std::byte> half(1 << 15);
  EXPECT_EQ(c.send(0, half, {}, 0), status::ok);
  EXPECT_EQ(c.send(0, half, {}, 0), status::ok);
  EXPECT_EQ(c.send(0, {half.data(), 1}, {}, 0), status::would_block);
  EXPECT_EQ(c.send_datagram(big, 0), status::too_large);
}

TEST(connection, close_reaches_the_member) {
  time_ns now = 0;
  connection client(client_cfg({1}), now);
  connection s1(server_cfg(1), now);
  connect(client, {&s1}, now);
  client.close(error_code::application, "done", now);
  exchange(client, {&s1}, now);
  auto cev = drain(client);
  ASSERT_FALSE(cev.empty());
  EXPECT_EQ(cev.back().e.type, event_type::closed);
  auto sev = drain(s1);
  ASSERT_EQ(sev.size(), 1u);
  EXPECT_EQ(sev[0].e.type, event_type::closed);
  EXPECT_EQ(sev[0].e.error_code, static_cast<uint64_t>(error_code::application));
  EXPECT_TRUE(s1.is_closed());
}

TEST(connection, silent_member_is_reported_and_group_goes_on) {
  time_ns now = 0;
  auto cfg = client_cfg({1, 2});
  cfg.member_timeout_ns = 500'000'000;
  connection client(cfg, now);
  connection s1(server_cfg(1), now), s2(server_cfg(2), now);
  exchange(client, {&s1, &s2}, now);
  drain(client);
  // Member 2 goes silent: only member 1 hears and answers from here on.
  connection dead(server_cfg(3), now);  // swallows without answering correctly
  for (int step = 0; step < 40; ++step) {
    now += 50'000'000;
    client.on_expiry(now);
    s1.on_expiry(now);
    std::vector<std::byte> buf(1500);
    for (transmit t; (t = client.poll_transmit(buf, now)).bytes;)
      if (t.member_mask & 1) s1.on_packet({buf.data(), t.bytes}, now);
    for (transmit t; (t = s1.poll_transmit(buf, now)).bytes;) client.on_packet({buf.data(), t.bytes}, now);
  }
  auto ev = drain(client);
  bool left = false;
  for (const auto &c : ev) {
    const event &e = c.e;
    EXPECT_NE(e.type, event_type::connection_error);
    if (e.type == event_type::member_left) {
      EXPECT_EQ(e.member, 2u);
      EXPECT_EQ(e.reason, 1u);
      left = true;
    }
  }
  EXPECT_TRUE(left);
  EXPECT_TRUE(client.member_live(0));
  EXPECT_FALSE(client.member_live(1));
}

TEST(connection, datagrams_arrive_unordered_and_unrepaired) {
  time_ns now = 0;
  connection client(client_cfg({1}), now);
  connection s1(server_cfg(1), now);
  connect(client, {&s1}, now);
  const std::string text = "a datagram";
  std::vector<std::byte> d(text.size());
  std::memcpy(d.data(), text.data(), text.size());
  ASSERT_EQ(client.send_datagram(d, now), status::ok);
  exchange(client, {&s1}, now);
  auto ev = drain(s1);
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].e.type, event_type::datagram);
  EXPECT_EQ(ev[0].e.member, 100u);
  EXPECT_EQ(std::string(reinterpret_cast<const char *>(ev[0].data.data()), ev[0].data.size()), text);
  EXPECT_EQ(client.stats().retransmitted_frames, 0u);
}

TEST(connection, coalescing_waits_unless_low_latency) {
  time_ns now = 0;
  auto cfg = client_cfg({1});
  cfg.coalesce_delay_ns = 50'000;
  connection client(cfg, now);
  connection s1(server_cfg(1), now);
  ASSERT_EQ(client.open_stream(0, stream_mode::message, ordering::fifo), status::ok);
  exchange(client, {&s1}, now);
  drain(client);
  std::vector<std::byte> buf(1500), msg(64);
  // A lone small message waits for company ...
  ASSERT_EQ(client.send(0, msg, {}, now), status::ok);
  EXPECT_EQ(client.poll_transmit(buf, now).bytes, 0u);
  EXPECT_EQ(client.next_expiry(), now + 50'000);
  // ... until the coalescing deadline,
  EXPECT_GT(client.poll_transmit(buf, now + 50'000).bytes, 0u);
  // while a low-latency message goes at once.
  message_options fast;
  fast.low_latency = true;
  ASSERT_EQ(client.send(0, msg, fast, now + 60'000), status::ok);
  EXPECT_GT(client.poll_transmit(buf, now + 60'000).bytes, 0u);
}

TEST(connection, a_lost_packet_on_one_stream_does_not_block_another) {
  time_ns now = 0;
  connection client(client_cfg({1}), now);
  connection s1(server_cfg(1), now);
  ASSERT_EQ(client.open_stream(0, stream_mode::message, ordering::fifo), status::ok);
  ASSERT_EQ(client.open_stream(1, stream_mode::message, ordering::fifo), status::ok);
  connect(client, {&s1}, now);
  std::vector<std::byte> buf(1500), msg(64, std::byte{7});
  message_options fast;
  fast.low_latency = true;
  ASSERT_EQ(client.send(0, msg, fast, now), status::ok);
  ASSERT_GT(client.poll_transmit(buf, now).bytes, 0u);  // stream 0's packet: lost
  ASSERT_EQ(client.send(1, msg, fast, now), status::ok);
  const transmit t = client.poll_transmit(buf, now);
  ASSERT_GT(t.bytes, 0u);
  s1.on_packet({buf.data(), t.bytes}, now);
  auto ev = drain(s1);
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].e.type, event_type::received);
  EXPECT_EQ(ev[0].e.stream_id, 1u);
}

TEST(connection, graceful_close_sends_what_is_queued_first_abort_does_not) {
  time_ns now = 0;
  connection client(client_cfg({1}), now);
  connection s1(server_cfg(1), now);
  ASSERT_EQ(client.open_stream(0, stream_mode::message, ordering::fifo), status::ok);
  connect(client, {&s1}, now);
  std::vector<std::byte> msg(100, std::byte{1});
  for (int i = 0; i < 5; ++i) ASSERT_EQ(client.send(0, msg, {}, now), status::ok);
  client.close(error_code::no_error, "bye", now);
  EXPECT_EQ(client.send(0, msg, {}, now), status::closed);
  client.flush();
  for (int step = 0; step < 10; ++step) {
    now += 2'000'000;
    s1.on_expiry(now);
    exchange(client, {&s1}, now);
  }
  auto sev = drain(s1);
  std::size_t received = 0;
  for (const auto &c : sev) received += c.e.type == event_type::received;
  EXPECT_EQ(received, 5u);
  ASSERT_FALSE(sev.empty());
  EXPECT_EQ(sev.back().e.type, event_type::closed);
  EXPECT_TRUE(client.is_closed());

  connection c2(client_cfg({1}), now);
  ASSERT_EQ(c2.open_stream(0, stream_mode::message, ordering::fifo), status::ok);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(c2.send(0, msg, {}, now), status::ok);
  c2.abort(error_code::application, "stop", now);
  std::vector<std::byte> buf(1500);
  EXPECT_GT(c2.poll_transmit(buf, now).bytes, 0u);  // the CLOSE, nothing else
  EXPECT_EQ(c2.poll_transmit(buf, now).bytes, 0u);
  std::size_t errors = 0;
  for (const auto &c : drain(c2)) errors += c.e.type == event_type::send_error;
  EXPECT_EQ(errors, 3u);
}

TEST(connection, partial_message_expires_after_its_lifetime) {
  time_ns now = 0;
  connection client(client_cfg({1}), now);
  connection s1(server_cfg(1), now);
  ASSERT_EQ(client.open_stream(0, stream_mode::message, ordering::fifo), status::ok);
  connect(client, {&s1}, now);
  std::vector<std::byte> buf(1500), msg(64, std::byte{3});
  message_options o;
  o.rel = reliability::partial;
  o.max_retransmissions = 100;
  o.lifetime_ns = 5'000'000;
  o.low_latency = true;
  ASSERT_EQ(client.send(0, msg, o, now), status::ok);
  ASSERT_GT(client.poll_transmit(buf, now).bytes, 0u);  // lost
  // Past the lifetime the message is given up: FORWARD goes, Expired comes.
  for (int step = 0; step < 20; ++step) {
    now += 2'000'000;
    client.on_expiry(now);
    s1.on_expiry(now);
    exchange(client, {&s1}, now);
  }
  bool expired = false;
  for (const auto &c : drain(client))
    if (c.e.type == event_type::expired) {
      expired = true;
      EXPECT_EQ(c.e.message_id, 0u);
      EXPECT_EQ(c.e.count, 1u);
    }
  EXPECT_TRUE(expired);
  for (const auto &c : drain(s1)) EXPECT_NE(c.e.type, event_type::received);
  EXPECT_EQ(client.send_buffered_bytes(), 0u);
}

// Request-response with one member: each side's ACK rides on its next
// message, so a round trip is two packets, not three or four, and every
// message is still acknowledged (Sent).
TEST(connection, a_lone_member_gets_its_ack_with_the_next_data) {
  time_ns now = 1'000'000;
  connection client(client_cfg({1}), now), server(server_cfg(1), now);
  ASSERT_EQ(client.open_stream(0, stream_mode::message, ordering::fifo), status::ok);
  ASSERT_EQ(server.open_stream(0, stream_mode::message, ordering::fifo), status::ok);
  connect(client, {&server}, now);
  std::vector<std::byte> buf(1500), msg(32);
  message_options fast;
  fast.low_latency = true;
  const uint64_t acks_before = server.stats().acks_sent;
  for (int i = 0; i < 20; ++i) {
    now += 10'000;
    ASSERT_EQ(client.send(0, msg, fast, now), status::ok);
    transmit t = client.poll_transmit(buf, now);
    ASSERT_GT(t.bytes, 0u);
    EXPECT_EQ(client.poll_transmit(buf, now).bytes, 0u) << "one packet per request, round " << i;
    server.on_packet({buf.data(), t.bytes}, now);
    drain(server);
    now += 10'000;
    ASSERT_EQ(server.send(0, msg, fast, now), status::ok);
    t = server.poll_transmit(buf, now);
    ASSERT_GT(t.bytes, 0u);
    EXPECT_EQ(server.poll_transmit(buf, now).bytes, 0u) << "one packet per response, round " << i;
    client.on_packet({buf.data(), t.bytes}, now);
  }
  std::size_t sent = 0, received = 0;
  for (const auto &e : drain(client)) {
    sent += e.e.type == event_type::sent;
    received += e.e.type == event_type::received;
  }
  EXPECT_EQ(sent, 20u) << "every request acknowledged by the responses";
  EXPECT_EQ(received, 20u);
  EXPECT_GE(server.stats().acks_sent - acks_before, 20u);
}

// A receiver ACKs every ack_every_packets in-order packets, and at once
// for a packet with a PING, which the sender adds where it would otherwise
// wait: here, to the packets that close its congestion window.
TEST(connection, acks_every_n_packets_and_at_once_when_asked) {
  time_ns now = 1'000'000;
  auto ccfg = client_cfg({1});
  ccfg.initial_rtt_ns = 1'000'000;
  connection client(ccfg, now), server(server_cfg(1), now);
  ASSERT_EQ(client.open_stream(0, stream_mode::message, ordering::fifo), status::ok);
  connect(client, {&server}, now);
  std::vector<std::byte> msg(1200);
  for (int i = 0; i < 12; ++i) ASSERT_EQ(client.send(0, msg, {}, now), status::ok);
  client.flush();
  std::vector<std::vector<std::byte>> packets;
  std::vector<std::byte> buf(1500);
  for (transmit t; (t = client.poll_transmit(buf, now)).bytes;) packets.emplace_back(buf.begin(), buf.begin() + t.bytes);
  ASSERT_EQ(packets.size(), 10u) << "the initial window: ten packets";
  const uint32_t every = server_cfg(1).ack_every_packets;
  ASSERT_EQ(every, 8u);
  std::vector<std::size_t> acked_after;
  for (std::size_t i = 0; i < packets.size(); ++i) {
    server.on_packet(packets[i], now);
    drain(server);
    if (server.poll_transmit(buf, now).bytes) acked_after.push_back(i + 1);
  }
  // After the 8th packet (eight pending), then at once for the 9th and
  // 10th: with them the window is within two packets of full, so each
  // carries a PING.
  EXPECT_EQ(acked_after, (std::vector<std::size_t>{8, 9, 10}));
}

// protocol.md 6.3: a packet is lost when one sent at least three later was
// acknowledged (or after the time threshold), not at the first gap.
TEST(connection, loss_needs_three_later_packets_acknowledged) {
  time_ns now = 1'000'000;
  connection client(client_cfg({1}), now), server(server_cfg(1), now);
  ASSERT_EQ(client.open_stream(0, stream_mode::message, ordering::fifo), status::ok);
  connect(client, {&server}, now);
  std::vector<std::byte> msg(1200);
  for (int i = 0; i < 6; ++i) ASSERT_EQ(client.send(0, msg, {}, now), status::ok);
  client.flush();
  std::vector<std::vector<std::byte>> packets;
  std::vector<std::byte> buf(1500);
  for (transmit t; (t = client.poll_transmit(buf, now)).bytes;) packets.emplace_back(buf.begin(), buf.begin() + t.bytes);
  ASSERT_GE(packets.size(), 6u);
  // The member gets everything but the first packet, and acknowledges as
  // it goes: after the 2nd and 3rd (one and two later) nothing is lost yet.
  const uint64_t lost_before = client.stats().packets_lost;
  for (std::size_t i = 1; i < packets.size(); ++i) {
    server.on_packet(packets[i], now);
    drain(server);
    server.on_expiry(now + 2'000'000);  // its ACK timer
    for (transmit t; (t = server.poll_transmit(buf, now)).bytes;) client.on_packet({buf.data(), t.bytes}, now);
    drain(client);
    if (i < 3) {
      EXPECT_EQ(client.stats().packets_lost, lost_before) << "lost after only " << i << " later packets";
    }
  }
  EXPECT_EQ(client.stats().packets_lost, lost_before + 1) << "three later packets acknowledged: the first is lost";
}

// Work the event queue had no room for is not forgotten: the next call
// into the connection, whatever it is, delivers the data and reports the
// Sent events left undone.
TEST(connection, deliveries_and_sent_reports_resume_after_a_full_event_queue) {
  time_ns now = 1'000'000;
  auto ccfg = client_cfg({1});
  ccfg.max_events = 16;
  auto scfg = server_cfg(1);
  scfg.max_events = 16;
  connection client(ccfg, now), server(scfg, now);
  ASSERT_EQ(client.open_stream(0, stream_mode::message, ordering::fifo), status::ok);
  connect(client, {&server}, now);
  std::vector<std::byte> msg(40);
  for (int i = 0; i < 60; ++i) ASSERT_EQ(client.send(0, msg, {}, now), status::ok);
  client.flush();
  std::vector<std::byte> buf(1500);
  std::size_t received = 0, sent = 0;
  // The member takes the packets without polling in between: its queue
  // fills; each later call (here on_expiry, which has nothing to do) must
  // go on delivering.
  for (transmit t; (t = client.poll_transmit(buf, now)).bytes;) server.on_packet({buf.data(), t.bytes}, now);
  for (int round = 0; round < 20 && received < 60; ++round) {
    for (const auto &e : drain(server)) received += e.e.type == event_type::received;
    server.on_expiry(now);
  }
  EXPECT_EQ(received, 60u);
  // The client gets one ACK for all 60 and reports Sent as room allows.
  now += 2'000'000;
  server.on_expiry(now);
  for (transmit t; (t = server.poll_transmit(buf, now)).bytes;) client.on_packet({buf.data(), t.bytes}, now);
  for (int round = 0; round < 20 && sent < 60; ++round) {
    for (const auto &e : drain(client)) sent += e.e.type == event_type::sent;
    (void)client.poll_transmit(buf, now);  // any call resumes the reports
  }
  EXPECT_EQ(sent, 60u);
}

// protocol.md 6.1: a datagram is never held back for coalescing; stream
// data waiting for company leaves with it at once.
TEST(connection, a_datagram_goes_at_once_and_takes_waiting_data_along) {
  time_ns now = 0;
  auto cfg = client_cfg({1});
  cfg.coalesce_delay_ns = 50'000;
  connection client(cfg, now);
  connection s1(server_cfg(1), now);
  ASSERT_EQ(client.open_stream(0, stream_mode::message, ordering::fifo), status::ok);
  connect(client, {&s1}, now);
  std::vector<std::byte> buf(1500), msg(64), d(20);
  ASSERT_EQ(client.send(0, msg, {}, now), status::ok);
  EXPECT_EQ(client.poll_transmit(buf, now).bytes, 0u) << "a lone small message waits";
  ASSERT_EQ(client.send_datagram(d, now), status::ok);
  const transmit t = client.poll_transmit(buf, now);
  ASSERT_GT(t.bytes, 0u) << "the datagram waited";
  s1.on_packet({buf.data(), t.bytes}, now);
  int datagrams = 0, messages = 0;
  for (const auto &c : drain(s1)) {
    datagrams += c.e.type == event_type::datagram;
    messages += c.e.type == event_type::received;
  }
  EXPECT_EQ(datagrams, 1);
  EXPECT_EQ(messages, 1);
}

namespace {
// Whether a packet carries a PING or STREAM frame (a probe or a repair).
bool carries_probe_or_data(std::span<const std::byte> p) {
  packet_header h;
  std::span<const std::byte> frames;
  if (parse_packet(p, h, frames) != parse_status::ok) return false;
  frame_reader rd(frames);
  for (frame f; !rd.done() && rd.next(f) == parse_status::ok;)
    if (f.type == frame_type::ping || f.type == frame_type::stream) return true;
  return false;
}
}  // namespace

// protocol.md 6.3: a tail loss (the last packet lost, nothing after it to
// reveal it) is probed one probe timeout later, long before the next
// heartbeat would find it.
TEST(connection, a_tail_loss_is_probed_after_one_probe_timeout) {
  time_ns now = 1'000'000;
  auto cfg = client_cfg({1});
  cfg.heartbeat_interval_ns = 200'000'000;
  connection client(cfg, now), server(server_cfg(1), now);
  ASSERT_EQ(client.open_stream(0, stream_mode::message, ordering::fifo), status::ok);
  connect(client, {&server}, now);
  // Settle the handshake's ACKs.
  for (int i = 0; i < 5; ++i) {
    now += 5'000'000;
    client.on_expiry(now);
    server.on_expiry(now);
    exchange(client, {&server}, now);
  }
  drain(client);
  drain(server);
  std::vector<std::byte> buf(1500), msg(300);
  message_options fast;
  fast.low_latency = true;
  ASSERT_EQ(client.send(0, msg, fast, now), status::ok);
  const time_ns sent_at = now;
  ASSERT_GT(client.poll_transmit(buf, now).bytes, 0u);  // lost
  time_ns probed_at = never;
  for (int step = 0; step < 100 && probed_at == never; ++step) {
    now = client.next_expiry();
    ASSERT_NE(now, never);
    client.on_expiry(now);
    for (transmit t; (t = client.poll_transmit(buf, now)).bytes;)
      if ((t.member_mask & 1) && carries_probe_or_data({buf.data(), t.bytes})) probed_at = now;
  }
  ASSERT_NE(probed_at, never);
  EXPECT_LT(probed_at - sent_at, 50'000'000) << "probed only after " << (probed_at - sent_at) / 1000 << " us";
}

namespace {
// One step of a group run: timers, every packet both ways, and the events
// of the members that read (`reads`); the others never poll, so their
// event queues fill and they stop granting credit.
void group_step(connection &client, std::vector<connection *> servers, const std::vector<bool> &reads, time_ns now,
                const std::function<void(const transmit &, std::span<const std::byte>)> &on_client_packet = {}) {
  std::vector<std::byte> buf(1500);
  client.on_expiry(now);
  for (connection *s : servers) s->on_expiry(now);
  for (int r = 0; r < 20; ++r) {
    bool any = false;
    for (transmit t; (t = client.poll_transmit(buf, now)).bytes;) {
      any = true;
      if (on_client_packet) on_client_packet(t, {buf.data(), t.bytes});
      for (std::size_t m = 0; m < servers.size(); ++m)
        if (t.member_mask & (1ull << m)) {
          servers[m]->on_packet({buf.data(), t.bytes}, now);
          if (reads[m]) collect(*servers[m]);
        }
    }
    for (connection *s : servers)
      for (transmit t; (t = s->poll_transmit(buf, now)).bytes;) {
        any = true;
        client.on_packet({buf.data(), t.bytes}, now);
        collect(client);
      }
    if (!any) break;
  }
}

std::size_t messages_received(connection &s) {
  std::size_t n = 0;
  for (const auto &c : drain(s)) n += c.e.type == event_type::received && c.e.end_of_message;
  return n;
}
}  // namespace

// protocol.md 6.5: new data in a threshold group waits for the t-th
// largest credit. With t = 2 of 4 and two members that stop reading, the
// two readers set the pace and get everything.
TEST(connection, a_threshold_group_sends_within_the_t_th_largest_credit) {
  time_ns now = 1'000'000;
  auto cfg = client_cfg({1, 2, 3, 4});
  cfg.threshold = 2;
  connection client(cfg, now);
  std::vector<std::unique_ptr<connection>> owned;
  std::vector<connection *> servers;
  for (uint32_t id = 1; id <= 4; ++id) {
    auto scfg = server_cfg(id);
    scfg.max_events = 16;
    owned.push_back(std::make_unique<connection>(scfg, now));
    servers.push_back(owned.back().get());
  }
  const std::vector<bool> reads = {true, true, false, false};
  ASSERT_EQ(client.open_stream(0, stream_mode::message, ordering::fifo), status::ok);
  connect(client, servers, now);
  // Three stream windows of 4 KiB messages.
  const std::size_t total = 3 * (1u << 16) / 4096;
  std::vector<std::byte> msg(4096);
  std::size_t queued = 0, got1 = 0, got2 = 0;
  for (int step = 0; step < 2000 && (got1 < total || got2 < total); ++step) {
    while (queued < total && client.send(0, msg, {}, now) == status::ok) ++queued;
    client.flush();
    group_step(client, servers, reads, now);
    got1 += messages_received(*servers[0]);
    got2 += messages_received(*servers[1]);
    drain(client);
    now += 1'000'000;
  }
  EXPECT_EQ(got1, total);
  EXPECT_EQ(got2, total);
  EXPECT_TRUE(client.member_live(2));
  EXPECT_TRUE(client.member_live(3));
}

// protocol.md 6.6: a threshold group packet needs t members with window
// room. With t = 2 of 3 and two members that receive nothing, new data
// stops when their windows are full; it never goes to one member alone.
TEST(connection, threshold_group_data_waits_for_t_members_with_window_room) {
  time_ns now = 1'000'000;
  auto cfg = client_cfg({1, 2, 3});
  cfg.threshold = 2;
  cfg.stream_buffer_bytes = 1u << 20;
  connection client(cfg, now);
  auto scfg = server_cfg(1);
  scfg.stream_buffer_bytes = 1u << 20;
  connection s1(scfg, now), s2(server_cfg(2), now), s3(server_cfg(3), now);
  ASSERT_EQ(client.open_stream(0, stream_mode::message, ordering::fifo), status::ok);
  connect(client, {&s1, &s2, &s3}, now);
  // Members 2 and 3 are cut off from here on: only member 1 hears the client.
  std::vector<std::byte> msg(1000);
  uint64_t highest_sent = 0, new_data_packets = 0;
  for (int step = 0; step < 50; ++step) {
    while (client.send(0, msg, {}, now) == status::ok) {
    }
    client.flush();
    group_step(client, {&s1}, {true}, now, [&](const transmit &t, std::span<const std::byte> p) {
      packet_header h;
      std::span<const std::byte> frames;
      ASSERT_EQ(parse_packet(p, h, frames), parse_status::ok);
      frame_reader rd(frames);
      uint64_t end = 0;
      for (frame f; !rd.done() && rd.next(f) == parse_status::ok;)
        if (f.type == frame_type::stream) end = std::max<uint64_t>(end, f.stream.offset + f.stream.data.size());
      if (end <= highest_sent) return;  // a repair, or no data
      highest_sent = end;
      ++new_data_packets;
      EXPECT_GE(std::popcount(t.member_mask), 2) << "new data up to " << end << " to members " << t.member_mask;
    });
    drain(s1);
    drain(client);
    now += 1'000'000;
  }
  EXPECT_GT(new_data_packets, 5u);
  EXPECT_LT(highest_sent, 64u * 1024) << "new data went on with one member's window";
}

// protocol.md 6.5: new data is sized to the credit the members granted,
// per stream and over the connection. On a lossless path whose credit
// binds, every byte therefore goes once: none is sent beyond credit to be
// dropped or held back and repaired later.
TEST(connection, credit_bound_data_goes_once_on_a_lossless_path) {
  for (const bool connection_binds : {false, true}) {
    SCOPED_TRACE(connection_binds ? "the connection window binds" : "the stream window binds");
    time_ns now = 1'000'000;
    // Both ends configured alike (the initial credits, 6.5).
    auto cfg = client_cfg({1});
    auto scfg = server_cfg(1);
    if (connection_binds) cfg.connection_window_bytes = scfg.connection_window_bytes = 1u << 15;  // half a stream's
    connection client(cfg, now);
    connection server(scfg, now);
    const std::size_t streams = connection_binds ? 4 : 1;
    for (std::size_t s = 0; s < streams; ++s)
      ASSERT_EQ(client.open_stream(s, stream_mode::message, ordering::fifo), status::ok);
    connect(client, {&server}, now);
    // Three stream windows of messages whose size divides neither the
    // window nor the packet, so the credit's edge falls inside a packet.
    const std::size_t per_stream = 3 * (1u << 16) / 3000;
    std::vector<std::byte> msg(3000);
    std::vector<std::size_t> queued(streams, 0);
    std::size_t got = 0;
    for (int step = 0; step < 2000 && got < streams * per_stream; ++step) {
      for (std::size_t s = 0; s < streams; ++s)
        while (queued[s] < per_stream && client.send(s, msg, {}, now) == status::ok) ++queued[s];
      client.flush();
      // The member reads every fourth millisecond only: the sender meets
      // the edge of its credit, not of its congestion window.
      const bool reads = step % 4 == 0;
      group_step(client, {&server}, {reads}, now);
      if (reads) got += messages_received(server);
      drain(client);
      now += 1'000'000;
    }
    EXPECT_EQ(got, streams * per_stream);
    EXPECT_EQ(client.stats().stream_bytes_retransmitted, 0u);
    EXPECT_EQ(client.stats().retransmitted_frames, 0u);
    EXPECT_EQ(client.stats().packets_lost, 0u);
    EXPECT_EQ(server.stats().drops[static_cast<std::size_t>(drop_reason::flow_control)], 0u);
  }
}

// Without zero copy, an application that polls late (mtpd's slow client of
// libmtp) still gets every message that arrived before the CLOSE, intact:
// the receive buffers are given back only once it took them all.
TEST(connection, a_late_poller_gets_what_arrived_before_close) {
  time_ns now = 0;
  connection client(client_cfg({1}), now);
  connection_config sc = server_cfg(1);
  sc.zero_copy_delivery = false;
  connection s1(sc, now);
  ASSERT_EQ(client.open_stream(0, stream_mode::message, ordering::fifo), status::ok);
  std::vector<std::byte> buf(1500);
  auto pump = [&] {  // like exchange(), without polling s1's events
    for (int r = 0; r < 40; ++r) {
      bool any = false;
      for (transmit t; (t = client.poll_transmit(buf, now)).bytes;) {
        any = true;
        s1.on_packet({buf.data(), t.bytes}, now);
      }
      for (transmit t; (t = s1.poll_transmit(buf, now)).bytes;) {
        any = true;
        client.on_packet({buf.data(), t.bytes}, now);
      }
      if (!any) break;
    }
  };
  pump();
  for (uint8_t i = 0; i < 20; ++i) {
    std::vector<std::byte> m(300, std::byte{i});
    ASSERT_EQ(client.send(0, m, now), status::ok);
  }
  client.flush();
  pump();
  client.close(error_code::no_error, "done", now);
  pump();
  ASSERT_TRUE(s1.is_closed());
  // Calls into the closed connection (timers, stray packets) go on first.
  for (int k = 0; k < 5; ++k) {
    now += 50'000'000;
    s1.on_expiry(now);
    s1.poll_transmit(buf, now);
  }
  // The bytes are still held (released, a pool would hand them to the
  // next session while the events still point at them).
  const uint64_t held = s1.memory_bytes();
  EXPECT_GE(held, 20u * 300u);
  std::vector<std::vector<std::byte>> got;
  bool closed = false;
  for (event e; s1.poll_event(e);) {
    if (e.type == event_type::received) got.emplace_back(e.data.begin(), e.data.end());
    if (e.type == event_type::closed) closed = true;
  }
  ASSERT_EQ(got.size(), 20u);
  for (std::size_t i = 0; i < got.size(); ++i)
    EXPECT_EQ(got[i], std::vector<std::byte>(300, std::byte{static_cast<uint8_t>(i)})) << "message " << i;
  EXPECT_TRUE(closed);
  // Once polled, the next call gives them back.
  now += 50'000'000;
  s1.on_expiry(now);
  EXPECT_LE(s1.memory_bytes() + 20u * 300u, held);
}

// send_pieces: packets are built from the caller's memory (not copied into
// the connection), repairs read it again, and each piece's token comes
// back, in order, only once the member holds its bytes.
TEST(connection, pieces_are_read_in_place_and_returned_once_stable) {
  time_ns now = 0;
  connection client(client_cfg({1}), now);
  connection s1(server_cfg(1), now);
  ASSERT_EQ(client.open_stream(0, stream_mode::message, ordering::fifo), status::ok);
  connect(client, {&s1}, now);
  // 40 messages of two pieces each (700 + 300 B), and one copied message
  // in the middle: a stream mixes both.
  std::vector<std::vector<std::byte>> store;
  for (uint8_t i = 0; i < 40; ++i) {
    store.emplace_back(700, std::byte{i});
    store.emplace_back(300, std::byte{static_cast<uint8_t>(i + 100)});
  }
  const uint64_t held_before = client.memory_bytes();
  for (uint64_t i = 0; i < 40; ++i) {
    const connection::send_piece p[2] = {{store[2 * i], 2 * i}, {store[2 * i + 1], 2 * i + 1}};
    ASSERT_EQ(client.send_pieces(0, p, {}, now), status::ok);
    if (i == 19) {
      std::vector<std::byte> copied(500, std::byte{0xee});
      ASSERT_EQ(client.send(0, copied, {}, now), status::ok);
    }
  }
  // The pieces' 40 KB are not in the connection's memory (the copied
  // message is: one chunk).
  EXPECT_LT(client.memory_bytes() - held_before, 24u * 1024u);
  uint64_t tokens[128];
  EXPECT_FALSE(client.has_released());
  EXPECT_EQ(client.poll_released(tokens), 0u);
  // The first two data packets are lost: their repair reads the pieces again.
  client.flush();
  std::vector<std::byte> buf(1500);
  int data_packets = 0;
  for (transmit t; (t = client.poll_transmit(buf, now)).bytes;)
    if (++data_packets > 2) {
      s1.on_packet({buf.data(), t.bytes}, now);
      collect(s1);
    }
  ASSERT_GE(data_packets, 5);
  EXPECT_EQ(client.poll_released(tokens), 0u);  // nothing acknowledged yet
  for (int step = 0; step < 20; ++step) {
    now += 5'000'000;
    s1.on_expiry(now);
    client.on_expiry(now);
    exchange(client, {&s1}, now);
  }
  std::vector<std::vector<std::byte>> got;
  std::vector<std::byte> partial;
  for (const auto &c : drain(s1))
    if (c.e.type == event_type::received) {
      partial.insert(partial.end(), c.data.begin(), c.data.end());
      if (!c.e.end_of_message) continue;
      got.push_back(std::move(partial));
      partial.clear();
    }
  ASSERT_EQ(got.size(), 41u);
  for (std::size_t k = 0, i = 0; k < got.size(); ++k) {
    if (k == 20) {
      EXPECT_EQ(got[k], std::vector<std::byte>(500, std::byte{0xee}));
      continue;
    }
    std::vector<std::byte> want = store[2 * i];
    want.insert(want.end(), store[2 * i + 1].begin(), store[2 * i + 1].end());
    EXPECT_EQ(got[k], want) << "message " << k;
    ++i;
  }
  EXPECT_GT(client.stats().retransmitted_frames, 0u);
  EXPECT_EQ(client.send_buffered_bytes(), 0u);
  EXPECT_TRUE(client.has_released());
  // Returned in order, each once, in two polls.
  const std::size_t first = client.poll_released(std::span<uint64_t>(tokens, 30));
  ASSERT_EQ(first, 30u);
  const std::size_t rest = client.poll_released(std::span<uint64_t>(tokens + 30, 98));
  ASSERT_EQ(first + rest, 80u);
  for (uint64_t i = 0; i < 80; ++i) EXPECT_EQ(tokens[i], i);
  EXPECT_FALSE(client.has_released());
  EXPECT_EQ(client.poll_released(tokens), 0u);
}

// Closing ends every reference: aborted pieces come back at once (their
// messages are SendErrors), and release_all_pieces() does the same for an
// open connection about to be destroyed.
TEST(connection, pieces_come_back_when_the_connection_ends) {
  time_ns now = 0;
  std::vector<std::byte> bytes(4000, std::byte{7});
  uint64_t tokens[16];
  for (int variant = 0; variant < 2; ++variant) {
    connection client(client_cfg({1}), now);
    connection s1(server_cfg(1), now);
    ASSERT_EQ(client.open_stream(0, stream_mode::bytes, ordering::fifo), status::ok);
    connect(client, {&s1}, now);
    for (uint64_t i = 0; i < 4; ++i) {
      const connection::send_piece p{std::span<const std::byte>(bytes).subspan(i * 1000, 1000), 10 + i};
      ASSERT_EQ(client.send_pieces(0, {&p, 1}, {}, now), status::ok);
    }
    client.flush();
    std::vector<std::byte> buf(1500);
    while (client.poll_transmit(buf, now).bytes) {
    }
    EXPECT_EQ(client.poll_released(tokens), 0u);
    if (variant == 0)
      client.abort(error_code::application, "stop", now);
    else
      client.release_all_pieces(now);
    EXPECT_TRUE(client.is_closed());
    ASSERT_EQ(client.poll_released(tokens), 4u);
    for (uint64_t i = 0; i < 4; ++i) EXPECT_EQ(tokens[i], 10 + i);
    // Nothing more is built from them.
    client.on_expiry(now + 1'000'000'000);
    for (transmit t; (t = client.poll_transmit(buf, now + 1'000'000'000)).bytes;) {
      EXPECT_LT(t.bytes, 200u) << "only a CLOSE may leave";
    }
  }
}

TEST(connection, send_pieces_checks_like_send) {
  time_ns now = 0;
  connection client(client_cfg({1}), now);
  ASSERT_EQ(client.open_stream(0, stream_mode::message, ordering::fifo), status::ok);
  std::vector<std::byte> big((1 << 16) + 1);
  const connection::send_piece too_big{big, 1};
  EXPECT_EQ(client.send_pieces(0, {&too_big, 1}, {}, now), status::too_large);
  EXPECT_EQ(client.send_pieces(0, {}, {}, now), status::invalid);  // an empty message
  const connection::send_piece small{std::span<const std::byte>(big).first(10), 1};
  EXPECT_EQ(client.send_pieces(3, {&small, 1}, {}, now), status::bad_stream);
  // The window (64 KiB) fills: would_block, and nothing is referenced.
  std::vector<std::byte> half(1 << 15);
  const connection::send_piece h{half, 2};
  EXPECT_EQ(client.send_pieces(0, {&h, 1}, {}, now), status::ok);
  EXPECT_EQ(client.send_pieces(0, {&h, 1}, {}, now), status::ok);
  EXPECT_EQ(client.send_pieces(0, {&h, 1}, {}, now), status::would_block);
  client.release_all_pieces(now);
  uint64_t tokens[8];
  EXPECT_EQ(client.poll_released(tokens), 2u);
}

// A caller that cannot always poll at once (mtpd serving a slow
// application): zero copy while it takes the data, keep_packet_data()
// for what it left, so nothing it polls later points into a freed packet.
TEST(connection, kept_packet_data_outlives_the_packet) {
  time_ns now = 0;
  connection client(client_cfg({1}), now);
  connection_config sc = server_cfg(1);
  sc.zero_copy_delivery = false;
  connection s1(sc, now);
  s1.set_zero_copy_delivery(true);
  ASSERT_EQ(client.open_stream(0, stream_mode::message, ordering::fifo), status::ok);
  connect(client, {&s1}, now);
  for (uint8_t i = 0; i < 30; ++i) {
    std::vector<std::byte> m(200, std::byte{i});
    ASSERT_EQ(client.send(0, m, now), status::ok);
  }
  client.flush();
  std::vector<std::byte> buf(1500);
  std::vector<std::vector<std::byte>> got;
  std::size_t in_place = 0, packets = 0;
  for (transmit t; (t = client.poll_transmit(buf, now)).bytes;) {
    ++packets;
    s1.on_packet({buf.data(), t.bytes}, now);
    // Takes one event at once (in place), leaves the rest.
    event e;
    if (s1.poll_event(e) && e.type == event_type::received) {
      in_place += e.in_packet;
      got.emplace_back(e.data.begin(), e.data.end());
    }
    s1.keep_packet_data();
    std::fill(buf.begin(), buf.end(), std::byte{0xdd});  // the packet is gone
  }
  ASSERT_GE(packets, 4u);
  // The first packet's messages were delivered in place (zero copy resumes
  // once the caller has caught up: the others queue behind them).
  EXPECT_GE(in_place, 1u);
  std::size_t kept = 0;
  for (event e; s1.poll_event(e);)
    if (e.type == event_type::received) {
      EXPECT_FALSE(e.in_packet);
      kept += e.arena_end != 0;
      got.emplace_back(e.data.begin(), e.data.end());
    }
  EXPECT_GE(kept, 3u);  // the rest of the first packet, copied out of it
  ASSERT_EQ(got.size(), 30u);
  for (std::size_t i = 0; i < got.size(); ++i)
    EXPECT_EQ(got[i], std::vector<std::byte>(200, std::byte{static_cast<uint8_t>(i)})) << "message " << i;
  // Turned off, nothing points into packets.
  s1.set_zero_copy_delivery(false);
  for (uint8_t i = 0; i < 5; ++i) {
    std::vector<std::byte> m(100, std::byte{i});
    ASSERT_EQ(client.send(0, m, now), status::ok);
  }
  client.flush();
  std::size_t later = 0;
  for (transmit t; (t = client.poll_transmit(buf, now)).bytes;) {
    s1.on_packet({buf.data(), t.bytes}, now);
    for (event e; s1.poll_event(e);)
      if (e.type == event_type::received) {
        EXPECT_FALSE(e.in_packet);
        ++later;
      }
  }
  EXPECT_EQ(later, 5u);
}

// A lent datagram is read when its packet is built, and handed back then
// (or when the connection drops it unsent).
TEST(connection, lent_datagrams_come_back_once_sent_or_dropped) {
  time_ns now = 0;
  connection client(client_cfg({1}), now);
  connection s1(server_cfg(1), now);
  connect(client, {&s1}, now);
  std::vector<std::vector<std::byte>> lent;
  for (uint8_t i = 0; i < 3; ++i) lent.emplace_back(100 + i, std::byte{i});
  for (uint64_t i = 0; i < 3; ++i) ASSERT_EQ(client.send_datagram_piece({lent[i], 50 + i}, now), status::ok);
  uint64_t tokens[8];
  EXPECT_EQ(client.poll_released(tokens), 0u);
  std::vector<std::byte> buf(1500);
  for (transmit t; (t = client.poll_transmit(buf, now)).bytes;) {
    s1.on_packet({buf.data(), t.bytes}, now);
    collect(s1);
  }
  ASSERT_EQ(client.poll_released(tokens), 3u);
  for (uint64_t i = 0; i < 3; ++i) EXPECT_EQ(tokens[i], 50 + i);
  std::size_t got = 0;
  for (const auto &c : drain(s1))
    if (c.e.type == event_type::datagram) {
      ASSERT_LT(got, 3u);
      EXPECT_EQ(c.data, lent[got]);
      ++got;
    }
  EXPECT_EQ(got, 3u);
  // Queued, never sent: back when the connection ends.
  ASSERT_EQ(client.send_datagram_piece({lent[0], 77}, now), status::ok);
  client.abort(error_code::application, "stop", now);
  ASSERT_EQ(client.poll_released(tokens), 1u);
  EXPECT_EQ(tokens[0], 77u);
}

namespace {
// A message's bytes: both its number and each byte's position show, so a
// piece out of place or from another message does not compare equal.
std::vector<std::byte> patterned(std::size_t bytes, uint8_t seed) {
  std::vector<std::byte> m(bytes);
  for (std::size_t j = 0; j < bytes; ++j) m[j] = static_cast<std::byte>(seed * 31 + j * 7 + (j >> 8));
  return m;
}

// The STREAM frames a packet carries (their data points into it).
std::vector<stream_frame> stream_frames_of(std::span<const std::byte> p) {
  std::vector<stream_frame> out;
  packet_header h;
  std::span<const std::byte> frames;
  if (parse_packet(p, h, frames) != parse_status::ok) return out;
  frame_reader rd(frames);
  for (frame f; !rd.done() && rd.next(f) == parse_status::ok;)
    if (f.type == frame_type::stream) out.push_back(f.stream);
  return out;
}

// One message as a receiver saw it: its pieces in arrival order.
struct piece_seen {
  uint64_t offset = 0;
  std::size_t bytes = 0;
  bool in_packet = false, end_of_message = false;
};
struct message_seen {
  uint64_t start = 0;
  std::vector<std::byte> data;
  std::vector<piece_seen> pieces;
  bool abandoned = false;
};

// Puts the Received events of stream 0 back together into messages,
// checking on the way that each piece starts where the one before ended
// (no gap, overlap or reordering), and that a message ends only with its
// end_of_message piece or an abandoned event (empty, end_of_message).
std::vector<message_seen> messages_seen(const std::vector<copied_event> &ev) {
  std::vector<message_seen> out;
  bool open = false;  // a message is being gathered
  uint64_t next = 0;
  bool next_known = true;  // after an abandoned message, the next starts past its end
  for (const auto &c : ev) {
    const event &e = c.e;
    if (e.type != event_type::received || e.stream_id != 0) continue;
    if (e.abandoned) {
      EXPECT_TRUE(open) << "abandoned at " << e.offset << " with no message begun";
      EXPECT_TRUE(c.data.empty());
      EXPECT_TRUE(e.end_of_message);
      EXPECT_EQ(e.offset, next) << "abandoned where the fragments did not end";
      if (open) out.back().abandoned = true;
      open = false;
      next_known = false;
      continue;
    }
    if (next_known)
      EXPECT_EQ(e.offset, next) << "a piece not following the one before";
    else
      EXPECT_GT(e.offset, next) << "a piece of the abandoned message after it was abandoned";
    if (!open) {
      out.emplace_back();
      out.back().start = e.offset;
      open = true;
    }
    message_seen &m = out.back();
    m.data.insert(m.data.end(), c.data.begin(), c.data.end());
    m.pieces.push_back({e.offset, c.data.size(), e.in_packet, e.end_of_message});
    next = e.offset + c.data.size();
    next_known = true;
    if (e.end_of_message) open = false;
  }
  EXPECT_FALSE(open) << "the last message never ended";
  return out;
}
}  // namespace

// in_place_fragments_max_bytes: 1200 B messages straddle 1400 B packets;
// in order, each comes fragment by fragment straight from its packets
// (in place, end_of_message on the last). A message larger than the limit,
// or a limit of 0, keeps the old path: whole messages only.
TEST(connection, messages_spanning_packets_come_in_place_fragment_by_fragment) {
  for (const uint32_t limit : {2048u, 1000u, 0u}) {
    SCOPED_TRACE("in_place_fragments_max_bytes " + std::to_string(limit));
    time_ns now = 1'000'000;
    connection client(client_cfg({1}), now);
    auto sc = server_cfg(1);
    sc.in_place_fragments_max_bytes = limit;
    connection s1(sc, now);
    ASSERT_EQ(client.open_stream(0, stream_mode::message, ordering::fifo), status::ok);
    connect(client, {&s1}, now);
    const std::size_t count = 24, size = 1200;
    for (uint8_t i = 0; i < count; ++i) ASSERT_EQ(client.send(0, patterned(size, i), now), status::ok);
    client.flush();
    for (int step = 0; step < 20; ++step) {
      exchange(client, {&s1}, now);
      now += 2'000'000;
      s1.on_expiry(now);
      client.on_expiry(now);
    }
    const auto got = messages_seen(drain(s1));
    ASSERT_EQ(got.size(), count);
    std::size_t fragmented = 0, fragments = 0, from_buffer = 0;
    for (std::size_t i = 0; i < count; ++i) {
      SCOPED_TRACE("message " + std::to_string(i));
      const message_seen &m = got[i];
      EXPECT_EQ(m.start, i * size);
      EXPECT_FALSE(m.abandoned);
      EXPECT_EQ(m.data, patterned(size, static_cast<uint8_t>(i)));
      for (std::size_t k = 0; k < m.pieces.size(); ++k) {
        from_buffer += !m.pieces[k].in_packet;
        EXPECT_EQ(m.pieces[k].end_of_message, k + 1 == m.pieces.size()) << "piece " << k;
      }
      if (m.pieces.size() < 2) continue;
      if (limit >= size) {
        // Lossless and in order: every fragment straight from its packet.
        ++fragmented;
        fragments += m.pieces.size();
        for (std::size_t k = 0; k < m.pieces.size(); ++k) EXPECT_TRUE(m.pieces[k].in_packet) << "fragment " << k;
      } else {
        // Old path: a message in several pieces is one read from the
        // buffer (split where its chunks are), never in place.
        for (std::size_t k = 0; k < m.pieces.size(); ++k) EXPECT_FALSE(m.pieces[k].in_packet) << "piece " << k;
      }
    }
    EXPECT_EQ(s1.stats().messages_delivered, count);
    EXPECT_EQ(s1.stats().messages_abandoned, 0u);
    EXPECT_EQ(client.stats().retransmitted_frames, 0u);
    if (limit >= size) {
      // Nearly every message straddles a packet boundary.
      EXPECT_GE(fragmented, count / 2);
      EXPECT_EQ(s1.stats().fragments_in_place, fragments);
      EXPECT_EQ(from_buffer, 0u);
    } else {
      EXPECT_EQ(s1.stats().fragments_in_place, 0u);
      // The straddling messages wait in the buffer until whole.
      EXPECT_GE(from_buffer, count / 2);
    }
    drain(client);  // leaves nothing in the inbox for a later connection at this address
  }
}

// A message coming in place loses its second fragment: the first came in
// place; once the repair fills the gap, the rest comes from the buffer
// (not in place), intact and contiguous, before anything after it, and
// the later messages follow in order. Second case: a message over five
// packets loses its second and third fragments while the next messages
// arrive whole; its rest comes in two goes as the repairs arrive, and
// nothing of the messages after it comes in between.
TEST(connection, a_lost_fragment_brings_the_rest_of_its_message_from_the_buffer) {
  struct scenario {
    std::vector<std::size_t> sizes;
    std::size_t lost_packets;  // from the one with the victim's second fragment on
  };
  const scenario cases[] = {{std::vector<std::size_t>(8, 1200), 1},
                            {{1000, 5000, 1200, 1200, 1200, 1200, 1200}, 2}};
  for (const scenario &sc_case : cases) {
    SCOPED_TRACE("losing " + std::to_string(sc_case.lost_packets) + " packet(s)");
    const auto &sizes = sc_case.sizes;
    time_ns now = 1'000'000;
    connection client(client_cfg({1}), now);
    auto sc = server_cfg(1);
    sc.in_place_fragments_max_bytes = 1u << 16;
    connection s1(sc, now);
    ASSERT_EQ(client.open_stream(0, stream_mode::message, ordering::fifo), status::ok);
    connect(client, {&s1}, now);
    std::vector<uint64_t> starts;
    uint64_t total = 0;
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      starts.push_back(total);
      total += sizes[i];
      ASSERT_EQ(client.send(0, patterned(sizes[i], static_cast<uint8_t>(i)), now), status::ok);
    }
    client.flush();
    std::vector<std::vector<std::byte>> packets;
    std::vector<std::byte> buf(1500);
    for (transmit t; (t = client.poll_transmit(buf, now)).bytes;)
      packets.emplace_back(buf.begin(), buf.begin() + t.bytes);
    uint64_t sent_end = 0;
    for (const auto &p : packets)
      for (const stream_frame &f : stream_frames_of(p))
        sent_end = std::max<uint64_t>(sent_end, f.offset + f.data.size());
    ASSERT_EQ(sent_end, total) << "all in the first flight";
    // The victim: the first packet carrying a message's second fragment
    // (its first fragment came in an earlier packet).
    std::size_t lost = packets.size();
    uint64_t victim = 0;
    for (std::size_t i = 1; i < packets.size() && lost == packets.size(); ++i)
      for (const stream_frame &f : stream_frames_of(packets[i]))
        if (f.message && f.offset > f.msg_start) {
          lost = i;
          victim = f.msg_start;
          break;
        }
    ASSERT_LT(lost + sc_case.lost_packets, packets.size());
    const std::size_t vi = static_cast<std::size_t>(std::find(starts.begin(), starts.end(), victim) - starts.begin());
    ASSERT_LT(vi + 2, sizes.size()) << "messages after the victim";
    if (sc_case.lost_packets > 1) {
      // Only the victim's middle is lost: its end and the next messages
      // arrive, so its rest can come only in two goes.
      for (std::size_t i = lost; i < lost + sc_case.lost_packets; ++i)
        for (const stream_frame &f : stream_frames_of(packets[i]))
          ASSERT_TRUE(f.msg_start == victim && f.offset > victim) << "packet " << i << " carries more";
      bool end_follows = false;
      for (const stream_frame &f : stream_frames_of(packets[lost + sc_case.lost_packets]))
        end_follows |= f.msg_start == victim;
      ASSERT_TRUE(end_follows);
    }
    for (std::size_t i = 0; i < packets.size(); ++i)
      if (i < lost || i >= lost + sc_case.lost_packets) {
        s1.on_packet(packets[i], now);
        collect(s1);
      }
    EXPECT_GT(s1.stats().fragments_in_place, 0u);
    EXPECT_EQ(s1.stats().messages_delivered, vi) << "nothing after the victim before its repair";
    for (int step = 0; step < 40; ++step) {
      now += 5'000'000;
      s1.on_expiry(now);
      client.on_expiry(now);
      exchange(client, {&s1}, now);
    }
    EXPECT_GT(client.stats().retransmitted_frames, 0u);
    const auto got = messages_seen(drain(s1));
    ASSERT_EQ(got.size(), sizes.size());
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      SCOPED_TRACE("message " + std::to_string(i));
      EXPECT_EQ(got[i].start, starts[i]);
      EXPECT_FALSE(got[i].abandoned);
      EXPECT_EQ(got[i].data, patterned(sizes[i], static_cast<uint8_t>(i)));
    }
    const message_seen &v = got[vi];
    ASSERT_GE(v.pieces.size(), 2u);
    EXPECT_TRUE(v.pieces.front().in_packet) << "the first fragment came in place";
    EXPECT_FALSE(v.pieces.front().end_of_message);
    EXPECT_LT(v.pieces.front().bytes, sizes[vi]);
    for (std::size_t k = 1; k < v.pieces.size(); ++k) {
      EXPECT_FALSE(v.pieces[k].in_packet) << "the rest from the buffer, piece " << k;
      EXPECT_EQ(v.pieces[k].end_of_message, k + 1 == v.pieces.size()) << "piece " << k;
    }
    // The messages before it were all in place (lossless so far).
    for (std::size_t i = 0; i < vi; ++i)
      for (const piece_seen &p : got[i].pieces) EXPECT_TRUE(p.in_packet) << "message " << i;
    EXPECT_EQ(s1.stats().messages_delivered, sizes.size());
    EXPECT_EQ(s1.stats().messages_abandoned, 0u);
    drain(client);
  }
}

// A partially reliable message (no retransmission) coming in place loses
// its later fragment for good: the sender gives it up and its FORWARD
// skips the rest, so the receiver, holding the first fragment, gets an
// empty abandoned Received; the reliable messages around it all arrive.
TEST(connection, a_message_in_fragments_whose_rest_is_skipped_is_abandoned) {
  time_ns now = 1'000'000;
  connection client(client_cfg({1}), now);
  auto sc = server_cfg(1);
  sc.in_place_fragments_max_bytes = 1u << 16;
  connection s1(sc, now);
  ASSERT_EQ(client.open_stream(0, stream_mode::message, ordering::fifo), status::ok);
  connect(client, {&s1}, now);
  // 1000 B, then the partial one (1200 B: it straddles the first packet's
  // end), then four reliable 1200 B messages.
  std::vector<std::vector<std::byte>> msgs = {patterned(1000, 0)};
  for (uint8_t i = 1; i <= 5; ++i) msgs.push_back(patterned(1200, i));
  message_options partial;
  partial.rel = reliability::partial;
  partial.max_retransmissions = 0;
  const uint64_t a_start = 1000, a_end = 2200;
  for (std::size_t i = 0; i < msgs.size(); ++i) {
    uint64_t id = 99;
    ASSERT_EQ(client.send(0, msgs[i], i == 1 ? partial : message_options{}, now, &id), status::ok);
    EXPECT_EQ(id, i);
  }
  client.flush();
  // Every packet with a later fragment of the partial message is lost.
  std::vector<std::byte> buf(1500);
  std::size_t dropped = 0;
  for (int step = 0; step < 40; ++step) {
    client.on_expiry(now);
    s1.on_expiry(now);
    for (int r = 0; r < 20; ++r) {
      bool any = false;
      for (transmit t; (t = client.poll_transmit(buf, now)).bytes;) {
        any = true;
        bool rest_of_a = false;
        for (const stream_frame &f : stream_frames_of({buf.data(), t.bytes}))
          rest_of_a |= f.message && f.msg_start == a_start && f.offset > a_start;
        if (rest_of_a) {
          ++dropped;
          continue;
        }
        s1.on_packet({buf.data(), t.bytes}, now);
        collect(s1);
      }
      for (transmit t; (t = s1.poll_transmit(buf, now)).bytes;) {
        any = true;
        client.on_packet({buf.data(), t.bytes}, now);
        collect(client);
      }
      if (!any) break;
    }
    now += 2'000'000;
  }
  EXPECT_GE(dropped, 1u);
  const auto got = messages_seen(drain(s1));
  ASSERT_EQ(got.size(), msgs.size());
  uint64_t start = 0;
  for (std::size_t i = 0; i < msgs.size(); ++i) {
    SCOPED_TRACE("message " + std::to_string(i));
    EXPECT_EQ(got[i].start, start);
    start += msgs[i].size();
    if (i == 1) continue;
    EXPECT_FALSE(got[i].abandoned);
    EXPECT_EQ(got[i].data, msgs[i]);
  }
  const message_seen &a = got[1];
  EXPECT_TRUE(a.abandoned);
  ASSERT_EQ(a.pieces.size(), 1u) << "the first fragment only";
  EXPECT_TRUE(a.pieces[0].in_packet);
  EXPECT_FALSE(a.pieces[0].end_of_message);
  EXPECT_GT(a.pieces[0].bytes, 0u);
  EXPECT_LT(a.pieces[0].bytes, a_end - a_start);
  EXPECT_TRUE(std::equal(a.data.begin(), a.data.end(), msgs[1].begin())) << "the first fragment's bytes";
  EXPECT_EQ(s1.stats().messages_abandoned, 1u);
  EXPECT_EQ(s1.stats().messages_delivered, msgs.size() - 1);
  EXPECT_GT(s1.stats().fragments_in_place, 0u);
  std::size_t expired = 0;
  for (const auto &c : drain(client))
    if (c.e.type == event_type::expired) {
      ++expired;
      EXPECT_EQ(c.e.message_id, 1u);
    }
  EXPECT_EQ(expired, 1u);
}

// The member sending a message in fragments leaves before its rest came:
// its fragments are abandoned (an empty abandoned Received), reported
// before the member's departure.
TEST(connection, a_message_in_fragments_is_abandoned_when_its_member_leaves) {
  time_ns now = 1'000'000;
  auto cc = client_cfg({1, 2});
  cc.threshold = 1;
  cc.in_place_fragments_max_bytes = 1u << 16;
  connection client(cc, now);
  connection s1(server_cfg(1), now), s2(server_cfg(2), now);
  ASSERT_EQ(s1.open_stream(0, stream_mode::message, ordering::fifo), status::ok);
  connect(client, {&s1, &s2}, now);
  const auto m0 = patterned(1000, 0), m1 = patterned(1200, 1);
  ASSERT_EQ(s1.send(0, m0, now), status::ok);
  ASSERT_EQ(s1.send(0, m1, now), status::ok);
  s1.flush();
  std::vector<std::vector<std::byte>> packets;
  std::vector<std::byte> buf(1500);
  for (transmit t; (t = s1.poll_transmit(buf, now)).bytes;) packets.emplace_back(buf.begin(), buf.begin() + t.bytes);
  ASSERT_GE(packets.size(), 2u);
  client.on_packet(packets[0], now);  // m0 and m1's first fragment; the rest is lost
  collect(client);
  EXPECT_EQ(client.stats().fragments_in_place, 1u);
  s1.abort(error_code::application, "gone", now);
  for (transmit t; (t = s1.poll_transmit(buf, now)).bytes;) {
    client.on_packet({buf.data(), t.bytes}, now);
    collect(client);
  }
  const auto ev = drain(client);
  const auto got = messages_seen(ev);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_FALSE(got[0].abandoned);
  EXPECT_EQ(got[0].data, m0);
  EXPECT_TRUE(got[1].abandoned);
  ASSERT_EQ(got[1].pieces.size(), 1u);
  EXPECT_TRUE(got[1].pieces[0].in_packet);
  EXPECT_LT(got[1].data.size(), m1.size());
  EXPECT_TRUE(std::equal(got[1].data.begin(), got[1].data.end(), m1.begin()));
  // The abandoned event (member 1) comes before member 1's departure.
  std::ptrdiff_t abandoned_at = -1, left_at = -1;
  for (std::size_t i = 0; i < ev.size(); ++i) {
    if (ev[i].e.type == event_type::received && ev[i].e.abandoned) {
      EXPECT_EQ(ev[i].e.member, 1u);
      abandoned_at = static_cast<std::ptrdiff_t>(i);
    }
    if (ev[i].e.type == event_type::member_left) {
      EXPECT_EQ(ev[i].e.member, 1u);
      left_at = static_cast<std::ptrdiff_t>(i);
    }
  }
  ASSERT_GE(abandoned_at, 0);
  ASSERT_GE(left_at, 0);
  EXPECT_LT(abandoned_at, left_at);
  EXPECT_EQ(client.stats().messages_abandoned, 1u);
  EXPECT_EQ(client.stats().messages_delivered, 1u);
}
