// SPDX-License-Identifier: BSD-3-Clause
// libmtp for C++20: the C API of mtp.h with ownership and results as
// values. Header-only and thin: every call is one C call; nothing here
// throws or allocates except the preconnection builder's member list and
// an attach error's sentence.
//
//   auto ctx = mtp::context::attach("/run/mtpd/mtpd.sock", 1);
//   if (!ctx.ok()) { fprintf(stderr, "%s\n", ctx.message()); return 1; }
//   mtp::channel ch = ctx.value().channel(0);
//   auto c = ch.initiate(mtp::preconnection().members({2, 3}).threshold(2));
//   ...
//   mtp_event ev[64];
//   for (const mtp_event &e : ch.poll(ev)) { ...; ch.release(e); }
//
// Threads: as mtp.h (a channel is used by one thread at a time).
#pragma once

#include <array>
#include <cstddef>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mtp/mtp.h"

namespace mtp {

/// A value or the mtp_status that says why there is none.
template <class T>
class [[nodiscard]] result {
 public:
  result(T v) : value_(std::move(v)) {}
  result(mtp_status s, std::string why = {}) : status_(s), why_(std::move(why)) {}

  bool ok() const { return status_ == MTP_OK; }
  explicit operator bool() const { return ok(); }
  /// Only when ok().
  T &value() & { return *value_; }
  const T &value() const & { return *value_; }
  T &&value() && { return std::move(*value_); }
  mtp_status status() const { return status_; }
  /// A sentence: the detailed one where the call gave one (attach), else
  /// mtp_status_text().
  const char *message() const { return why_.empty() ? mtp_status_text(status_) : why_.c_str(); }

 private:
  std::optional<T> value_;
  mtp_status status_ = MTP_OK;
  std::string why_;
};

/// A status only.
template <>
class [[nodiscard]] result<void> {
 public:
  result(mtp_status s = MTP_OK) : status_(s) {}
  static result of(int s) { return result(static_cast<mtp_status>(s)); }
  bool ok() const { return status_ == MTP_OK; }
  explicit operator bool() const { return ok(); }
  mtp_status status() const { return status_; }
  const char *message() const { return mtp_status_text(status_); }

 private:
  mtp_status status_;
};

namespace detail {
/// A handle written by a C call. (The call is made first, on its own line:
/// as two arguments of one call, the handle could be read before it.)
inline result<mtp_connection> handle_or(int status, mtp_connection c) {
  if (status != MTP_OK) return result<mtp_connection>(static_cast<mtp_status>(status));
  return result<mtp_connection>(c);
}
}  // namespace detail

/// What to connect to and how (TAPS preconnection). Owns its member list
/// and group name, so it may be built from temporaries.
class preconnection {
 public:
  preconnection() { mtp_preconnection_init(&p_); }

  preconnection &members(std::initializer_list<uint32_t> ids) {
    members_.assign(ids);
    return *this;
  }
  preconnection &members(std::span<const uint32_t> ids) {
    members_.assign(ids.begin(), ids.end());
    return *this;
  }
  preconnection &group(std::string_view name) {
    group_ = name;
    return *this;
  }
  preconnection &threshold(uint32_t t) {
    p_.threshold = t;
    return *this;
  }
  preconnection &reliability(mtp_reliability r) {
    p_.reliability = r;
    return *this;
  }
  preconnection &ordering(mtp_ordering o) {
    p_.ordering = o;
    return *this;
  }
  preconnection &byte_stream(bool on = true) {
    p_.byte_stream = on ? 1 : 0;
    return *this;
  }
  preconnection &newreno(bool on = true) {
    p_.congestion_newreno = on ? 1 : 0;
    return *this;
  }
  preconnection &multicast(mtp_preference p) {
    p_.multicast = p;
    return *this;
  }
  preconnection &streams(uint32_t n) {
    p_.streams = n;
    return *this;
  }
  preconnection &security(mtp_preference p) {
    p_.security = p;
    return *this;
  }
  /// The public key each member must prove, in members() order.
  preconnection &member_keys(std::span<const std::array<uint8_t, 32>> keys) {
    keys_.assign(keys.begin(), keys.end());
    return *this;
  }

