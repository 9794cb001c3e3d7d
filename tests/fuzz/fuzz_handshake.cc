// SPDX-License-Identifier: BSD-3-Clause
// Fuzzes the handshake's receivers with the fixed keys of docs/protocol.md
// appendix B (H.1/H.3): parse_handshake, the responder's
// consume_initiation (one allowed peer; under load or not), the
// initiator's consume_response and consume_cookie_reply against a pending
// state (H.1's initiation), and make_cookie_reply.
//
// Input: byte 0 is a control byte, the rest is the packet.
//   bit 0  the responder is under load (mac2 demanded)
//   bit 1  recompute mac1 for the packet's receiver before handing it over
//   bit 2  recompute mac2 from the cookie of the fixed source address
// Bits 1 and 2 stand in for an attacker who knows the public keys (mac1 is
// no secret) or holds a cookie, so mutated bodies reach the DH and AEAD
// code instead of stopping at mac1.
//
// Beyond "no crash, no out-of-bounds read" (ASan, UBSan) it checks: every
// result is a defined hs_error; ok only for the type's one length, with the
// view's spans inside the packet; an accepted initiation names the one
// allowed peer and gives a response; an accepted response finishes the
// state (the same response again is `unexpected`); an accepted cookie
// reply is accepted once.
#include <array>
#include <cstring>

#include "handshake.h"

using namespace mtp::crypto;

namespace {

constexpr uint64_t now_ns = 1'000'000'000'000ull;
constexpr uint64_t wall_ns = 1'700'000'000'123'456'789ull;
constexpr uint64_t cid = 0x1122334455667788ull;
constexpr uint32_t initiator_id = 100, responder_id = 7;
const uint8_t source[] = {0xc0, 0x00, 0x02, 0x01, 0x1c, 0xe8};

void seq(uint8_t *out, uint8_t first) {
  for (int i = 0; i < 32; ++i) out[i] = static_cast<uint8_t>(first + i);
}

void trap_unless(bool ok) {
  if (!ok) __builtin_trap();
}

bool defined(hs_error e) { return static_cast<std::size_t>(e) < hs_error_count; }

std::size_t length_of(uint8_t type) {
  return type == 0x02 ? initiation_bytes : type == 0x03 ? response_bytes : type == 0x04 ? cookie_reply_bytes : 0;
}

struct world {
  static_keypair ik{}, rk{};
  hs_identity ini, res;
  initiator_state pending;  // H.1's initiation sent; copied per input
  uint8_t cookie[hs_cookie_bytes]{};
  uint8_t secret[32]{};
  uint8_t greatest[hs_timestamp_bytes]{};
  uint8_t e_resp[32]{};

  world() {
    uint8_t p[32];
    seq(p, 0x01);
    trap_unless(keypair_from_private(p, ik));
    seq(p, 0x21);
    trap_unless(keypair_from_private(p, rk));
    trap_unless(make_identity(ik, initiator_id, ini));
    trap_unless(make_identity(rk, responder_id, res));
    trap_unless(initiator_init(pending, ini, rk.pub, responder_id, nullptr, cid));
    seq(p, 0x41);
    std::array<uint8_t, initiation_bytes> out{};
    trap_unless(create_initiation(pending, ini, wall_ns, now_ns, out, p) == hs_error::ok);
    seq(secret, 0xc1);
    seq(e_resp, 0x61);
    // The cookie H.3's secret gives the fixed source.
    uint8_t full[32];
    const std::span<const uint8_t> parts[] = {source};
    hmac_sha256(secret, parts, full);
    std::memcpy(cookie, full, hs_cookie_bytes);
  }

