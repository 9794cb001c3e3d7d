// SPDX-License-Identifier: BSD-3-Clause
// aead_engine (dataplane/crypto/aead.h): the GCM specification's AES-256
// known answers (McGrew and Viega, "The Galois/Counter Mode of Operation",
// test cases 13-16), round trips over sizes and bursts with mixed keys,
// every single-byte corruption of a sealed packet, wrong keys and packet
// numbers, and a differential check against OpenSSL's AES-256-GCM. Every
// test runs on each ipsec-mb path this CPU supports (sse, avx, avx2,
// avx512, and the detected one), since their expanded keys differ.
#include "aead.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <cstring>
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

// A packet buffer: header || payload || room for the tag.
struct packet_buf {
  bytes buf;
  uint32_t header_bytes;
  uint32_t payload_bytes;

  packet_buf(const bytes &header, const bytes &payload)
      : buf(header.size() + payload.size() + aead_tag_bytes),
        header_bytes(static_cast<uint32_t>(header.size())),
        payload_bytes(static_cast<uint32_t>(payload.size())) {
    if (!header.empty()) std::memcpy(buf.data(), header.data(), header.size());
    if (!payload.empty()) std::memcpy(buf.data() + header.size(), payload.data(), payload.size());
  }
  aead_packet desc(const aead_key &k, uint64_t pn) { return aead_packet{buf.data(), header_bytes, payload_bytes, &k, pn, false}; }
  bytes payload() const { return bytes(buf.begin() + header_bytes, buf.begin() + header_bytes + payload_bytes); }
  bytes tag() const { return bytes(buf.end() - aead_tag_bytes, buf.end()); }
};

aead_key make_key(const bytes &k, const bytes &iv, aead_arch arch) {
  aead_key key;
  EXPECT_TRUE(aead_key_init(key, std::span<const uint8_t, 32>(k.data(), 32), std::span<const uint8_t, 12>(iv.data(), 12), arch));
  return key;
}

bytes random_bytes_of(std::mt19937_64 &rng, std::size_t n) {
  bytes b(n);
  for (auto &x : b) x = static_cast<uint8_t>(rng());
  return b;
}

class aead_test : public ::testing::TestWithParam<aead_arch> {
 protected:
  void SetUp() override {
    std::string error;
    engine_ = aead_engine::create(error, GetParam());
    if (!engine_) GTEST_SKIP() << aead_arch_name(GetParam()) << ": " << error;
  }
  aead_arch arch() const { return engine_->arch(); }
  aead_key key(const bytes &k, const bytes &iv) { return make_key(k, iv, GetParam()); }

  bool seal1(packet_buf &p, const aead_key &k, uint64_t pn) {
    aead_packet d = p.desc(k, pn);
    const uint32_t n = engine_->seal_burst({&d, 1});
    EXPECT_EQ(n, d.ok ? 1u : 0u);
    return d.ok;
  }
  bool open1(packet_buf &p, const aead_key &k, uint64_t pn) {
    aead_packet d = p.desc(k, pn);
    const uint32_t n = engine_->open_burst({&d, 1});
    EXPECT_EQ(n, d.ok ? 1u : 0u);
    return d.ok;
  }

  std::unique_ptr<aead_engine> engine_;
};

struct kat {
  const char *name, *key, *iv, *aad, *plain, *cipher, *tag;
};

// The GCM specification's AES-256 cases with 96-bit IVs.
const kat kats[] = {
    {"13", "0000000000000000000000000000000000000000000000000000000000000000", "000000000000000000000000", "", "", "",
     "530f8afbc74536b9a963b4f1c4cb738b"},
    {"14", "0000000000000000000000000000000000000000000000000000000000000000", "000000000000000000000000", "",
     "00000000000000000000000000000000", "cea7403d4d606b6e074ec5d3baf39d18", "d0d1c8a799996bf0265b98b5d48ab919"},
    {"15", "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308", "cafebabefacedbaddecaf888", "",
     "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657"
     "ba637b391aafd255",
     "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0a"
     "bcc9f662898015ad",
     "b094dac5d93471bdec1a502270e3cc6c"},
    {"16", "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308", "cafebabefacedbaddecaf888",
     "feedfacedeadbeeffeedfacedeadbeefabaddad2",
     "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657"
     "ba637b39",
     "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0a"
     "bcc9f662",
     "76fc6ece0f4e1768cddf8853bb2d551b"},
};

