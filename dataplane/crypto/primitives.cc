// SPDX-License-Identifier: BSD-3-Clause
// primitives.h over OpenSSL 3.0 libcrypto. The algorithms are fetched once
// (a function-local static: thread-safe initialization, and fetched
// EVP_MD/EVP_CIPHER/EVP_MAC objects may be shared by threads) because an
// implicit fetch on every call costs more than the HMAC itself. Each call
// then makes its own short-lived context, so every function here may be
// called from any thread. HKDF is RFC 5869 written over HMAC: two loops
// are shorter than the OSSL_PARAM plumbing of EVP_KDF and allocate less.
#include "primitives.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <climits>
#include <cstring>

namespace mtp::crypto {

namespace {

const EVP_MD *sha256_md() {
  static EVP_MD *md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  return md;
}

EVP_MAC *hmac_mac() {
  static EVP_MAC *mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  return mac;
}

const EVP_CIPHER *aes256gcm_cipher() {
  static EVP_CIPHER *c = EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr);
  return c;
}

// OpenSSL frees what it allocated, whatever path we leave by.
struct pkey_guard {
  EVP_PKEY *p = nullptr;
  ~pkey_guard() { EVP_PKEY_free(p); }
};
struct pkey_ctx_guard {
  EVP_PKEY_CTX *p = nullptr;
  ~pkey_ctx_guard() { EVP_PKEY_CTX_free(p); }
};
struct md_ctx_guard {
  EVP_MD_CTX *p = EVP_MD_CTX_new();
  ~md_ctx_guard() { EVP_MD_CTX_free(p); }
};
struct mac_ctx_guard {
  EVP_MAC_CTX *p = nullptr;
  ~mac_ctx_guard() { EVP_MAC_CTX_free(p); }
};
struct cipher_ctx_guard {
  EVP_CIPHER_CTX *p = EVP_CIPHER_CTX_new();
  ~cipher_ctx_guard() { EVP_CIPHER_CTX_free(p); }
};

bool all_zero(const uint8_t *p, std::size_t n) {
  uint8_t acc = 0;
  for (std::size_t i = 0; i < n; ++i) acc |= p[i];
  return acc == 0;
}

// The void-returning hash functions have no error path for the caller: an
// OpenSSL failure there (out of memory inside a context allocation) leaves
// the output zeroed, which then fails every MAC and tag comparison instead
// of matching anything.
void fail_hash(uint8_t out[hash_bytes]) { OPENSSL_cleanse(out, hash_bytes); }

}  // namespace

bool random_bytes(std::span<uint8_t> out) {
  if (out.size() > static_cast<std::size_t>(INT_MAX)) return false;
  return RAND_bytes(out.data(), static_cast<int>(out.size())) == 1;
}

bool x25519_public(const key32 priv, key32 pub_out) {
  pkey_guard k;
  k.p = EVP_PKEY_new_raw_private_key_ex(nullptr, "X25519", nullptr, priv, key_bytes);
  std::size_t len = key_bytes;
  if (k.p == nullptr || EVP_PKEY_get_raw_public_key(k.p, pub_out, &len) != 1 || len != key_bytes) {
    OPENSSL_cleanse(pub_out, key_bytes);
    return false;
  }
  return true;
}

namespace {

// X25519 with our key already imported: the peer's public key in, the
// shared secret out.
bool derive(EVP_PKEY *mine, const key32 peer_pub, key32 shared_out) {
  pkey_guard theirs;
  pkey_ctx_guard ctx;
  theirs.p = EVP_PKEY_new_raw_public_key_ex(nullptr, "X25519", nullptr, peer_pub, key_bytes);
  bool ok = mine != nullptr && theirs.p != nullptr;
  if (ok) ctx.p = EVP_PKEY_CTX_new_from_pkey(nullptr, mine, nullptr);
  std::size_t len = key_bytes;
  // OpenSSL itself refuses an all-zero result (RFC 7748 section 6.1's
  // check); we check again so the contract does not rest on that detail.
  ok = ok && ctx.p != nullptr && EVP_PKEY_derive_init(ctx.p) == 1 && EVP_PKEY_derive_set_peer(ctx.p, theirs.p) == 1 &&
       EVP_PKEY_derive(ctx.p, shared_out, &len) == 1 && len == key_bytes && !all_zero(shared_out, key_bytes);
  if (!ok) OPENSSL_cleanse(shared_out, key_bytes);
  return ok;
}

}  // namespace

