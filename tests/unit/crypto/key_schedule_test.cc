// SPDX-License-Identifier: BSD-3-Clause
// The key schedule (dataplane/crypto/key_schedule.h). Expected bytes come
// from two places independent of our HKDF (primitives.cc builds it from
// HMAC): constants printed by the OpenSSL 3.0 command line,
//
//   openssl kdf -keylen 32 -kdfopt digest:SHA256 -kdfopt mode:EXPAND_ONLY
//     -kdfopt hexkey:<secret> -kdfopt info:"mtp1 key" HKDF      (one line)
//
// (and likewise "mtp1 iv" with -keylen 12, "mtp1 ku" with -keylen 32), and
// OpenSSL's EVP_KDF "HKDF" in EXPAND_ONLY mode called from this test.
#include "key_schedule.h"

#include <gtest/gtest.h>
#include <openssl/core_names.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

using namespace mtp::crypto;

namespace {

using bytes = std::vector<uint8_t>;

bytes hex(const std::string &s) {
  bytes out;
  for (std::size_t i = 0; i + 1 < s.size(); i += 2) out.push_back(static_cast<uint8_t>(std::stoul(s.substr(i, 2), nullptr, 16)));
  return out;
}

// secret(0) = 00 01 02 ... 1f.
const bytes secret0 = hex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
// From `openssl kdf` (see the top of the file).
const bytes key0 = hex("05ae9cf74a325a65ff3af225b271c1d087b3b9a2c03425c78669882742874290");
const bytes iv0 = hex("b9c4069c2c09b252b62da333");
const bytes secret1 = hex("5c057ef259d97a1b5c24b3a4581d52dec4545c2fdab8f2c0894ad1e7cf6a6873");
const bytes key1 = hex("a2b65a52452aaff26a9a5e1e717cfd75195ec60f8559a1baaf79d2950ae60caf");
const bytes iv1 = hex("3535a64ec378b83883895a51");
const bytes secret2 = hex("7cb49622bfa6583b47f0f9d4f1a34f0db7ea6b34dceab718790e622605d3e023");

// HKDF-Expand(prk, info, n) through OpenSSL's EVP_KDF.
bytes evp_expand(const bytes &prk, const std::string &info, std::size_t n) {
  EVP_KDF *kdf = EVP_KDF_fetch(nullptr, "HKDF", nullptr);
  EVP_KDF_CTX *ctx = EVP_KDF_CTX_new(kdf);
  int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, const_cast<uint8_t *>(prk.data()), prk.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, const_cast<char *>(info.data()), info.size()),
      OSSL_PARAM_construct_end(),
  };
  bytes out(n);
  EXPECT_EQ(EVP_KDF_derive(ctx, out.data(), n, params), 1);
  EVP_KDF_CTX_free(ctx);
  EVP_KDF_free(kdf);
  return out;
}

std::span<const uint8_t, 32> s32(const bytes &b) { return std::span<const uint8_t, 32>(b.data(), 32); }

aead_key expanded(const bytes &key, const bytes &iv) {
  aead_key k;
  EXPECT_TRUE(aead_key_init(k, s32(key), std::span<const uint8_t, 12>(iv.data(), 12)));
  return k;
}

// Same AES key (compared as ipsec-mb expanded it) and same IV.
void expect_same_key(const aead_key &a, const aead_key &b) {
  EXPECT_EQ(std::memcmp(&a.gcm, &b.gcm, sizeof a.gcm), 0);
  EXPECT_EQ(bytes(a.iv, a.iv + 12), bytes(b.iv, b.iv + 12));
  EXPECT_EQ(a.arch, b.arch);
}

TEST(key_schedule, labels_are_the_documented_ascii) {
  EXPECT_EQ(std::string(label_key), "mtp1 key");
  EXPECT_EQ(std::string(label_iv), "mtp1 iv");
  EXPECT_EQ(std::string(label_key_update), "mtp1 ku");
}

TEST(key_schedule, fixed_secret_gives_the_openssl_cli_bytes) {
  uint8_t key[32], iv[12], next[32];
  derive_packet_key(s32(secret0), key, iv);
  derive_next_secret(s32(secret0), next);
  EXPECT_EQ(bytes(key, key + 32), key0);
  EXPECT_EQ(bytes(iv, iv + 12), iv0);
  EXPECT_EQ(bytes(next, next + 32), secret1);
  derive_packet_key(s32(secret1), key, iv);
  derive_next_secret(s32(secret1), next);
  EXPECT_EQ(bytes(key, key + 32), key1);
  EXPECT_EQ(bytes(iv, iv + 12), iv1);
  EXPECT_EQ(bytes(next, next + 32), secret2);
}

