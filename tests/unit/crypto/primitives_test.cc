// SPDX-License-Identifier: BSD-3-Clause
// Known answers for primitives.h, each from its standard: RFC 7748 (X25519,
// sections 5.2 and 6.1), RFC 5869 test case 1 (HKDF-SHA-256), RFC 4231 test
// case 2 (HMAC-SHA-256), FIPS 180-2 "abc" (SHA-256), and the GCM
// specification's test case 16 (AES-256-GCM with associated data). Then the
// refusals: a flipped bit anywhere in tag, AAD or ciphertext, and X25519
// with all-zero and low-order public keys.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "primitives.h"

using namespace mtp::crypto;

namespace {

std::vector<uint8_t> unhex(const std::string &s) {
  std::vector<uint8_t> out;
  for (std::size_t i = 0; i + 1 < s.size(); i += 2) out.push_back(static_cast<uint8_t>(std::stoi(s.substr(i, 2), nullptr, 16)));
  return out;
}

std::string hex(const uint8_t *p, std::size_t n) {
  static const char d[] = "0123456789abcdef";
  std::string s;
  for (std::size_t i = 0; i < n; ++i) {
    s.push_back(d[p[i] >> 4]);
    s.push_back(d[p[i] & 15]);
  }
  return s;
}

std::span<const uint8_t> str(const char *s) { return {reinterpret_cast<const uint8_t *>(s), std::strlen(s)}; }

}  // namespace

TEST(x25519, rfc7748_section_5_2) {
  struct {
    const char *scalar, *u, *out;
  } v[] = {
      {"a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
       "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
       "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"},
      {"4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
       "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
       "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957"},
  };
  for (const auto &t : v) {
    const auto k = unhex(t.scalar), u = unhex(t.u);
    uint8_t out[32];
    ASSERT_TRUE(x25519(k.data(), u.data(), out));
    EXPECT_EQ(hex(out, 32), t.out);
  }
}