  static bool lookup(void *ctx, const uint8_t pub[32], uint32_t, hs_peer_entry &out) {
    auto *w = static_cast<world *>(ctx);
    if (std::memcmp(pub, w->ik.pub, 32) != 0) return false;
    out.psk = nullptr;
    out.greatest_timestamp = w->greatest;
    out.peer_index = 1;
    return true;
  }
};

world &the_world() {
  static world w;
  return w;
}

void set_mac(std::span<uint8_t> pkt, std::size_t at, std::span<const uint8_t> key) {
  uint8_t full[32];
  const std::span<const uint8_t> parts[] = {pkt.first(at)};
  hmac_sha256(key, parts, full);
  std::memcpy(pkt.data() + at, full, hs_mac_bytes);
}

void mac1_key_of(const uint8_t pub[32], uint8_t out[32]) {
  static const char label[] = "mac1----";
  const std::span<const uint8_t> parts[] = {{reinterpret_cast<const uint8_t *>(label), 8}, {pub, 32}};
  sha256(parts, out);
}

void check_view(std::span<const uint8_t> pkt, const handshake_view &v) {
  const std::span<const uint8_t> spans[] = {v.ephemeral, v.encrypted_static, v.encrypted_payload, v.mac1,
                                            v.mac2,      v.nonce,            v.encrypted_cookie};
  for (const auto &s : spans)
    trap_unless(s.empty() || (s.data() >= pkt.data() && s.data() + s.size() <= pkt.data() + pkt.size()));
  trap_unless(v.sender_id != 0 && v.sender_id != 0xffffffffu);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  world &w = the_world();
  const uint8_t control = data[0];
  const std::span<const uint8_t> raw(data + 1, size - 1);

  // Layout.
  handshake_view v;
  const hs_error pe = parse_handshake(raw, v);
  trap_unless(defined(pe));
  if (pe == hs_error::ok) {
    trap_unless(raw.size() == length_of(raw[1]) && raw[0] == hs_version && v.packet.size() == raw.size());
    check_view(raw, v);
  }

  // The packet as handed to each receiver, macs fixed when asked.
  std::array<uint8_t, 256> buf{};
  const std::size_t n = raw.size() < buf.size() ? raw.size() : buf.size();
  if (n) std::memcpy(buf.data(), raw.data(), n);
  const std::span<uint8_t> pkt(buf.data(), n);
  const std::span<const uint8_t> in = raw.size() <= buf.size() ? std::span<const uint8_t>(pkt) : raw;

  // Responder.
  if (n == initiation_bytes && (control & 2)) set_mac(pkt, init_mac1_at, w.res.mac1_key);
  if (n == initiation_bytes && (control & 4)) set_mac(pkt, init_mac2_at, w.cookie);
  cookie_checker cc(w.res, now_ns);
  cc.set_secret_for_test(w.secret, now_ns);
  std::memset(w.greatest, 0, sizeof w.greatest);
  responder_state rst;
  const hs_load load{(control & 1) != 0, &cc, source, now_ns};
  const hs_error ie = consume_initiation(rst, w.res, in, {&world::lookup, &w}, load);
  trap_unless(defined(ie));
  if (ie == hs_error::ok) {
    trap_unless(in.size() == initiation_bytes && rst.pending && rst.remote_id == v.sender_id && rst.connection_id == v.connection_id && rst.peer_index == 1);
    trap_unless(std::memcmp(rst.remote_static, w.ik.pub, 32) == 0);
    std::array<uint8_t, response_bytes> resp{};
    hs_session_keys k;
    trap_unless(create_response(rst, resp, k, w.e_resp) == hs_error::ok);
    trap_unless(create_response(rst, resp, k) == hs_error::unexpected);
  } else {
    trap_unless(!rst.pending);
  }
  if (ie == hs_error::bad_mac2) {
    trap_unless(load.under_load);
    std::array<uint8_t, cookie_reply_bytes> reply{};
    trap_unless(cc.make_cookie_reply(in, source, now_ns, reply) == hs_error::ok);
  } else {
    std::array<uint8_t, cookie_reply_bytes> reply{};
    const hs_error ce = cc.make_cookie_reply(in, source, now_ns, reply);
    trap_unless(defined(ce));
    trap_unless(ce != hs_error::ok || in.size() == initiation_bytes || in.size() == response_bytes);
  }

  // Initiator: a RESPONSE or a COOKIE_REPLY to H.1's initiation.
  if (n == response_bytes && (control & 2)) {
    std::memcpy(buf.data(), raw.data(), n);
    uint8_t key[32];
    mac1_key_of(w.ik.pub, key);
    set_mac(pkt, resp_mac1_at, key);
  }
  initiator_state ist = w.pending;
  hs_session_keys k;
  const hs_error re = consume_response(ist, w.ini, in, k);
  trap_unless(defined(re));
  if (re == hs_error::ok) {
    trap_unless(in.size() == response_bytes && ist.state == initiator_state::phase::done);
    trap_unless(consume_response(ist, w.ini, in, k) == hs_error::unexpected);
  } else {
    trap_unless(ist.state == initiator_state::phase::sent);
  }
  initiator_state cst = w.pending;
  const hs_error ce = consume_cookie_reply(cst, in, now_ns);
  trap_unless(defined(ce));
  if (ce == hs_error::ok) {
    trap_unless(in.size() == cookie_reply_bytes && cst.has_cookie);
    trap_unless(consume_cookie_reply(cst, in, now_ns) == hs_error::unexpected);
  }
  return 0;
}
