// SPDX-License-Identifier: BSD-3-Clause
// Each bound of protocol.md 3.5 and 3.6 (what a stranger, or a peer that
// lies, can make a connection do), one test each: memory of an idle
// session, the opening rule, the anti-amplification limit, the packet
// number window, ACKs of packets never sent, FORWARD and STREAM beyond
// credit, the received-range table under hostile spreads, version
// negotiation, and draining after CLOSE.
//
// This binary counts every heap allocation (operator new below), so the
// memory test measures what an accepted session really costs, not what
// the engine says it does.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <new>
#include <vector>

#include "connection.h"
#include "crc32c.h"

namespace {
std::atomic<int64_t> heap_live{0};
}  // namespace

// Every allocation carries its size in front, so frees can be counted.
// (GCC cannot see that these new and delete match.)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void *operator new(std::size_t n) {
  void *p = std::malloc(n + 16);
  if (p == nullptr) throw std::bad_alloc();
  *static_cast<std::size_t *>(p) = n;
  heap_live += static_cast<int64_t>(n);
  return static_cast<char *>(p) + 16;
}
void operator delete(void *p) noexcept {
  if (p == nullptr) return;
  char *base = static_cast<char *>(p) - 16;
  heap_live -= static_cast<int64_t>(*reinterpret_cast<std::size_t *>(base));
  std::free(base);
}
void operator delete(void *p, std::size_t) noexcept { operator delete(p); }
void *operator new(std::size_t n, std::align_val_t a) {
  const std::size_t align = static_cast<std::size_t>(a);
  void *raw = std::malloc(n + align + 16);
  if (raw == nullptr) throw std::bad_alloc();
  uintptr_t p = (reinterpret_cast<uintptr_t>(raw) + 16 + align - 1) & ~(align - 1);
  reinterpret_cast<std::size_t *>(p)[-1] = n;
  reinterpret_cast<void **>(p)[-2] = raw;
  heap_live += static_cast<int64_t>(n);
  return reinterpret_cast<void *>(p);
}
void operator delete(void *p, std::align_val_t) noexcept {
  if (p == nullptr) return;
  heap_live -= static_cast<int64_t>(reinterpret_cast<std::size_t *>(p)[-1]);
  std::free(reinterpret_cast<void **>(p)[-2]);
}
void operator delete(void *p, std::size_t, std::align_val_t a) noexcept { operator delete(p, a); }

using namespace mtp::core;

namespace {

constexpr uint64_t cid = 77;
constexpr uint32_t client_id = 100;

connection_config client_cfg(std::vector<uint32_t> members) {
  connection_config c;
  c.connection_id = cid;
  c.local_id = client_id;
  c.members = std::move(members);
  c.pacing = false;
  c.seed = 1;
  return c;
}

connection_config server_cfg(uint32_t id) {
  connection_config c;
  c.connection_id = cid;
  c.local_id = id;
  c.side = role::server;
  c.members = {client_id};
  c.seed = 2;
  return c;
}

std::vector<event> events(connection &c) {
  std::vector<event> out;
  for (event e; c.poll_event(e);) out.push_back(e);
  return out;
}

bool has(const std::vector<event> &ev, event_type t) {
  for (const event &e : ev)
    if (e.type == t) return true;
  return false;
}

uint64_t drops(const connection &c, drop_reason r) { return c.stats().drops[static_cast<std::size_t>(r)]; }

// A packet from `sender` with whatever frames `add` appends.
template <class Add>
std::vector<std::byte> packet(uint32_t sender, uint64_t pn, Add add, uint8_t flags = flag_crc) {
  std::vector<std::byte> out(1400);
  packet_header h;
  h.sender_id = sender;
  h.connection_id = cid;
  h.packet_number = pn;
  h.flags = flags;
  packet_builder b(out, h);
  add(b);
  out.resize(b.finish());
  return out;
}

std::vector<std::byte> opener(uint64_t pn) {
  return packet(client_id, pn, [](packet_builder &b) { b.append_ping(); }, flag_crc | flag_opening);
}

std::vector<std::pair<std::vector<std::byte>, uint64_t>> transmit_all(connection &c, time_ns now) {
  std::vector<std::pair<std::vector<std::byte>, uint64_t>> out;
  std::vector<std::byte> buf(1500);
  for (transmit t; (t = c.poll_transmit(buf, now)).bytes;) out.emplace_back(std::vector<std::byte>(buf.begin(), buf.begin() + static_cast<long>(t.bytes)), t.member_mask);
  return out;
}

uint64_t pn_of(const std::vector<std::byte> &p) {
  uint64_t v = 0;
  for (int i = 16; i < 24; ++i) v = v << 8 | std::to_integer<uint64_t>(p[static_cast<std::size_t>(i)]);
  return v;
}

// Everything a connection sends to its peer, carried over, both ways, until quiet.
void exchange(connection &client, connection &server, time_ns now) {
  for (int round = 0; round < 20; ++round) {
    bool any = false;
    for (auto &[p, mask] : transmit_all(client, now)) {
      any = true;
      server.on_packet(p, now);
    }
    for (auto &[p, mask] : transmit_all(server, now)) {
      any = true;
      client.on_packet(p, now);
    }
    if (!any) break;
  }
}

// Timers, packets and events in 2 ms steps until every byte the client
// queued is stable (at most 200 steps); returns the time reached.
time_ns run_until_stable(connection &client, connection &server, time_ns now) {
  for (int step = 0; step < 200 && client.send_buffered_bytes(); ++step) {
    now += 2'000'000;
    client.on_expiry(now);
    server.on_expiry(now);
    exchange(client, server, now);
    events(client);
    events(server);
  }
  return now;
}

}  // namespace

