// SPDX-License-Identifier: BSD-3-Clause
// The handshake (handshake.h) against the protocol text: the vectors of
// appendix B of docs/protocol.md, read from the document itself (every ```mtp-handshake-vector
// block), must come out byte for byte; then every check of the consume
// functions, one test per drop reason, with tampering of each region of an
// INITIATION, the cookie round trip under load, replays, psk mismatches,
// and truncated and oversized packets of each type.
#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "handshake.h"

using namespace mtp::crypto;

namespace {

constexpr const char *vector_doc = MTP_SOURCE_ROOT "/docs/protocol.md";

using packet_init = std::array<uint8_t, initiation_bytes>;
using packet_resp = std::array<uint8_t, response_bytes>;
using packet_cookie = std::array<uint8_t, cookie_reply_bytes>;

std::string hex(const uint8_t *p, std::size_t n) {
  static const char d[] = "0123456789abcdef";
  std::string s;
  for (std::size_t i = 0; i < n; ++i) {
    s.push_back(d[p[i] >> 4]);
    s.push_back(d[p[i] & 15]);
  }
  return s;
}
template <class C>
std::string hex(const C &c) {
  return hex(c.data(), c.size());
}

std::vector<uint8_t> unhex(const std::string &s) {
  std::vector<uint8_t> out;
  int hi = -1;
  for (char c : s) {
    int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (v < 0) continue;
    if (hi < 0) {
      hi = v;
    } else {
      out.push_back(static_cast<uint8_t>(hi << 4 | v));
      hi = -1;
    }
  }
  return out;
}

// One ```mtp-handshake-vector block: "key: value" lines, a value continued
// on following lines that start with a space.
using vector_block = std::map<std::string, std::string>;

std::vector<vector_block> read_vectors() {
  std::ifstream in(vector_doc);
  std::vector<vector_block> out;
  std::string line, key;
  bool inside = false;
  while (std::getline(in, line)) {
    if (!inside) {
      if (line == "```mtp-handshake-vector") {
        inside = true;
        out.emplace_back();
        key.clear();
      }
      continue;
    }
    if (line.rfind("```", 0) == 0) {
      inside = false;
      continue;
    }
    if (!line.empty() && line[0] == ' ') {
      out.back()[key] += line.substr(line.find_first_not_of(' '));
      continue;
    }
    const auto colon = line.find(": ");
    if (colon == std::string::npos) continue;
    key = line.substr(0, colon);
    out.back()[key] = line.substr(colon + 2);
  }
  return out;
}

// A test's allowed-peer table: keys by value, the greatest timestamp per
// peer, and how often it was asked (mac1/mac2 failures must not ask).
struct peer_table {
  struct peer {
    std::array<uint8_t, 32> pub;
    std::array<uint8_t, 32> psk{};
    bool has_psk = false;
    uint8_t greatest[hs_timestamp_bytes] = {};
    uint32_t index = 0;
    std::array<uint8_t, 32> static_static{};  ///< precomputed ss, when set
    bool has_static_static = false;
  };
  std::vector<peer> peers;
  int lookups = 0;

  void add(const uint8_t pub[32], const uint8_t *psk, uint32_t index) {
    peer p;
    std::memcpy(p.pub.data(), pub, 32);
    if (psk) {
      std::memcpy(p.psk.data(), psk, 32);
      p.has_psk = true;
    }
    p.index = index;
    peers.push_back(p);
  }
  static bool lookup(void *ctx, const uint8_t pub[32], uint32_t, hs_peer_entry &out) {
    auto *t = static_cast<peer_table *>(ctx);
    ++t->lookups;
    for (auto &p : t->peers) {
      if (std::memcmp(p.pub.data(), pub, 32) == 0) {
        out.psk = p.has_psk ? p.psk.data() : nullptr;
        out.greatest_timestamp = p.greatest;
        out.peer_index = p.index;
        out.static_static = p.has_static_static ? p.static_static.data() : nullptr;
        return true;
      }
    }
    return false;
  }
  hs_peer_table table() { return {&peer_table::lookup, this}; }
};

static_keypair keypair_of(const std::vector<uint8_t> &priv) {
  static_keypair k;
  EXPECT_TRUE(keypair_from_private(priv.data(), k));
  return k;
}

static_keypair fresh_keypair() {
  static_keypair k;
  EXPECT_TRUE(generate_keypair(k));
  return k;
}

// Recomputes an INITIATION's mac1 (for responder `pub`) after a test
// changed bytes before it: anyone who knows the responder's public key can,
// so these tamperings must be caught by Noise itself.
void fix_mac1(std::span<uint8_t> pkt, const uint8_t responder_pub[32]) {
  uint8_t key[32], full[32];
  const char label[] = "mac1----";
  const std::span<const uint8_t> kp[] = {{reinterpret_cast<const uint8_t *>(label), 8}, {responder_pub, 32}};
  sha256(kp, key);
  const std::size_t at = pkt.size() == initiation_bytes ? init_mac1_at : resp_mac1_at;
  const std::span<const uint8_t> mp[] = {pkt.first(at)};
  hmac_sha256({key, 32}, mp, full);
  std::memcpy(pkt.data() + at, full, 16);
}

constexpr uint64_t cid = 0x0123456789abcdefull;
constexpr uint32_t client_id = 100, member_id = 7;
constexpr uint64_t wall0 = 1'700'000'000'000'000'000ull;
constexpr uint64_t t0 = 5'000'000'000ull;  // a monotonic clock reading
const uint8_t src_a[] = {192, 0, 2, 1, 0x1c, 0xe8};
const uint8_t src_b[] = {192, 0, 2, 2, 0x1c, 0xe8};

// Two endpoints with random keys that know each other.
struct handshake_pair : ::testing::Test {
  static_keypair ik = fresh_keypair(), rk = fresh_keypair();
  hs_identity ini, res;
  peer_table table;
  initiator_state ist;
  responder_state rst;
  hs_load no_load;

