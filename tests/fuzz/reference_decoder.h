// SPDX-License-Identifier: BSD-3-Clause
// A deliberately simple, independent decoder of MTP frames (protocol.md
// section 4), for differential fuzzing against dataplane/core/wire.cc. It
// favours obviousness over speed: every field is read with bounds checks
// through one cursor, and ACK ranges are computed with 128-bit arithmetic
// so underflow is explicit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace ref {

struct cursor {
  const uint8_t *p;
  std::size_t n, i = 0;
  std::optional<uint64_t> byte() {
    if (i >= n) return std::nullopt;
    return p[i++];
  }
  std::optional<uint64_t> var() {
    auto b = byte();
    if (!b) return std::nullopt;
    const std::size_t len = std::size_t{1} << (*b >> 6);
    uint64_t v = *b & 0x3f;
    for (std::size_t k = 1; k < len; ++k) {
      auto c = byte();
      if (!c) return std::nullopt;
      v = v * 256 + *c;
    }
    return v;
  }
  bool skip(uint64_t len) {
    if (len > n - i) return false;
    i += static_cast<std::size_t>(len);
    return true;
  }
};

struct frame {
  uint8_t type = 0;
  std::vector<uint64_t> fields;                       // in wire order, decoded
  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // ACK: [lo, hi] highest first
  std::size_t data_len = 0;
};

enum class verdict { ok, malformed, unknown };

/// Decodes every frame; stops at the first error.
inline verdict decode(const uint8_t *p, std::size_t n, std::vector<frame> &out) {
  cursor c{p, n};
  const uint64_t max = (uint64_t{1} << 62) - 1;
  while (c.i < c.n) {
    frame f;
    f.type = p[c.i++];
    auto need = [&](int k) -> bool {
      for (int j = 0; j < k; ++j) {
        auto v = c.var();
        if (!v) return false;
        f.fields.push_back(*v);
      }
      return true;
    };
    switch (f.type) {
      case 0x00:
        while (c.i < c.n)
          if (p[c.i++] != 0) return verdict::malformed;
        break;
      case 0x01:
        break;
      case 0x02: {
        if (!need(4)) return verdict::malformed;
        const uint64_t largest = f.fields[0], count = f.fields[2], first = f.fields[3];
        if (first > largest) return verdict::malformed;
        __int128 lo = static_cast<__int128>(largest) - first;
        f.ranges.push_back({static_cast<uint64_t>(lo), largest});
        for (uint64_t k = 0; k < count; ++k) {
          auto gap = c.var();
          auto len = c.var();
          if (!gap || !len) return verdict::malformed;
          const __int128 hi = lo - static_cast<__int128>(*gap) - 2;
          const __int128 nlo = hi - static_cast<__int128>(*len);
          if (hi < 0 || nlo < 0) return verdict::malformed;
          f.ranges.push_back({static_cast<uint64_t>(nlo), static_cast<uint64_t>(hi)});
          lo = nlo;
        }
        break;
      }
      case 0x03:
        if (!need(4) || f.fields[2] > f.fields[3]) return verdict::malformed;
        break;
      case 0x04: {
        auto flags = c.byte();
        if (!flags || (*flags & ~7u) || ((*flags & 4) && !(*flags & 2))) return verdict::malformed;
        f.fields.push_back(*flags);
        if (!need(3)) return verdict::malformed;
        const uint64_t off = f.fields[2], len = f.fields[3];
        if (len > max || off > max - len) return verdict::malformed;
        if (*flags & 2) {
          if (!need(2)) return verdict::malformed;
          const uint64_t delta = f.fields[4], mlen = f.fields[5];
          if (delta > off || mlen == 0) return verdict::malformed;
          const unsigned __int128 mend = static_cast<unsigned __int128>(off - delta) + mlen;
          if (static_cast<unsigned __int128>(off) + len > mend) return verdict::malformed;
        }
        if (!c.skip(len)) return verdict::malformed;
        f.data_len = static_cast<std::size_t>(len);
        break;
      }
      case 0x05: {
        if (!need(1) || !c.skip(f.fields[0])) return verdict::malformed;
        f.data_len = static_cast<std::size_t>(f.fields[0]);
        break;
      }
      case 0x06:
        if (!need(2)) return verdict::malformed;
        break;
      case 0x07:
        if (!need(1)) return verdict::malformed;
        break;
      case 0x08:
        if (!need(2) || !c.skip(f.fields[1])) return verdict::malformed;
        break;
      case 0x09:
        if (!need(3) || f.fields[2] > max || f.fields[1] > max - f.fields[2]) return verdict::malformed;
        break;
      default:
        // Extensions (protocol.md 4.12): a length and a body to skip.
        if (f.type >= 0x40 && f.type <= 0x7f) {
          if (!need(1) || !c.skip(f.fields[0])) return verdict::malformed;
          break;
        }
        return verdict::unknown;
    }
    out.push_back(std::move(f));
  }
  return verdict::ok;
}

}  // namespace ref