  /// The C struct, pointing into this object (valid while it lives and is
  /// not changed).
  const mtp_preconnection &get() const {
    p_.members = members_.empty() ? nullptr : members_.data();
    p_.member_count = static_cast<uint32_t>(members_.size());
    p_.group = group_.empty() ? nullptr : group_.c_str();
    p_.member_keys = keys_.empty() ? nullptr : reinterpret_cast<const uint8_t(*)[32]>(keys_.data());
    return p_;
  }

 private:
  mutable mtp_preconnection p_{};
  std::vector<uint32_t> members_;
  std::string group_;
  std::vector<std::array<uint8_t, 32>> keys_;
};

/// Per-message properties (mtp_message_properties) with a builder. Fresh,
/// every property is the connection's default.
class message_properties {
 public:
  message_properties() { mtp_message_properties_init(&m_); }
  /// MTP_RELIABILITY_DEFAULT (as constructed): the connection's;
  /// MTP_RELIABLE: fully reliable even on a partial or unreliable
  /// connection; MTP_PARTIAL, MTP_UNRELIABLE: so on any connection.
  message_properties &reliability(mtp_reliability r) {
    m_.reliability = r;
    return *this;
  }
  message_properties &lifetime_ns(uint64_t ns) {
    m_.lifetime_ns = ns;
    return *this;
  }
  message_properties &max_retransmissions(uint32_t n) {
    m_.max_retransmissions = n;
    return *this;
  }
  message_properties &low_latency(bool on = true) {
    m_.low_latency = on ? 1 : 0;
    return *this;
  }
  /// May go as early data (mtp_message_properties::idempotent).
  message_properties &idempotent(bool on = true) {
    m_.idempotent = on ? 1 : 0;
    return *this;
  }
  message_properties &final_message(bool on = true) {
    m_.final_message = on ? 1 : 0;
    return *this;
  }
  const mtp_message_properties *get() const { return &m_; }

 private:
  mtp_message_properties m_{};
};

/// What channel::wait() came back for (mtp_wait).
enum class wait_outcome {
  woken,      ///< MTP_OK: events may be ready (or were already): poll now. May be spurious.
  timed_out,  ///< MTP_ETIMEDOUT: the timeout passed and nothing woke the channel
};

/// The bytes of a RECEIVED, RECEIVED_PARTIAL or DATAGRAM event (valid until
/// it is released).
inline std::span<const std::byte> data_of(const mtp_event &e) {
  return {static_cast<const std::byte *>(e.data), e.data != nullptr ? e.length : 0u};
}

/// One channel of a context: a non-owning handle, cheap to copy, valid
/// while its context lives. One thread at a time.
class channel {
 public:
  channel() = default;
  explicit channel(mtp_channel *ch) : ch_(ch) {}
  mtp_channel *get() const { return ch_; }
  explicit operator bool() const { return ch_ != nullptr; }

  result<mtp_connection> initiate(const preconnection &p) {
    mtp_connection c = 0;
    const int st = mtp_initiate(ch_, &p.get(), &c);
    return detail::handle_or(st, c);
  }
  result<mtp_connection> listen(const preconnection &p) {
    mtp_connection c = 0;
    const int st = mtp_listen(ch_, &p.get(), &c);
    return detail::handle_or(st, c);
  }
  result<mtp_connection> listen() {
    mtp_connection c = 0;
    const int st = mtp_listen(ch_, nullptr, &c);
    return detail::handle_or(st, c);
  }
  result<void> stop_listen(mtp_connection l) { return result<void>::of(mtp_stop_listen(ch_, l)); }
  /// The static public key the client of an accepted connection proved
  /// (mtp_peer_identity); MTP_EINVAL on a plaintext node.
  result<std::array<uint8_t, 32>> peer_identity(mtp_connection c) {
    std::array<uint8_t, 32> key{};
    const int st = mtp_peer_identity(ch_, c, key.data());
    if (st != MTP_OK) return result<std::array<uint8_t, 32>>(static_cast<mtp_status>(st));
    return result<std::array<uint8_t, 32>>(key);
  }