TEST(key_schedule, random_secrets_agree_with_evp_kdf) {
  std::mt19937_64 rng(11);
  for (int round = 0; round < 50; ++round) {
    bytes secret(32);
    for (auto &b : secret) b = static_cast<uint8_t>(rng());
    uint8_t key[32], iv[12], next[32];
    derive_packet_key(s32(secret), key, iv);
    derive_next_secret(s32(secret), next);
    EXPECT_EQ(bytes(key, key + 32), evp_expand(secret, "mtp1 key", 32));
    EXPECT_EQ(bytes(iv, iv + 12), evp_expand(secret, "mtp1 iv", 12));
    EXPECT_EQ(bytes(next, next + 32), evp_expand(secret, "mtp1 ku", 32));
  }
}

TEST(traffic_keys, start_and_roll_follow_the_documented_chain) {
  traffic_keys tk;
  EXPECT_FALSE(tk.started());
  EXPECT_FALSE(tk.roll());
  ASSERT_TRUE(tk.start(s32(secret0)));
  EXPECT_TRUE(tk.started());
  EXPECT_EQ(tk.epoch(), 0u);
  expect_same_key(tk.current(), expanded(key0, iv0));
  EXPECT_EQ(tk.previous(), nullptr);

  ASSERT_TRUE(tk.roll());
  EXPECT_EQ(tk.epoch(), 1u);
  expect_same_key(tk.current(), expanded(key1, iv1));
  ASSERT_NE(tk.previous(), nullptr);
  expect_same_key(*tk.previous(), expanded(key0, iv0));

  // Epoch 2's key comes from secret(2), printed by the CLI above.
  ASSERT_TRUE(tk.roll());
  uint8_t key2[32], iv2[12];
  derive_packet_key(s32(secret2), key2, iv2);
  EXPECT_EQ(bytes(key2, key2 + 32), evp_expand(secret2, "mtp1 key", 32));
  expect_same_key(tk.current(), expanded(bytes(key2, key2 + 32), bytes(iv2, iv2 + 12)));
  expect_same_key(*tk.previous(), expanded(key1, iv1));

  tk.drop_previous();
  EXPECT_EQ(tk.previous(), nullptr);
  EXPECT_EQ(tk.epoch(), 2u);
}

TEST(traffic_keys, start_at_a_later_epoch_and_move) {
  traffic_keys tk;
  ASSERT_TRUE(tk.start(s32(secret1), 1));
  EXPECT_EQ(tk.epoch(), 1u);
  expect_same_key(tk.current(), expanded(key1, iv1));
  traffic_keys moved = std::move(tk);
  EXPECT_FALSE(tk.started());  // NOLINT(bugprone-use-after-move): a move wipes the source
  EXPECT_TRUE(moved.started());
  expect_same_key(moved.current(), expanded(key1, iv1));
  moved.clear();
  EXPECT_FALSE(moved.started());
  EXPECT_EQ(moved.key_for(epoch_on_wire(1)), nullptr);
}

TEST(traffic_keys, keys_seal_and_open_across_a_roll) {
  std::string error;
  auto engine = aead_engine::create(error);
  ASSERT_NE(engine, nullptr) << error;
  traffic_keys tx, rx;
  ASSERT_TRUE(tx.start(s32(secret0)));
  ASSERT_TRUE(rx.start(s32(secret0)));

  uint8_t buf[24 + 32 + 16] = {};
  aead_packet p{buf, 24, 32, &tx.current(), 5, false};
  buf[0] = epoch_on_wire(tx.epoch());
  ASSERT_EQ(engine->seal_burst({&p, 1}), 1u);  // sent in epoch 0, arrives after the roll
  ASSERT_TRUE(tx.roll());
  ASSERT_TRUE(rx.roll());
  const aead_key *k = rx.key_for(buf[0]);
  ASSERT_EQ(k, rx.previous());
  p.key = k;
  EXPECT_EQ(engine->open_burst({&p, 1}), 1u);
  rx.drop_previous();
  EXPECT_EQ(rx.key_for(buf[0]), nullptr);
}

