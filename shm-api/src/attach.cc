// SPDX-License-Identifier: BSD-3-Clause
// See shm_attach.h.
#include "mtp/shm_attach.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace mtp::shm {

namespace {

std::string errno_text(const char *what) { return std::string(what) + ": " + std::strerror(errno); }

void close_fd(int &fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

// Groups of `uid` (primary and supplementary), looked up by name.
std::vector<gid_t> groups_of(uid_t uid, gid_t primary) {
  std::vector<gid_t> out{primary};
  char buf[4096];
  passwd pw{}, *found = nullptr;
  if (getpwuid_r(uid, &pw, buf, sizeof buf, &found) != 0 || found == nullptr) return out;
  int n = 64;
  std::vector<gid_t> g(static_cast<std::size_t>(n));
  if (getgrouplist(pw.pw_name, primary, g.data(), &n) < 0) {
    g.resize(static_cast<std::size_t>(n));
    if (getgrouplist(pw.pw_name, primary, g.data(), &n) < 0) return out;
  }
  g.resize(static_cast<std::size_t>(n));
  out.insert(out.end(), g.begin(), g.end());
  return out;
}

bool allowed(const attach_policy &p, uid_t uid, gid_t gid) {
  if (p.users.empty() && p.groups.empty()) return true;
  if (std::find(p.users.begin(), p.users.end(), uid) != p.users.end()) return true;
  for (gid_t g : groups_of(uid, gid))
    if (std::find(p.groups.begin(), p.groups.end(), g) != p.groups.end()) return true;
  return false;
}

// Sends the reply, with `fds` attached when there are any. Non-blocking:
// a 256 B message fits an empty socket buffer.
bool send_reply(int sock, const attach_reply &r, const int *fds, int nfds) {
  iovec iov{const_cast<attach_reply *>(&r), sizeof r};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(3 * sizeof(int))] = {};
  if (nfds > 0) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(static_cast<std::size_t>(nfds) * sizeof(int));
    cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(static_cast<std::size_t>(nfds) * sizeof(int));
    std::memcpy(CMSG_DATA(c), fds, static_cast<std::size_t>(nfds) * sizeof(int));
  }
  return sendmsg(sock, &msg, MSG_NOSIGNAL | MSG_DONTWAIT) == static_cast<ssize_t>(sizeof r);
}

}  // namespace

const char *attach_status_name(attach_status s) {
  switch (s) {
    case attach_status::ok: return "ok";
    case attach_status::not_allowed: return "not_allowed";
    case attach_status::bad_request: return "bad_request";
    case attach_status::layout_mismatch: return "layout_mismatch";
    case attach_status::no_resources: return "no_resources";
    case attach_status::timeout: return "timeout";
  }
  return "unknown";
}

attach_server::~attach_server() { close_all(); }

void attach_server::close_all() {
  keep_mapped = nullptr;
  while (!live_.empty()) drop(live_.size() - 1);
  for (auto &a : leaving_) {
    close_fd(a->app_eventfd);
    close_fd(a->daemon_eventfd);
  }
  leaving_.clear();
}

uint32_t attach_server::attached_count() const {
  uint32_t n = 0;
  for (const auto &a : live_) n += a->attached;
  return n;
}

void attach_server::drop(std::size_t i) {
  attached_app &a = *live_[i];
  if (a.attached) {
    ++counters_.detached;
    if (on_event) on_event(a, "detached", {});
  }
  close_fd(a.fd);
  if (a.attached && keep_mapped && keep_mapped(a)) {
    leaving_.push_back(std::move(live_[i]));
  } else {
    close_fd(a.app_eventfd);
    close_fd(a.daemon_eventfd);
    a.region.reset();
  }
  live_[i] = std::move(live_.back());
  live_.pop_back();
}

void attach_server::refuse(attached_app &a, attach_status s, const std::string &why) {
  attach_reply r{};
  r.magic = attach_magic;
  r.status = s;
  r.layout_version = layout_version;
  std::snprintf(r.reason, sizeof r.reason, "%s", why.c_str());
  (void)send_reply(a.fd, r, nullptr, 0);
  ++(s == attach_status::timeout ? counters_.timed_out : counters_.refused);
  if (on_event) on_event(a, attach_status_name(s), why);
  shutdown(a.fd, SHUT_RDWR);  // dropped by the caller's sweep
}

