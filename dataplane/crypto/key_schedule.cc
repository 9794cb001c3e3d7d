// SPDX-License-Identifier: BSD-3-Clause
// The key schedule's derivations and epoch rolls (see key_schedule.h).
#include "key_schedule.h"

#include <cstring>

#include "primitives.h"

namespace mtp::crypto {

namespace {

template <std::size_t N>
std::span<const uint8_t> info(const char (&label)[N]) {
  return {reinterpret_cast<const uint8_t *>(label), N - 1};  // without the NUL
}

}  // namespace

void derive_packet_key(std::span<const uint8_t, traffic_secret_bytes> secret, std::span<uint8_t, aead_key_bytes> key,
                       std::span<uint8_t, aead_iv_bytes> iv) {
  hkdf_expand(secret.data(), info(label_key), key);
  hkdf_expand(secret.data(), info(label_iv), iv);
}

void derive_next_secret(std::span<const uint8_t, traffic_secret_bytes> secret,
                        std::span<uint8_t, traffic_secret_bytes> next) {
  hkdf_expand(secret.data(), info(label_key_update), next);
}

namespace {

// key(n) from secret(n) into `out`. @return false if expansion failed.
bool make_key(std::span<const uint8_t, traffic_secret_bytes> secret, aead_arch arch, aead_key &out) {
  uint8_t key[aead_key_bytes];
  uint8_t iv[aead_iv_bytes];
  derive_packet_key(secret, key, iv);
  const bool ok = aead_key_init(out, key, iv, arch);
  wipe(key, sizeof key);
  wipe(iv, sizeof iv);
  return ok;
}

}  // namespace

bool traffic_keys::start(std::span<const uint8_t, traffic_secret_bytes> secret, uint32_t epoch, aead_arch arch) {
  clear();
  if (!make_key(secret, arch, current_)) return false;
  derive_next_secret(secret, next_secret_);
  epoch_ = epoch;
  arch_ = arch;
  started_ = true;
  return true;
}

const aead_key *traffic_keys::peek_next() {
  if (!started_ || epoch_ == UINT32_MAX) return nullptr;
  if (!have_next_) {
    if (!make_key(next_secret_, arch_, next_)) return nullptr;
    have_next_ = true;
  }
  return &next_;
}

bool traffic_keys::roll() {
  if (!started_ || epoch_ == UINT32_MAX) return false;
  aead_key fresh;
  if (have_next_) {
    fresh = next_;
    aead_key_wipe(next_);
    have_next_ = false;
  } else if (!make_key(next_secret_, arch_, fresh)) {
    return false;  // fresh is wiped
  }
  uint8_t after[traffic_secret_bytes];
  derive_next_secret(next_secret_, after);
  std::memcpy(next_secret_, after, sizeof after);  // secret(n+1) is overwritten: gone
  wipe(after, sizeof after);
  previous_ = current_;
  current_ = fresh;
  aead_key_wipe(fresh);
  have_previous_ = true;
  ++epoch_;
  return true;
}

void traffic_keys::drop_previous() {
  aead_key_wipe(previous_);
  have_previous_ = false;
}

void traffic_keys::clear() {
  aead_key_wipe(current_);
  aead_key_wipe(previous_);
  aead_key_wipe(next_);
  have_next_ = false;
  wipe(next_secret_, sizeof next_secret_);
  epoch_ = 0;
  started_ = false;
  have_previous_ = false;
}

void traffic_keys::take(traffic_keys &other) {
  current_ = other.current_;
  previous_ = other.previous_;
  next_ = other.next_;
  have_next_ = other.have_next_;
  std::memcpy(next_secret_, other.next_secret_, sizeof next_secret_);
  epoch_ = other.epoch_;
  arch_ = other.arch_;
  started_ = other.started_;
  have_previous_ = other.have_previous_;
  other.clear();
}

}  // namespace mtp::crypto
