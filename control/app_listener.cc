// SPDX-License-Identifier: BSD-3-Clause
// See app_listener.h.
#include "app_listener.h"

#include <fcntl.h>
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include "log.h"
#include "mtp_version.h"

namespace mtp::ctl {

namespace {

constexpr int protocol_version = 1;

std::string errno_text() { return std::strerror(errno); }

result<void> make_dirs(const std::string &dir) {
  if (dir.empty() || dir == "/") return {};
  struct stat st{};
  if (stat(dir.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return {};
    return make_error("'" + dir + "' is not a directory");
  }
  if (auto r = make_dirs(dir.substr(0, dir.find_last_of('/'))); !r) return r;
  if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST)
    return make_error("cannot create directory '" + dir + "': " + errno_text());
  return {};
}

sockaddr_un address_of(const std::string &path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path, path.c_str(), std::min(path.size(), sizeof a.sun_path - 1));
  return a;
}

}  // namespace

result<void> app_listener::open(const cfg::config &c) {
  const std::string &path = c.app.socket_path;
  const std::string ctx = "application socket '" + path + "'";
  if (auto r = make_dirs(path.substr(0, path.find_last_of('/'))); !r) return r.err().context(ctx);

  const sockaddr_un addr = address_of(path);
  struct stat st{};
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return make_error("the path exists and is not a socket").context(ctx);
    const int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const bool live = probe >= 0 && connect(probe, reinterpret_cast<const sockaddr *>(&addr), sizeof addr) == 0;
    if (probe >= 0) ::close(probe);
    if (live) return make_error("another mtpd is listening there; give this one its own app.socket").context(ctx);
    unlink(path.c_str());  // stale: left by a daemon that did not stop cleanly
  }

  fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd_ < 0) return make_error("socket: " + errno_text()).context(ctx);
  if (bind(fd_, reinterpret_cast<const sockaddr *>(&addr), sizeof addr) != 0) {
    auto e = make_error("bind: " + errno_text());
    close();
    return e.context(ctx);
  }
  path_ = path;
  if (chmod(path.c_str(), c.app.mode) != 0) {
    auto e = make_error("chmod: " + errno_text());
    close();
    return e.context(ctx);
  }
  if (!c.app.group.empty()) {
    const group *g = getgrnam(c.app.group.c_str());
    if (g == nullptr || chown(path.c_str(), static_cast<uid_t>(-1), g->gr_gid) != 0) {
      auto e = make_error("cannot give the socket to group '" + c.app.group + "'");
      close();
      return e.context(ctx);
    }
  }
  if (listen(fd_, 64) != 0) {
    auto e = make_error("listen: " + errno_text());
    close();
    return e.context(ctx);
  }
  server_.set_greeting("MTPD " + std::to_string(protocol_version) + " " MTP_VERSION " node=" + c.node.name +
                       " id=" + std::to_string(c.node.id) + "\n");
  // Who may attach: app.users and app.groups, or, both empty, whoever the
  // socket's mode and group let in. Regions: the defaults of
  // shm::region_plan, per application, each telling the application this
  // node's member id (mtp_node_id).
  shm::attach_policy policy;
  policy.node_id = c.node.id;
  for (const std::string &u : c.app.users) {
    const auto id = cfg::resolve_user(u);
    if (!id) {
      close();
      return make_error("app.users: no user named '" + u + "' on this host").context(ctx);
    }
    policy.users.push_back(static_cast<uid_t>(*id));
  }
  for (const std::string &g : c.app.groups) {
    const auto id = cfg::resolve_group(g);
    if (!id) {
      close();
      return make_error("app.groups: no group named '" + g + "' on this host").context(ctx);
    }
    policy.groups.push_back(static_cast<gid_t>(*id));
  }
  server_.set_policy(std::move(policy));
  server_.on_event = [this](const shm::attached_app &a, const char *what, const std::string &why) {
    MTP_LOG(INFO, "application %llu (pid %d, uid %u): %s%s%s\n", static_cast<unsigned long long>(a.id),
            static_cast<int>(a.pid), static_cast<unsigned>(a.uid), what, why.empty() ? "" : ": ", why.c_str());
    if (std::strcmp(what, "attached") == 0) hand_over(a);
    if (std::strcmp(what, "detached") == 0)
      if (auto it = handoffs_.find(a.id); it != handoffs_.end())
        it->second->state.store(dp::app_handoff::leave, std::memory_order_release);
  };
  // A detached application's region stays mapped until its worker let go.
  server_.keep_mapped = [this](const shm::attached_app &a) {
    const auto it = handoffs_.find(a.id);
    if (it == handoffs_.end()) return false;
    if (it->second->state.load(std::memory_order_acquire) != dp::app_handoff::released) return true;
    handoffs_.erase(it);
    return false;
  };
  return {};
}

void app_listener::hand_over(const shm::attached_app &a) {
  if (rt_ == nullptr || rt_->workers.empty()) return;
  auto h = std::make_unique<dp::app_handoff>();
  h->app_id = a.id;
  h->pid = static_cast<int>(a.pid);
  h->base = a.region.base();
  h->layout = a.region.layout();
  h->app_eventfd = a.app_eventfd;
  h->daemon_eventfd = a.daemon_eventfd;
  dp::worker_context *w = rt_->workers[next_worker_++ % rt_->workers.size()];
  if (w->app_inbox == nullptr || rte_ring_sp_enqueue(w->app_inbox, h.get()) != 0) {
    MTP_LOG(ERR, "application %llu: cannot hand it to worker lcore %u; it is attached but not served\n",
            static_cast<unsigned long long>(a.id), w->lcore);
    return;
  }
  handoffs_.emplace(a.id, std::move(h));
}

unsigned app_listener::poll(dp::runtime &rt) {
  rt_ = &rt;
  if (fd_ < 0) return 0;
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return server_.poll(fd_, static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec));
}

void app_listener::close() {
  server_.close_all();
  handoffs_.clear();
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  if (!path_.empty()) unlink(path_.c_str());
  path_.clear();
}

}  // namespace mtp::ctl