bool x25519(const key32 priv, const key32 peer_pub, key32 shared_out) {
  // Importing a bare private key makes OpenSSL compute its public key: a
  // second scalar multiplication. The four-argument form avoids it.
  pkey_guard mine;
  mine.p = EVP_PKEY_new_raw_private_key_ex(nullptr, "X25519", nullptr, priv, key_bytes);
  return derive(mine.p, peer_pub, shared_out);
}

bool x25519(const key32 priv, const key32 own_pub, const key32 peer_pub, key32 shared_out) {
  pkey_guard mine;
  pkey_ctx_guard import;
  import.p = EVP_PKEY_CTX_new_from_name(nullptr, "X25519", nullptr);
  // OSSL_PARAM wants non-const pointers; fromdata only reads them.
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PRIV_KEY, const_cast<uint8_t *>(priv), key_bytes),
      OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, const_cast<uint8_t *>(own_pub), key_bytes),
      OSSL_PARAM_construct_end()};
  if (import.p == nullptr || EVP_PKEY_fromdata_init(import.p) != 1 ||
      EVP_PKEY_fromdata(import.p, &mine.p, EVP_PKEY_KEYPAIR, const_cast<OSSL_PARAM *>(params)) != 1) {
    OPENSSL_cleanse(shared_out, key_bytes);
    return false;
  }
  return derive(mine.p, peer_pub, shared_out);
}

void sha256(std::span<const std::span<const uint8_t>> parts, uint8_t out[hash_bytes]) {
  md_ctx_guard ctx;
  unsigned len = 0;
  bool ok = ctx.p != nullptr && sha256_md() != nullptr && EVP_DigestInit_ex2(ctx.p, sha256_md(), nullptr) == 1;
  for (const auto &p : parts) ok = ok && EVP_DigestUpdate(ctx.p, p.data(), p.size()) == 1;
  ok = ok && EVP_DigestFinal_ex(ctx.p, out, &len) == 1 && len == hash_bytes;
  if (!ok) fail_hash(out);
}

void hmac_sha256(std::span<const uint8_t> key, std::span<const std::span<const uint8_t>> parts,
                 uint8_t out[hash_bytes]) {
  mac_ctx_guard ctx;
  if (hmac_mac() != nullptr) ctx.p = EVP_MAC_CTX_new(hmac_mac());
  char digest[] = "SHA256";
  const OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", digest, 0), OSSL_PARAM_construct_end()};
  // EVP_MAC_init treats a null key as "no key given": an empty key (HKDF
  // with a zero-length salt is one) must still be a key, so point at a byte.
  static const uint8_t empty = 0;
  const uint8_t *k = key.empty() ? &empty : key.data();
  std::size_t len = 0;
  bool ok = ctx.p != nullptr && EVP_MAC_init(ctx.p, k, key.size(), params) == 1;
  for (const auto &p : parts) ok = ok && EVP_MAC_update(ctx.p, p.data(), p.size()) == 1;
  ok = ok && EVP_MAC_final(ctx.p, out, &len, hash_bytes) == 1 && len == hash_bytes;
  if (!ok) fail_hash(out);
}

void hkdf_extract(std::span<const uint8_t> salt, std::span<const uint8_t> ikm, uint8_t prk_out[hash_bytes]) {
  // RFC 5869 2.2: PRK = HMAC-Hash(salt, IKM); a missing salt is HashLen zeros.
  static const uint8_t zero_salt[hash_bytes] = {};
  const std::span<const uint8_t> parts[] = {ikm};
  hmac_sha256(salt.empty() ? std::span<const uint8_t>(zero_salt) : salt, parts, prk_out);
}