void attach_server::serve_request(attached_app &a) {
  const attach_request &q = a.request;
  if (q.magic != attach_magic) return refuse(a, attach_status::bad_request, "not an attach request (bad magic)");
  if (q.layout_version != layout_version)
    return refuse(a, attach_status::layout_mismatch,
                  "shared-memory layout version " + std::to_string(q.layout_version) + " requested, mtpd has " +
                      std::to_string(layout_version) + ": use a libmtp that matches this mtpd");
  if (q.flags != 0 || std::any_of(std::begin(q.reserved), std::end(q.reserved), [](uint8_t b) { return b != 0; }))
    return refuse(a, attach_status::bad_request, "unknown flags in the attach request");
  if (q.channels == 0 || q.channels > max_channels)
    return refuse(a, attach_status::bad_request, "channels must be 1 to " + std::to_string(max_channels));
  if (!allowed(policy_, a.uid, a.gid))
    return refuse(a, attach_status::not_allowed,
                  "user " + std::to_string(a.uid) + " is not allowed to attach to this mtpd (app.users, app.groups)");
  if (attached_count() >= policy_.max_apps)
    return refuse(a, attach_status::no_resources,
                  "mtpd serves " + std::to_string(policy_.max_apps) + " applications already");
  region_plan plan = policy_.plan;
  plan.channel_count = q.channels;
  if (std::string why = a.region.create(plan, static_cast<uint64_t>(getpid()), policy_.node_id, policy_.hugepages);
      !why.empty())
    return refuse(a, attach_status::no_resources, "cannot make the shared region: " + why);
  a.app_eventfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  a.daemon_eventfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (a.app_eventfd < 0 || a.daemon_eventfd < 0)
    return refuse(a, attach_status::no_resources, errno_text("eventfd"));
  attach_reply r{};
  r.magic = attach_magic;
  r.status = attach_status::ok;
  r.layout_version = layout_version;
  r.fd_count = 3;
  r.app_id = a.id;
  const int fds[3] = {a.region.fd(), a.app_eventfd, a.daemon_eventfd};
  if (!send_reply(a.fd, r, fds, 3)) {
    shutdown(a.fd, SHUT_RDWR);
    return;
  }
  a.attached = true;
  ++counters_.attached;
  if (on_event) on_event(a, "attached", {});
}