// protocol.md 3.6, operations.md "Session memory": a session accepted for
// an opening packet, with no data, costs at most 16 KiB, all of it heap.
TEST(hardening, an_accepted_session_with_no_data_costs_at_most_16_kib) {
  session_memory memory(64u << 20);
  {  // once, for whatever the library allocates on first use
    connection warm(server_cfg(1), 0);
    warm.on_packet(opener(5), 0);
  }
  auto cfg = server_cfg(1);
  cfg.memory = &memory;
  const int64_t before = heap_live.load();
  auto server = std::make_unique<connection>(cfg, 1'000'000);
  server->on_packet(opener(5), 1'000'000);
  events(*server);
  EXPECT_FALSE(transmit_all(*server, 1'000'000).empty());  // it answered (an ACK and its own probe)
  const int64_t heap = heap_live.load() - before;
  EXPECT_LE(heap, 16 * 1024) << "heap bytes held by one idle accepted session";
  EXPECT_LE(server->memory_bytes(), 16u * 1024);
  EXPECT_EQ(memory.budget.used(), server->memory_bytes());
  std::printf("an accepted idle session holds %lld heap bytes (engine accounts %llu)\n", static_cast<long long>(heap),
              static_cast<unsigned long long>(server->memory_bytes()));
  server.reset();
  EXPECT_EQ(memory.budget.used(), 0u);
  EXPECT_EQ(heap_live.load() - before, 0) << "everything given back";
}

// Memory follows the data: a megabyte through one stream takes chunks as
// it arrives and gives them back as it is delivered and released.
TEST(hardening, memory_grows_with_data_and_returns_when_released) {
  session_memory cmem(64u << 20), smem(64u << 20);
  auto ccfg = client_cfg({1});
  ccfg.memory = &cmem;
  auto scfg = server_cfg(1);
  scfg.memory = &smem;
  time_ns now = 1'000'000;
  connection client(ccfg, now), server(scfg, now);
  exchange(client, server, now);
  ASSERT_EQ(client.open_stream(0, stream_mode::message, ordering::fifo), status::ok);
  const uint64_t idle = cmem.budget.used();
  std::vector<std::byte> msg(60000, std::byte{7});
  for (int i = 0; i < 16; ++i) ASSERT_EQ(client.send(0, msg, now), status::ok);
  EXPECT_GT(cmem.budget.used(), idle + 16 * 60000u) << "the queued data is held";
  now = run_until_stable(client, server, now);
  EXPECT_EQ(client.send_buffered_bytes(), 0u);
  // Tables that grew for the burst shrink at the next timer once idle.
  now += 200'000'000;
  client.on_expiry(now);
  server.on_expiry(now);
  exchange(client, server, now);
  EXPECT_LE(cmem.budget.used(), idle + 4096) << "released data gave its memory back";
  EXPECT_LE(smem.budget.used(), 64u * 1024) << "delivered data gave its memory back";
}

