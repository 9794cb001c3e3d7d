// SPDX-License-Identifier: BSD-3-Clause
// Fuzzes the protocol engine itself: a client or a server connection fed
// CRC-valid packets whose frames the fuzzer writes (from its members, from
// strangers, with chosen packet numbers and flags), interleaved with time,
// application calls and well-formed ACKs of what it sent. After every step
// the events are drained and read to the last byte (ASan sees a span that
// points at freed memory), and the invariants hold: memory within the
// budget, each message reported at most once and only if it was sent,
// packet numbers never reused.
//
// The input is a script: byte 0 sets the stage (role, members, options,
// and bit 6: a sealed connection, whose packets are passed as its caller
// passes them once opened, GROUP_KEY frames known, group keys handed out
// and replaced), then operations follow until the input ends (see the
// switch below).
#include <cstring>
#include <set>
#include <vector>

#include "connection.h"
#include "crc32c.h"

using namespace mtp::core;

namespace {

struct reader {
  const uint8_t *p;
  std::size_t n, i = 0;
  bool more() const { return i < n; }
  uint8_t u8() { return i < n ? p[i++] : 0; }
  uint16_t u16() { return static_cast<uint16_t>(u8() << 8 | u8()); }
};

constexpr uint64_t cid = 42;
constexpr uint32_t client_id = 100;
constexpr uint64_t memory_limit = 4u << 20;

// Appends the CRC32C trailer to the first `body` bytes. @return the length.
std::size_t seal(std::vector<std::byte> &pkt, std::size_t body) {
  const uint32_t crc = crc32c({pkt.data(), body});
  for (int i = 0; i < 4; ++i) pkt[body + static_cast<std::size_t>(i)] = static_cast<std::byte>(crc >> (24 - 8 * i));
  return body + crc_size;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  reader in{data, size};
  const uint8_t stage = in.u8();
  const bool server = stage & 1;
  const std::size_t members = server ? 1 : 1 + (stage >> 1) % 3;
  session_memory memory(memory_limit);
  connection_config cfg;
  cfg.connection_id = cid;
  cfg.side = server ? role::server : role::client;
  cfg.local_id = server ? 1 : client_id;
  for (std::size_t m = 0; m < members; ++m) cfg.members.push_back(server ? client_id : static_cast<uint32_t>(1 + m));
  cfg.threshold = (stage & 8) && members > 1 ? 2 : 0;
  cfg.pacing = stage & 16;
  cfg.zero_copy_delivery = !(stage & 32);
  cfg.stream_buffer_bytes = 1u << 16;
  cfg.connection_window_bytes = 1u << 18;
  cfg.max_messages = 64;
  cfg.max_sent_packets = 256;
  cfg.max_events = 64;
  cfg.max_ack_ranges = 16;
  cfg.memory = &memory;
  cfg.seed = stage;
  const bool sealed = stage & 64;
  const protection prot = sealed ? protection::sealed : protection::crc;
  cfg.packet_protection = prot;
  time_ns now = 1'000'000;
  connection c(cfg, now);
  uint64_t group_epoch = 0;
  const std::vector<std::byte> group_secret(group_secret_size, std::byte{0x5a});
  if (sealed && !server && c.set_group_key(++group_epoch, group_secret) != status::ok) __builtin_trap();

  std::vector<std::byte> out(1500), pkt(1500), payload(1 << 16);
  std::vector<uint64_t> peer_pn(members + 1, 1000);  // next packet number of each peer (+ a stranger)
  std::set<uint64_t> sent_pns;                        // every number the engine used
  std::vector<std::pair<uint64_t, uint64_t>> sent_to; // (pn, member mask) of what it sent
  std::set<std::pair<uint64_t, uint64_t>> reported;   // (stream, message) Sent/Expired/SendError
  uint64_t queued[16] = {};                           // messages queued per stream

  auto drain = [&] {
    event e;
    while (c.poll_event(e)) {
      volatile uint8_t sink = 0;
      for (std::byte b : e.data) sink = sink ^ std::to_integer<uint8_t>(b);  // every byte must be readable
      (void)sink;
      if (e.type == event_type::sent || e.type == event_type::expired || e.type == event_type::send_error) {
        if (e.stream_id >= 16 || e.message_id >= queued[e.stream_id]) __builtin_trap();  // never sent
        if (!reported.insert({e.stream_id, e.message_id}).second) __builtin_trap();    // reported twice
      }
    }
    if (memory.budget.used() > memory_limit + (64u << 10)) __builtin_trap();  // only fixed parts may pass it
  };
  auto transmit_all = [&] {
    for (int k = 0; k < 64; ++k) {
      const transmit t = c.poll_transmit(out, now);
      if (t.bytes == 0) break;
      packet_header h;
      std::span<const std::byte> frames;
      if (parse_packet({out.data(), t.bytes}, h, frames, prot) != parse_status::ok) __builtin_trap();  // we built junk
      if (!sent_pns.insert(h.packet_number).second) __builtin_trap();  // a packet number reused
      sent_to.emplace_back(h.packet_number, t.member_mask);
      if (sent_to.size() > 4096) sent_to.erase(sent_to.begin(), sent_to.begin() + 2048);
    }
  };

  while (in.more()) {
    const uint8_t op = in.u8();
    switch (op & 7) {
      case 0: {  // a packet: sender, packet number, flags, fuzzer-written frames
        const uint8_t who = in.u8();
        const std::size_t m = who % (members + 1);  // members, or a stranger
        packet_header h;
        h.connection_id = (who & 0x80) ? cid + 1 : cid;
        h.sender_id = m < members ? cfg.members[m] : 999;
        const uint16_t delta = in.u16();
        h.packet_number = (delta & 0x8000) ? peer_pn[m] - (delta & 0x7fff) : peer_pn[m] + (delta & 0x7fff);
        if (delta & 0x4000) h.packet_number += uint64_t{1} << 30;  // far ahead
        if (!(delta & 0x8000)) peer_pn[m] = h.packet_number + 1;
        h.flags = flag_crc | ((who & 0x40) ? flag_opening : 0);
        // The header from the builder, the frames raw from the input, and a
        // valid CRC over both (or, sealed, the tag as its caller leaves it
        // once opened): the engine's checks past the CRC are fuzzed. A
        // sealed connection also gets plaintext now and then (not_sealed).
        const bool as_sealed = sealed && !(who & 0x20);
        packet_builder b(pkt, h, as_sealed ? protection::sealed : protection::crc);
        (void)b;
        const std::size_t len = std::min<std::size_t>(
            {in.u8(), in.n - in.i, pkt.size() - header_size - trailer_size(protection::sealed)});
        std::memcpy(pkt.data() + header_size, in.p + in.i, len);
        in.i += len;
        std::size_t n = header_size + len + tag_size;
        if (!as_sealed) n = seal(pkt, header_size + len);
        c.on_packet({pkt.data(), n}, now);
        drain();
        break;
      }
      case 1:  // time passes (and, sealed, the client may replace its group key)
        if (sealed && !server && (op & 0x80) && c.set_group_key(++group_epoch, group_secret) != status::ok)
          __builtin_trap();
        now += (uint64_t{in.u16()} + 1) * 10'000;
        c.on_expiry(now);
        drain();
        break;
      case 2:
        transmit_all();
        drain();
        break;
      case 3: {  // the application sends a message
        const uint8_t stream = in.u8() % 4;
        const std::size_t len = 1 + in.u16() % 5000;
        uint64_t id = 0;
        if (c.send(stream, {payload.data(), len}, message_options{}, now, &id) == status::ok) {
          if (id != queued[stream]) __builtin_trap();  // ids are the sequence
          ++queued[stream];
        }
        drain();
        break;
      }
      case 4:
        (void)c.open_stream(in.u8() % 5, (op & 8) ? stream_mode::bytes : stream_mode::message,
                            (op & 16) ? ordering::none : ordering::fifo);
        break;
      case 5:
        if (op & 8)
          c.abort(error_code::application, "fuzz", now);
        else
          c.close(error_code::no_error, "fuzz", now);
        drain();
        break;
      case 6: {  // a member acknowledges what it was sent (a well-formed ACK)
        const std::size_t m = in.u8() % members;
        uint64_t ranges[2 * 8];
        std::size_t r = 0;
        for (auto it = sent_to.rbegin(); it != sent_to.rend() && r < 8; ++it)
          if ((it->second >> m) & 1) {
            if (r > 0 && ranges[2 * r - 2] == it->first + 1) {
              ranges[2 * r - 2] = it->first;
            } else if (r == 0 || ranges[2 * r - 2] > it->first + 1) {
              ranges[2 * r] = ranges[2 * r + 1] = it->first;
              ++r;
            }
          }
        if (r == 0) break;
        packet_header h;
        h.connection_id = cid;
        h.sender_id = cfg.members[m];
        h.packet_number = peer_pn[m]++;
        packet_builder b(pkt, h, prot);
        if (!b.append_ack({ranges, 2 * r}, in.u8())) break;
        c.on_packet({pkt.data(), b.finish()}, now);
        drain();
        break;
      }
      default: {  // a datagram
        const std::size_t len = in.u16() % 1500;
        (void)c.send_datagram({payload.data(), len}, now);
        drain();
        break;
      }
    }
  }
  transmit_all();
  drain();
  return 0;
}