// Our nonce is iv XOR (0^32 || be64(pn)): with pn = 0 the key's IV is the
// vector's IV; with another pn, an IV pre-XORed with it must give the same.
TEST_P(aead_test, known_answers) {
  for (const kat &v : kats) {
    for (uint64_t pn : {uint64_t{0}, uint64_t{1}, uint64_t{0x0123456789abcdef}, uint64_t{(1ull << 62) - 1}}) {
      SCOPED_TRACE(std::string("test case ") + v.name + " pn " + std::to_string(pn));
      bytes iv = hex(v.iv);
      for (int i = 0; i < 8; ++i) iv[4 + i] ^= static_cast<uint8_t>(pn >> (56 - 8 * i));
      const aead_key k = key(hex(v.key), iv);
      uint8_t nonce[aead_iv_bytes];
      aead_nonce(k, pn, nonce);
      EXPECT_EQ(bytes(nonce, nonce + 12), hex(v.iv));

      packet_buf p(hex(v.aad), hex(v.plain));
      ASSERT_TRUE(seal1(p, k, pn));
      EXPECT_EQ(p.payload(), hex(v.cipher));
      EXPECT_EQ(p.tag(), hex(v.tag));
      ASSERT_TRUE(open1(p, k, pn));
      EXPECT_EQ(p.payload(), hex(v.plain));
    }
  }
}

TEST(aead_nonce, xors_big_endian_packet_number_into_the_last_8_bytes) {
  aead_key k{};
  for (int i = 0; i < 12; ++i) k.iv[i] = static_cast<uint8_t>(0x10 * i);
  uint8_t n[12];
  aead_nonce(k, 0x0102030405060708, n);
  EXPECT_EQ(bytes(n, n + 12), hex("00102030" "41526374" "8596a7b8"));
}

TEST_P(aead_test, round_trips_over_sizes_and_bursts_with_mixed_keys) {
  std::mt19937_64 rng(1);
  const aead_key keys[3] = {key(random_bytes_of(rng, 32), random_bytes_of(rng, 12)),
                            key(random_bytes_of(rng, 32), random_bytes_of(rng, 12)),
                            key(random_bytes_of(rng, 32), random_bytes_of(rng, 12))};
  const uint32_t sizes[] = {0, 1, 15, 16, 17, 63, 64, 1375, 1400, 9000};
  for (std::size_t burst : {1u, 7u, 32u, 70u}) {  // 70: more than one internal chunk of 32
    std::vector<packet_buf> bufs;
    std::vector<bytes> plains;
    std::vector<aead_packet> descs;
    for (std::size_t i = 0; i < burst; ++i) {
      const uint32_t size = sizes[(i + burst) % std::size(sizes)];
      plains.push_back(random_bytes_of(rng, size));
      bufs.emplace_back(random_bytes_of(rng, aead_header_bytes), plains.back());
    }
    for (std::size_t i = 0; i < burst; ++i) descs.push_back(bufs[i].desc(keys[i % 3], rng() >> 2));
    ASSERT_EQ(engine_->seal_burst(descs), burst);
    for (std::size_t i = 0; i < burst; ++i) {
      EXPECT_TRUE(descs[i].ok);
      if (plains[i].size() >= 16) {
        EXPECT_NE(bufs[i].payload(), plains[i]) << "size " << plains[i].size();
      }
      descs[i].ok = false;
    }
    ASSERT_EQ(engine_->open_burst(descs), burst);
    for (std::size_t i = 0; i < burst; ++i) {
      EXPECT_TRUE(descs[i].ok);
      EXPECT_EQ(bufs[i].payload(), plains[i]) << "burst " << burst << " packet " << i;
    }
  }
}