TEST(traffic_keys, the_next_epoch_is_tried_without_moving_until_a_packet_opens) {
  std::string error;
  auto engine = aead_engine::create(error);
  ASSERT_NE(engine, nullptr) << error;
  traffic_keys tx, rx;
  ASSERT_TRUE(tx.start(s32(secret0)));
  ASSERT_TRUE(rx.start(s32(secret0)));
  ASSERT_TRUE(tx.roll());
  uint8_t buf[24 + 32 + 16] = {};
  buf[0] = epoch_on_wire(tx.epoch());
  aead_packet p{buf, 24, 32, &tx.current(), 9, false};
  ASSERT_EQ(engine->seal_burst({&p, 1}), 1u);
  ASSERT_EQ(rx.match(buf[0]), epoch_match::next);
  // A forged packet naming the next epoch: it does not open, and the
  // receiver stays where it is (peeking again gives the same key).
  uint8_t forged[sizeof buf];
  std::memcpy(forged, buf, sizeof buf);
  forged[30] ^= 1;
  const aead_key *next = rx.peek_next();
  ASSERT_NE(next, nullptr);
  aead_packet f{forged, 24, 32, next, 9, false};
  EXPECT_EQ(engine->open_burst({&f, 1}), 0u);
  EXPECT_EQ(rx.epoch(), 0u);
  EXPECT_EQ(rx.peek_next(), next);
  // The genuine one opens with the peeked key; then the roll uses it.
  p.key = rx.peek_next();
  ASSERT_EQ(engine->open_burst({&p, 1}), 1u);
  ASSERT_TRUE(rx.roll());
  EXPECT_EQ(rx.epoch(), 1u);
  expect_same_key(rx.current(), expanded(key1, iv1));
  expect_same_key(*rx.previous(), expanded(key0, iv0));
  EXPECT_EQ(rx.match(buf[0]), epoch_match::current);
}

TEST(traffic_keys, two_directions_give_different_keys) {
  // A handshake yields one secret per direction; each side seals with its
  // own and opens with the other's.
  const bytes c2s = evp_expand(secret0, "test initiator", 32);
  const bytes s2c = evp_expand(secret0, "test responder", 32);
  traffic_keys a, b;
  ASSERT_TRUE(a.start(s32(c2s)));
  ASSERT_TRUE(b.start(s32(s2c)));
  EXPECT_NE(std::memcmp(&a.current().gcm, &b.current().gcm, sizeof(gcm_key_data)), 0);
  EXPECT_NE(bytes(a.current().iv, a.current().iv + 12), bytes(b.current().iv, b.current().iv + 12));

  std::string error;
  auto engine = aead_engine::create(error);
  ASSERT_NE(engine, nullptr) << error;
  uint8_t buf[24 + 10 + 16] = {1, 2, 3};
  aead_packet p{buf, 24, 10, &a.current(), 1, false};
  ASSERT_EQ(engine->seal_burst({&p, 1}), 1u);
  p.key = &b.current();
  EXPECT_EQ(engine->open_burst({&p, 1}), 0u);
}

TEST(epoch_match, maps_the_seven_bit_field) {
  using m = epoch_match;
  EXPECT_EQ(match_epoch(0, false, 0), m::current);
  EXPECT_EQ(match_epoch(0, false, 1), m::next);
  EXPECT_EQ(match_epoch(0, false, 127), m::unknown);  // no epoch before 0
  EXPECT_EQ(match_epoch(0, true, 127), m::unknown);
  EXPECT_EQ(match_epoch(5, true, 4), m::previous);
  EXPECT_EQ(match_epoch(5, false, 4), m::unknown);  // previous key dropped
  EXPECT_EQ(match_epoch(5, true, 5), m::current);
  EXPECT_EQ(match_epoch(5, true, 6), m::next);
  EXPECT_EQ(match_epoch(5, true, 7), m::unknown);
  EXPECT_EQ(match_epoch(5, true, 3), m::unknown);
  // Wrapping modulo 128.
  EXPECT_EQ(match_epoch(127, true, 127), m::current);
  EXPECT_EQ(match_epoch(127, true, 0), m::next);
  EXPECT_EQ(match_epoch(128, true, 0), m::current);
  EXPECT_EQ(match_epoch(128, true, 127), m::previous);
  EXPECT_EQ(match_epoch(128, true, 1), m::next);
  EXPECT_EQ(match_epoch(1000, true, 1000 % 128), m::current);
  EXPECT_EQ(match_epoch(1000, true, 999 % 128), m::previous);
  EXPECT_EQ(match_epoch(1000, true, 1001 % 128), m::next);
  // The eighth bit is not the epoch's.
  EXPECT_EQ(match_epoch(5, true, 0x80 | 5), m::current);
  EXPECT_EQ(epoch_on_wire(130), 2);

  traffic_keys tk;
  EXPECT_EQ(tk.match(0), m::unknown);  // not started
  ASSERT_TRUE(tk.start(s32(secret0), 127));
  EXPECT_EQ(tk.match(127), m::current);
  EXPECT_EQ(tk.match(126), m::unknown);
  EXPECT_EQ(tk.match(0), m::next);
  ASSERT_TRUE(tk.roll());
  EXPECT_EQ(tk.epoch(), 128u);
  EXPECT_EQ(tk.match(127), m::previous);
  EXPECT_EQ(tk.match(0), m::current);
  EXPECT_EQ(tk.key_for(127), tk.previous());
  EXPECT_EQ(tk.key_for(0), &tk.current());
  EXPECT_EQ(tk.key_for(1), nullptr);
}

