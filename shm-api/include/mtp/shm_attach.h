// SPDX-License-Identifier: BSD-3-Clause
// Attaching an application to mtpd over its unix socket (app.socket).
//
//   app                                   mtpd (control core)
//   connect ------------------------------> accept; peer credentials (SO_PEERCRED)
//           <------------------------------ greeting line "MTPD 1 <version> node=.. id=..\n"
//   attach_request (64 B) ----------------> checked: magic, layout version, channel count,
//                                           the peer's user and groups against the policy
//           <------------------------------ attach_reply (256 B), and on success, in the
//                                           same message (SCM_RIGHTS): the region's memfd,
//                                           the app's eventfd, mtpd's eventfd
//   (the socket stays open: it is the attachment; when it closes, from either side or
//    because the process died, mtpd detaches the application and reclaims all it held)
//
// A peer that sends no request within attach_timeout_ns, or a malformed
// one, gets a reply saying why (when it can be written) and is closed.
// Everything here is POSIX; mtpd's control core polls attach_server, the
// application calls attach_client().
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "mtp/shm_region.h"

namespace mtp::shm {

inline constexpr uint32_t attach_magic = 0x4154'504d;  ///< "MPTA" little-endian
inline constexpr uint64_t attach_timeout_ns = 2'000'000'000;

struct attach_request {
  uint32_t magic;           ///< attach_magic
  uint32_t layout_version;  ///< the application's shm_layout.h
  uint32_t channels;        ///< application threads that will use the region: 1 .. max_channels
  uint32_t flags;           ///< none yet: 0
  uint8_t reserved[48];     ///< 0
};
static_assert(sizeof(attach_request) == 64);

enum class attach_status : uint32_t {
  ok = 0,
  not_allowed = 1,      ///< the peer's user and groups are not in the policy
  bad_request = 2,      ///< wrong magic, size, flags or channel count
  layout_mismatch = 3,  ///< another layout version: upgrade the library or mtpd
  no_resources = 4,     ///< too many applications, or the region could not be made
  timeout = 5,          ///< no request in time
};

struct attach_reply {
  uint32_t magic;           ///< attach_magic
  attach_status status;
  uint32_t layout_version;  ///< mtpd's
  uint32_t fd_count;        ///< 3 on success (region, app eventfd, mtpd eventfd), else 0
  uint64_t app_id;          ///< mtpd's number for this attachment (its logs and counters)
  char reason[232];         ///< NUL-terminated: why not, for the application's error message
};
static_assert(sizeof(attach_reply) == 256);

const char *attach_status_name(attach_status s);

/// Who may attach: empty lists let anyone who can open the socket (its
/// mode and group are the gate); otherwise the peer's uid must be listed,
/// or its primary or a supplementary group.
struct attach_policy {
  std::vector<uid_t> users;
  std::vector<gid_t> groups;
  uint32_t max_apps = 64;
  /// Connections not yet attached (waiting for their request, at most
  /// attach_timeout_ns each): beyond this, new ones are closed at once, so
  /// a local process opening connections in a loop costs mtpd bounded fds.
  uint32_t max_pending = 16;
  region_plan plan;  ///< channel_count is the application's request
  bool hugepages = true;
  uint32_t node_id = 0;  ///< this node's MTP member id (config node.id), written into every region's header
};

/// An attached application as mtpd sees it.
struct attached_app {
  uint64_t id = 0;
  int fd = -1;  ///< the socket; closing it detaches
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  mapped_region region;
  int app_eventfd = -1;     ///< mtpd signals it
  int daemon_eventfd = -1;  ///< the application signals it
  bool attached = false;    ///< the reply went out
  uint64_t deadline_ns = 0; ///< for the request, while not attached
  uint32_t got = 0;         ///< request bytes read so far
  attach_request request{};
};

struct attach_counters {
  uint64_t accepted = 0, attached = 0, detached = 0, refused = 0, timed_out = 0, shed = 0;
};

/// mtpd's side. Not thread-safe: the control core only.
class attach_server {
 public:
  attach_server() = default;
  attach_server(const attach_server &) = delete;
  attach_server &operator=(const attach_server &) = delete;
  ~attach_server();

  void set_policy(attach_policy p) { policy_ = std::move(p); }
  /// Called on each attach ("attached"), detach ("detached") and refusal
  /// (the status name), with the reason for a refusal: for mtpd's log.
  std::function<void(const attached_app &, const char *what, const std::string &why)> on_event;
  void set_greeting(std::string line) { greeting_ = std::move(line); }
  /// Asked when an attached application leaves: true while someone else
  /// (a worker serving its channels) still uses its region. Its socket is
  /// closed at once; the region and eventfds stay until this says false
  /// (asked again at every poll). Unset: released at once.
  std::function<bool(const attached_app &)> keep_mapped;

  /// Accepts from `listen_fd` (non-blocking), reads requests, replies,
  /// notices detaches; never blocks. @return work done (for idle).
  unsigned poll(int listen_fd, uint64_t now_ns);

  /// Detaches every application and releases every region, kept or not
  /// (shutdown, once nobody else uses them).
  void close_all();

  const std::vector<std::unique_ptr<attached_app>> &apps() const { return live_; }
  const attach_counters &counters() const { return counters_; }
  /// Applications attached now (the reply went out).
  uint32_t attached_count() const;

 private:
  void serve_request(attached_app &a);
  void refuse(attached_app &a, attach_status s, const std::string &why);
  void drop(std::size_t i);

  attach_policy policy_;
  std::string greeting_ = "MTPD 1\n";
  std::vector<std::unique_ptr<attached_app>> live_;
  std::vector<std::unique_ptr<attached_app>> leaving_;  ///< detached; region still in use (keep_mapped)
  attach_counters counters_;
  uint64_t next_id_ = 1;
};

/// The application's side: connects to `socket_path`, asks for a region of
/// `channels` channels, and maps it. Blocks up to about attach_timeout_ns.
struct attach_result {
  std::string error;  ///< empty on success; else a sentence for the user
  attach_status status = attach_status::ok;
  int socket_fd = -1;  ///< keep open while attached; closing it detaches
  mapped_region region;
  int app_eventfd = -1;
  int daemon_eventfd = -1;
  uint64_t app_id = 0;
  std::string greeting;
};
attach_result attach_client(const std::string &socket_path, uint32_t channels);

}  // namespace mtp::shm