  result<void> send(mtp_connection c, uint64_t stream, std::span<const std::byte> bytes, uint64_t user = 0,
                    const message_properties *props = nullptr) {
    return result<void>::of(
        mtp_send(ch_, c, stream, bytes.data(), bytes.size(), props != nullptr ? props->get() : nullptr, user));
  }
  result<void> send(mtp_connection c, uint64_t stream, std::string_view text, uint64_t user = 0,
                    const message_properties *props = nullptr) {
    return send(c, stream, std::as_bytes(std::span<const char>(text.data(), text.size())), user, props);
  }
  /// Posts in order; @return how many went, and the status of the first
  /// that did not (MTP_OK when all did).
  std::pair<std::size_t, mtp_status> send_burst(std::span<const mtp_send_request> sends,
                                                const message_properties *props = nullptr) {
    int st = MTP_OK;
    const std::size_t n =
        mtp_send_burst(ch_, sends.data(), sends.size(), props != nullptr ? props->get() : nullptr, &st);
    return {n, static_cast<mtp_status>(st)};
  }
  result<void> send_datagram(mtp_connection c, std::span<const std::byte> bytes) {
    return result<void>::of(mtp_send_datagram(ch_, c, bytes.data(), bytes.size()));
  }
  std::size_t max_message_bytes() const { return mtp_max_message_bytes(ch_); }

  /// Events taken now, in `out`'s front.
  std::span<mtp_event> poll(std::span<mtp_event> out) { return out.first(mtp_poll(ch_, out.data(), out.size())); }
  void release(const mtp_event &e) { mtp_release(ch_, &e); }
  /// Sleeps until events may be ready or `timeout_ms` passes (-1: no
  /// limit). Not ok() only when the channel is dead (MTP_EDAEMON,
  /// MTP_EBROKEN) or empty (MTP_EINVAL).
  result<wait_outcome> wait(int timeout_ms) {
    const int st = mtp_wait(ch_, timeout_ms);
    if (st == MTP_OK) return wait_outcome::woken;
    if (st == MTP_ETIMEDOUT) return wait_outcome::timed_out;
    return result<wait_outcome>(static_cast<mtp_status>(st));
  }
  int fd() const { return mtp_channel_fd(ch_); }
  int arm() { return mtp_arm(ch_); }

  result<void> clone(mtp_connection c, uint64_t stream, bool unordered = false) {
    return result<void>::of(mtp_clone(ch_, c, stream, unordered ? 1 : 0));
  }
  result<void> finish(mtp_connection c, uint64_t stream = 0) { return result<void>::of(mtp_finish(ch_, c, stream)); }
  result<void> close(mtp_connection c) { return result<void>::of(mtp_close(ch_, c)); }
  result<void> abort(mtp_connection c, uint64_t code = 0) { return result<void>::of(mtp_abort(ch_, c, code)); }

  mtp_channel_stats stats() const {
    mtp_channel_stats s{};
    s.struct_size = sizeof s;
    mtp_channel_stats_get(ch_, &s);
    return s;
  }

 private:
  mtp_channel *ch_ = nullptr;
};

/// An attachment to mtpd: detaches when destroyed. Move-only.
class context {
 public:
  /// `socket_path` nullptr: $MTP_SOCKET, else /run/mtpd/mtpd.sock. On
  /// failure the result's message() is mtpd's or the library's sentence.
  static result<context> attach(const char *socket_path = nullptr, uint32_t channels = 1) {
    mtp_context *ctx = nullptr;
    char why[256] = {};
    const int st = mtp_attach(socket_path, channels, &ctx, why, sizeof why);
    if (st != MTP_OK) return result<context>(static_cast<mtp_status>(st), why);
    return result<context>(context(ctx));
  }

  context() = default;
  context(const context &) = delete;
  context &operator=(const context &) = delete;
  context(context &&o) noexcept : ctx_(std::exchange(o.ctx_, nullptr)) {}
  context &operator=(context &&o) noexcept {
    if (this != &o) {
      reset();
      ctx_ = std::exchange(o.ctx_, nullptr);
    }
    return *this;
  }
  ~context() { reset(); }

  /// Detaches now (mtpd aborts this application's connections).
  void reset() {
    if (ctx_ != nullptr) mtp_detach(ctx_);
    ctx_ = nullptr;
  }
  /// Channel `i`; an empty channel (operator bool false) when out of range.
  mtp::channel channel(uint32_t i) const { return mtp::channel(mtp_channel_get(ctx_, i)); }
  uint64_t app_id() const { return mtp_app_id(ctx_); }
  /// This node's MTP member id (mtp_node_id); 0 when unknown or empty.
  uint32_t node_id() const { return mtp_node_id(ctx_); }
  mtp_context *get() const { return ctx_; }

 private:
  explicit context(mtp_context *c) : ctx_(c) {}
  mtp_context *ctx_ = nullptr;
};

}  // namespace mtp