TEST(traffic_keys, roll_stops_before_the_epoch_counter_wraps) {
  traffic_keys tk;
  ASSERT_TRUE(tk.start(s32(secret0), UINT32_MAX - 1));
  EXPECT_TRUE(tk.roll());
  EXPECT_EQ(tk.epoch(), UINT32_MAX);
  EXPECT_FALSE(tk.roll());
  EXPECT_EQ(tk.epoch(), UINT32_MAX);
}

}  // namespace

// protocol.md appendix B.4 and B.5: sealed packets, from a secret through
// the key schedule and the AEAD, both directions.
namespace {
std::vector<std::map<std::string, std::string>> sealed_vectors() {
  std::ifstream in(MTP_SOURCE_ROOT "/docs/protocol.md");
  std::vector<std::map<std::string, std::string>> out;
  std::string line;
  bool inside = false;
  while (std::getline(in, line)) {
    if (line == "```mtp-sealed-vector") {
      inside = true;
      out.emplace_back();
    } else if (inside && line == "```") {
      inside = false;
    } else if (inside) {
      const auto colon = line.find(": ");
      if (colon != std::string::npos) out.back()[line.substr(0, colon)] = line.substr(colon + 2);
    }
  }
  return out;
}
}  // namespace

TEST(sealed_vectors, protocol_md_appendix_b_packets_seal_and_open) {
  const auto vectors = sealed_vectors();
  ASSERT_EQ(vectors.size(), 2u) << "protocol.md appendix B has B.4 and B.5";
  std::string error;
  auto engine = aead_engine::create(error);
  ASSERT_NE(engine, nullptr) << error;
  for (const auto &v : vectors) {
    SCOPED_TRACE(v.at("name"));
    const bytes secret = hex(v.at("secret"));
    uint8_t key[32], iv[12];
    derive_packet_key(s32(secret), key, iv);
    EXPECT_EQ(bytes(key, key + 32), hex(v.at("key")));
    EXPECT_EQ(bytes(iv, iv + 12), hex(v.at("iv")));
    traffic_keys tk;
    ASSERT_TRUE(tk.start(s32(secret)));
    const uint64_t pn = std::stoull(v.at("packet_number"));
    if (v.count("nonce")) {
      uint8_t nonce[12];
      aead_nonce(tk.current(), pn, nonce);
      EXPECT_EQ(bytes(nonce, nonce + 12), hex(v.at("nonce")));
    }
    const bytes header = hex(v.at("header")), frames = hex(v.at("frames")), packet = hex(v.at("packet"));
    bytes buf = header;
    buf.insert(buf.end(), frames.begin(), frames.end());
    buf.resize(buf.size() + 16);
    aead_packet p{buf.data(), static_cast<uint32_t>(header.size()), static_cast<uint32_t>(frames.size()),
                  &tk.current(), pn, false};
    ASSERT_EQ(engine->seal_burst({&p, 1}), 1u);
    EXPECT_EQ(buf, packet) << "sealed bytes";
    bytes in = packet;
    aead_packet q{in.data(), static_cast<uint32_t>(header.size()), static_cast<uint32_t>(frames.size()),
                  &tk.current(), pn, false};
    ASSERT_EQ(engine->open_burst({&q, 1}), 1u);
    EXPECT_EQ(bytes(in.begin() + static_cast<std::ptrdiff_t>(header.size()),
                    in.begin() + static_cast<std::ptrdiff_t>(header.size() + frames.size())),
              frames);
    if (v.count("next_secret")) {
      uint8_t next[32];
      derive_next_secret(s32(secret), next);
      EXPECT_EQ(bytes(next, next + 32), hex(v.at("next_secret")));
      ASSERT_TRUE(tk.roll());
      derive_packet_key(s32(hex(v.at("next_secret"))), key, iv);
      EXPECT_EQ(bytes(key, key + 32), hex(v.at("next_key")));
      EXPECT_EQ(bytes(iv, iv + 12), hex(v.at("next_iv")));
      expect_same_key(tk.current(), expanded(hex(v.at("next_key")), hex(v.at("next_iv"))));
    }
  }
}
