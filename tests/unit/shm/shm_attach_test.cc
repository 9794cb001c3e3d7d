// SPDX-License-Identifier: BSD-3-Clause
// Attaching over a real unix socket: the region, the eventfds, who may
// attach, what a broken or silent peer gets, and a detach noticed when the
// application closes or dies.
#include <signal.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include <gtest/gtest.h>

#include "mtp/shm_attach.h"

using namespace mtp::shm;

namespace {

uint64_t now_ns() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
}

// A listening socket in a fresh directory, and the server polled on this
// thread while a client runs on another.
struct bed {
  bed() {
    char tmpl[] = "/tmp/mtp-attach-XXXXXX";
    dir = mkdtemp(tmpl);
    path = dir + "/app.sock";
    listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, path.c_str(), path.size());
    EXPECT_EQ(bind(listen_fd, reinterpret_cast<sockaddr *>(&a), sizeof a), 0);
    EXPECT_EQ(listen(listen_fd, 16), 0);
    attach_policy p;
    p.plan.buffer_count = 64;
    p.plan.tx_buffers = 32;
    p.plan.to_daemon_slots = 64;
    p.plan.to_app_slots = 64;
    server.set_policy(p);
    server.set_greeting("MTPD 1 test node=t id=1\n");
  }
  ~bed() {
    server.close_all();
    close(listen_fd);
    unlink(path.c_str());
    rmdir(dir.c_str());
  }
  // Runs the client on a thread; polls the server until it returns.
  attach_result attach(uint32_t channels) {
    std::atomic<bool> done{false};
    attach_result r;
    std::thread t([&] {
      r = attach_client(path, channels);
      done = true;
    });
    while (!done) {
      server.poll(listen_fd, now_ns());
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    t.join();
    return r;
  }
  // Polls until `pred` holds (at most 2 s).
  template <class P>
  bool poll_until(P pred) {
    for (int i = 0; i < 2000 && !pred(); ++i) {
      server.poll(listen_fd, now_ns());
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return pred();
  }
  // A raw connection that reads the greeting.
  int raw_connect() {
    const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, path.c_str(), path.size());
    EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof a), 0);
    server.poll(listen_fd, now_ns());
    char line[64];
    EXPECT_GT(recv(fd, line, sizeof line, 0), 0);
    return fd;
  }
  attach_reply raw_reply(int fd) {
    attach_reply r{};
    poll_until([&] {
      const ssize_t n = recv(fd, &r, sizeof r, MSG_DONTWAIT | MSG_PEEK);
      return n == static_cast<ssize_t>(sizeof r);
    });
    EXPECT_EQ(recv(fd, &r, sizeof r, 0), static_cast<ssize_t>(sizeof r));
    return r;
  }

  std::string dir, path;
  int listen_fd = -1;
  attach_server server;
};

}  // namespace

TEST(shm_attach, an_application_gets_a_region_and_eventfds_and_detaches_by_closing) {
  bed b;
  attach_result r = b.attach(2);
  ASSERT_EQ(r.error, "");
  EXPECT_EQ(r.greeting, "MTPD 1 test node=t id=1\n");
  EXPECT_EQ(r.region.layout().plan.channel_count, 2u);
  EXPECT_EQ(r.region.layout().plan.buffer_count, 64u);
  ASSERT_EQ(b.server.attached_count(), 1u);
  const attached_app &a = *b.server.apps()[0];
  EXPECT_EQ(a.id, r.app_id);
  EXPECT_EQ(a.uid, getuid());
  EXPECT_EQ(a.pid, getpid());
  // One memory: what the application writes, mtpd reads.
  std::memcpy(buffer_at(r.region.base(), r.region.layout(), 3), "ping", 4);
  EXPECT_EQ(std::memcmp(buffer_at(a.region.base(), a.region.layout(), 3), "ping", 4), 0);
  // The eventfds are the same objects on both sides.
  ASSERT_EQ(eventfd_write(r.daemon_eventfd, 5), 0);
  eventfd_t v = 0;
  ASSERT_EQ(eventfd_read(a.daemon_eventfd, &v), 0);
  EXPECT_EQ(v, 5u);
  ASSERT_EQ(eventfd_write(a.app_eventfd, 7), 0);
  ASSERT_EQ(eventfd_read(r.app_eventfd, &v), 0);
  EXPECT_EQ(v, 7u);
  // mtpd's pulse on every channel, once per poll.
  channel_header *c1 = channel_at(r.region.base(), r.region.layout(), 1);
  const uint64_t beat = c1->daemon_heartbeat.load();
  b.server.poll(b.listen_fd, now_ns());
  b.server.poll(b.listen_fd, now_ns());
  EXPECT_EQ(c1->daemon_heartbeat.load(), beat + 2);
  close(r.socket_fd);
  EXPECT_TRUE(b.poll_until([&] { return b.server.apps().empty(); }));
  EXPECT_EQ(b.server.counters().attached, 1u);
  EXPECT_EQ(b.server.counters().detached, 1u);
  close(r.app_eventfd);
  close(r.daemon_eventfd);
}

TEST(shm_attach, a_user_outside_the_policy_is_refused_with_a_clear_message) {
  bed b;
  attach_policy p;
  p.users = {getuid() + 4242};
  p.groups = {static_cast<gid_t>(getgid() + 4242)};
  b.server.set_policy(p);
  attach_result r = b.attach(1);
  EXPECT_EQ(r.status, attach_status::not_allowed);
  EXPECT_NE(r.error.find("user " + std::to_string(getuid()) + " is not allowed to attach"), std::string::npos)
      << r.error;
  EXPECT_EQ(r.socket_fd, -1);
  EXPECT_TRUE(b.poll_until([&] { return b.server.apps().empty(); }));
  EXPECT_EQ(b.server.counters().refused, 1u);
  EXPECT_EQ(b.server.counters().attached, 0u);
  // Listed by group: allowed.
  p.groups = {getgid()};
  b.server.set_policy(p);
  r = b.attach(1);
  EXPECT_EQ(r.error, "");
  close(r.socket_fd);
}

