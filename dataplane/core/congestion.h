// SPDX-License-Identifier: BSD-3-Clause
// Congestion control behind one interface, one instance per member:
// NewReno (RFC 9002 section 7) and CUBIC (RFC 8312). Created with the
// connection, never per packet. Owned by the connection's thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>

#include "rtt.h"
#include "types.h"

namespace mtp::core {

enum class cc_algorithm : uint8_t { newreno, cubic };

class congestion_control {
 public:
  virtual ~congestion_control() = default;
  /// Bytes of packets newly acknowledged, sent at `sent_ns`.
  virtual void on_acked(uint64_t bytes, time_ns sent_ns, const rtt_estimator &rtt, time_ns now_ns) = 0;
  /// A loss of a packet sent at `sent_ns`; one reduction per round trip.
  virtual void on_loss(time_ns sent_ns, time_ns now_ns) = 0;
  /// Persistent congestion (RFC 9002 7.6): back to the minimum window.
  virtual void on_persistent_congestion() = 0;
  /// The last loss turned out to be reordering (the packet arrived):
  /// undo that reduction, as Linux does on DSACK/Eifel evidence.
  virtual void on_spurious_loss() = 0;
  virtual uint64_t cwnd() const = 0;
  virtual std::string_view name() const = 0;
};

/// @param mss_bytes the largest packet the connection sends
std::unique_ptr<congestion_control> make_congestion_control(cc_algorithm a, uint64_t mss_bytes);

}  // namespace mtp::core