// protocol.md 5.1: only a client's first flight opens a connection.
TEST(hardening, only_an_opening_packet_opens_a_connection) {
  EXPECT_TRUE(is_opening_packet(opener(1)));
  // No O flag: a mid-connection packet.
  EXPECT_FALSE(is_opening_packet(packet(client_id, 1, [](packet_builder &b) { b.append_ping(); })));
  // O flag but nothing to acknowledge (ACK only).
  const uint64_t r[2] = {3, 5};
  EXPECT_FALSE(is_opening_packet(packet(client_id, 1, [&](packet_builder &b) { b.append_ack(r, 0); }, flag_crc | flag_opening)));
  // A version negotiation packet.
  std::vector<std::byte> vn(64);
  vn.resize(build_version_negotiation(vn, cid, 9));
  EXPECT_FALSE(is_opening_packet(vn));
  // A corrupted one.
  auto bad = opener(1);
  bad[26] ^= std::byte{1};
  EXPECT_FALSE(is_opening_packet(bad));
  // A malformed frame after a PING.
  auto junk = packet(client_id, 1, [](packet_builder &b) { b.append_ping(); }, flag_crc | flag_opening);
  junk.insert(junk.end() - 4, std::byte{0x10});  // JOIN: reserved
  const uint32_t crc = crc32c({junk.data(), junk.size() - 4});
  for (int i = 0; i < 4; ++i) junk[junk.size() - 4 + static_cast<std::size_t>(i)] = static_cast<std::byte>(crc >> (24 - 8 * i));
  EXPECT_FALSE(is_opening_packet(junk));
}

// protocol.md 3.6: before the client proves its address, a server sends it
// at most three times what it received, whatever its timers want.
TEST(hardening, an_unvalidated_peer_gets_at_most_three_times_what_it_sent) {
  time_ns now = 1'000'000;
  connection server(server_cfg(1), now);
  const auto in = opener(42);
  server.on_packet(in, now);
  std::size_t sent = 0;
  for (int step = 0; step < 300; ++step) {  // 3 s of timers: ACK, probes, heartbeats
    for (auto &[p, mask] : transmit_all(server, now)) sent += p.size();
    now += 10'000'000;
    server.on_expiry(now);
    events(server);
  }
  EXPECT_GT(sent, 0u);
  EXPECT_LE(sent, 3 * in.size()) << "a " << in.size() << " B spoofed opener made the server send " << sent << " B";
  EXPECT_GT(server.stats().sends_blocked_by_amplification, 0u);
  EXPECT_FALSE(server.member_validated(0));
  // The session of a peer that never answered ends (member timeout) and drains.
  EXPECT_TRUE(server.finished());
}

// protocol.md 3.2, 3.5: a packet number far ahead of the largest received
// is dropped and changes nothing; the real ones keep flowing.
TEST(hardening, a_packet_number_far_ahead_is_dropped) {
  time_ns now = 1'000'000;
  auto cfg = server_cfg(1);
  connection server(cfg, now);
  server.on_packet(opener(1000), now);
  server.on_packet(packet(client_id, 1000 + cfg.pn_window + 1, [](packet_builder &b) { b.append_ping(); }), now);
  EXPECT_EQ(drops(server, drop_reason::pn_out_of_window), 1u);
  server.on_packet(packet(client_id, uint64_t{1} << 61, [](packet_builder &b) { b.append_ping(); }), now);
  EXPECT_EQ(drops(server, drop_reason::pn_out_of_window), 2u);
  server.on_packet(packet(client_id, 1001, [](packet_builder &b) { b.append_ping(); }), now);
  EXPECT_EQ(server.stats().packets_received, 2u) << "the real next packet is taken, not a duplicate";
  EXPECT_EQ(drops(server, drop_reason::duplicate), 0u);
  // At or above 2^62 a packet number cannot even be parsed.
  server.on_packet(packet(client_id, uint64_t{1} << 62, [](packet_builder &b) { b.append_ping(); }), now);
  EXPECT_EQ(drops(server, drop_reason::bad_packet_number), 1u);
}

