// SPDX-License-Identifier: BSD-3-Clause
// The application socket (a unix stream socket at app.socket) that libmtp
// attaches through. For now it greets and closes: each connection gets one
// line, "MTPD <protocol> <version> node=<name> id=<id>\n", so tools and
// tests can find a running daemon and check its identity. Created before
// EAL starts (a second daemon on the same path fails early and clearly) and
// removed at shutdown. Control lcore only.
#pragma once

#include <string>

#include "config.h"
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

  /// Accepts and greets pending connections without blocking.
  /// @return connections served.
  unsigned poll();

  /// Closes and unlinks the socket. Safe to call twice.
  void close();

  int fd() const { return fd_; }
  uint64_t greeted() const { return greeted_; }

 private:
  int fd_ = -1;
  std::string path_;
  std::string greeting_;
  uint64_t greeted_ = 0;
};

}  // namespace mtp::ctl
