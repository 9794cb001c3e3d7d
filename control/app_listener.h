// SPDX-License-Identifier: BSD-3-Clause
// The application socket (a unix stream socket at app.socket) that libmtp
// attaches through (shm-api/include/mtp/shm_attach.h): each connection is
// greeted with one line, "MTPD <protocol> <version> node=<name> id=<id>\n"
// (tools and tests read it to find a running daemon and check its
// identity, then close), and an application then asks for its shared
// region and stays attached while the connection lives. Created before EAL
// starts (a second daemon on the same path fails early and clearly) and
// removed at shutdown. Control lcore only.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "config.h"
#include "runtime.h"
#include "mtp/shm_attach.h"
#include "result.h"

namespace mtp::ctl {

class app_listener {
 public:
  app_listener() = default;
  app_listener(const app_listener &) = delete;
  app_listener &operator=(const app_listener &) = delete;
  ~app_listener() { close(); }

  /// Creates missing directories (0755), refuses a path where another
  /// daemon listens, replaces a stale socket, binds, sets mode and group.
  result<void> open(const cfg::config &c);

  /// Accepts, greets, serves attach requests and notices detaches,
  /// without blocking. Call it every control loop. Each attached
  /// application is handed to one worker of `rt` (round robin), which
  /// serves its channels; on detach the worker aborts its connections and
  /// the region is unmapped once it let go. @return work done.
  unsigned poll(dp::runtime &rt);

  /// Detaches every application, closes and unlinks the socket. Safe to
  /// call twice.
  void close();

  int fd() const { return fd_; }
  const shm::attach_counters &counters() const { return server_.counters(); }
  uint32_t attached() const { return server_.attached_count(); }

 private:
  void hand_over(const shm::attached_app &a);
  int fd_ = -1;
  std::string path_;
  shm::attach_server server_;
  dp::runtime *rt_ = nullptr;
  /// Applications handed to workers, by app id, until the worker released them.
  std::map<uint64_t, std::unique_ptr<dp::app_handoff>> handoffs_;
  unsigned next_worker_ = 0;
};

}  // namespace mtp::ctl