// protocol.md 4.3: an ACK of a packet never sent to that member is a
// protocol violation. A server closes the connection with the code; a
// client expels the member and the group goes on.
TEST(hardening, an_ack_of_an_unsent_packet_closes_with_protocol_violation) {
  time_ns now = 1'000'000;
  connection server(server_cfg(1), now);
  server.on_packet(opener(1), now);
  events(server);
  const auto out = transmit_all(server, now);
  ASSERT_FALSE(out.empty());
  const uint64_t ours = pn_of(out.back().first);
  const uint64_t r[2] = {ours, ours + 1'000'000};  // far beyond anything sent
  server.on_packet(packet(client_id, 2, [&](packet_builder &b) { b.append_ack(r, 0); }), now);
  EXPECT_EQ(drops(server, drop_reason::protocol_violation), 1u);
  const auto ev = events(server);
  ASSERT_TRUE(has(ev, event_type::connection_error));
  for (const event &e : ev) {
    if (e.type == event_type::connection_error) {
      EXPECT_EQ(e.error_code, static_cast<uint64_t>(error_code::protocol_violation));
    }
  }
  // It says why to the peer.
  const auto close = transmit_all(server, now);
  ASSERT_EQ(close.size(), 1u);
  packet_header h;
  std::span<const std::byte> frames;
  ASSERT_EQ(parse_packet(close[0].first, h, frames), parse_status::ok);
  frame_reader rd(frames);
  frame f;
  ASSERT_EQ(rd.next(f), parse_status::ok);
  ASSERT_EQ(f.type, frame_type::close);
  EXPECT_EQ(f.close.error_code, static_cast<uint64_t>(error_code::protocol_violation));

  // A client with two members: the liar leaves, the other stays.
  connection client(client_cfg({1, 2}), now);
  connection s1(server_cfg(1), now), s2(server_cfg(2), now);
  for (auto &[p, mask] : transmit_all(client, now)) {
    if (mask & 1) s1.on_packet(p, now);
    if (mask & 2) s2.on_packet(p, now);
  }
  for (auto &[p, mask] : transmit_all(s1, now)) client.on_packet(p, now);
  for (auto &[p, mask] : transmit_all(s2, now)) client.on_packet(p, now);
  events(client);
  const uint64_t lie[2] = {0, uint64_t{1} << 40};
  client.on_packet(packet(2, 99, [&](packet_builder &b) { b.append_ack(lie, 0); }), now);
  const auto cev = events(client);
  bool left = false;
  for (const event &e : cev)
    if (e.type == event_type::member_left) {
      EXPECT_EQ(e.member, 2u);
      EXPECT_EQ(e.reason, static_cast<uint32_t>(member_left_reason::protocol_violation));
      left = true;
    }
  EXPECT_TRUE(left);
  EXPECT_FALSE(has(cev, event_type::connection_error));
  EXPECT_TRUE(client.member_live(0));
  EXPECT_FALSE(client.member_live(1));
}

// protocol.md 3.2: packet numbers are skipped at random; a member that
// acknowledges a skipped one acknowledged what it never received.
TEST(hardening, an_ack_of_a_skipped_packet_number_is_caught) {
  time_ns now = 1'000'000;
  auto cfg = client_cfg({1});
  connection client(cfg, now);
  connection server(server_cfg(1), now);
  exchange(client, server, now);
  ASSERT_EQ(client.open_stream(0, stream_mode::message, ordering::fifo), status::ok);
  std::vector<std::byte> msg(100);
  std::vector<uint64_t> pns;
  for (int i = 0; i < 2000 && client.stats().packet_numbers_skipped == 0; ++i) {
    message_options o;
    o.low_latency = true;
    (void)client.send(0, msg, o, now);
    for (auto &[p, mask] : transmit_all(client, now)) {
      pns.push_back(pn_of(p));
      server.on_packet(p, now);
    }
    for (auto &[p, mask] : transmit_all(server, now)) client.on_packet(p, now);
    events(server);
    events(client);
  }
  const uint64_t stable_before = client.stats().messages_stable;
  ASSERT_GT(client.stats().packet_numbers_skipped, 0u);
  // The number after the last packet sent was skipped (the loop stopped
  // at the first skip): an ACK up to it names a number never used.
  const uint64_t skipped = pns.back() + 1;
  const uint64_t r[2] = {pns.front(), skipped};
  client.on_packet(packet(1, 5, [&](packet_builder &b) { b.append_ack(r, 0); }), now);
  EXPECT_EQ(drops(client, drop_reason::protocol_violation), 1u);
  EXPECT_FALSE(client.member_live(0));
  EXPECT_EQ(client.stats().messages_stable, stable_before) << "nothing more counted as stable on a lie";
}

