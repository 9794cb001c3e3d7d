// SPDX-License-Identifier: BSD-3-Clause
// The daemon's built-in test applications (config test.source and
// test.sink), as ordinary users of the application paths: a region of
// the same layout as an attached application's (private memory here, not
// shared), served by the worker's app_service like any other, and driven
// through its rings with the same commands and events libmtp uses. So
// mtp-perf measures what applications get, and every byte the source
// sends and the sink checks goes the way an application's does (its send
// buffers read in place until stable, received data copied once into its
// receive buffers).
//
// The source opens one connection to the configured members (with the
// configured connection id) on the worker owning that id, and sends a
// verifiable pattern (test_pattern) in messages round-robin over its
// streams, at a rate or as fast as buffers and the connection take them,
// or one at a time (ping-pong, timing each echo). The sink listens on
// every worker, checks every byte against the pattern and the order of
// every stream, and echoes messages back when asked. Counters are the
// worker's source_* and sink_* ones.
//
// Runs on the worker lcore, between its polls; no locks, no syscalls.
#pragma once

#include <cstdint>
#include <deque>
#include <unordered_map>
#include <vector>

#include "mtp/shm_commands.h"
#include "mtp/shm_layout.h"
#include "mtp/shm_ring.h"
#include "runtime.h"
#include "types.h"

namespace mtp::dp {

/// The bytes the test source sends and the sink checks: a pseudo-random
/// cycle of a prime length, so a byte misplaced by any offset shows. The
/// pattern at `offset` of `stream` starts at at(stream, offset); the table
/// is long enough for a whole message from any start.
class test_pattern {
 public:
  static constexpr std::size_t cycle = 4093;
  static constexpr std::size_t max_message = 65536;
  test_pattern() : bytes_(cycle + max_message) {
    uint32_t x = 0x2545f491u;
    for (std::size_t i = 0; i < cycle; ++i) {
      x = x * 1664525u + 1013904223u;
      bytes_[i] = static_cast<std::byte>(x >> 24);
    }
    for (std::size_t i = cycle; i < bytes_.size(); ++i) bytes_[i] = bytes_[i % cycle];
  }
  const std::byte *at(uint64_t stream, uint64_t offset) const {
    return bytes_.data() + (offset + stream * 1009) % cycle;
  }

 private:
  std::vector<std::byte> bytes_;
};

class test_app {
 public:
  /// @param source  this worker runs the configured source
  /// @param sink    this worker runs a sink (it listens)
  test_app(const runtime &rt, worker_context &w, bool source, bool sink, core::time_ns now_ns);
  ~test_app();
  test_app(const test_app &) = delete;
  test_app &operator=(const test_app &) = delete;

  /// The region and rings to hand to the worker's app_service; null if
  /// the region could not be allocated (logged).
  app_handoff *handoff() { return base_ != nullptr ? &handoff_ : nullptr; }
  /// Takes the events the worker posted and posts what follows from them
  /// (sends, echoes, releases, close). @return work done.
  unsigned run(core::time_ns now_ns);

 private:
  struct sink_connection {
    std::vector<uint64_t> next_offset;  ///< per stream, the next byte expected
    std::vector<std::byte> echo;        ///< echo: the message being gathered
  };

  void on_event(const shm::descriptor &e, core::time_ns now_ns);
  void on_received(const shm::descriptor &e, core::time_ns now_ns);
  /// Queues a command (the ring, or the backlog when it is full).
  void command(const shm::descriptor &d);
  bool flush_backlog();
  /// `bytes` into send buffers and send commands (pieces with send_more).
  /// @return false (nothing posted) without enough buffers or ring room.
  bool send(uint64_t handle, uint64_t stream, const std::byte *bytes, std::size_t len, uint16_t flags,
            uint32_t max_retx);
  bool post_params(shm::command type, uint64_t handle, const shm::initiate_params &ip);
  unsigned feed_source(core::time_ns now_ns);

  const runtime &rt_;
  worker_context &w_;
  test_pattern pattern_;
  shm::region_layout layout_{};
  void *base_ = nullptr;
  app_handoff handoff_;
  shm::ring_producer<shm::descriptor> commands_;
  shm::ring_consumer<shm::descriptor> events_;
  std::deque<shm::descriptor> backlog_;  ///< commands waiting for ring room
  std::vector<uint32_t> free_send_;      ///< send buffers this application holds
  uint32_t data_room_ = 0;               ///< bytes a buffer carries after its headroom

  // The source.
  bool source_ = false;
  bool source_started_ = false;
  bool source_done_ = false;
  uint64_t source_handle_ = 1;
  core::time_ns start_ns_ = 0;
  uint64_t next_ = 0;          ///< next byte offset queued (over all streams)
  uint64_t messages_ = 0;      ///< messages the transfer has
  uint64_t outcomes_ = 0;      ///< messages Sent, Expired or failed
  uint64_t stable_msgs_ = 0;
  bool ping_outstanding_ = false;
  core::time_ns ping_sent_ns_ = 0;
  bool warned_ = false;

  // The sink.
  bool sink_ = false;
  bool listening_ = false;
  static constexpr uint64_t listener_handle = 2;
  std::unordered_map<uint64_t, sink_connection> sinks_;
};

}  // namespace mtp::dp
