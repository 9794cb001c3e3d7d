// SPDX-License-Identifier: BSD-3-Clause
// keyfile.h: key pairs, strict base64, and private key files checked the
// way ssh and wg-quick check theirs (mode, file type). The file is opened
// once and every check is made on that descriptor (fstat), so the file
// checked is the file read.
#include "keyfile.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace mtp::crypto {

namespace {

constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int decode_char(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

std::string errno_text(int e) { return std::strerror(e); }

std::string octal_mode(mode_t m) {
  char b[8];
  std::snprintf(b, sizeof b, "%04o", static_cast<unsigned>(m & 07777));
  return b;
}

// Closes the descriptor on every path out.
struct fd_guard {
  int fd = -1;
  ~fd_guard() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

bool keypair_from_private(const key32 priv, static_keypair &out) {
  std::memcpy(out.priv, priv, key_bytes);
  if (x25519_public(out.priv, out.pub)) return true;
  wipe(&out, sizeof out);
  return false;
}

bool generate_keypair(static_keypair &out) {
  uint8_t priv[key_bytes];
  bool ok = random_bytes(priv);
  if (ok) {
    priv[0] &= 248;
    priv[31] &= 127;
    priv[31] |= 64;
    ok = keypair_from_private(priv, out);
  }
  wipe(priv, sizeof priv);
  if (!ok) wipe(&out, sizeof out);
  return ok;
}

std::string key_to_base64(const key32 key) {
  std::string s;
  s.reserve(key_base64_chars);
  for (std::size_t i = 0; i < key_bytes; i += 3) {
    const std::size_t n = key_bytes - i < 3 ? key_bytes - i : 3;
    const uint32_t v = static_cast<uint32_t>(key[i]) << 16 | (n > 1 ? static_cast<uint32_t>(key[i + 1]) << 8 : 0u) |
                       (n > 2 ? key[i + 2] : 0u);
    s.push_back(alphabet[v >> 18 & 63]);
    s.push_back(alphabet[v >> 12 & 63]);
    s.push_back(n > 1 ? alphabet[v >> 6 & 63] : '=');
    s.push_back(n > 2 ? alphabet[v & 63] : '=');
  }
  return s;
}

bool key_from_base64(std::string_view text, key32 out, std::string &error) {
  auto fail = [&](std::string why) {
    wipe(out, key_bytes);
    error = "not a base64 key: " + why + " (expected 44 characters of standard base64 ending in '=', as `wg genkey` "
            "prints)";
    return false;
  };
  if (text.size() != key_base64_chars)
    return fail(std::to_string(text.size()) + " characters");
  if (text[43] != '=') return fail("the last character is not the padding '='");
  // 43 data characters carry 258 bits: 32 bytes and 2 bits that must be
  // zero, so that every key has exactly one encoding.
  uint32_t acc = 0;
  int bits = 0;
  std::size_t o = 0;
  for (std::size_t i = 0; i < 43; ++i) {
    const int v = decode_char(text[i]);
    if (v < 0) return fail("character " + std::to_string(i + 1) + " is not in the base64 alphabet");
    acc = acc << 6 | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = static_cast<uint8_t>(acc >> bits);
      acc &= (1u << bits) - 1;
    }
  }
  if (acc != 0) return fail("non-canonical (the unused low bits of the last character are not zero)");
  return true;
}

bool write_private_key_file(const std::string &path, const static_keypair &keys, std::string &error) {
  fd_guard f;
  f.fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (f.fd < 0) {
    const int e = errno;
    error = "cannot create key file " + path + ": " + errno_text(e) +
            (e == EEXIST ? " (an existing key file is never overwritten; remove it first if you mean to replace it)"
                         : "");
    return false;
  }
  std::string line = key_to_base64(keys.priv) + "\n";
  std::size_t done = 0;
  int e = 0;
  while (done < line.size()) {
    const ssize_t n = ::write(f.fd, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      e = n < 0 ? errno : EIO;
      break;
    }
    done += static_cast<std::size_t>(n);
  }
  if (e == 0 && ::fsync(f.fd) != 0) e = errno;
  wipe(line.data(), line.size());
  if (e == 0) {
    const int fd = f.fd;
    f.fd = -1;
    if (::close(fd) != 0) e = errno;
  }
  if (e != 0) {
    ::unlink(path.c_str());
    error = "cannot write key file " + path + ": " + errno_text(e);
    return false;
  }
  return true;
}

bool load_private_key_file(const std::string &path, static_keypair &out, std::string &error) {
  wipe(&out, sizeof out);
  fd_guard f;
  // O_NONBLOCK: opening a FIFO must not hang start-up before fstat says
  // it is no regular file.
  f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (f.fd < 0) {
    error = "cannot open key file " + path + ": " + errno_text(errno);
    return false;
  }
  struct stat st;
  if (::fstat(f.fd, &st) != 0) {
    error = "cannot stat key file " + path + ": " + errno_text(errno);
    return false;
  }
  if (!S_ISREG(st.st_mode)) {
    error = "key file " + path + " is not a regular file";
    return false;
  }
  if ((st.st_mode & 077) != 0) {
    error = "key file " + path + " has mode " + octal_mode(st.st_mode) +
            ": group or others may read or write it; run `chmod 600 " + path + "` (and consider the key exposed)";
    return false;
  }
  // One key, one optional newline: anything past that is not ours to guess.
  char buf[key_base64_chars + 2];
  std::size_t len = 0;
  while (len < sizeof buf) {
    const ssize_t n = ::read(f.fd, buf + len, sizeof buf - len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      error = "cannot read key file " + path + ": " + errno_text(errno);
      wipe(buf, sizeof buf);
      return false;
    }
    if (n == 0) break;
    len += static_cast<std::size_t>(n);
  }
  std::size_t key_len = len;
  if (key_len > 0 && buf[key_len - 1] == '\n') --key_len;
  std::string why;
  uint8_t priv[key_bytes];
  bool ok = key_len == key_base64_chars && len <= key_base64_chars + 1;
  if (!ok) {
    error = "key file " + path + " does not hold exactly one base64 key (44 characters and an optional newline; it has " +
            (len == sizeof buf ? "more than " + std::to_string(key_base64_chars + 1) : std::to_string(len)) + " bytes)";
  } else if (!key_from_base64({buf, key_len}, priv, why)) {
    ok = false;
    error = "key file " + path + ": " + why;
  } else if (!keypair_from_private(priv, out)) {
    ok = false;
    error = "key file " + path + ": OpenSSL refused the key";
  }
  wipe(buf, sizeof buf);
  wipe(priv, sizeof priv);
  return ok;
}

}  // namespace mtp::crypto