// protocol.md 4.10, 6.5: a FORWARD may skip only bytes its sender could
// have sent; one of 2^62-1 bytes is dropped and the stream goes on.
TEST(hardening, a_forward_beyond_credit_is_dropped_and_the_stream_goes_on) {
  time_ns now = 1'000'000;
  connection client(client_cfg({1}), now);
  connection server(server_cfg(1), now);
  exchange(client, server, now);
  events(server);
  server.on_packet(packet(client_id, 900'000, [](packet_builder &b) {
                     b.append_forward({0, 0, varint_max});
                   }), now);
  EXPECT_EQ(drops(server, drop_reason::flow_control), 1u);
  // Data on the same stream still arrives, in order.
  ASSERT_EQ(client.open_stream(0, stream_mode::message, ordering::fifo), status::ok);
  std::vector<std::byte> msg(300, std::byte{9});
  ASSERT_EQ(client.send(0, msg, now), status::ok);
  client.flush();
  std::size_t got = 0;
  for (auto &[p, mask] : transmit_all(client, now)) {
    server.on_packet(p, now);
    for (const event &e : events(server))
      if (e.type == event_type::received) got += e.data.size();
  }
  EXPECT_EQ(got, msg.size());
}

// protocol.md 6.5: STREAM data beyond the credit granted is dropped,
// never buffered; a stream id beyond max_streams too.
TEST(hardening, stream_data_beyond_credit_or_streams_is_dropped) {
  time_ns now = 1'000'000;
  auto cfg = server_cfg(1);
  connection server(cfg, now);
  server.on_packet(opener(10), now);
  std::vector<std::byte> data(64);
  server.on_packet(packet(client_id, 11, [&](packet_builder &b) {
                     stream_frame s;
                     s.stream_id = 0;
                     s.offset = cfg.stream_buffer_bytes;  // one past the window
                     s.data = data;
                     b.append_stream(s);
                   }), now);
  EXPECT_EQ(drops(server, drop_reason::flow_control), 1u);
  server.on_packet(packet(client_id, 12, [&](packet_builder &b) {
                     stream_frame s;
                     s.stream_id = cfg.max_streams;
                     s.data = data;
                     b.append_stream(s);
                   }), now);
  EXPECT_EQ(drops(server, drop_reason::stream_limit), 1u);
  EXPECT_LE(server.memory_bytes(), 16u * 1024) << "nothing was buffered for either";
}

// protocol.md 3.5: the received-range table stays correct under a hostile
// spread of packet numbers: it forgets the oldest ranges (treated as
// duplicates from then on) and never acknowledges a number not received.
TEST(hardening, the_ack_range_table_stays_correct_under_hostile_spreads) {
  time_ns now = 1'000'000;
  auto cfg = server_cfg(1);
  cfg.max_ack_ranges = 8;
  connection server(cfg, now);
  std::vector<uint64_t> got;
  server.on_packet(opener(100), now);
  got.push_back(100);
  for (uint64_t k = 1; k <= 40; ++k) {  // every other number: 40 isolated ranges
    server.on_packet(packet(client_id, 100 + 2 * k, [](packet_builder &b) { b.append_ping(); }), now);
    got.push_back(100 + 2 * k);
  }
  // Every ACK it sends names only numbers it received.
  for (auto &[p, mask] : transmit_all(server, now)) {
    packet_header h;
    std::span<const std::byte> frames;
    ASSERT_EQ(parse_packet(p, h, frames), parse_status::ok);
    frame_reader rd(frames);
    for (frame f; !rd.done() && rd.next(f) == parse_status::ok;) {
      if (f.type != frame_type::ack) continue;
      ack_range_iter it(f.ack);
      for (uint64_t lo, hi; it.next(lo, hi);)
        for (uint64_t pn = lo; pn <= hi; ++pn)
          EXPECT_NE(std::find(got.begin(), got.end(), pn), got.end()) << "acknowledged " << pn << " never received";
    }
  }
  // A forgotten old number now counts as a duplicate; the newest still work.
  server.on_packet(packet(client_id, 101, [](packet_builder &b) { b.append_ping(); }), now);
  EXPECT_EQ(drops(server, drop_reason::duplicate), 1u);
  server.on_packet(packet(client_id, 181, [](packet_builder &b) { b.append_ping(); }), now);
  EXPECT_EQ(server.stats().packets_received, 42u);
}