  void SetUp() override {
    ASSERT_TRUE(make_identity(ik, client_id, ini));
    ASSERT_TRUE(make_identity(rk, member_id, res));
    table.add(ik.pub, nullptr, 42);
    ASSERT_TRUE(initiator_init(ist, ini, rk.pub, member_id, nullptr, cid));
  }
  packet_init initiation(uint64_t wall = wall0, uint64_t now = t0) {
    packet_init p{};
    EXPECT_EQ(create_initiation(ist, ini, wall, now, p), hs_error::ok);
    return p;
  }
  hs_error consume(const packet_init &p, const hs_load &load) {
    return consume_initiation(rst, res, p, table.table(), load);
  }
  hs_error consume(const packet_init &p) { return consume(p, no_load); }
};

}  // namespace

// ------------------------------------------------------------ vectors

TEST(handshake_vectors, appendix_h_packets_and_secrets) {
  const auto blocks = read_vectors();
  ASSERT_EQ(blocks.size(), 3u) << vector_doc << " has the three blocks of appendix B";
  int full_handshakes = 0;
  for (const auto &b : blocks) {
    SCOPED_TRACE(b.at("name"));
    const auto ik = keypair_of(unhex(b.at("initiator_static_private")));
    const auto rk = keypair_of(unhex(b.at("responder_static_private")));
    EXPECT_EQ(hex(ik.pub, 32), b.at("initiator_static_public"));
    EXPECT_EQ(hex(rk.pub, 32), b.at("responder_static_public"));
    const auto ei = unhex(b.at("initiator_ephemeral_private"));
    const auto er = unhex(b.at("responder_ephemeral_private"));
    uint8_t pub[32];
    ASSERT_TRUE(x25519_public(ei.data(), pub));
    EXPECT_EQ(hex(pub, 32), b.at("initiator_ephemeral_public"));
    ASSERT_TRUE(x25519_public(er.data(), pub));
    EXPECT_EQ(hex(pub, 32), b.at("responder_ephemeral_public"));
    const auto psk = unhex(b.at("psk"));
    const uint64_t c = std::stoull(b.at("connection_id"), nullptr, 16);
    const auto iid = static_cast<uint32_t>(std::stoul(b.at("initiator_id"), nullptr, 16));
    const auto rid = static_cast<uint32_t>(std::stoul(b.at("responder_id"), nullptr, 16));
    const uint64_t wall = std::stoull(b.at("wall_clock_ns"));
    uint8_t ts[hs_timestamp_bytes];
    tai64n(wall, ts);
    EXPECT_EQ(hex(ts, sizeof ts), b.at("timestamp"));

    hs_identity ini, res;
    ASSERT_TRUE(make_identity(ik, iid, ini));
    ASSERT_TRUE(make_identity(rk, rid, res));
    initiator_state ist;
    // An all-zero psk is "no psk": pass nullptr then, to cover that path.
    const bool zero_psk = psk == std::vector<uint8_t>(32, 0);
    ASSERT_TRUE(initiator_init(ist, ini, rk.pub, rid, zero_psk ? nullptr : psk.data(), c));
    packet_init init{};
    ASSERT_EQ(create_initiation(ist, ini, wall, t0, init, ei.data()), hs_error::ok);
    EXPECT_EQ(hex(init), b.at("initiation"));

    peer_table table;
    table.add(ik.pub, zero_psk ? nullptr : psk.data(), 9);
    responder_state rst;
    ASSERT_EQ(consume_initiation(rst, res, init, table.table(), {}), hs_error::ok);
    EXPECT_EQ(hex(rst.remote_static, 32), hex(ik.pub, 32));

    if (b.count("response")) {
      ++full_handshakes;
      packet_resp resp{};
      hs_session_keys rkeys, ikeys;
      ASSERT_EQ(create_response(rst, resp, rkeys, er.data()), hs_error::ok);
      EXPECT_EQ(hex(resp), b.at("response"));
      ASSERT_EQ(consume_response(ist, ini, resp, ikeys), hs_error::ok);
      EXPECT_EQ(hex(ikeys.send, 32), b.at("initiator_to_responder"));
      EXPECT_EQ(hex(ikeys.recv, 32), b.at("responder_to_initiator"));
      EXPECT_EQ(hex(rkeys.recv, 32), b.at("initiator_to_responder"));
      EXPECT_EQ(hex(rkeys.send, 32), b.at("responder_to_initiator"));
      EXPECT_EQ(hex(ikeys.peer_static, 32), hex(rk.pub, 32));
      EXPECT_EQ(hex(rkeys.peer_static, 32), hex(ik.pub, 32));
      EXPECT_EQ(rkeys.peer_index, 9u);
      EXPECT_EQ(rkeys.peer_member_id, iid);
      EXPECT_EQ(ikeys.peer_member_id, rid);
      EXPECT_EQ(rkeys.connection_id, c);
    }
    if (b.count("cookie_reply")) {
      cookie_checker cc(res, t0);
      cc.set_secret_for_test(unhex(b.at("cookie_secret")).data(), t0);
      const auto source = unhex(b.at("source"));
      packet_cookie reply{};
      ASSERT_EQ(cc.make_cookie_reply(init, source, t0, reply, unhex(b.at("cookie_nonce")).data()), hs_error::ok);
      EXPECT_EQ(hex(reply), b.at("cookie_reply"));
      ASSERT_EQ(consume_cookie_reply(ist, reply, t0 + 1'000'000'000), hs_error::ok);
      EXPECT_EQ(hex(ist.cookie, hs_cookie_bytes), b.at("cookie"));
      const uint64_t next_wall = std::stoull(b.at("next_wall_clock_ns"));
      packet_init next{};
      ASSERT_EQ(create_initiation(ist, ini, next_wall, t0 + 2'000'000'000, next, ei.data()), hs_error::ok);
      EXPECT_EQ(hex(next), b.at("next_initiation"));
      // The responder under load takes it from that source only.
      hs_load load{true, &cc, source, t0 + 2'000'000'000};
      EXPECT_EQ(consume_initiation(rst, res, next, table.table(), load), hs_error::ok);
    }
  }
  EXPECT_EQ(full_handshakes, 2);
}

// ------------------------------------------------------------ layout

TEST(handshake_layout, names_are_distinct_snake_case) {
  std::set<std::string> names;
  for (std::size_t i = 0; i < hs_error_count; ++i) {
    const std::string n = to_string(static_cast<hs_error>(i));
    EXPECT_EQ(n.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_"), std::string::npos) << n;
    names.insert(n);
  }
  EXPECT_EQ(names.size(), 14u);
  EXPECT_STREQ(to_string(hs_error::bad_mac1), "bad_mac1");
  EXPECT_STREQ(to_string(hs_error::decrypt_failed), "decrypt_failed");
  EXPECT_STREQ(to_string(static_cast<hs_error>(200)), "?");
}

TEST(handshake_layout, every_length_of_every_type) {
  const std::pair<uint8_t, std::size_t> types[] = {{0x02, 164}, {0x03, 104}, {0x04, 68}};
  for (auto [type, len] : types) {
    int ok = 0;
    for (std::size_t n = 0; n <= 200; ++n) {
      std::vector<uint8_t> p(n, 0);
      if (n > 0) p[0] = 1;
      if (n > 1) p[1] = type;
      if (n > 7) p[7] = 5;  // sender id 5
      handshake_view v;
      const hs_error e = parse_handshake(p, v);
      if (n < len) {
        EXPECT_EQ(e, hs_error::too_short) << n;
      } else if (n > len) {
        EXPECT_EQ(e, hs_error::too_long) << n;
      } else {
        EXPECT_EQ(e, hs_error::ok);
        ++ok;
        EXPECT_EQ(static_cast<uint8_t>(v.type), type);
        EXPECT_EQ(v.sender_id, 5u);
      }
    }
    EXPECT_EQ(ok, 1) << "exactly one valid length for type " << int(type);
  }
}

TEST(handshake_layout, header_fields) {
  std::vector<uint8_t> p(initiation_bytes, 0);
  p[0] = 1;
  p[1] = 2;
  p[7] = 5;
  p[15] = 0x42;
  handshake_view v;
  ASSERT_EQ(parse_handshake(p, v), hs_error::ok);
  EXPECT_EQ(v.connection_id, 0x42u);
  EXPECT_EQ(v.ephemeral.data(), p.data() + 24);
  EXPECT_EQ(v.encrypted_static.size(), 48u);
  EXPECT_EQ(v.encrypted_payload.data(), p.data() + 104);
  EXPECT_EQ(v.mac1.data(), p.data() + 132);
  EXPECT_EQ(v.mac2.data(), p.data() + 148);
  EXPECT_TRUE(v.nonce.empty());
  auto with = [&](std::size_t at, uint8_t val) {
    auto q = p;
    q[at] = val;
    return parse_handshake(q, v);
  };
  EXPECT_EQ(with(0, 0), hs_error::bad_version);
  EXPECT_EQ(with(0, 2), hs_error::bad_version);
  EXPECT_EQ(with(1, 1), hs_error::bad_type);  // DATA is not a handshake
  EXPECT_EQ(with(1, 5), hs_error::bad_type);
  EXPECT_EQ(with(2, 1), hs_error::bad_header);
  EXPECT_EQ(with(3, 0x80), hs_error::bad_header);
  for (std::size_t i = 16; i < 24; ++i) EXPECT_EQ(with(i, 1), hs_error::bad_header) << i;
  auto q = p;
  q[7] = 0;
  EXPECT_EQ(parse_handshake(q, v), hs_error::bad_header);  // sender 0
  std::memset(q.data() + 4, 0xff, 4);
  EXPECT_EQ(parse_handshake(q, v), hs_error::bad_header);  // sender 2^32-1
}

// ------------------------------------------------------------ full runs

TEST_F(handshake_pair, full_handshake_with_random_keys) {
  const auto init = initiation();
  ASSERT_EQ(consume(init), hs_error::ok);
  EXPECT_EQ(table.lookups, 1);
  EXPECT_EQ(rst.peer_index, 42u);
  EXPECT_EQ(rst.remote_id, client_id);
  EXPECT_EQ(rst.connection_id, cid);
  packet_resp resp{};
  hs_session_keys rkeys, ikeys;
  ASSERT_EQ(create_response(rst, resp, rkeys), hs_error::ok);
  EXPECT_FALSE(rst.pending);
  ASSERT_EQ(consume_response(ist, ini, resp, ikeys), hs_error::ok);
  EXPECT_EQ(hex(ikeys.send, 32), hex(rkeys.recv, 32));
  EXPECT_EQ(hex(ikeys.recv, 32), hex(rkeys.send, 32));
  EXPECT_NE(hex(ikeys.send, 32), hex(ikeys.recv, 32));
  EXPECT_EQ(hex(ikeys.peer_static, 32), hex(rk.pub, 32));
  EXPECT_EQ(hex(rkeys.peer_static, 32), hex(ik.pub, 32));
  // Secrets are gone from the finished states.
  EXPECT_EQ(hex(ist.ephemeral_priv, 32), std::string(64, '0'));
  EXPECT_EQ(hex(ist.ck, 32), std::string(64, '0'));
  EXPECT_EQ(hex(rst.ck, 32), std::string(64, '0'));
  // Single use on both sides.
  EXPECT_EQ(consume_response(ist, ini, resp, ikeys), hs_error::unexpected);
  EXPECT_EQ(create_response(rst, resp, rkeys), hs_error::unexpected);
}

// Early data (protocol.md 9.8): both sides derive the same early secret
// from the initiation alone; a retry (a new ephemeral) gives another; none
// without a pending initiation, nor after the response.
TEST_F(handshake_pair, both_sides_derive_the_same_early_secret_per_initiation) {
  uint8_t none[32];
  EXPECT_FALSE(early_secret(ist, none)) << "no initiation yet";
  EXPECT_FALSE(early_secret(rst, none));
  const auto init = initiation();
  uint8_t ie[32], re[32];
  ASSERT_TRUE(early_secret(ist, ie));
  ASSERT_EQ(consume(init), hs_error::ok);
  ASSERT_TRUE(early_secret(rst, re));
  EXPECT_EQ(hex(ie, 32), hex(re, 32));
  // Not the traffic secrets the response gives.
  packet_resp resp{};
  hs_session_keys rkeys;
  ASSERT_EQ(create_response(rst, resp, rkeys), hs_error::ok);
  EXPECT_NE(hex(ie, 32), hex(rkeys.recv, 32));
  EXPECT_NE(hex(ie, 32), hex(rkeys.send, 32));
  EXPECT_FALSE(early_secret(rst, none)) << "the responder's state is spent";
  // A retry: another ephemeral, another early secret.
  (void)initiation(wall0 + 1);
  uint8_t ie2[32];
  ASSERT_TRUE(early_secret(ist, ie2));
  EXPECT_NE(hex(ie, 32), hex(ie2, 32));
}

// The responder's ss token from a per-peer precomputed DH (one X25519 less
// per initiation) gives the same handshake; a wrong one fails it.
TEST_F(handshake_pair, a_precomputed_static_static_is_the_same_handshake) {
  ASSERT_EQ(table.peers.size(), 1u);
  ASSERT_TRUE(x25519(rk.priv, rk.pub, ik.pub, table.peers[0].static_static.data()));
  table.peers[0].has_static_static = true;
  ASSERT_EQ(consume(initiation()), hs_error::ok);
  packet_resp resp{};
  hs_session_keys rkeys, ikeys;
  ASSERT_EQ(create_response(rst, resp, rkeys), hs_error::ok);
  ASSERT_EQ(consume_response(ist, ini, resp, ikeys), hs_error::ok);
  EXPECT_EQ(hex(ikeys.send, 32), hex(rkeys.recv, 32));
  EXPECT_EQ(hex(ikeys.recv, 32), hex(rkeys.send, 32));
  // A wrong precomputed value: the timestamp no longer decrypts.
  table.peers[0].static_static[0] ^= 1;
  EXPECT_EQ(consume(initiation()), hs_error::decrypt_failed);
}

TEST_F(handshake_pair, psk_on_both_sides_and_mismatched_psk) {
  uint8_t psk[32], other[32];
  ASSERT_TRUE(random_bytes(psk));
  ASSERT_TRUE(random_bytes(other));
  // Same psk: works, and the keys differ from a run without it.
  table.peers.clear();
  table.add(ik.pub, psk, 1);
  ASSERT_TRUE(initiator_init(ist, ini, rk.pub, member_id, psk, cid));
  ASSERT_EQ(consume(initiation(wall0)), hs_error::ok);
  packet_resp resp{};
  hs_session_keys rkeys, ikeys;
  ASSERT_EQ(create_response(rst, resp, rkeys), hs_error::ok);
  ASSERT_EQ(consume_response(ist, ini, resp, ikeys), hs_error::ok);
  EXPECT_EQ(hex(ikeys.send, 32), hex(rkeys.recv, 32));
  // Different psks: the initiation passes (the psk is not in it), the
  // RESPONSE fails at the initiator.
  table.peers.clear();
  table.add(ik.pub, other, 1);
  ASSERT_TRUE(initiator_init(ist, ini, rk.pub, member_id, psk, cid));
  ASSERT_EQ(consume(initiation(wall0 + 1)), hs_error::ok);
  ASSERT_EQ(create_response(rst, resp, rkeys), hs_error::ok);
  EXPECT_EQ(consume_response(ist, ini, resp, ikeys), hs_error::decrypt_failed);
  // psk on the responder's side only ("none" is 32 zero bytes).
  ASSERT_TRUE(initiator_init(ist, ini, rk.pub, member_id, nullptr, cid));
  ASSERT_EQ(consume(initiation(wall0 + 2)), hs_error::ok);
  ASSERT_EQ(create_response(rst, resp, rkeys), hs_error::ok);
  EXPECT_EQ(consume_response(ist, ini, resp, ikeys), hs_error::decrypt_failed);
  // An explicit all-zero psk is the same as none.
  const uint8_t zeros[32] = {};
  table.peers.clear();
  table.add(ik.pub, nullptr, 1);
  ASSERT_TRUE(initiator_init(ist, ini, rk.pub, member_id, zeros, cid));
  ASSERT_EQ(consume(initiation(wall0 + 3)), hs_error::ok);
  ASSERT_EQ(create_response(rst, resp, rkeys), hs_error::ok);
  EXPECT_EQ(consume_response(ist, ini, resp, ikeys), hs_error::ok);
}

// ------------------------------------------------------------ the responder's checks

TEST_F(handshake_pair, every_byte_flipped_before_mac1_is_caught_by_mac1_or_the_header) {
  const auto good = initiation();
  int by_mac1 = 0;
  for (std::size_t i = 0; i < init_mac1_at; ++i) {
    auto p = good;
    p[i] ^= 0x01;
    const hs_error e = consume(p);
    if (i == 0) {
      EXPECT_EQ(e, hs_error::bad_version);
    } else if (i == 1) {
      EXPECT_EQ(e, hs_error::too_long) << "type 3 has 104 bytes";
    } else if (i == 2 || i == 3 || (i >= 16 && i < 24)) {
      EXPECT_EQ(e, hs_error::bad_header) << i;
    } else {
      EXPECT_EQ(e, hs_error::bad_mac1) << i;
      ++by_mac1;
    }
  }
  EXPECT_EQ(by_mac1, 4 + 8 + 108);  // sender id, connection id, the Noise body
  for (std::size_t i = init_mac1_at; i < init_mac2_at; ++i) {
    auto p = good;
    p[i] ^= 0x80;
    EXPECT_EQ(consume(p), hs_error::bad_mac1) << i;
  }
  EXPECT_EQ(table.lookups, 0) << "nothing reached the peer table";
  // mac2 is not looked at when not under load.
  auto p = good;
  p[init_mac2_at] ^= 1;
  EXPECT_EQ(consume(p), hs_error::ok);
}

TEST_F(handshake_pair, tampering_with_mac1_recomputed_is_caught_by_noise) {
  const auto good = initiation();
  struct region {
    const char *name;
    std::size_t at;
    hs_error want;
  } regions[] = {
      {"sender id (prologue)", 7, hs_error::decrypt_failed},
      {"connection id (prologue)", 8, hs_error::decrypt_failed},
      {"ephemeral", 30, hs_error::decrypt_failed},
      {"encrypted static, ciphertext", 60, hs_error::decrypt_failed},
      {"encrypted static, tag", 100, hs_error::decrypt_failed},
      {"encrypted timestamp, ciphertext", 105, hs_error::decrypt_failed},
      {"encrypted timestamp, tag", 131, hs_error::decrypt_failed},
  };
  for (const auto &r : regions) {
    auto p = good;
    p[r.at] ^= 0x04;
    fix_mac1(p, rk.pub);
    EXPECT_EQ(consume(p), r.want) << r.name;
  }
  // Only the static key's decryption asks the table; the timestamp's
  // failure comes after one lookup each.
  EXPECT_EQ(table.lookups, 2);
  // A low-order ephemeral: the es DH is zero.
  auto p = good;
  std::memset(p.data() + hs_ephemeral_at, 0, 32);
  fix_mac1(p, rk.pub);
  EXPECT_EQ(consume(p), hs_error::bad_key);
  p[hs_ephemeral_at] = 1;  // u = 1
  fix_mac1(p, rk.pub);
  EXPECT_EQ(consume(p), hs_error::bad_key);
  // The untouched packet still passes: nothing above raised the timestamp.
  EXPECT_EQ(consume(good), hs_error::ok);
}

TEST_F(handshake_pair, wrong_responder_key_is_bad_mac1) {
  const auto other = fresh_keypair();
  ASSERT_TRUE(initiator_init(ist, ini, other.pub, member_id, nullptr, cid));
  EXPECT_EQ(consume(initiation()), hs_error::bad_mac1);
  EXPECT_EQ(table.lookups, 0);
}

TEST_F(handshake_pair, unknown_peer) {
  table.peers.clear();
  table.add(fresh_keypair().pub, nullptr, 1);
  EXPECT_EQ(consume(initiation()), hs_error::unknown_peer);
  EXPECT_EQ(table.lookups, 1);
  EXPECT_FALSE(rst.pending);
  // The same key under another id: the table decides (this one ignores ids).
  table.add(ik.pub, nullptr, 2);
  EXPECT_EQ(consume(initiation(wall0 + 1)), hs_error::ok);
  EXPECT_EQ(rst.peer_index, 2u);
}

TEST_F(handshake_pair, replayed_and_older_timestamps) {
  const auto first = initiation(wall0);
  ASSERT_EQ(consume(first), hs_error::ok);
  EXPECT_EQ(consume(first), hs_error::replayed) << "the same packet again";
  const auto older = initiation(wall0 - 1);
  EXPECT_EQ(consume(older), hs_error::replayed);
  const auto same_time = initiation(wall0);
  EXPECT_EQ(consume(same_time), hs_error::replayed) << "equal is not greater";
  const auto newer = initiation(wall0 + 1);
  EXPECT_EQ(consume(newer), hs_error::ok);
  uint8_t ts[12];
  tai64n(wall0 + 1, ts);
  EXPECT_EQ(hex(table.peers[0].greatest, 12), hex(ts, 12));
  // A failure after the timestamp check would be too late to matter; a
  // failure before it never raises the greatest timestamp.
  auto later = initiation(wall0 + 5);
  later[110] ^= 1;
  fix_mac1(later, rk.pub);
  EXPECT_EQ(consume(later), hs_error::decrypt_failed);
  EXPECT_EQ(hex(table.peers[0].greatest, 12), hex(ts, 12));
}

TEST_F(handshake_pair, truncated_and_oversized_packets_of_each_type) {
  const auto init = initiation();
  std::vector<uint8_t> longer(init.begin(), init.end());
  longer.push_back(0);
  EXPECT_EQ(consume_initiation(rst, res, longer, table.table(), {}), hs_error::too_long);
  for (std::size_t n : {0u, 1u, 23u, 24u, 100u, 163u}) {
    EXPECT_EQ(consume_initiation(rst, res, std::span<const uint8_t>(init.data(), n), table.table(), {}),
              hs_error::too_short)
        << n;
  }
  ASSERT_EQ(consume(init), hs_error::ok);
  packet_resp resp{};
  hs_session_keys k;
  ASSERT_EQ(create_response(rst, resp, k), hs_error::ok);
  std::vector<uint8_t> rl(resp.begin(), resp.end());
  rl.push_back(0);
  EXPECT_EQ(consume_response(ist, ini, rl, k), hs_error::too_long);
  EXPECT_EQ(consume_response(ist, ini, std::span<const uint8_t>(resp.data(), 103), k), hs_error::too_short);
  EXPECT_EQ(consume_response(ist, ini, std::span<const uint8_t>(resp.data(), 24), k), hs_error::too_short);
  // A response handed to the responder, an initiation to the initiator.
  EXPECT_EQ(consume_initiation(rst, res, resp, table.table(), {}), hs_error::bad_type);
  EXPECT_EQ(consume_response(ist, ini, init, k), hs_error::bad_type);
  EXPECT_EQ(consume_cookie_reply(ist, resp, t0), hs_error::bad_type);
  // The failed attempts left the pending state intact.
  EXPECT_EQ(consume_response(ist, ini, resp, k), hs_error::ok);

  cookie_checker cc(res, t0);
  packet_cookie reply{};
  ASSERT_EQ(cc.make_cookie_reply(init, src_a, t0, reply), hs_error::ok);
  std::vector<uint8_t> cl(reply.begin(), reply.end());
  cl.push_back(0);
  EXPECT_EQ(consume_cookie_reply(ist, cl, t0), hs_error::too_long);
  EXPECT_EQ(consume_cookie_reply(ist, std::span<const uint8_t>(reply.data(), 67), t0), hs_error::too_short);
  EXPECT_EQ(cc.make_cookie_reply(std::span<const uint8_t>(init.data(), 100), src_a, t0, reply), hs_error::too_short);
  EXPECT_EQ(cc.make_cookie_reply(cl, src_a, t0, reply), hs_error::too_long);
}

// ------------------------------------------------------------ the initiator's checks

TEST_F(handshake_pair, response_checks) {
  ASSERT_EQ(consume(initiation()), hs_error::ok);
  packet_resp resp{};
  hs_session_keys rk_keys, k;
  ASSERT_EQ(create_response(rst, resp, rk_keys), hs_error::ok);
  // Another connection, another sender: not ours (both covered by mac1 too,
  // but the state check comes first).
  auto p = resp;
  p[15] ^= 1;
  EXPECT_EQ(consume_response(ist, ini, p, k), hs_error::unexpected);
  p = resp;
  p[7] ^= 2;
  EXPECT_EQ(consume_response(ist, ini, p, k), hs_error::unexpected);
  // A body byte, mac1 left: bad_mac1; mac1 recomputed: Noise catches it.
  p = resp;
  p[40] ^= 1;
  EXPECT_EQ(consume_response(ist, ini, p, k), hs_error::bad_mac1);
  fix_mac1(p, ik.pub);
  EXPECT_EQ(consume_response(ist, ini, p, k), hs_error::decrypt_failed);
  p = resp;
  p[60] ^= 1;  // the tag
  fix_mac1(p, ik.pub);
  EXPECT_EQ(consume_response(ist, ini, p, k), hs_error::decrypt_failed);
  p = resp;
  std::memset(p.data() + hs_ephemeral_at, 0, 32);
  fix_mac1(p, ik.pub);
  EXPECT_EQ(consume_response(ist, ini, p, k), hs_error::bad_key);
  // None of that ended the handshake: the genuine response still works,
  // once.
  ASSERT_EQ(consume_response(ist, ini, resp, k), hs_error::ok);
  EXPECT_EQ(hex(k.send, 32), hex(rk_keys.recv, 32));
  EXPECT_EQ(consume_response(ist, ini, resp, k), hs_error::unexpected);
}

TEST_F(handshake_pair, response_to_a_superseded_initiation_fails) {
  const auto first = initiation(wall0);
  ASSERT_EQ(consume(first), hs_error::ok);
  packet_resp resp{};
  hs_session_keys k;
  ASSERT_EQ(create_response(rst, resp, k), hs_error::ok);
  (void)initiation(wall0 + 1);  // a retry: new ephemeral
  EXPECT_EQ(consume_response(ist, ini, resp, k), hs_error::decrypt_failed);
}

TEST_F(handshake_pair, response_without_initiation_is_unexpected) {
  ASSERT_EQ(consume(initiation()), hs_error::ok);
  packet_resp resp{};
  hs_session_keys k;
  ASSERT_EQ(create_response(rst, resp, k), hs_error::ok);
  initiator_state fresh;
  ASSERT_TRUE(initiator_init(fresh, ini, rk.pub, member_id, nullptr, cid));
  EXPECT_EQ(consume_response(fresh, ini, resp, k), hs_error::unexpected);
}

TEST_F(handshake_pair, low_order_responder_key_is_bad_key_at_the_initiator) {
  const uint8_t zero[32] = {};
  ASSERT_TRUE(initiator_init(ist, ini, zero, member_id, nullptr, cid));
  packet_init p{};
  EXPECT_EQ(create_initiation(ist, ini, wall0, t0, p), hs_error::bad_key);
  hs_session_keys k;
  EXPECT_EQ(consume_response(ist, ini, packet_resp{}, k), hs_error::bad_version);
}

TEST(handshake_init, reserved_member_ids_are_refused) {
  static_keypair k = fresh_keypair();
  hs_identity id;
  EXPECT_FALSE(make_identity(k, 0, id));
  EXPECT_FALSE(make_identity(k, 0xffffffffu, id));
  ASSERT_TRUE(make_identity(k, 3, id));
  initiator_state st;
  EXPECT_FALSE(initiator_init(st, id, k.pub, 0, nullptr, 1));
  packet_init p{};
  EXPECT_EQ(create_initiation(st, id, wall0, t0, p), hs_error::internal) << "unset state";
}

// ------------------------------------------------------------ cookies

TEST_F(handshake_pair, under_load_cookie_round_trip) {
  cookie_checker cc(res, t0);
  const hs_load load_a{true, &cc, src_a, t0};
  const auto first = initiation(wall0, t0);
  EXPECT_EQ(consume(first, load_a), hs_error::bad_mac2);
  EXPECT_EQ(table.lookups, 0) << "no DH, no lookup before mac2";
  EXPECT_FALSE(rst.pending);
  packet_cookie reply{};
  ASSERT_EQ(cc.make_cookie_reply(first, src_a, t0, reply), hs_error::ok);
  handshake_view v;
  ASSERT_EQ(parse_handshake(reply, v), hs_error::ok);
  EXPECT_EQ(v.type, hs_type::cookie_reply);
  EXPECT_EQ(v.sender_id, member_id);
  EXPECT_EQ(v.connection_id, cid);
  // A cookie reply from another member or for another connection.
  auto bad = reply;
  bad[7] ^= 1;
  EXPECT_EQ(consume_cookie_reply(ist, bad, t0), hs_error::unexpected);
  bad = reply;
  bad[40] ^= 1;
  EXPECT_EQ(consume_cookie_reply(ist, bad, t0), hs_error::decrypt_failed);
  bad = reply;
  bad[25] ^= 1;  // the nonce
  EXPECT_EQ(consume_cookie_reply(ist, bad, t0), hs_error::decrypt_failed);
  ASSERT_EQ(consume_cookie_reply(ist, reply, t0 + 1000), hs_error::ok);
  EXPECT_EQ(consume_cookie_reply(ist, reply, t0 + 2000), hs_error::unexpected) << "one cookie per initiation";
  // The next initiation carries mac2 and passes under load, from A only.
  const auto second = initiation(wall0 + 1, t0 + 1'000'000);
  const hs_load load_b{true, &cc, src_b, t0 + 1'000'000};
  EXPECT_EQ(consume(second, load_b), hs_error::bad_mac2) << "a cookie for another source";
  EXPECT_EQ(consume(second, {true, &cc, src_a, t0 + 1'000'000}), hs_error::ok);
  // mac2 tampered: bad_mac2 under load, ignored otherwise.
  auto third = initiation(wall0 + 2, t0 + 2'000'000);
  third[init_mac2_at + 3] ^= 1;
  EXPECT_EQ(consume(third, {true, &cc, src_a, t0 + 2'000'000}), hs_error::bad_mac2);
  EXPECT_EQ(consume(third), hs_error::ok);
  // Under load without a checker is the caller's bug.
  EXPECT_EQ(consume(third, {true, nullptr, src_a, t0}), hs_error::internal);
}

TEST_F(handshake_pair, cookie_for_another_initiation_fails) {
  cookie_checker cc(res, t0);
  const auto first = initiation(wall0, t0);
  packet_cookie reply{};
  ASSERT_EQ(cc.make_cookie_reply(first, src_a, t0, reply), hs_error::ok);
  (void)initiation(wall0 + 1, t0);  // a new initiation, a new mac1
  EXPECT_EQ(consume_cookie_reply(ist, reply, t0), hs_error::decrypt_failed);
  initiator_state never_sent;
  ASSERT_TRUE(initiator_init(never_sent, ini, rk.pub, member_id, nullptr, cid));
  EXPECT_EQ(consume_cookie_reply(never_sent, reply, t0), hs_error::unexpected);
}

TEST_F(handshake_pair, cookie_and_secret_lifetimes) {
  cookie_checker cc(res, t0);
  const auto first = initiation(wall0, t0);
  packet_cookie reply{};
  ASSERT_EQ(cc.make_cookie_reply(first, src_a, t0, reply), hs_error::ok);
  ASSERT_EQ(consume_cookie_reply(ist, reply, t0), hs_error::ok);
  // Just inside the initiator's use window: mac2 set, and the secret (born
  // at t0) is still current at the responder.
  const uint64_t inside = t0 + cookie_use_lifetime_ns - 1;
  auto p = initiation(wall0 + 1, inside);
  EXPECT_NE(hex(p.data() + init_mac2_at, 16), std::string(32, '0'));
  EXPECT_EQ(consume(p, {true, &cc, src_a, inside}), hs_error::ok);
  // Past it: mac2 is zeros.
  p = initiation(wall0 + 2, t0 + cookie_use_lifetime_ns);
  EXPECT_EQ(hex(p.data() + init_mac2_at, 16), std::string(32, '0'));
  // The responder's secret expires at 120 s even if nobody rotated it...
  cookie_checker cc2(res, t0);
  packet_cookie reply2{};
  (void)initiation(wall0 + 3, t0);
  ASSERT_EQ(cc2.make_cookie_reply(first, src_a, t0, reply2), hs_error::ok);
  // (reply2 answers `first`, whose mac1 is no longer the last one)
  EXPECT_EQ(consume_cookie_reply(ist, reply2, t0), hs_error::decrypt_failed);
  const auto again = initiation(wall0 + 4, t0);
  ASSERT_EQ(cc2.make_cookie_reply(again, src_a, t0, reply2), hs_error::ok);
  ASSERT_EQ(consume_cookie_reply(ist, reply2, t0), hs_error::ok);
  const auto late = initiation(wall0 + 5, t0 + 60'000'000'000ull);
  EXPECT_EQ(consume(late, {true, &cc2, src_a, t0 + 60'000'000'000ull}), hs_error::ok);
  EXPECT_EQ(consume(initiation(wall0 + 6, t0 + 60'000'000'000ull), {true, &cc2, src_a, t0 + cookie_secret_lifetime_ns}),
            hs_error::bad_mac2);
  // ...and rotate() replaces it then, not before.
  const auto p7 = initiation(wall0 + 7, t0 + 60'000'000'000ull);
  EXPECT_TRUE(cc2.rotate(t0 + 100'000'000'000ull));
  EXPECT_EQ(consume(p7, {true, &cc2, src_a, t0 + 100'000'000'000ull}), hs_error::ok) << "not rotated before 120 s";
  EXPECT_TRUE(cc2.rotate(t0 + cookie_secret_lifetime_ns));
  const auto p8 = initiation(wall0 + 8, t0 + 100'000'000'000ull);
  EXPECT_EQ(consume(p8, {true, &cc2, src_a, t0 + cookie_secret_lifetime_ns}), hs_error::bad_mac2)
      << "the cookie of the old secret";
}

TEST_F(handshake_pair, cookie_reply_is_random_per_call) {
  cookie_checker cc(res, t0);
  const auto first = initiation();
  packet_cookie a{}, b{};
  ASSERT_EQ(cc.make_cookie_reply(first, src_a, t0, a), hs_error::ok);
  ASSERT_EQ(cc.make_cookie_reply(first, src_a, t0, b), hs_error::ok);
  EXPECT_NE(hex(a), hex(b)) << "fresh nonce each time";
  EXPECT_EQ(hex(a.data(), 24), hex(b.data(), 24));
  // Both open to the same cookie.
  ASSERT_EQ(consume_cookie_reply(ist, a, t0), hs_error::ok);
  const std::string cookie_a = hex(ist.cookie, 16);
  (void)initiation(wall0 + 1);
  ASSERT_EQ(cc.make_cookie_reply(std::span<const uint8_t>(initiation(wall0 + 2)), src_a, t0, b), hs_error::ok);
  ASSERT_EQ(consume_cookie_reply(ist, b, t0), hs_error::ok);
  EXPECT_EQ(hex(ist.cookie, 16), cookie_a);
}
