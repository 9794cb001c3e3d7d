// SPDX-License-Identifier: BSD-3-Clause
// mtpd's private record of who holds each buffer of an application's
// region (shm_layout.h), and its checks of every buffer reference the
// application makes. The region itself says nothing about ownership that
// mtpd believes: a send naming a buffer the application does not hold, a
// range outside the buffer or into its headroom, or a release of a buffer
// mtpd never lent is refused with a reason, and nothing changes.
//
// Daemon side only; no allocation after construction, no syscalls.
#pragma once

#include <cstdint>
#include <vector>

#include "mtp/shm_layout.h"

namespace mtp::shm {

/// Why a buffer reference was refused (or ok). Names are counter names.
#define MTP_BUFFER_CHECKS(X)                                                         \
  X(ok)                                                                              \
  X(bad_buffer_index) /* beyond the region's buffers, or in the wrong area */        \
  X(not_held_by_app)  /* a buffer mtpd holds (in flight) or never lent */            \
  X(bad_range)        /* offset or length outside the buffer, or into the headroom */ \
  X(empty)            /* a send of zero bytes */

enum class buffer_check : uint8_t {
#define MTP_X(name) name,
  MTP_BUFFER_CHECKS(MTP_X)
#undef MTP_X
};
inline constexpr std::size_t buffer_check_count = 0
#define MTP_X(name) +1
    MTP_BUFFER_CHECKS(MTP_X)
#undef MTP_X
    ;
const char *buffer_check_name(buffer_check c);

class buffer_ledger {
 public:
  /// Send buffers [0, tx_buffers) start with the application; receive
  /// buffers [tx_buffers, buffer_count) start free, with mtpd.
  explicit buffer_ledger(const region_layout &layout);

  /// A send command's buffer reference (d.buffer, d.offset, d.length):
  /// a send buffer the application holds, data within it and after the
  /// headroom. On ok the buffer is mtpd's until complete_send().
  buffer_check take_for_send(const descriptor &d);
  /// Gives a send buffer back to the application (with its completion).
  /// @return false if mtpd did not hold it (a bug in mtpd, not the app's).
  bool complete_send(uint32_t buffer);

  /// A free receive buffer lent to the application (named in a Received
  /// event), or no_buffer when the application holds them all.
  uint32_t lend_for_receive();
  /// The application hands a receive buffer back (release command).
  buffer_check release(const descriptor &d);
  /// A free receive buffer mtpd fills before lending it (the fragments of
  /// one message gathered together): neither free nor the application's
  /// (a release naming it is refused) until lend_filled() or put_back().
  /// no_buffer when none is free.
  uint32_t take_for_filling();
  /// The filled buffer goes to the application (its Received event).
  void lend_filled(uint32_t buffer);
  /// A buffer taken for filling is free again (its message was abandoned,
  /// or its connection went).
  void put_back(uint32_t buffer);
  uint32_t filling() const { return filling_; }

  uint32_t app_held_send() const { return app_send_; }
  uint32_t daemon_held_send() const { return daemon_send_; }
  uint32_t app_held_receive() const { return app_receive_; }
  uint32_t free_receive() const { return static_cast<uint32_t>(free_receive_.size()); }
  /// Every buffer is in exactly one of the five states.
  bool consistent() const;

 private:
  enum holder : uint8_t { app, daemon };
  region_plan plan_;
  std::vector<holder> holder_;           ///< per buffer
  std::vector<uint32_t> free_receive_;   ///< receive buffers mtpd holds (a stack)
  uint32_t app_send_ = 0, daemon_send_ = 0, app_receive_ = 0, filling_ = 0;
};

}  // namespace mtp::shm