// protocol.md 3.3: a member answering with version negotiation that does
// not list version 1 leaves, before it ever accepted.
TEST(hardening, version_negotiation_without_our_version_ends_the_member) {
  time_ns now = 1'000'000;
  connection client(client_cfg({1}), now);
  transmit_all(client, now);
  std::vector<std::byte> vn(64);
  vn.resize(build_version_negotiation(vn, cid, 1));
  vn[16 + 3] = std::byte{7};  // lists version 7 only
  const uint32_t crc = crc32c({vn.data(), vn.size() - 4});
  for (int i = 0; i < 4; ++i) vn[vn.size() - 4 + static_cast<std::size_t>(i)] = static_cast<std::byte>(crc >> (24 - 8 * i));
  client.on_packet(vn, now);
  const auto ev = events(client);
  ASSERT_TRUE(has(ev, event_type::member_left));
  for (const event &e : ev) {
    if (e.type == event_type::member_left) {
      EXPECT_EQ(e.reason, static_cast<uint32_t>(member_left_reason::version_mismatch));
    }
    if (e.type == event_type::connection_error) {
      EXPECT_EQ(e.error_code, static_cast<uint64_t>(error_code::version_mismatch));
    }
  }
  // One that lists version 1 (spurious) changes nothing.
  connection other(client_cfg({1}), now);
  transmit_all(other, now);
  std::vector<std::byte> ok(64);
  ok.resize(build_version_negotiation(ok, cid, 1));
  other.on_packet(ok, now);
  EXPECT_FALSE(has(events(other), event_type::member_left));
}

// protocol.md 5.1: after CLOSE the closer drains, answering a member that
// is still talking with its CLOSE, then finishes; packets then count as
// after_close.
TEST(hardening, close_drains_answers_stragglers_then_finishes) {
  time_ns now = 1'000'000;
  connection client(client_cfg({1}), now);
  connection server(server_cfg(1), now);
  exchange(client, server, now);
  client.close(error_code::no_error, "bye", now);
  const auto out = transmit_all(client, now);
  ASSERT_EQ(out.size(), 1u);  // the CLOSE; lost on the way
  EXPECT_TRUE(client.is_closed());
  EXPECT_FALSE(client.finished());
  // The member, not knowing, sends a heartbeat: it gets the CLOSE again.
  now += 150'000'000;
  server.on_expiry(now);
  const auto straggler = transmit_all(server, now);
  ASSERT_FALSE(straggler.empty());
  for (auto &[p, mask] : straggler) client.on_packet(p, now);
  const auto again = transmit_all(client, now);
  ASSERT_EQ(again.size(), 1u) << straggler.size() << " packets from the member";
  server.on_packet(again[0].first, now);
  EXPECT_TRUE(has(events(server), event_type::closed));
  EXPECT_TRUE(server.is_closed());
  // Both finish once drained.
  for (int i = 0; i < 100 && !(client.finished() && server.finished()); ++i) {
    now += 10'000'000;
    client.on_expiry(now);
    server.on_expiry(now);
  }
  EXPECT_TRUE(client.finished());
  EXPECT_TRUE(server.finished());
  EXPECT_EQ(client.next_expiry(), never);
  const uint64_t after_close = drops(client, drop_reason::after_close);
  client.on_packet(packet(1, 999, [](packet_builder &b) { b.append_ping(); }), now);
  EXPECT_EQ(drops(client, drop_reason::after_close), after_close + 1);
  EXPECT_LE(client.memory_bytes(), 16u * 1024) << "a finished connection holds nothing more";
}