TEST(x25519, rfc7748_section_6_1_alice_and_bob) {
  const auto a = unhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
  const auto b = unhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
  uint8_t a_pub[32], b_pub[32], k1[32], k2[32];
  ASSERT_TRUE(x25519_public(a.data(), a_pub));
  ASSERT_TRUE(x25519_public(b.data(), b_pub));
  EXPECT_EQ(hex(a_pub, 32), "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
  EXPECT_EQ(hex(b_pub, 32), "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
  ASSERT_TRUE(x25519(a.data(), b_pub, k1));
  ASSERT_TRUE(x25519(b.data(), a_pub, k2));
  EXPECT_EQ(hex(k1, 32), "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
  EXPECT_EQ(hex(k2, 32), "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
  // The form that takes our own public key along gives the same secret.
  uint8_t k3[32], k4[32];
  ASSERT_TRUE(x25519(a.data(), a_pub, b_pub, k3));
  ASSERT_TRUE(x25519(b.data(), b_pub, a_pub, k4));
  EXPECT_EQ(hex(k3, 32), "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
  EXPECT_EQ(hex(k4, 32), hex(k3, 32));
}

TEST(x25519, refuses_zero_and_low_order_public_keys) {
  const auto a = unhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
  uint8_t a_pub[32];
  ASSERT_TRUE(x25519_public(a.data(), a_pub));
  // u = 0, u = 1, and a point of order 8 (from the list in Bernstein's
  // Curve25519 page that libsodium and WireGuard also reject), and p + 0
  // (non-canonical 0).
  const char *bad[] = {
      "0000000000000000000000000000000000000000000000000000000000000000",
      "0100000000000000000000000000000000000000000000000000000000000000",
      "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
      "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
      "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  };
  for (const char *p : bad) {
    const auto pub = unhex(p);
    uint8_t out[32];
    std::memset(out, 0xaa, sizeof out);
    EXPECT_FALSE(x25519(a.data(), pub.data(), out)) << p;
    EXPECT_EQ(hex(out, 32), std::string(64, '0')) << "no partial secret is left behind";
    std::memset(out, 0xaa, sizeof out);
    EXPECT_FALSE(x25519(a.data(), a_pub, pub.data(), out)) << p;
    EXPECT_EQ(hex(out, 32), std::string(64, '0'));
  }
}

TEST(sha256, abc) {
  uint8_t out[32];
  const std::span<const uint8_t> parts[] = {str("abc")};
  sha256(parts, out);
  EXPECT_EQ(hex(out, 32), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  // The same bytes in three parts hash the same.
  const std::span<const uint8_t> split[] = {str("a"), str(""), str("bc")};
  uint8_t out2[32];
  sha256(split, out2);
  EXPECT_EQ(hex(out2, 32), hex(out, 32));
}

TEST(hmac_sha256, rfc4231_test_case_2) {
  uint8_t out[32];
  const std::span<const uint8_t> parts[] = {str("what do ya want "), str("for nothing?")};
  hmac_sha256(str("Jefe"), parts, out);
  EXPECT_EQ(hex(out, 32), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(hkdf, rfc5869_test_case_1) {
  const std::vector<uint8_t> ikm(22, 0x0b);
  const auto salt = unhex("000102030405060708090a0b0c");
  const auto info = unhex("f0f1f2f3f4f5f6f7f8f9");
  uint8_t prk[32];
  hkdf_extract(salt, ikm, prk);
  EXPECT_EQ(hex(prk, 32), "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5");
  uint8_t okm[42];
  hkdf_expand(prk, info, okm);
  EXPECT_EQ(hex(okm, 42),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865");
}

namespace {

// GCM specification (McGrew and Viega), test case 16: AES-256, 96-bit IV,
// 60-byte plaintext, 20 bytes of associated data.
struct gcm16 {
  std::vector<uint8_t> key = unhex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308");
  std::vector<uint8_t> iv = unhex("cafebabefacedbaddecaf888");
  std::vector<uint8_t> aad = unhex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
  std::vector<uint8_t> plain = unhex(
      "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657"
      "ba637b39");
  std::string sealed =
      "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0a"
      "bcc9f662"
      "76fc6ece0f4e1768cddf8853bb2d551b";
};

}  // namespace

TEST(aes256gcm, gcm_spec_test_case_16) {
  gcm16 v;
  std::vector<uint8_t> out(v.plain.size() + 16);
  ASSERT_TRUE(aes256gcm_seal(v.key.data(), v.iv.data(), v.aad, v.plain, out.data()));
  EXPECT_EQ(hex(out.data(), out.size()), v.sealed);
  std::vector<uint8_t> back(v.plain.size());
  ASSERT_TRUE(aes256gcm_open(v.key.data(), v.iv.data(), v.aad, out, back.data()));
  EXPECT_EQ(back, v.plain);
}

TEST(aes256gcm, any_flipped_bit_in_tag_aad_or_ciphertext_fails) {
  gcm16 v;
  const auto sealed = unhex(v.sealed);
  int refused = 0, tried = 0;
  auto try_open = [&](const std::vector<uint8_t> &aad, const std::vector<uint8_t> &ct) {
    std::vector<uint8_t> back(ct.size() - 16, 0x55);
    ++tried;
    if (!aes256gcm_open(v.key.data(), v.iv.data(), aad, ct, back.data())) {
      ++refused;
      EXPECT_EQ(back, std::vector<uint8_t>(back.size(), 0)) << "a forgery's plaintext is wiped";
    }
  };
  for (std::size_t i = 0; i < sealed.size(); ++i) {  // ciphertext bytes, then the tag
    auto ct = sealed;
    ct[i] ^= static_cast<uint8_t>(1u << (i % 8));
    try_open(v.aad, ct);
  }
  for (std::size_t i = 0; i < v.aad.size(); ++i) {
    auto aad = v.aad;
    aad[i] ^= 0x80;
    try_open(aad, sealed);
  }
  auto short_aad = v.aad;
  short_aad.pop_back();
  try_open(short_aad, sealed);
  EXPECT_EQ(tried, static_cast<int>(sealed.size() + v.aad.size() + 1));
  EXPECT_EQ(refused, tried);
  // A sealed input shorter than a tag is refused outright.
  uint8_t none[1];
  EXPECT_FALSE(aes256gcm_open(v.key.data(), v.iv.data(), {}, std::span<const uint8_t>(sealed.data(), 15), none));
}

TEST(aes256gcm, empty_plaintext_is_a_tag) {
  const std::vector<uint8_t> key(32, 7), iv(12, 9), aad = {1, 2, 3};
  uint8_t tag[16];
  ASSERT_TRUE(aes256gcm_seal(key.data(), iv.data(), aad, {}, tag));
  uint8_t none[1];
  EXPECT_TRUE(aes256gcm_open(key.data(), iv.data(), aad, {tag, 16}, none));
  tag[0] ^= 1;
  EXPECT_FALSE(aes256gcm_open(key.data(), iv.data(), aad, {tag, 16}, none));
}

TEST(misc, equal_ct_random_and_wipe) {
  const uint8_t a[4] = {1, 2, 3, 4}, b[4] = {1, 2, 3, 5};
  EXPECT_TRUE(equal_ct({a, 4}, {a, 4}));
  EXPECT_FALSE(equal_ct({a, 4}, {b, 4}));
  EXPECT_FALSE(equal_ct({a, 4}, {a, 3}));
  uint8_t r1[32] = {}, r2[32] = {};
  ASSERT_TRUE(random_bytes(r1));
  ASSERT_TRUE(random_bytes(r2));
  EXPECT_NE(hex(r1, 32), hex(r2, 32));
  wipe(r1, sizeof r1);
  EXPECT_EQ(hex(r1, 32), std::string(64, '0'));
}
