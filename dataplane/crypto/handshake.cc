// SPDX-License-Identifier: BSD-3-Clause
// handshake.h: Noise_IKpsk2_25519_AESGCM_SHA256 over the three handshake
// packets, and the mac1/mac2/cookie layer in front of it. The Noise part is
// the spec's SymmetricState written out for the one pattern we use:
//
//   IKpsk2:
//     <- s
//     ...
//     -> e, es, s, ss          (INITIATION; payload: TAI64N timestamp)
//     <- e, ee, se, psk        (RESPONSE; payload: empty)
//
// with psk mode's extra MixKey(e.pub) after each `e` (Noise section 9.2).
// Every cipher key is used for exactly one encryption, so the nonce is
// always 0; the counter is kept anyway so the code reads as the spec.
// Secrets live in the caller's state structs or on the stack and are
// wiped on every path out.
#include "handshake.h"

#include <cstring>

namespace mtp::crypto {

namespace {

// Exactly 32 bytes: Noise's InitializeSymmetric then takes it as h as is.
constexpr char protocol_name[] = "Noise_IKpsk2_25519_AESGCM_SHA256";
static_assert(sizeof protocol_name - 1 == hash_bytes);
constexpr char label_mac1[] = "mac1----";
constexpr char label_cookie[] = "cookie--";
constexpr std::size_t prologue_bytes = 20;

using bytes = std::span<const uint8_t>;

bytes label(const char *s, std::size_t n) { return {reinterpret_cast<const uint8_t *>(s), n}; }

void put_u32(uint8_t *p, uint32_t v) {
  for (int i = 3; i >= 0; --i, v >>= 8) p[i] = static_cast<uint8_t>(v);
}
void put_u64(uint8_t *p, uint64_t v) {
  for (int i = 7; i >= 0; --i, v >>= 8) p[i] = static_cast<uint8_t>(v);
}
uint32_t get_u32(const uint8_t *p) {
  return static_cast<uint32_t>(p[0]) << 24 | static_cast<uint32_t>(p[1]) << 16 | static_cast<uint32_t>(p[2]) << 8 | p[3];
}
uint64_t get_u64(const uint8_t *p) { return static_cast<uint64_t>(get_u32(p)) << 32 | get_u32(p + 4); }

bool reserved_member_id(uint32_t id) { return id == 0 || id == 0xffffffffu; }

void derive_key(const char *lab, const uint8_t pub[key_bytes], uint8_t out[hash_bytes]) {
  const bytes parts[] = {label(lab, 8), {pub, key_bytes}};
  sha256(parts, out);
}

// The first 16 bytes of HMAC-SHA-256(key, msg).
void mac16(bytes key, bytes msg, uint8_t out[hs_mac_bytes]) {
  uint8_t full[hash_bytes];
  const bytes parts[] = {msg};
  hmac_sha256(key, parts, full);
  std::memcpy(out, full, hs_mac_bytes);
  wipe(full, sizeof full);
}

void write_header(uint8_t *p, hs_type type, uint32_t sender, uint64_t cid) {
  p[0] = hs_version;
  p[1] = static_cast<uint8_t>(type);
  p[2] = 0;
  p[3] = 0;
  put_u32(p + 4, sender);
  put_u64(p + 8, cid);
  std::memset(p + 16, 0, 8);
}

// ------------------------------------------------------------ Noise state

// Noise's SymmetricState with its CipherState (k, n) folded in.
struct symmetric {
  uint8_t ck[hash_bytes];
  uint8_t h[hash_bytes];
  uint8_t k[key_bytes];
  uint64_t n;
  ~symmetric() { wipe(this, sizeof *this); }