// Every byte of a sealed 100-byte packet (24 header, 60 payload, 16 tag),
// flipped in any of several ways, makes open fail.
TEST_P(aead_test, any_corrupted_byte_fails) {
  std::mt19937_64 rng(2);
  const aead_key k = key(random_bytes_of(rng, 32), random_bytes_of(rng, 12));
  packet_buf sealed(random_bytes_of(rng, 24), random_bytes_of(rng, 60));
  ASSERT_EQ(sealed.buf.size(), 100u);
  ASSERT_TRUE(seal1(sealed, k, 77));
  {
    packet_buf copy = sealed;
    ASSERT_TRUE(open1(copy, k, 77));
  }
  for (std::size_t i = 0; i < sealed.buf.size(); ++i) {
    for (uint8_t flip : {0x01, 0x80, 0xff}) {
      packet_buf bad = sealed;
      bad.buf[i] ^= flip;
      EXPECT_FALSE(open1(bad, k, 77)) << "byte " << i << " ^ " << int{flip};
    }
  }
}

TEST_P(aead_test, bad_packets_fail_alone_in_a_burst) {
  std::mt19937_64 rng(3);
  const aead_key k = key(random_bytes_of(rng, 32), random_bytes_of(rng, 12));
  std::vector<packet_buf> bufs;
  std::vector<aead_packet> descs;
  for (int i = 0; i < 8; ++i) bufs.emplace_back(random_bytes_of(rng, 24), random_bytes_of(rng, 100));
  for (int i = 0; i < 8; ++i) descs.push_back(bufs[i].desc(k, 1000 + i));
  ASSERT_EQ(engine_->seal_burst(descs), 8u);
  bufs[2].buf[30] ^= 4;
  bufs[5].buf.back() ^= 4;
  EXPECT_EQ(engine_->open_burst(descs), 6u);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(descs[i].ok, i != 2 && i != 5) << i;
}

TEST_P(aead_test, wrong_key_or_packet_number_fails) {
  std::mt19937_64 rng(4);
  const bytes kb = random_bytes_of(rng, 32), iv = random_bytes_of(rng, 12);
  const aead_key k = key(kb, iv);
  bytes other_kb = kb;
  other_kb[31] ^= 1;
  bytes other_iv = iv;
  other_iv[0] ^= 1;
  const aead_key wrong_key = key(other_kb, iv);
  const aead_key wrong_iv = key(kb, other_iv);
  for (uint32_t size : {0u, 1u, 64u, 1400u}) {
    packet_buf sealed(random_bytes_of(rng, 24), random_bytes_of(rng, size));
    ASSERT_TRUE(seal1(sealed, k, 500));
    packet_buf a = sealed, b = sealed, c = sealed, d = sealed, e = sealed;
    EXPECT_FALSE(open1(a, wrong_key, 500)) << size;
    EXPECT_FALSE(open1(b, wrong_iv, 500)) << size;
    EXPECT_FALSE(open1(c, k, 501)) << size;
    EXPECT_FALSE(open1(d, k, 500ull | (1ull << 40))) << size;
    EXPECT_TRUE(open1(e, k, 500)) << size;
  }
}

TEST_P(aead_test, same_plaintext_under_two_packet_numbers_differs) {
  std::mt19937_64 rng(5);
  const aead_key k = key(random_bytes_of(rng, 32), random_bytes_of(rng, 12));
  const bytes header = random_bytes_of(rng, 24), plain = random_bytes_of(rng, 64);
  packet_buf a(header, plain), b(header, plain);
  ASSERT_TRUE(seal1(a, k, 1));
  ASSERT_TRUE(seal1(b, k, 2));
  EXPECT_NE(a.payload(), b.payload());
  EXPECT_NE(a.tag(), b.tag());
  EXPECT_NE(a.payload(), plain);
  // Empty payload: only the tag changes with the packet number.
  packet_buf c(header, {}), d(header, {});
  ASSERT_TRUE(seal1(c, k, 1));
  ASSERT_TRUE(seal1(d, k, 2));
  EXPECT_NE(c.tag(), d.tag());
}

