// SPDX-License-Identifier: BSD-3-Clause
// The handshake's primitives, all from OpenSSL libcrypto: X25519, SHA-256,
// HMAC-SHA-256, HKDF (RFC 5869) and a CSPRNG. We write no curve, hash or
// MAC of our own; this file only gives them fixed-size, allocation-free
// signatures. Not for the data path (aead.h is).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace mtp::crypto {

inline constexpr std::size_t key_bytes = 32;   ///< X25519 keys, SHA-256 digests, AES-256 keys
inline constexpr std::size_t hash_bytes = 32;

using key32 = uint8_t[key_bytes];

/// Fills `out` from the operating system's CSPRNG (OpenSSL RAND_bytes).
/// @return false only if the generator failed (never ignore it).
bool random_bytes(std::span<uint8_t> out);

/// X25519 (RFC 7748). A private key is 32 random bytes (clamped inside).
/// @return false if OpenSSL refused or the shared secret is all zero (a
/// low-order public key: the peer is misbehaving).
bool x25519_public(const key32 priv, key32 pub_out);
bool x25519(const key32 priv, const key32 peer_pub, key32 shared_out);
/// The same for a caller that already holds its own public key
/// (X25519(priv, 9)): OpenSSL then imports the pair as is instead of
/// deriving the public key again, which halves the cost. The result depends
/// only on priv and peer_pub; an own_pub that does not belong to priv is a
/// caller bug nothing here detects.
bool x25519(const key32 priv, const key32 own_pub, const key32 peer_pub, key32 shared_out);

/// SHA-256 of the concatenation of `parts` (up to 4).
void sha256(std::span<const std::span<const uint8_t>> parts, uint8_t out[hash_bytes]);
/// HMAC-SHA-256 over the concatenation of `parts` (up to 4).
void hmac_sha256(std::span<const uint8_t> key, std::span<const std::span<const uint8_t>> parts,
                 uint8_t out[hash_bytes]);
/// HKDF (RFC 5869) with SHA-256: Extract then Expand to out.size() bytes
/// (at most 255 x 32). The Noise HKDF (n outputs of 32 bytes, no info) is
/// hkdf_expand(hkdf_extract(...)) with the output split in 32-byte parts.
void hkdf_extract(std::span<const uint8_t> salt, std::span<const uint8_t> ikm, uint8_t prk_out[hash_bytes]);
void hkdf_expand(const uint8_t prk[hash_bytes], std::span<const uint8_t> info, std::span<uint8_t> out);

/// AES-256-GCM with a 12-byte nonce and a 16-byte tag, through OpenSSL, for
/// the handshake's few small messages (the data path uses aead.h).
/// seal writes plain.size() + 16 bytes to out; open writes
/// sealed.size() - 16 and returns false on a bad tag (out is then zeroed).
bool aes256gcm_seal(const key32 key, const uint8_t nonce[12], std::span<const uint8_t> aad,
                    std::span<const uint8_t> plain, uint8_t *out);
bool aes256gcm_open(const key32 key, const uint8_t nonce[12], std::span<const uint8_t> aad,
                    std::span<const uint8_t> sealed, uint8_t *out);

/// Constant-time comparison.
bool equal_ct(std::span<const uint8_t> a, std::span<const uint8_t> b);
/// Overwrites secrets (OPENSSL_cleanse: not optimized away).
void wipe(void *p, std::size_t n);

}  // namespace mtp::crypto