  // InitializeSymmetric, MixHash(prologue), MixHash(rs): the IK pre-message.
  void init(uint64_t cid, uint32_t initiator_id, uint32_t responder_id, const uint8_t responder_static[key_bytes]) {
    std::memcpy(h, protocol_name, hash_bytes);
    std::memcpy(ck, protocol_name, hash_bytes);
    uint8_t prologue[prologue_bytes] = {'m', 't', 'p', '1'};
    put_u64(prologue + 4, cid);
    put_u32(prologue + 12, initiator_id);
    put_u32(prologue + 16, responder_id);
    mix_hash(prologue);
    mix_hash({responder_static, key_bytes});
    n = 0;
  }
  void load(const uint8_t ck_in[hash_bytes], const uint8_t h_in[hash_bytes]) {
    std::memcpy(ck, ck_in, hash_bytes);
    std::memcpy(h, h_in, hash_bytes);
    n = 0;
  }
  void mix_hash(bytes data) {
    const bytes parts[] = {{h, hash_bytes}, data};
    sha256(parts, h);
  }
  // HKDF(ck, ikm) with 2 or 3 outputs: RFC 5869 with ck as salt, no info.
  void hkdf(bytes ikm, uint8_t *out, std::size_t outputs) {
    uint8_t prk[hash_bytes];
    hkdf_extract({ck, hash_bytes}, ikm, prk);
    hkdf_expand(prk, {}, {out, outputs * hash_bytes});
    wipe(prk, sizeof prk);
  }
  void mix_key(bytes ikm) {
    uint8_t out[2 * hash_bytes];
    hkdf(ikm, out, 2);
    std::memcpy(ck, out, hash_bytes);
    std::memcpy(k, out + hash_bytes, key_bytes);
    n = 0;
    wipe(out, sizeof out);
  }
  void mix_key_and_hash(bytes ikm) {
    uint8_t out[3 * hash_bytes];
    hkdf(ikm, out, 3);
    std::memcpy(ck, out, hash_bytes);
    mix_hash({out + hash_bytes, hash_bytes});
    std::memcpy(k, out + 2 * hash_bytes, key_bytes);
    n = 0;
    wipe(out, sizeof out);
  }
  void nonce(uint8_t out[12]) const {
    std::memset(out, 0, 4);
    put_u64(out + 4, n);
  }
  // EncryptAndHash: out gets plain.size() + 16 bytes.
  bool encrypt_and_hash(bytes plain, uint8_t *out) {
    uint8_t iv[12];
    nonce(iv);
    if (!aes256gcm_seal(k, iv, {h, hash_bytes}, plain, out)) return false;
    ++n;
    mix_hash({out, plain.size() + hs_tag_bytes});
    return true;
  }
  // DecryptAndHash: out gets sealed.size() - 16 bytes.
  bool decrypt_and_hash(bytes sealed, uint8_t *out) {
    uint8_t iv[12];
    nonce(iv);
    if (!aes256gcm_open(k, iv, {h, hash_bytes}, sealed, out)) return false;
    ++n;
    mix_hash(sealed);
    return true;
  }
  // A DH token: MixKey(DH(priv, peer)); false on an all-zero result. Our
  // own public key comes along so OpenSSL need not derive it again.
  bool mix_dh(const uint8_t priv[key_bytes], const uint8_t own_pub[key_bytes], const uint8_t peer[key_bytes]) {
    uint8_t shared[key_bytes];
    const bool ok = x25519(priv, own_pub, peer, shared);
    if (ok) mix_key({shared, key_bytes});
    wipe(shared, sizeof shared);
    return ok;
  }
  // An `e` token in psk mode: MixHash(e.pub) then MixKey(e.pub).
  void mix_ephemeral(const uint8_t pub[key_bytes]) {
    mix_hash({pub, key_bytes});
    mix_key({pub, key_bytes});
  }
  // Split(): (initiator -> responder, responder -> initiator).
  void split(uint8_t i2r[key_bytes], uint8_t r2i[key_bytes]) {
    uint8_t out[2 * hash_bytes];
    hkdf({}, out, 2);
    std::memcpy(i2r, out, key_bytes);
    std::memcpy(r2i, out + hash_bytes, key_bytes);
    wipe(out, sizeof out);
  }
};

// A fixed ephemeral (test vectors) or a fresh one.
bool make_ephemeral(const uint8_t *fixed, uint8_t priv[key_bytes], uint8_t pub[key_bytes]) {
  if (fixed != nullptr)
    std::memcpy(priv, fixed, key_bytes);
  else if (!random_bytes({priv, key_bytes}))
    return false;
  return x25519_public(priv, pub);
}

// parse_handshake, then insists on one type.
hs_error parse_as(bytes packet, hs_type want, handshake_view &v) {
  const hs_error e = parse_handshake(packet, v);
  if (e != hs_error::ok) return e;
  return v.type == want ? hs_error::ok : hs_error::bad_type;
}

bool mac_matches(bytes key, bytes covered, bytes mac) {
  uint8_t want[hs_mac_bytes];
  mac16(key, covered, want);
  return equal_ct({want, hs_mac_bytes}, mac);
}

}  // namespace

// ------------------------------------------------------------ errors, layout

const char *to_string(hs_error e) {
  switch (e) {
#define MTP_X(name, text) \
  case hs_error::name:    \
    return #name;
    MTP_HS_ERRORS(MTP_X)
#undef MTP_X
    case hs_error::count_:
      break;
  }
  return "?";
}

const char *describe(hs_error e) {
  switch (e) {
#define MTP_X(name, text) \
  case hs_error::name:    \
    return text;
    MTP_HS_ERRORS(MTP_X)
#undef MTP_X
    case hs_error::count_:
      break;
  }
  return "?";
}

hs_error parse_handshake(std::span<const uint8_t> packet, handshake_view &out) {
  out = handshake_view{};
  if (packet.size() < hs_header_bytes) return hs_error::too_short;
  const uint8_t *p = packet.data();
  if (p[0] != hs_version) return hs_error::bad_version;
  std::size_t want = 0;
  switch (static_cast<hs_type>(p[1])) {
    case hs_type::initiation:
      want = initiation_bytes;
      break;
    case hs_type::response:
      want = response_bytes;
      break;
    case hs_type::cookie_reply:
      want = cookie_reply_bytes;
      break;
    default:
      return hs_error::bad_type;
  }
  if (packet.size() < want) return hs_error::too_short;
  if (packet.size() > want) return hs_error::too_long;
  const uint32_t sender = get_u32(p + 4);
  // flags, reserved and the packet-number field are zero; the header is
  // not covered by AEAD (only by mac1 and the prologue), so nothing else
  // may hide there.
  const bool zeros = (p[2] | p[3] | p[16] | p[17] | p[18] | p[19] | p[20] | p[21] | p[22] | p[23]) == 0;
  if (!zeros || reserved_member_id(sender)) return hs_error::bad_header;
  out.type = static_cast<hs_type>(p[1]);
  out.sender_id = sender;
  out.connection_id = get_u64(p + 8);
  out.packet = packet;
  switch (out.type) {
    case hs_type::initiation:
      out.ephemeral = packet.subspan(hs_ephemeral_at, key_bytes);
      out.encrypted_static = packet.subspan(init_static_at, key_bytes + hs_tag_bytes);
      out.encrypted_payload = packet.subspan(init_timestamp_at, hs_timestamp_bytes + hs_tag_bytes);
      out.mac1 = packet.subspan(init_mac1_at, hs_mac_bytes);
      out.mac2 = packet.subspan(init_mac2_at, hs_mac_bytes);
      break;
    case hs_type::response:
      out.ephemeral = packet.subspan(hs_ephemeral_at, key_bytes);
      out.encrypted_payload = packet.subspan(resp_empty_at, hs_tag_bytes);
      out.mac1 = packet.subspan(resp_mac1_at, hs_mac_bytes);
      out.mac2 = packet.subspan(resp_mac2_at, hs_mac_bytes);
      break;
    case hs_type::cookie_reply:
      out.nonce = packet.subspan(cookie_nonce_at, hs_cookie_nonce_bytes);
      out.encrypted_cookie = packet.subspan(cookie_sealed_at, hs_cookie_bytes + hs_tag_bytes);
      break;
  }
  return hs_error::ok;
}

void tai64n(uint64_t wall_clock_ns, uint8_t out[hs_timestamp_bytes]) {
  put_u64(out, (uint64_t{1} << 62) + wall_clock_ns / 1'000'000'000u);
  put_u32(out + 8, static_cast<uint32_t>(wall_clock_ns % 1'000'000'000u));
}

bool make_identity(const static_keypair &keys, uint32_t member_id, hs_identity &out) {
  if (reserved_member_id(member_id)) return false;
  out.keys = keys;
  out.member_id = member_id;
  derive_key(label_mac1, keys.pub, out.mac1_key);
  derive_key(label_cookie, keys.pub, out.cookie_key);
  return true;
}

// ------------------------------------------------------------ initiator

bool initiator_init(initiator_state &st, const hs_identity &local, const uint8_t remote_static[key_bytes],
                    uint32_t remote_member_id, const uint8_t *psk, uint64_t connection_id) {
  wipe(&st, sizeof st);
  st.state = initiator_state::phase::unset;
  if (reserved_member_id(local.member_id) || reserved_member_id(remote_member_id)) return false;
  std::memcpy(st.remote_static, remote_static, key_bytes);
  derive_key(label_mac1, remote_static, st.remote_mac1_key);
  derive_key(label_cookie, remote_static, st.remote_cookie_key);
  if (psk != nullptr) std::memcpy(st.psk, psk, key_bytes);
  st.connection_id = connection_id;
  st.local_id = local.member_id;
  st.remote_id = remote_member_id;
  st.state = initiator_state::phase::idle;
  return true;
}

hs_error create_initiation(initiator_state &st, const hs_identity &local, uint64_t wall_clock_ns, uint64_t now_ns,
                           std::span<uint8_t, initiation_bytes> out, const uint8_t *fixed_ephemeral_priv) {
  if (st.state == initiator_state::phase::unset || local.member_id != st.local_id) return hs_error::internal;
  // Whatever was pending is abandoned: its response would no longer match.
  st.state = initiator_state::phase::idle;
  st.has_last_mac1 = false;
  wipe(st.ephemeral_priv, key_bytes);
  uint8_t *p = out.data();
  write_header(p, hs_type::initiation, st.local_id, st.connection_id);

  symmetric s;
  s.init(st.connection_id, st.local_id, st.remote_id, st.remote_static);
  if (!make_ephemeral(fixed_ephemeral_priv, st.ephemeral_priv, st.ephemeral_pub)) {
    wipe(st.ephemeral_priv, key_bytes);
    return hs_error::internal;
  }
  std::memcpy(p + hs_ephemeral_at, st.ephemeral_pub, key_bytes);
  s.mix_ephemeral(st.ephemeral_pub);                                          // e
  bool ok = s.mix_dh(st.ephemeral_priv, st.ephemeral_pub, st.remote_static);  // es
  hs_error e = hs_error::bad_key;
  if (ok) {
    e = hs_error::internal;
    ok = s.encrypt_and_hash({local.keys.pub, key_bytes}, p + init_static_at);  // s
  }
  if (ok) {
    e = hs_error::bad_key;
    ok = s.mix_dh(local.keys.priv, local.keys.pub, st.remote_static);        // ss
  }
  if (ok) {
    e = hs_error::internal;
    uint8_t ts[hs_timestamp_bytes];
    tai64n(wall_clock_ns, ts);
    ok = s.encrypt_and_hash(ts, p + init_timestamp_at);                      // payload
  }
  if (!ok) {
    wipe(st.ephemeral_priv, key_bytes);
    std::memset(p, 0, initiation_bytes);
    return e;
  }
  mac16({st.remote_mac1_key, hash_bytes}, {p, init_mac1_at}, p + init_mac1_at);
  std::memcpy(st.last_mac1, p + init_mac1_at, hs_mac_bytes);
  st.has_last_mac1 = true;
  // A cookie is used while younger than its lifetime; now_ns is monotonic,
  // so a reading before the cookie's arrival means a caller error: no mac2.
  if (st.has_cookie && now_ns >= st.cookie_received_ns && now_ns - st.cookie_received_ns < cookie_use_lifetime_ns)
    mac16({st.cookie, hs_cookie_bytes}, {p, init_mac2_at}, p + init_mac2_at);
  else
    std::memset(p + init_mac2_at, 0, hs_mac_bytes);
  std::memcpy(st.h, s.h, hash_bytes);
  std::memcpy(st.ck, s.ck, hash_bytes);
  st.state = initiator_state::phase::sent;
  return hs_error::ok;
}

hs_error consume_cookie_reply(initiator_state &st, std::span<const uint8_t> packet, uint64_t now_ns) {
  handshake_view v;
  if (const hs_error e = parse_as(packet, hs_type::cookie_reply, v); e != hs_error::ok) return e;
  if (!st.has_last_mac1 || v.connection_id != st.connection_id || v.sender_id != st.remote_id)
    return hs_error::unexpected;
  uint8_t cookie[hs_cookie_bytes];
  if (!aes256gcm_open(st.remote_cookie_key, v.nonce.data(), {st.last_mac1, hs_mac_bytes}, v.encrypted_cookie, cookie))
    return hs_error::decrypt_failed;
  std::memcpy(st.cookie, cookie, hs_cookie_bytes);
  wipe(cookie, sizeof cookie);
  st.cookie_received_ns = now_ns;
  st.has_cookie = true;
  // One cookie per initiation: a replayed reply cannot refresh the cookie's age.
  st.has_last_mac1 = false;
  return hs_error::ok;
}

hs_error consume_response(initiator_state &st, const hs_identity &local, std::span<const uint8_t> packet,
                          hs_session_keys &keys) {
  handshake_view v;
  if (const hs_error e = parse_as(packet, hs_type::response, v); e != hs_error::ok) return e;
  if (st.state != initiator_state::phase::sent || v.connection_id != st.connection_id || v.sender_id != st.remote_id ||
      local.member_id != st.local_id)
    return hs_error::unexpected;
  if (!mac_matches({local.mac1_key, hash_bytes}, packet.first(resp_mac1_at), v.mac1)) return hs_error::bad_mac1;

  // Work on a copy: st changes only when the response proves genuine.
  symmetric s;
  s.load(st.ck, st.h);
  const uint8_t *re = v.ephemeral.data();
  s.mix_ephemeral(re);                                              // e
  if (!s.mix_dh(st.ephemeral_priv, st.ephemeral_pub, re)) return hs_error::bad_key;  // ee
  if (!s.mix_dh(local.keys.priv, local.keys.pub, re)) return hs_error::bad_key;       // se
  s.mix_key_and_hash({st.psk, key_bytes});                          // psk
  uint8_t empty[1];
  if (!s.decrypt_and_hash(v.encrypted_payload, empty)) return hs_error::decrypt_failed;

  s.split(keys.send, keys.recv);
  std::memcpy(keys.peer_static, st.remote_static, key_bytes);
  keys.peer_member_id = st.remote_id;
  keys.connection_id = st.connection_id;
  keys.peer_index = 0;
  wipe(st.h, hash_bytes);
  wipe(st.ck, hash_bytes);
  wipe(st.ephemeral_priv, key_bytes);
  st.has_last_mac1 = false;
  st.state = initiator_state::phase::done;
  return hs_error::ok;
}

// ------------------------------------------------------------ responder

hs_error consume_initiation(responder_state &st, const hs_identity &local, std::span<const uint8_t> packet,
                            const hs_peer_table &peers, const hs_load &load) {
  wipe(&st, sizeof st);
  st.pending = false;
  handshake_view v;
  if (const hs_error e = parse_as(packet, hs_type::initiation, v); e != hs_error::ok) return e;
  // mac1 first: a packet not made for our key costs one HMAC, no DH.
  if (!mac_matches({local.mac1_key, hash_bytes}, packet.first(init_mac1_at), v.mac1)) return hs_error::bad_mac1;
  if (load.under_load) {
    if (load.cookies == nullptr) return hs_error::internal;
    if (!load.cookies->check_mac2(packet, load.source, load.now_ns)) return hs_error::bad_mac2;
  }
  if (peers.lookup == nullptr) return hs_error::internal;

  symmetric s;
  s.init(v.connection_id, v.sender_id, local.member_id, local.keys.pub);
  const uint8_t *re = v.ephemeral.data();
  s.mix_ephemeral(re);                                                         // e
  if (!s.mix_dh(local.keys.priv, local.keys.pub, re)) return hs_error::bad_key;  // es
  uint8_t initiator_static[key_bytes];
  if (!s.decrypt_and_hash(v.encrypted_static, initiator_static)) return hs_error::decrypt_failed;  // s
  hs_peer_entry peer;
  if (!peers.lookup(peers.ctx, initiator_static, v.sender_id, peer) || peer.greatest_timestamp == nullptr)
    return hs_error::unknown_peer;
  if (peer.static_static != nullptr)
    s.mix_key({peer.static_static, key_bytes});  // ss, precomputed for this peer
  else if (!s.mix_dh(local.keys.priv, local.keys.pub, initiator_static))
    return hs_error::bad_key;  // ss
  uint8_t ts[hs_timestamp_bytes];
  if (!s.decrypt_and_hash(v.encrypted_payload, ts)) return hs_error::decrypt_failed;  // payload
  // TAI64N compares as a big-endian number: bytewise.
  if (std::memcmp(ts, peer.greatest_timestamp, hs_timestamp_bytes) <= 0) return hs_error::replayed;

  std::memcpy(peer.greatest_timestamp, ts, hs_timestamp_bytes);
  std::memcpy(st.remote_static, initiator_static, key_bytes);
  std::memcpy(st.remote_ephemeral, re, key_bytes);
  if (peer.psk != nullptr) std::memcpy(st.psk, peer.psk, key_bytes);
  std::memcpy(st.h, s.h, hash_bytes);
  std::memcpy(st.ck, s.ck, hash_bytes);
  st.connection_id = v.connection_id;
  st.remote_id = v.sender_id;
  st.local_id = local.member_id;
  st.peer_index = peer.peer_index;
  st.pending = true;
  return hs_error::ok;
}

namespace {
constexpr char label_early[] = "mtp1 early";
void early_from(const uint8_t ck[hash_bytes], uint8_t out[key_bytes]) {
  hkdf_expand(ck, {reinterpret_cast<const uint8_t *>(label_early), sizeof label_early - 1}, {out, key_bytes});
}
}  // namespace

bool early_secret(const initiator_state &st, uint8_t out[key_bytes]) {
  if (st.state != initiator_state::phase::sent) return false;
  early_from(st.ck, out);
  return true;
}

bool early_secret(const responder_state &st, uint8_t out[key_bytes]) {
  if (!st.pending) return false;
  early_from(st.ck, out);
  return true;
}

hs_error create_response(responder_state &st, std::span<uint8_t, response_bytes> out, hs_session_keys &keys,
                         const uint8_t *fixed_ephemeral_priv) {
  if (!st.pending) return hs_error::unexpected;
  uint8_t *p = out.data();
  write_header(p, hs_type::response, st.local_id, st.connection_id);
  symmetric s;
  s.load(st.ck, st.h);
  uint8_t e_priv[key_bytes], e_pub[key_bytes];
  hs_error e = hs_error::internal;
  bool ok = make_ephemeral(fixed_ephemeral_priv, e_priv, e_pub);
  if (ok) {
    std::memcpy(p + hs_ephemeral_at, e_pub, key_bytes);
    s.mix_ephemeral(e_pub);                                               // e
    e = hs_error::bad_key;
    ok = s.mix_dh(e_priv, e_pub, st.remote_ephemeral) &&                  // ee
         s.mix_dh(e_priv, e_pub, st.remote_static);                       // se
  }
  if (ok) {
    s.mix_key_and_hash({st.psk, key_bytes});                              // psk
    e = hs_error::internal;
    ok = s.encrypt_and_hash({}, p + resp_empty_at);                        // payload
  }
  wipe(e_priv, sizeof e_priv);
  if (ok) {
    uint8_t mac1_key[hash_bytes];
    derive_key(label_mac1, st.remote_static, mac1_key);
    mac16({mac1_key, hash_bytes}, {p, resp_mac1_at}, p + resp_mac1_at);
    // The responder holds no cookie from the initiator (initiators send no
    // cookie replies): mac2 is zeros.
    std::memset(p + resp_mac2_at, 0, hs_mac_bytes);
    s.split(keys.recv, keys.send);
    std::memcpy(keys.peer_static, st.remote_static, key_bytes);
    keys.peer_member_id = st.remote_id;
    keys.connection_id = st.connection_id;
    keys.peer_index = st.peer_index;
  } else {
    std::memset(p, 0, response_bytes);
  }
  // Single use either way: the initiator retries with a new initiation.
  wipe(&st, sizeof st);
  st.pending = false;
  return ok ? hs_error::ok : e;
}

// ------------------------------------------------------------ cookies

cookie_checker::cookie_checker(const hs_identity &local, uint64_t now_ns) : member_id_(local.member_id) {
  std::memcpy(cookie_key_, local.cookie_key, key_bytes);
  has_secret_ = false;
  rotate(now_ns);
}

cookie_checker::~cookie_checker() { wipe(secret_, sizeof secret_); }

bool cookie_checker::rotate(uint64_t now_ns) {
  if (has_secret_ && now_ns >= secret_born_ns_ && now_ns - secret_born_ns_ < cookie_secret_lifetime_ns) return true;
  uint8_t fresh[key_bytes];
  if (!random_bytes(fresh)) {
    // Better no cookie at all than one that never expires.
    has_secret_ = false;
    wipe(secret_, sizeof secret_);
    return false;
  }
  std::memcpy(secret_, fresh, key_bytes);
  wipe(fresh, sizeof fresh);
  secret_born_ns_ = now_ns;
  has_secret_ = true;
  return true;
}

void cookie_checker::set_secret_for_test(const uint8_t secret[key_bytes], uint64_t now_ns) {
  std::memcpy(secret_, secret, key_bytes);
  secret_born_ns_ = now_ns;
  has_secret_ = true;
}

void cookie_checker::cookie_for(std::span<const uint8_t> source, uint8_t out[hs_cookie_bytes]) const {
  mac16({secret_, key_bytes}, source, out);
}

bool cookie_checker::check_mac2(std::span<const uint8_t> packet, std::span<const uint8_t> source,
                                uint64_t now_ns) const {
  if (!has_secret_ || now_ns < secret_born_ns_ || now_ns - secret_born_ns_ >= cookie_secret_lifetime_ns) return false;
  handshake_view v;
  if (parse_handshake(packet, v) != hs_error::ok || v.mac2.empty()) return false;
  uint8_t cookie[hs_cookie_bytes];
  cookie_for(source, cookie);
  const std::size_t covered = static_cast<std::size_t>(v.mac2.data() - packet.data());
  const bool ok = mac_matches({cookie, hs_cookie_bytes}, packet.first(covered), v.mac2);
  wipe(cookie, sizeof cookie);
  return ok;
}

hs_error cookie_checker::make_cookie_reply(std::span<const uint8_t> answered, std::span<const uint8_t> source,
                                           uint64_t now_ns, std::span<uint8_t, cookie_reply_bytes> out,
                                           const uint8_t *fixed_nonce) {
  handshake_view v;
  if (const hs_error e = parse_handshake(answered, v); e != hs_error::ok) return e;
  if (v.mac1.empty()) return hs_error::bad_type;
  if (!rotate(now_ns)) return hs_error::internal;
  uint8_t *p = out.data();
  write_header(p, hs_type::cookie_reply, member_id_, v.connection_id);
  if (fixed_nonce != nullptr)
    std::memcpy(p + cookie_nonce_at, fixed_nonce, hs_cookie_nonce_bytes);
  else if (!random_bytes({p + cookie_nonce_at, hs_cookie_nonce_bytes}))
    return hs_error::internal;
  uint8_t cookie[hs_cookie_bytes];
  cookie_for(source, cookie);
  const bool ok = aes256gcm_seal(cookie_key_, p + cookie_nonce_at, v.mac1, {cookie, hs_cookie_bytes},
                                 p + cookie_sealed_at);
  wipe(cookie, sizeof cookie);
  return ok ? hs_error::ok : hs_error::internal;
}

}  // namespace mtp::crypto