TEST(shm_attach, broken_requests_get_a_reason_and_are_closed) {
  bed b;
  {  // another layout version
    const int fd = b.raw_connect();
    attach_request q{};
    q.magic = attach_magic;
    q.layout_version = layout_version + 1;
    q.channels = 1;
    ASSERT_EQ(send(fd, &q, sizeof q, 0), static_cast<ssize_t>(sizeof q));
    const attach_reply r = b.raw_reply(fd);
    EXPECT_EQ(r.status, attach_status::layout_mismatch);
    EXPECT_NE(std::strstr(r.reason, "layout version"), nullptr) << r.reason;
    EXPECT_EQ(r.fd_count, 0u);
    close(fd);
  }
  {  // garbage
    const int fd = b.raw_connect();
    char junk[64];
    std::memset(junk, 0xa5, sizeof junk);
    ASSERT_EQ(send(fd, junk, sizeof junk, 0), 64);
    EXPECT_EQ(b.raw_reply(fd).status, attach_status::bad_request);
    close(fd);
  }
  {  // too many channels
    const int fd = b.raw_connect();
    attach_request q{};
    q.magic = attach_magic;
    q.layout_version = layout_version;
    q.channels = max_channels + 1;
    ASSERT_EQ(send(fd, &q, sizeof q, 0), static_cast<ssize_t>(sizeof q));
    EXPECT_EQ(b.raw_reply(fd).status, attach_status::bad_request);
    close(fd);
  }
  EXPECT_TRUE(b.poll_until([&] { return b.server.apps().empty(); }));
  EXPECT_EQ(b.server.counters().refused, 3u);
  EXPECT_EQ(b.server.counters().attached, 0u);
}

// A peer that connects and says nothing is closed at its deadline; one that
// reads the greeting and leaves (a tool asking who listens) costs nothing.
TEST(shm_attach, silent_and_greeting_only_peers_are_closed) {
  bed b;
  const int silent = b.raw_connect();
  const int tool = b.raw_connect();
  close(tool);
  b.server.poll(b.listen_fd, now_ns());
  EXPECT_EQ(b.server.apps().size(), 1u) << "the tool's connection is gone";
  b.server.poll(b.listen_fd, now_ns() + attach_timeout_ns + 1);
  EXPECT_TRUE(b.server.apps().empty());
  attach_reply r{};
  ASSERT_EQ(recv(silent, &r, sizeof r, 0), static_cast<ssize_t>(sizeof r));
  EXPECT_EQ(r.status, attach_status::timeout);
  EXPECT_EQ(b.server.counters().timed_out, 1u);
  close(silent);
}

TEST(shm_attach, the_application_limit_is_kept) {
  bed b;
  attach_policy p;
  p.max_apps = 1;
  b.server.set_policy(p);
  attach_result first = b.attach(1);
  ASSERT_EQ(first.error, "");
  attach_result second = b.attach(1);
  EXPECT_EQ(second.status, attach_status::no_resources);
  EXPECT_NE(second.error.find("1 applications already"), std::string::npos) << second.error;
  close(first.socket_fd);
  EXPECT_TRUE(b.poll_until([&] { return b.server.attached_count() == 0; }));
  attach_result third = b.attach(1);
  EXPECT_EQ(third.error, "") << "room again once the first detached";
  close(third.socket_fd);
}

// An application killed with SIGKILL while attached: its socket closes
// with the process, and mtpd detaches it and frees its region.
TEST(shm_attach, an_application_killed_is_detached) {
  bed b;
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    attach_result r = attach_client(b.path, 1);
    const char ok = r.error.empty() ? 'y' : 'n';
    (void)write(ready[1], &ok, 1);
    pause();
    _exit(0);
  }
  ASSERT_TRUE(b.poll_until([&] { return b.server.attached_count() == 1; }));
  char ok = 0;
  ASSERT_EQ(read(ready[0], &ok, 1), 1);
  EXPECT_EQ(ok, 'y');
  EXPECT_EQ(b.server.apps()[0]->pid, child);
  kill(child, SIGKILL);
  int status = 0;
  waitpid(child, &status, 0);
  EXPECT_TRUE(b.poll_until([&] { return b.server.apps().empty(); }));
  EXPECT_EQ(b.server.counters().detached, 1u);
  close(ready[0]);
  close(ready[1]);
}

// A local process opening connections in a loop: at most max_pending wait
// for their request; the rest are closed at once. Attached applications do
// not count against it.
TEST(shm_attach, pending_connections_are_bounded) {
  bed b;
  attach_result app = b.attach(1);
  ASSERT_EQ(app.error, "");
  std::vector<int> fds;
  for (int i = 0; i < 40; ++i) {
    const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, b.path.c_str(), b.path.size());
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof a), 0);
    fds.push_back(fd);
    b.server.poll(b.listen_fd, now_ns());
  }
  EXPECT_EQ(b.server.apps().size(), 1u + 16u);
  EXPECT_EQ(b.server.counters().shed, 40u - 16u);
  EXPECT_EQ(b.server.attached_count(), 1u);
  for (int fd : fds) close(fd);
  EXPECT_TRUE(b.poll_until([&] { return b.server.apps().size() == 1; }));
  close(app.socket_fd);
}