// protocol.md 6.5: each credit is its own limit. A FORWARD one byte past
// the stream window is dropped even though the connection window (16
// times larger) would take it; one that ends exactly at the window is taken.
TEST(hardening, a_forward_just_past_the_stream_credit_is_dropped) {
  time_ns now = 1'000'000;
  auto cfg = server_cfg(1);
  ASSERT_GT(cfg.connection_window_bytes, uint64_t{cfg.stream_buffer_bytes} + 1);
  connection server(cfg, now);
  server.on_packet(opener(10), now);
  server.on_packet(packet(client_id, 11, [&](packet_builder &b) {
                     b.append_forward({1, 0, uint64_t{cfg.stream_buffer_bytes} + 1});
                   }), now);
  EXPECT_EQ(drops(server, drop_reason::flow_control), 1u);
  server.on_packet(packet(client_id, 12, [&](packet_builder &b) {
                     b.append_forward({1, 0, cfg.stream_buffer_bytes});
                   }), now);
  EXPECT_EQ(drops(server, drop_reason::flow_control), 1u) << "a FORWARD up to the credit is allowed";
  EXPECT_EQ(server.stats().packets_received, 2u) << "the opener and the FORWARD up to the credit";
}

// protocol.md 6.5: STREAM data within each stream's credit but beyond the
// connection credit (the sum of the highest offsets over all streams) is
// dropped; up to it exactly is taken.
TEST(hardening, stream_data_beyond_the_connection_credit_is_dropped) {
  time_ns now = 1'000'000;
  auto cfg = server_cfg(1);
  cfg.stream_buffer_bytes = 64 * 1024;
  cfg.connection_window_bytes = 64 * 1024;
  connection server(cfg, now);
  server.on_packet(opener(10), now);
  std::vector<std::byte> data(64, std::byte{3});
  auto stream_at = [&](uint64_t pn, uint64_t id, uint64_t end) {
    return packet(client_id, pn, [&](packet_builder &b) {
      stream_frame s;
      s.stream_id = id;
      s.offset = end - data.size();
      s.data = data;
      b.append_stream(s);
    });
  };
  server.on_packet(stream_at(11, 0, 48 * 1024), now);  // 3/4 of the connection credit
  EXPECT_EQ(drops(server, drop_reason::flow_control), 0u);
  server.on_packet(stream_at(12, 1, 16 * 1024 + 1), now);  // within stream 1's, one past the connection's
  EXPECT_EQ(drops(server, drop_reason::flow_control), 1u);
  server.on_packet(stream_at(13, 1, 48 * 1024), now);  // 3/4 of stream 1's
  EXPECT_EQ(drops(server, drop_reason::flow_control), 2u);
  server.on_packet(stream_at(14, 1, 16 * 1024), now);  // exactly the connection credit
  EXPECT_EQ(drops(server, drop_reason::flow_control), 2u);
  EXPECT_EQ(server.stats().packets_received, 3u);
}

// protocol.md 3.2, 4.3: a member that acknowledges a packet sent to
// another member only (here a probe to member 2 alone) acknowledged what
// it never received: it is expelled, the group goes on.
TEST(hardening, an_ack_of_a_packet_sent_only_to_another_member_is_caught) {
  time_ns now = 1'000'000;
  connection client(client_cfg({1, 2}), now);
  connection s1(server_cfg(1), now), s2(server_cfg(2), now);
  uint64_t s1_pn = 0;
  auto round = [&](bool reach_s2) {
    for (auto &[p, mask] : transmit_all(client, now)) {
      if (mask & 1) s1.on_packet(p, now);
      if ((mask & 2) && reach_s2) s2.on_packet(p, now);
    }
    for (auto &[p, mask] : transmit_all(s1, now)) {
      s1_pn = std::max(s1_pn, pn_of(p));
      client.on_packet(p, now);
    }
    if (reach_s2)
      for (auto &[p, mask] : transmit_all(s2, now)) client.on_packet(p, now);
    events(s1);
    events(s2);
    events(client);
  };
  round(true);
  ASSERT_EQ(client.open_stream(0, stream_mode::message, ordering::fifo), status::ok);
  std::vector<std::byte> msg(200);
  message_options o;
  o.low_latency = true;
  ASSERT_EQ(client.send(0, msg, o, now), status::ok);
  round(false);  // member 2 misses the message: member 1 acknowledges it, member 2 does not
  // Member 2's probe timeout: a packet to it alone.
  uint64_t lone_pn = 0;
  for (int step = 0; step < 1000 && lone_pn == 0; ++step) {
    now = client.next_expiry();
    ASSERT_NE(now, never);
    client.on_expiry(now);
    for (auto &[p, mask] : transmit_all(client, now))
      if (mask == 2) lone_pn = pn_of(p);
  }
  ASSERT_NE(lone_pn, 0u);
  const uint64_t r[2] = {lone_pn, lone_pn};
  client.on_packet(packet(1, s1_pn + 1, [&](packet_builder &b) { b.append_ack(r, 0); }), now);
  EXPECT_EQ(drops(client, drop_reason::protocol_violation), 1u);
  bool left = false;
  for (const event &e : events(client))
    if (e.type == event_type::member_left) {
      EXPECT_EQ(e.member, 1u);
      EXPECT_EQ(e.reason, static_cast<uint32_t>(member_left_reason::protocol_violation));
      left = true;
    }
  EXPECT_TRUE(left);
  EXPECT_FALSE(client.member_live(0));
  EXPECT_TRUE(client.member_live(1));
}