// A second opinion: OpenSSL opens what we seal and we open what it seals.
TEST_P(aead_test, agrees_with_openssl) {
  std::mt19937_64 rng(6);
  for (uint32_t size : {0u, 1u, 17u, 255u, 1400u, 9000u}) {
    const bytes kb = random_bytes_of(rng, 32), iv = random_bytes_of(rng, 12);
    const aead_key k = key(kb, iv);
    const uint64_t pn = rng() >> 2;
    uint8_t nonce[12];
    aead_nonce(k, pn, nonce);
    const bytes header = random_bytes_of(rng, 24), plain = random_bytes_of(rng, size);

    bytes ossl(size + 16);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int len = 0;
    ASSERT_EQ(EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), nullptr, kb.data(), nonce), 1);
    ASSERT_EQ(EVP_EncryptUpdate(ctx, nullptr, &len, header.data(), 24), 1);
    if (size > 0) {
      ASSERT_EQ(EVP_EncryptUpdate(ctx, ossl.data(), &len, plain.data(), static_cast<int>(size)), 1);
    }
    ASSERT_EQ(EVP_EncryptFinal_ex(ctx, ossl.data() + size, &len), 1);
    ASSERT_EQ(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, ossl.data() + size), 1);
    EVP_CIPHER_CTX_free(ctx);

    packet_buf ours(header, plain);
    ASSERT_TRUE(seal1(ours, k, pn));
    EXPECT_EQ(bytes(ours.buf.begin() + 24, ours.buf.end()), ossl) << size;

    packet_buf theirs(header, plain);
    std::memcpy(theirs.buf.data() + 24, ossl.data(), ossl.size());
    ASSERT_TRUE(open1(theirs, k, pn)) << size;
    EXPECT_EQ(theirs.payload(), plain);
  }
}

TEST_P(aead_test, key_from_another_path_or_wiped_fails_without_touching_the_packet) {
  std::mt19937_64 rng(7);
  const bytes kb = random_bytes_of(rng, 32), iv = random_bytes_of(rng, 12);
  aead_key k = key(kb, iv);
  const bytes header = random_bytes_of(rng, 24), plain = random_bytes_of(rng, 64);
  packet_buf p(header, plain);
  ASSERT_TRUE(seal1(p, k, 9));
  const bytes sealed = p.buf;

  aead_key wiped = k;
  aead_key_wipe(wiped);
  EXPECT_FALSE(open1(p, wiped, 9));
  EXPECT_EQ(p.buf, sealed);
  packet_buf q(header, plain);
  EXPECT_FALSE(seal1(q, wiped, 9));
  EXPECT_EQ(q.payload(), plain);

  for (aead_arch other : {aead_arch::sse, aead_arch::avx, aead_arch::avx2, aead_arch::avx512}) {
    if (other == arch()) continue;
    aead_key ko;
    if (!aead_key_init(ko, std::span<const uint8_t, 32>(kb.data(), 32), std::span<const uint8_t, 12>(iv.data(), 12), other))
      continue;
    EXPECT_FALSE(open1(p, ko, 9)) << aead_arch_name(other);
    EXPECT_EQ(p.buf, sealed);
  }
  EXPECT_TRUE(open1(p, k, 9));
}

TEST(aead_engine, detect_picks_a_real_path) {
  std::string error;
  auto engine = aead_engine::create(error);
  ASSERT_NE(engine, nullptr) << error;
  EXPECT_NE(engine->arch(), aead_arch::detect);
  std::printf("ipsec-mb %s picked %s\n", imb_get_version_str(), aead_arch_name(engine->arch()));
}

INSTANTIATE_TEST_SUITE_P(paths, aead_test,
                         ::testing::Values(aead_arch::detect, aead_arch::sse, aead_arch::avx, aead_arch::avx2,
                                           aead_arch::avx512),
                         [](const auto &info) { return std::string(aead_arch_name(info.param)); });

}  // namespace
