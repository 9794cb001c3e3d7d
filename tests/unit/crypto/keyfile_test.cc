// SPDX-License-Identifier: BSD-3-Clause
// keyfile.h: base64 of keys (a fixed vector, round trips, every kind of
// malformed text), and private key files: written 0600 and never over an
// existing file; loaded only when private, regular and holding one key.
// Files live in a fresh directory under the system temporary directory.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include "keyfile.h"

using namespace mtp::crypto;

namespace {

struct temp_dir {
  std::string path;
  temp_dir() {
    const char *base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/mtp-keyfile-XXXXXX";
    if (::mkdtemp(tmpl.data()) != nullptr) path = tmpl;
  }
  ~temp_dir() {
    if (path.empty()) return;
    const int rc = std::system(("rm -rf '" + path + "'").c_str());
    (void)rc;
  }
};

void write_raw(const std::string &path, const std::string &content, mode_t mode) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, mode);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, content.data(), content.size()), static_cast<ssize_t>(content.size()));
  ::close(fd);
  ASSERT_EQ(::chmod(path.c_str(), mode), 0);
}

std::string read_all(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

TEST(key_base64, known_vector_and_round_trip) {
  // RFC 7748 6.1's Alice key; base64 checked with `base64` of coreutils.
  const uint8_t alice[32] = {0x77, 0x07, 0x6d, 0x0a, 0x73, 0x18, 0xa5, 0x7d, 0x3c, 0x16, 0xc1,
                             0x72, 0x51, 0xb2, 0x66, 0x45, 0xdf, 0x4c, 0x2f, 0x87, 0xeb, 0xc0,
                             0x99, 0x2a, 0xb1, 0x77, 0xfb, 0xa5, 0x1d, 0xb9, 0x2c, 0x2a};
  EXPECT_EQ(key_to_base64(alice), "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=");
  uint8_t back[32];
  std::string err;
  ASSERT_TRUE(key_from_base64("dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=", back, err)) << err;
  EXPECT_EQ(std::memcmp(back, alice, 32), 0);
  // Every byte value in every position survives.
  for (int round = 0; round < 64; ++round) {
    uint8_t k[32];
    for (int i = 0; i < 32; ++i) k[i] = static_cast<uint8_t>(round * 37 + i * 11);
    const std::string s = key_to_base64(k);
    ASSERT_EQ(s.size(), key_base64_chars);
    ASSERT_TRUE(key_from_base64(s, back, err)) << s << ": " << err;
    EXPECT_EQ(std::memcmp(back, k, 32), 0) << s;
  }
}

TEST(key_base64, rejects_everything_else) {
  const std::string good = "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=";
  const std::string bad[] = {
      "",
      good.substr(0, 43),                                    // 43 characters
      good + "=",                                            // 45
      good + "\n",                                           // a newline is the file's business
      " " + good.substr(1),                                  // a space
      good.substr(0, 10) + "*" + good.substr(11),            // not in the alphabet
      good.substr(0, 10) + "-" + good.substr(11),            // URL-safe alphabet
      good.substr(0, 43) + "A",                              // no padding
      good.substr(0, 42) + "==",                             // 31 bytes of padding layout
      good.substr(0, 42) + "p=",                             // non-canonical: low bits set (o=...1110, p=...1111)
      std::string(43, 'A') + std::string(1, '\0'),         // 44 with a NUL
  };
  int rejected = 0;
  for (const auto &s : bad) {
    uint8_t out[32];
    std::memset(out, 0x5a, sizeof out);
    std::string err;
    if (!key_from_base64(s, out, err)) {
      ++rejected;
      EXPECT_NE(err.find("not a base64 key"), std::string::npos) << err;
      EXPECT_EQ(out[0] | out[31], 0) << "output wiped";
    } else {
      ADD_FAILURE() << "accepted: '" << s << "'";
    }
  }
  EXPECT_EQ(rejected, static_cast<int>(std::size(bad)));
  std::string err;
  uint8_t out[32];
  EXPECT_FALSE(key_from_base64(good.substr(0, 43), out, err));
  EXPECT_NE(err.find("43 characters"), std::string::npos) << err;
  EXPECT_FALSE(key_from_base64(good.substr(0, 10) + "*" + good.substr(11), out, err));
  EXPECT_NE(err.find("character 11"), std::string::npos) << err;
}

TEST(keypair, generate_and_derive) {
  static_keypair a, b, c;
  ASSERT_TRUE(generate_keypair(a));
  ASSERT_TRUE(generate_keypair(b));
  EXPECT_NE(std::memcmp(a.priv, b.priv, 32), 0);
  EXPECT_EQ(a.priv[0] & 7, 0) << "clamped";
  EXPECT_EQ(a.priv[31] & 0xc0, 0x40) << "clamped";
  ASSERT_TRUE(keypair_from_private(a.priv, c));
  EXPECT_EQ(std::memcmp(a.pub, c.pub, 32), 0);
  uint8_t shared_ab[32], shared_ba[32];
  ASSERT_TRUE(x25519(a.priv, b.pub, shared_ab));
  ASSERT_TRUE(x25519(b.priv, a.pub, shared_ba));
  EXPECT_EQ(std::memcmp(shared_ab, shared_ba, 32), 0);
}

TEST(key_file, write_then_load) {
  temp_dir d;
  ASSERT_FALSE(d.path.empty());
  const std::string path = d.path + "/node.key";
  static_keypair k, back;
  ASSERT_TRUE(generate_keypair(k));
  std::string err;
  ASSERT_TRUE(write_private_key_file(path, k, err)) << err;
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(read_all(path), key_to_base64(k.priv) + "\n");
  ASSERT_TRUE(load_private_key_file(path, back, err)) << err;
  EXPECT_EQ(std::memcmp(back.priv, k.priv, 32), 0);
  EXPECT_EQ(std::memcmp(back.pub, k.pub, 32), 0);
  // Without the trailing newline, and owner-read-only, it loads too.
  write_raw(path, key_to_base64(k.priv), 0400);
  ASSERT_TRUE(load_private_key_file(path, back, err)) << err;
  EXPECT_EQ(std::memcmp(back.pub, k.pub, 32), 0);
}

TEST(key_file, existing_file_is_not_overwritten) {
  temp_dir d;
  const std::string path = d.path + "/node.key";
  write_raw(path, "precious\n", 0600);
  static_keypair k;
  ASSERT_TRUE(generate_keypair(k));
  std::string err;
  EXPECT_FALSE(write_private_key_file(path, k, err));
  EXPECT_NE(err.find(path), std::string::npos) << err;
  EXPECT_NE(err.find("never overwritten"), std::string::npos) << err;
  EXPECT_EQ(read_all(path), "precious\n");
  // Nor is a symbolic link followed to create a file elsewhere.
  const std::string link = d.path + "/link.key";
  ASSERT_EQ(::symlink((d.path + "/elsewhere.key").c_str(), link.c_str()), 0);
  EXPECT_FALSE(write_private_key_file(link, k, err));
  EXPECT_NE(::access((d.path + "/elsewhere.key").c_str(), F_OK), 0);
}

TEST(key_file, group_or_world_access_is_refused_with_chmod_advice) {
  temp_dir d;
  const std::string path = d.path + "/node.key";
  static_keypair k, back;
  ASSERT_TRUE(generate_keypair(k));
  for (mode_t mode : {0644, 0640, 0604, 0620, 0602, 0660, 0666}) {
    write_raw(path, key_to_base64(k.priv) + "\n", mode);
    std::string err;
    EXPECT_FALSE(load_private_key_file(path, back, err)) << std::oct << mode;
    EXPECT_NE(err.find("chmod 600 " + path), std::string::npos) << err;
    char m[8];
    std::snprintf(m, sizeof m, "%04o", static_cast<unsigned>(mode));
    EXPECT_NE(err.find(std::string("mode ") + m), std::string::npos) << err;
    EXPECT_EQ(back.priv[0] | back.pub[0], 0) << "nothing loaded";
  }
}

TEST(key_file, not_a_regular_file_is_refused) {
  temp_dir d;
  static_keypair back;
  std::string err;
  EXPECT_FALSE(load_private_key_file(d.path, back, err));
  EXPECT_NE(err.find("not a regular file"), std::string::npos) << err;
  const std::string fifo = d.path + "/fifo.key";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_FALSE(load_private_key_file(fifo, back, err)) << "and it did not hang";
  EXPECT_NE(err.find("not a regular file"), std::string::npos) << err;
  EXPECT_FALSE(load_private_key_file("/dev/null", back, err));
  EXPECT_NE(err.find("not a regular file"), std::string::npos) << err;
}

TEST(key_file, missing_or_malformed_contents_are_refused) {
  temp_dir d;
  const std::string path = d.path + "/node.key";
  static_keypair k, back;
  ASSERT_TRUE(generate_keypair(k));
  std::string err;
  EXPECT_FALSE(load_private_key_file(d.path + "/absent.key", back, err));
  EXPECT_NE(err.find("cannot open key file " + d.path + "/absent.key"), std::string::npos) << err;
  const std::string key = key_to_base64(k.priv);
  const std::string bad[] = {
      "",
      "\n",
      key + "\n\n",
      key + "\r\n",
      key + "\n" + key + "\n",
      " " + key,
      key.substr(0, 43) + "\n",
      key.substr(0, 20) + "!" + key.substr(21),
  };
  for (const auto &content : bad) {
    write_raw(path, content, 0600);
    EXPECT_FALSE(load_private_key_file(path, back, err)) << content;
    EXPECT_NE(err.find(path), std::string::npos) << err;
  }
  if (::geteuid() != 0) {  // root reads anything
    write_raw(path, key + "\n", 0200);
    EXPECT_FALSE(load_private_key_file(path, back, err));
    EXPECT_NE(err.find("cannot open"), std::string::npos) << err;
  }
}