// protocol.md 3.5 (tables): out-of-order data and out-of-order ACKs each
// leave one range slot free, so with a table full of isolated ranges the
// packet that fills the lowest gap is still taken by the receiver and its
// ACK still recorded by the sender: the stream moves on. Run with the
// receiver's table as small as the sender's (the receiver's fills), and
// with a large one (it acknowledges more isolated ranges than the
// sender's table holds).
namespace {
void lowest_gap_run(uint32_t server_max_messages) {
  SCOPED_TRACE(server_max_messages);
  time_ns now = 1'000'000;
  auto ccfg = client_cfg({1});
  ccfg.max_messages = 16;  // 17 ranges per table
  auto scfg = server_cfg(1);
  scfg.max_messages = server_max_messages;
  connection client(ccfg, now), server(scfg, now);
  exchange(client, server, now);
  events(client);
  events(server);
  ASSERT_EQ(client.open_stream(0, stream_mode::bytes, ordering::fifo), status::ok);
  // First a transfer that grows the congestion window past 40 packets.
  std::vector<std::byte> bytes(48 * 1200, std::byte{5});
  for (int i = 0; i < 4; ++i) ASSERT_EQ(client.send(0, bytes, now), status::ok);
  now = run_until_stable(client, server, now);
  ASSERT_EQ(client.send_buffered_bytes(), 0u);
  ASSERT_GE(client.member_cwnd(0), 48u * 1400);
  const uint64_t base = 4 * bytes.size();
  ASSERT_EQ(client.send(0, bytes, now), status::ok);
  client.flush();
  const auto sent = transmit_all(client, now);
  ASSERT_GE(sent.size(), 40u);
  auto ack_back = [&] {
    now += 2'000'000;  // past the member's ACK delay
    server.on_expiry(now);
    for (auto &[p, mask] : transmit_all(server, now)) client.on_packet(p, now);
    events(client);
  };
  // Every other packet from the third on: 19 isolated ranges, more than
  // the tables hold. The client declares the packets between them lost
  // and queues repairs, which are not sent yet.
  for (std::size_t i = 2; i < 40; i += 2) server.on_packet(sent[i].first, now);
  if (server_max_messages == 16) {
    EXPECT_GT(drops(server, drop_reason::not_absorbed), 0u) << "the receiver's range table filled";
  } else {
    EXPECT_EQ(drops(server, drop_reason::not_absorbed), 0u);
  }
  ack_back();
  // The first packet: in order for both ends.
  server.on_packet(sent[0].first, now);
  std::size_t got = 0;
  for (const event &e : events(server))
    if (e.type == event_type::received) {
      EXPECT_EQ(e.offset, base);
      got += e.data.size();
    }
  EXPECT_GT(got, 0u) << "the receiver took the packet at its read offset";
  ack_back();
  // The sender recorded that ACK: its repairs leave the first packet's
  // bytes out (and do resend others).
  std::size_t repaired = 0;
  for (auto &[p, mask] : transmit_all(client, now)) {
    packet_header h;
    std::span<const std::byte> frames;
    ASSERT_EQ(parse_packet(p, h, frames), parse_status::ok);
    frame_reader rd(frames);
    for (frame f; !rd.done() && rd.next(f) == parse_status::ok;) {
      if (f.type != frame_type::stream) continue;
      ++repaired;
      EXPECT_GE(f.stream.offset, base + got) << "resent bytes the member acknowledged";
    }
  }
  EXPECT_GT(repaired, 0u);
}
}  // namespace

TEST(hardening, full_range_tables_still_take_the_packet_at_the_lowest_gap) {
  lowest_gap_run(16);
  lowest_gap_run(1u << 15);
}
