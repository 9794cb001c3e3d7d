// SPDX-License-Identifier: BSD-3-Clause
// See shm_ledger.h.
#include "mtp/shm_ledger.h"

namespace mtp::shm {

const char *buffer_check_name(buffer_check c) {
  switch (c) {
#define MTP_X(name) \
  case buffer_check::name: return #name;
    MTP_BUFFER_CHECKS(MTP_X)
#undef MTP_X
  }
  return "unknown";
}

buffer_ledger::buffer_ledger(const region_layout &layout)
    : plan_(layout.plan), holder_(layout.plan.buffer_count, holder::daemon), app_send_(layout.plan.tx_buffers) {
  for (uint32_t b = 0; b < plan_.tx_buffers; ++b) holder_[b] = holder::app;
  free_receive_.reserve(plan_.buffer_count - plan_.tx_buffers);
  // Lent lowest first: a stack filled from the top.
  for (uint32_t b = plan_.buffer_count; b > plan_.tx_buffers; --b) free_receive_.push_back(b - 1);
}

buffer_check buffer_ledger::take_for_send(const descriptor &d) {
  if (d.buffer >= plan_.tx_buffers) return buffer_check::bad_buffer_index;
  if (holder_[d.buffer] != holder::app) return buffer_check::not_held_by_app;
  if (d.length == 0) return buffer_check::empty;
  // 64-bit sums: offset + length cannot wrap.
  if (d.offset < plan_.buffer_headroom || uint64_t{d.offset} + d.length > plan_.buffer_bytes)
    return buffer_check::bad_range;
  holder_[d.buffer] = holder::daemon;
  --app_send_;
  ++daemon_send_;
  return buffer_check::ok;
}

bool buffer_ledger::complete_send(uint32_t buffer) {
  if (buffer >= plan_.tx_buffers || holder_[buffer] != holder::daemon) return false;
  holder_[buffer] = holder::app;
  --daemon_send_;
  ++app_send_;
  return true;
}

uint32_t buffer_ledger::lend_for_receive() {
  if (free_receive_.empty()) return no_buffer;
  const uint32_t b = free_receive_.back();
  free_receive_.pop_back();
  holder_[b] = holder::app;
  ++app_receive_;
  return b;
}

buffer_check buffer_ledger::release(const descriptor &d) {
  if (d.buffer < plan_.tx_buffers || d.buffer >= plan_.buffer_count) return buffer_check::bad_buffer_index;
  if (holder_[d.buffer] != holder::app) return buffer_check::not_held_by_app;
  holder_[d.buffer] = holder::daemon;
  --app_receive_;
  free_receive_.push_back(d.buffer);
  return buffer_check::ok;
}

uint32_t buffer_ledger::take_for_filling() {
  if (free_receive_.empty()) return no_buffer;
  const uint32_t b = free_receive_.back();
  free_receive_.pop_back();
  ++filling_;
  return b;
}

void buffer_ledger::lend_filled(uint32_t buffer) {
  holder_[buffer] = holder::app;
  ++app_receive_;
  --filling_;
}

void buffer_ledger::put_back(uint32_t buffer) {
  free_receive_.push_back(buffer);
  --filling_;
}

bool buffer_ledger::consistent() const {
  uint32_t app_send = 0, daemon_send = 0, app_receive = 0, daemon_receive = 0;
  for (uint32_t b = 0; b < plan_.buffer_count; ++b) {
    const bool send = b < plan_.tx_buffers;
    if (holder_[b] == holder::app)
      ++(send ? app_send : app_receive);
    else
      ++(send ? daemon_send : daemon_receive);
  }
  return app_send == app_send_ && daemon_send == daemon_send_ && app_receive == app_receive_ &&
         daemon_receive == free_receive_.size() + filling_ && app_send + daemon_send == plan_.tx_buffers &&
         app_receive + daemon_receive == plan_.buffer_count - plan_.tx_buffers;
}

}  // namespace mtp::shm