void hkdf_expand(const uint8_t prk[hash_bytes], std::span<const uint8_t> info, std::span<uint8_t> out) {
  // RFC 5869 2.3: T(i) = HMAC-Hash(PRK, T(i-1) | info | i), T(0) empty.
  if (out.size() > 255 * hash_bytes) {
    OPENSSL_cleanse(out.data(), out.size());
    return;
  }
  uint8_t t[hash_bytes];
  std::size_t t_len = 0;
  for (std::size_t done = 0, i = 1; done < out.size(); ++i) {
    const uint8_t counter = static_cast<uint8_t>(i);
    const std::span<const uint8_t> parts[] = {{t, t_len}, info, {&counter, 1}};
    hmac_sha256({prk, hash_bytes}, parts, t);
    t_len = hash_bytes;
    const std::size_t n = out.size() - done < hash_bytes ? out.size() - done : hash_bytes;
    std::memcpy(out.data() + done, t, n);
    done += n;
  }
  OPENSSL_cleanse(t, sizeof t);
}

namespace {

// One AES-256-GCM operation; enc selects seal or open. On open the tag is
// the last 16 bytes of `in`.
bool gcm(bool enc, const key32 key, const uint8_t nonce[12], std::span<const uint8_t> aad,
         std::span<const uint8_t> in, uint8_t *out) {
  constexpr int tag_bytes = 16;
  if (in.size() > static_cast<std::size_t>(INT_MAX) - tag_bytes || aad.size() > static_cast<std::size_t>(INT_MAX))
    return false;
  const std::size_t body = enc ? in.size() : in.size() - tag_bytes;
  cipher_ctx_guard ctx;
  int len = 0;
  bool ok = ctx.p != nullptr && aes256gcm_cipher() != nullptr &&
            EVP_CipherInit_ex2(ctx.p, aes256gcm_cipher(), key, nonce, enc ? 1 : 0, nullptr) == 1;
  if (ok && !aad.empty()) ok = EVP_CipherUpdate(ctx.p, nullptr, &len, aad.data(), static_cast<int>(aad.size())) == 1;
  if (ok && body > 0) ok = EVP_CipherUpdate(ctx.p, out, &len, in.data(), static_cast<int>(body)) == 1;
  if (enc) {
    ok = ok && EVP_CipherFinal_ex(ctx.p, out + body, &len) == 1 &&
         EVP_CIPHER_CTX_ctrl(ctx.p, EVP_CTRL_AEAD_GET_TAG, tag_bytes, out + body) == 1;
  } else {
    // OpenSSL wants a non-const tag pointer for SET_TAG; it only reads it.
    uint8_t tag[tag_bytes];
    std::memcpy(tag, in.data() + body, tag_bytes);
    ok = ok && EVP_CIPHER_CTX_ctrl(ctx.p, EVP_CTRL_AEAD_SET_TAG, tag_bytes, tag) == 1 &&
         EVP_CipherFinal_ex(ctx.p, out + body, &len) == 1;
  }
  return ok;
}

}  // namespace

bool aes256gcm_seal(const key32 key, const uint8_t nonce[12], std::span<const uint8_t> aad,
                    std::span<const uint8_t> plain, uint8_t *out) {
  if (gcm(true, key, nonce, aad, plain, out)) return true;
  OPENSSL_cleanse(out, plain.size() + 16);
  return false;
}

bool aes256gcm_open(const key32 key, const uint8_t nonce[12], std::span<const uint8_t> aad,
                    std::span<const uint8_t> sealed, uint8_t *out) {
  if (sealed.size() < 16) return false;
  if (gcm(false, key, nonce, aad, sealed, out)) return true;
  // The plaintext of a forgery must not leak out to a caller that ignores
  // the result.
  OPENSSL_cleanse(out, sealed.size() - 16);
  return false;
}

bool equal_ct(std::span<const uint8_t> a, std::span<const uint8_t> b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

void wipe(void *p, std::size_t n) { OPENSSL_cleanse(p, n); }

}  // namespace mtp::crypto