unsigned attach_server::poll(int listen_fd, uint64_t now_ns) {
  unsigned work = 0;
  for (std::size_t i = 0; i < leaving_.size();) {
    attached_app &a = *leaving_[i];
    if (keep_mapped && keep_mapped(a)) {
      ++i;
      continue;
    }
    close_fd(a.app_eventfd);
    close_fd(a.daemon_eventfd);
    leaving_[i] = std::move(leaving_.back());
    leaving_.pop_back();
    ++work;
  }
  for (;;) {
    const int conn = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (conn < 0) break;
    ++work;
    if (live_.size() - attached_count() >= policy_.max_pending) {
      ::close(conn);  // shed: too many connections that have not attached
      ++counters_.shed;
      continue;
    }
    ++counters_.accepted;
    auto a = std::make_unique<attached_app>();
    a->fd = conn;
    a->id = next_id_++;
    a->deadline_ns = now_ns + attach_timeout_ns;
    ucred cred{};
    socklen_t len = sizeof cred;
    if (getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
      a->pid = cred.pid;
      a->uid = cred.uid;
      a->gid = cred.gid;
    }
    // Tools that only want to know who listens read this line and close.
    [[maybe_unused]] ssize_t sent = send(conn, greeting_.data(), greeting_.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    live_.push_back(std::move(a));
  }
  for (std::size_t i = 0; i < live_.size();) {
    attached_app &a = *live_[i];
    pollfd p{a.fd, POLLIN | POLLRDHUP, 0};
    // EINTR is no event: net_tap signals the process for its packets, and
    // reading it as an error detached applications mid-transfer.
    if (::poll(&p, 1, 0) < 0) p.revents = errno == EINTR ? 0 : POLLERR;
    bool gone = (p.revents & (POLLERR | POLLHUP | POLLRDHUP | POLLNVAL)) != 0;
    if (!a.attached && !gone) {
      if (p.revents & POLLIN) {
        const ssize_t n = recv(a.fd, reinterpret_cast<char *>(&a.request) + a.got, sizeof a.request - a.got,
                               MSG_DONTWAIT);
        if (n <= 0) {
          gone = n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
        } else {
          ++work;
          a.got += static_cast<uint32_t>(n);
          if (a.got == sizeof a.request) serve_request(a);
        }
      } else if (now_ns >= a.deadline_ns) {
        refuse(a, attach_status::timeout, "no attach request within 2 s");
        gone = true;
      }
    } else if (a.attached && (p.revents & POLLIN) && !gone) {
      // Nothing is expected on an attached socket: anything but EOF is a
      // protocol error from the application, which ends the attachment.
      char b;
      gone = true;
      (void)recv(a.fd, &b, 1, MSG_DONTWAIT);
    }
    if (gone) {
      ++work;
      drop(i);
      continue;
    }
    if (a.attached) {
      // mtpd's pulse, per channel: an application that sees it stand still
      // for long knows the daemon hangs (one that died closes the socket).
      const region_layout &l = a.region.layout();
      for (uint32_t c = 0; c < l.plan.channel_count; ++c)
        channel_at(a.region.base(), l, c)->daemon_heartbeat.fetch_add(1, std::memory_order_relaxed);
    }
    ++i;
  }
  return work;
}

attach_result attach_client(const std::string &socket_path, uint32_t channels) {
  attach_result res;
  const auto fail = [&](attach_status s, std::string why) {
    res.status = s;
    res.error = std::move(why);
    close_fd(res.socket_fd);
    return std::move(res);
  };
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof addr.sun_path) return fail(attach_status::bad_request, "socket path too long");
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size());
  res.socket_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (res.socket_fd < 0) return fail(attach_status::no_resources, errno_text("socket"));
  if (connect(res.socket_fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) != 0)
    return fail(attach_status::no_resources,
                errno_text(("cannot reach mtpd at " + socket_path + " (is it running? app.socket)").c_str()));
  timeval tv{static_cast<time_t>(attach_timeout_ns / 1'000'000'000 + 1), 0};
  setsockopt(res.socket_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  // The greeting line, byte by byte: the reply follows it on the stream.
  for (char ch; res.greeting.size() < 256;) {
    if (recv(res.socket_fd, &ch, 1, 0) != 1) return fail(attach_status::timeout, "mtpd sent no greeting");
    res.greeting.push_back(ch);
    if (ch == '\n') break;
  }
  if (res.greeting.rfind("MTPD ", 0) != 0) return fail(attach_status::bad_request, "not an mtpd socket");
  attach_request q{};
  q.magic = attach_magic;
  q.layout_version = layout_version;
  q.channels = channels;
  if (send(res.socket_fd, &q, sizeof q, MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof q))
    return fail(attach_status::no_resources, errno_text("sending the attach request"));
  attach_reply r{};
  iovec iov{&r, sizeof r};
  alignas(cmsghdr) char control[CMSG_SPACE(3 * sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  const ssize_t n = recvmsg(res.socket_fd, &msg, MSG_CMSG_CLOEXEC | MSG_WAITALL);
  int fds[3] = {-1, -1, -1};
  int nfds = 0;
  for (cmsghdr *c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c))
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      nfds = static_cast<int>((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
      std::memcpy(fds, CMSG_DATA(c), static_cast<std::size_t>(std::min(nfds, 3)) * sizeof(int));
    }
  const auto close_received = [&] {
    for (int i = 0; i < std::min(nfds, 3); ++i) close_fd(fds[i]);
  };
  if (n != static_cast<ssize_t>(sizeof r) || r.magic != attach_magic) {
    close_received();
    return fail(attach_status::bad_request, "mtpd's reply was cut short or malformed");
  }
  r.reason[sizeof r.reason - 1] = '\0';
  if (r.status != attach_status::ok) {
    close_received();
    return fail(r.status, std::string("mtpd refused to attach: ") + r.reason);
  }
  if (nfds != 3 || (msg.msg_flags & MSG_CTRUNC)) {
    close_received();
    return fail(attach_status::bad_request, "mtpd's reply carried no region");
  }
  if (std::string why = res.region.attach(fds[0]); !why.empty()) {
    close_fd(fds[1]);
    close_fd(fds[2]);
    return fail(attach_status::layout_mismatch, "the shared region is unusable: " + why);
  }
  if (res.region.layout().plan.channel_count != channels) {
    close_fd(fds[1]);
    close_fd(fds[2]);
    res.region.reset();
    return fail(attach_status::bad_request, "mtpd's region has another channel count than asked");
  }
  res.app_eventfd = fds[1];
  res.daemon_eventfd = fds[2];
  res.app_id = r.app_id;
  return res;
}

}  // namespace mtp::shm
