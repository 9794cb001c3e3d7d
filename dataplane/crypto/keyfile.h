// SPDX-License-Identifier: BSD-3-Clause
// Static X25519 key pairs and the files that hold them. A private key file
// is one line: the key in standard base64 with padding (44 characters, as
// WireGuard's `wg genkey` writes it), then a newline. It is created mode
// 0600 and never overwritten, and loading refuses a file that group or
// others may read or write. This is start-up code (the edge, not the fast
// path): errors are messages for the operator. Any thread may call these;
// they share no state.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "primitives.h"

namespace mtp::crypto {

/// A node's long-term identity.
struct static_keypair {
  uint8_t priv[key_bytes];
  uint8_t pub[key_bytes];
};

/// Characters of a base64-encoded 32-byte key: 4 * ceil(32 / 3).
inline constexpr std::size_t key_base64_chars = 44;

/// Draws a new private key from the CSPRNG, clamped as RFC 7748 does (so
/// the stored bytes are the scalar used, as with `wg genkey`), and derives
/// its public key.
/// @return false if the CSPRNG or OpenSSL failed (`out` is then wiped).
bool generate_keypair(static_keypair &out);

/// Fills out.pub from priv (which is copied into out.priv).
/// @return false if OpenSSL refused the key.
bool keypair_from_private(const key32 priv, static_keypair &out);

/// The standard base64 (RFC 4648 section 4) of a 32-byte key, with padding.
std::string key_to_base64(const key32 key);

/// Decodes exactly 44 characters of standard, padded, canonical base64 into
/// a 32-byte key (no whitespace, no line breaks, no URL-safe alphabet).
/// @return false, with a message in `error`, for anything else; `out` is
/// then wiped.
bool key_from_base64(std::string_view text, key32 out, std::string &error);

/// Creates `path` (O_CREAT | O_EXCL, mode 0600: an existing file, even an
/// empty one, is never replaced) and writes the base64 private key and a
/// newline. A partly written file is removed.
/// @return false with a message naming the path in `error`.
bool write_private_key_file(const std::string &path, const static_keypair &keys, std::string &error);

/// Reads a private key file and derives the public key. Refuses a path that
/// is not a regular file, a file whose mode lets group or others read or
/// write it (the message names the octal mode and says `chmod 600 <path>`),
/// and contents other than one key optionally followed by one newline.
/// @return false with a message naming the path in `error` (`out` wiped).
bool load_private_key_file(const std::string &path, static_keypair &out, std::string &error);

}  // namespace mtp::crypto
