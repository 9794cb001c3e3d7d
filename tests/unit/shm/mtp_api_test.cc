// SPDX-License-Identifier: BSD-3-Clause
// libmtp (mtp.h, mtp.hpp) against a stand-in for mtpd built from the real
// pieces: attach_server on a real unix socket, the real region, and the
// test thread on mtpd's side of each channel's rings (commands popped with
// ring_consumer and checked with buffer_ledger, events posted with
// ring_producer, the app eventfd written as mtpd would). What is asserted
// is what the daemon side relies on: the commands, their buffers and
// bytes, and what the application sees for each event.
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "mtp/mtp.h"
#include "mtp/mtp.hpp"
#include "mtp/shm_attach.h"
#include "mtp/shm_commands.h"
#include "mtp/shm_ledger.h"
#include "mtp/shm_ring.h"

using namespace mtp::shm;

namespace {

uint64_t now_ns() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
}

region_plan small_plan() {
  region_plan p;
  p.to_daemon_slots = 64;
  p.to_app_slots = 64;
  p.buffer_count = 96;
  p.tx_buffers = 64;
  p.buffer_bytes = 2048;
  p.buffer_headroom = 128;
  return p;
}

constexpr uint32_t payload = 2048 - 128;
constexpr uint32_t stand_in_node = 7;  // the stand-in mtpd's node.id, in its regions' headers

// mtpd's side of one attached application.
struct stand_in {
  struct channel {
    channel_header *header = nullptr;
    ring_consumer<descriptor> commands;
    ring_producer<descriptor> events;
  };

  explicit stand_in(attached_app &a)
      : app(a), layout(a.region.layout()), base(a.region.base()), ledger(a.region.layout()) {
    for (uint32_t c = 0; c < layout.plan.channel_count; ++c) {
      channel ch;
      ch.header = channel_at(base, layout, c);
      ch.commands = ring_consumer<descriptor>(to_daemon_indices(ch.header, layout), to_daemon_slots(ch.header, layout),
                                              layout.plan.to_daemon_slots);
      ch.events = ring_producer<descriptor>(to_app_indices(ch.header, layout), to_app_slots(ch.header, layout),
                                            layout.plan.to_app_slots);
      channels.push_back(ch);
    }
  }

  std::vector<descriptor> take(uint32_t c = 0) {
    std::vector<descriptor> out;
    descriptor d[64];
    while (uint32_t n = channels[c].commands.pop_burst(d, 64)) out.insert(out.end(), d, d + n);
    return out;
  }
  void post(const descriptor &e, uint32_t c = 0) { ASSERT_TRUE(channels[c].events.push(e)); }
  /// The receive buffers that release and release_batch commands among
  /// `cmds` hand back, in order, each taken back by the ledger.
  std::vector<uint32_t> released(const std::vector<descriptor> &cmds) {
    std::vector<uint32_t> out;
    for (const descriptor &d : cmds) {
      std::vector<uint32_t> bufs;
      if (d.type == static_cast<uint16_t>(command::release)) bufs.push_back(d.buffer);
      if (d.type == static_cast<uint16_t>(command::release_batch)) {
        const buffer_batch b = batch_of(d);
        EXPECT_GE(b.count, 1u);
        EXPECT_LE(b.count, buffer_batch::max_buffers);
        bufs.assign(b.buffers, b.buffers + std::min<uint32_t>(b.count, buffer_batch::max_buffers));
      }
      for (uint32_t buf : bufs) {
        descriptor one{};
        one.buffer = buf;
        EXPECT_EQ(ledger.release(one), buffer_check::ok) << "buffer " << buf;
        out.push_back(buf);
      }
    }
    return out;
  }
  static descriptor make_event(event type, uint64_t handle) {
    descriptor e{};
    e.type = static_cast<uint16_t>(type);
    e.buffer = no_buffer;
    e.connection = handle;
    return e;
  }
  // What mtpd does with a buffer-carrying command: takes it, reads it,
  // gives it back.
  void give_back(const descriptor &d, uint32_t c = 0) {
    ASSERT_TRUE(ledger.complete_send(d.buffer));
    descriptor e = make_event(event::buffer_returned, d.connection);
    e.buffer = d.buffer;
    e.user = d.user;
    post(e, c);
  }
  const std::byte *bytes(const descriptor &d) const { return buffer_at(base, layout, d.buffer) + d.offset; }
  // A received piece in a freshly lent receive buffer.
  descriptor receive(uint64_t handle, const std::string &text, uint16_t flags, uint64_t stream_offset = 0) {
    const uint32_t b = ledger.lend_for_receive();
    EXPECT_NE(b, no_buffer);
    std::memcpy(buffer_at(base, layout, b), text.data(), text.size());
    descriptor e = make_event(event::received, handle);
    e.buffer = b;
    e.offset = 0;
    e.length = static_cast<uint32_t>(text.size());
    e.flags = flags;
    e.value = stream_offset;
    return e;
  }
  void signal_app() const {
    const uint64_t one = 1;
    ASSERT_EQ(::write(app.app_eventfd, &one, sizeof one), 8);
  }

  attached_app &app;
  region_layout layout;
  void *base;
  buffer_ledger ledger;
  std::vector<channel> channels;
};

// A listening socket in a fresh directory, an attach_server behind it,
// and an application attached through mtp_attach.
struct bed {
  explicit bed(uint32_t channels = 1, region_plan plan = small_plan()) {
    char tmpl[] = "/tmp/mtp-api-XXXXXX";
    dir = mkdtemp(tmpl);
    path = dir + "/app.sock";
    listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, path.c_str(), path.size());
    EXPECT_EQ(bind(listen_fd, reinterpret_cast<sockaddr *>(&a), sizeof a), 0);
    EXPECT_EQ(listen(listen_fd, 16), 0);
    attach_policy p;
    p.plan = plan;
    p.hugepages = false;
    p.node_id = stand_in_node;
    server.set_policy(p);
    server.set_greeting("MTPD 1 test node=n7 id=7\n");
    if (channels == 0) return;  // the test attaches itself
    status = attach(channels, &ctx);
    if (status == MTP_OK) {
      daemon = std::make_unique<stand_in>(*server.apps()[0]);
      ch = mtp_channel_get(ctx, 0);
    }
  }
  ~bed() {
    daemon.reset();
    if (ctx != nullptr) mtp_detach(ctx);
    server.close_all();
    close(listen_fd);
    unlink(path.c_str());
    rmdir(dir.c_str());
  }
  // mtp_attach on this thread while attach_server is polled on another.
  int attach(uint32_t channels, mtp_context **out, std::string *why = nullptr) {
    std::atomic<bool> done{false};
    std::thread t([&] {
      while (!done) {
        server.poll(listen_fd, now_ns());
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
    });
    char err[256] = {};
    const int st = mtp_attach(path.c_str(), channels, out, err, sizeof err);
    done = true;
    t.join();
    if (why != nullptr) *why = err;
    return st;
  }
  template <class P>
  bool poll_server_until(P pred) {
    for (int i = 0; i < 2000 && !pred(); ++i) {
      server.poll(listen_fd, now_ns());
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return pred();
  }
  // Polls the application until it sees `want` events (at most 2 s).
  std::vector<mtp_event> events(std::size_t want, mtp_channel *c = nullptr) {
    c = c != nullptr ? c : ch;
    std::vector<mtp_event> out;
    for (int i = 0; i < 2000 && out.size() < want; ++i) {
      mtp_event ev[16];
      const std::size_t n = mtp_poll(c, ev, 16);
      out.insert(out.end(), ev, ev + n);
      if (n == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return out;
  }
  // Initiates to members {2} and lets the stand-in accept the command.
  mtp_connection connect(bool byte_stream = false) {
    mtp_preconnection p;
    mtp_preconnection_init(&p);
    const uint32_t m[] = {2};
    p.members = m;
    p.member_count = 1;
    p.byte_stream = byte_stream;
    mtp_connection c = 0;
    EXPECT_EQ(mtp_initiate(ch, &p, &c), MTP_OK);
    for (const descriptor &d : daemon->take()) {
      EXPECT_EQ(daemon->ledger.take_for_send(d), buffer_check::ok);
      daemon->give_back(d);
    }
    mtp_event ev[4];
    EXPECT_EQ(mtp_poll(ch, ev, 4), 0u) << "a buffer return is not an application event";
    return c;
  }
  uint32_t free_buffers(mtp_channel *c = nullptr) {
    mtp_channel_stats s{};
    s.struct_size = sizeof s;
    mtp_channel_stats_get(c != nullptr ? c : ch, &s);
    return s.send_buffers_free;
  }
  // The application's address of buffer `index`, from a send buffer it gets.
  const std::byte *app_buffer(uint32_t index) {
    mtp_buffer b;
    EXPECT_EQ(mtp_buffer_get(ch, &b), MTP_OK);
    const std::byte *base0 = static_cast<const std::byte *>(b.data) - small_plan().buffer_headroom -
                             uint64_t{b.index} * small_plan().buffer_bytes;
    mtp_buffer_put(ch, &b);
    return base0 + uint64_t{index} * small_plan().buffer_bytes;
  }

  std::string dir, path;
  int listen_fd = -1;
  attach_server server;
  int status = -1;
  mtp_context *ctx = nullptr;
  mtp_channel *ch = nullptr;
  std::unique_ptr<stand_in> daemon;
};

std::string text_of(const std::byte *p, std::size_t n) { return std::string(reinterpret_cast<const char *>(p), n); }

std::string pattern(std::size_t n, unsigned seed) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + seed * 7 + i / 251) & 0xff);
  return s;
}

}  // namespace

// -- attach ------------------------------------------------------------------

TEST(mtp_api, attach_gives_channels_with_their_share_of_send_buffers_and_detach_is_seen) {
  bed b(2);
  ASSERT_EQ(b.status, MTP_OK);
  ASSERT_EQ(b.server.attached_count(), 1u);
  EXPECT_EQ(mtp_app_id(b.ctx), b.server.apps()[0]->id);
  EXPECT_EQ(mtp_node_id(b.ctx), stand_in_node) << "the node id mtpd wrote in the region's header";
  EXPECT_EQ(mtp_node_id(nullptr), 0u);
  mtp_channel *c0 = mtp_channel_get(b.ctx, 0), *c1 = mtp_channel_get(b.ctx, 1);
  ASSERT_NE(c0, nullptr);
  ASSERT_NE(c1, nullptr);
  EXPECT_NE(c0, c1);
  EXPECT_EQ(mtp_channel_get(b.ctx, 2), nullptr);
  mtp_channel_stats s{};
  s.struct_size = sizeof s;
  mtp_channel_stats_get(c1, &s);
  EXPECT_EQ(s.send_buffers_total, 32u) << "64 send buffers split over 2 channels";
  EXPECT_EQ(s.send_buffers_free, 32u);
  // The two channels' buffers do not overlap: channel 0 has [0, 32).
  mtp_buffer x, y;
  ASSERT_EQ(mtp_buffer_get(c0, &x), MTP_OK);
  ASSERT_EQ(mtp_buffer_get(c1, &y), MTP_OK);
  EXPECT_LT(x.index, 32u);
  EXPECT_GE(y.index, 32u);
  EXPECT_LT(y.index, 64u);
  EXPECT_EQ(x.capacity, payload);
  mtp_buffer_put(c0, &x);
  mtp_buffer_put(c1, &y);
  EXPECT_EQ(mtp_max_message_bytes(c0), 32u * payload) << "bounded by the channel's buffers";
  b.daemon.reset();
  mtp_detach(b.ctx);
  b.ctx = nullptr;
  EXPECT_TRUE(b.poll_server_until([&] { return b.server.apps().empty(); }));
  EXPECT_EQ(b.server.counters().detached, 1u);
}

TEST(mtp_api, attach_failures_say_why) {
  mtp_context *ctx = reinterpret_cast<mtp_context *>(1);
  char err[200];
  EXPECT_EQ(mtp_attach("/nonexistent/mtpd.sock", 1, &ctx, err, sizeof err), MTP_ECONNECT);
  EXPECT_EQ(ctx, nullptr);
  EXPECT_NE(std::strstr(err, "cannot reach mtpd"), nullptr) << err;
  EXPECT_EQ(mtp_attach("/nonexistent/mtpd.sock", 0, &ctx, err, sizeof err), MTP_EINVAL);
  EXPECT_EQ(mtp_attach("/nonexistent/mtpd.sock", 65, &ctx, err, sizeof err), MTP_EINVAL);
  bed b(0);
  attach_policy p;
  p.users = {getuid() + 4242};
  p.groups = {static_cast<gid_t>(getgid() + 4242)};
  b.server.set_policy(p);
  std::string why;
  EXPECT_EQ(b.attach(1, &ctx, &why), MTP_EDENIED);
  EXPECT_NE(why.find("not allowed"), std::string::npos) << why;
  EXPECT_STRNE(mtp_status_text(MTP_EDENIED), "unknown status");
  EXPECT_STREQ(mtp_reason_text(MTP_REASON_DAEMON_GONE), "mtpd stopped or detached this application");
  EXPECT_STREQ(mtp_reason_text(999), "unknown reason");
}

// mtpd refuses an attach for want of room (attach_status::no_resources:
// its application limit, or a region it cannot make): MTP_EFULL with
// mtpd's sentence, not MTP_EAGAIN (which says "retry now").
TEST(mtp_api, a_full_mtpd_refuses_the_attach_with_efull) {
  bed b(0);
  attach_policy p;
  p.plan = small_plan();
  p.hugepages = false;
  p.max_apps = 1;
  b.server.set_policy(p);
  mtp_context *first = nullptr, *second = nullptr;
  ASSERT_EQ(b.attach(1, &first), MTP_OK);
  std::string why;
  EXPECT_EQ(b.attach(1, &second, &why), MTP_EFULL);
  EXPECT_EQ(second, nullptr);
  EXPECT_NE(why.find("mtpd serves 1 applications already"), std::string::npos) << why;
  // A region mtpd cannot make (here a plan it cannot lay out; no memory
  // for it is the same refusal): the same status.
  p.max_apps = 64;
  p.plan.buffer_bytes = 100;
  b.server.set_policy(p);
  EXPECT_EQ(b.attach(1, &second, &why), MTP_EFULL);
  EXPECT_NE(why.find("cannot make the shared region"), std::string::npos) << why;
  EXPECT_EQ(b.server.counters().refused, 2u);
  EXPECT_STREQ(mtp_status_text(MTP_EFULL),
               "mtpd has no room for another application (application limit or memory): attach again later");
  // Not reaching the socket is still MTP_ECONNECT (attach_client calls
  // that no_resources too).
  EXPECT_EQ(mtp_attach("/nonexistent/mtpd.sock", 1, &second, nullptr, 0), MTP_ECONNECT);
  mtp_detach(first);
}

// -- initiate and listen ---------------------------------------------------------

TEST(mtp_api, initiate_posts_its_parameters_in_a_send_buffer_under_a_new_handle) {
  bed b;
  ASSERT_EQ(b.status, MTP_OK);
  mtp_preconnection p;
  mtp_preconnection_init(&p);
  const uint32_t members[] = {2, 3, 4};
  p.members = members;
  p.member_count = 3;
  p.threshold = 2;
  p.reliability = MTP_PARTIAL;
  p.ordering = MTP_ORDER_NONE;
  p.byte_stream = 1;
  p.congestion_newreno = 1;
  p.streams = 4;
  mtp_connection c = 0;
  ASSERT_EQ(mtp_initiate(b.ch, &p, &c), MTP_OK);
  EXPECT_EQ(c, 1u) << "the application's handles count up from 1";
  std::vector<descriptor> cmds = b.daemon->take();
  ASSERT_EQ(cmds.size(), 1u);
  const descriptor &d = cmds[0];
  EXPECT_EQ(d.type, static_cast<uint16_t>(command::initiate));
  EXPECT_EQ(d.connection, c);
  EXPECT_EQ(d.offset, small_plan().buffer_headroom);
  EXPECT_EQ(d.length, sizeof(initiate_params));
  ASSERT_EQ(b.daemon->ledger.take_for_send(d), buffer_check::ok);
  initiate_params ip;
  std::memcpy(&ip, b.daemon->bytes(d), sizeof ip);
  EXPECT_EQ(ip.magic, initiate_params::current_magic);
  EXPECT_EQ(ip.member_count, 3u);
  EXPECT_EQ(ip.members[0], 2u);
  EXPECT_EQ(ip.members[1], 3u);
  EXPECT_EQ(ip.members[2], 4u);
  EXPECT_EQ(ip.threshold, 2u);
  EXPECT_EQ(ip.stream_mode, 1);
  EXPECT_EQ(ip.ordering, 0);
  EXPECT_EQ(ip.reliability, 1);
  EXPECT_EQ(ip.congestion, 1);
  EXPECT_EQ(ip.security, 1) << "no preference: whatever mtpd runs";
  EXPECT_EQ(ip.member_keys, 0);
  EXPECT_EQ(ip.multicast, 1);
  EXPECT_EQ(ip.streams, 4u);
  EXPECT_EQ(ip.group[0], '\0');
  EXPECT_EQ(b.free_buffers(), 63u);
  b.daemon->give_back(d);
  mtp_event ev[4];
  EXPECT_EQ(mtp_poll(b.ch, ev, 4), 0u);
  EXPECT_EQ(b.free_buffers(), 64u) << "buffer_returned gave it back";

  // A group instead of members; the next handle.
  mtp_preconnection g;
  mtp_preconnection_init(&g);
  g.group = "all";
  mtp_connection c2 = 0;
  ASSERT_EQ(mtp_initiate(b.ch, &g, &c2), MTP_OK);
  EXPECT_EQ(c2, 2u);
  cmds = b.daemon->take();
  ASSERT_EQ(cmds.size(), 1u);
  ASSERT_EQ(b.daemon->ledger.take_for_send(cmds[0]), buffer_check::ok);
  std::memcpy(&ip, b.daemon->bytes(cmds[0]), sizeof ip);
  EXPECT_EQ(ip.member_count, 0u);
  EXPECT_STREQ(ip.group, "all");
  EXPECT_EQ(ip.ordering, 1) << "fifo by default";
  EXPECT_EQ(ip.streams, 1u);

  // listen: a handle of its own, the listener's stream defaults.
  mtp_connection l = 0;
  ASSERT_EQ(mtp_listen(b.ch, nullptr, &l), MTP_OK);
  EXPECT_EQ(l, 3u);
  cmds = b.daemon->take();
  ASSERT_EQ(cmds.size(), 1u);
  EXPECT_EQ(cmds[0].type, static_cast<uint16_t>(command::listen));
  EXPECT_EQ(cmds[0].buffer, no_buffer);
  EXPECT_EQ(cmds[0].connection, l);
  EXPECT_EQ(mtp_send(b.ch, l, 0, "x", 1, nullptr, 0), MTP_EINVAL) << "a listener takes no data";
  ASSERT_EQ(mtp_stop_listen(b.ch, l), MTP_OK);
  cmds = b.daemon->take();
  ASSERT_EQ(cmds.size(), 1u);
  EXPECT_EQ(cmds[0].type, static_cast<uint16_t>(command::stop_listen));
  EXPECT_EQ(mtp_stop_listen(b.ch, l), MTP_EINVAL) << "forgotten";
}

TEST(mtp_api, initiate_refuses_locally_what_cannot_work_and_posts_nothing) {
  bed b;
  ASSERT_EQ(b.status, MTP_OK);
  const uint32_t members[65] = {2, 3, 4, 5, 6, 7, 8, 9};
  std::vector<uint32_t> many(65);
  for (uint32_t i = 0; i < 65; ++i) many[i] = i + 2;
  const auto base = [&] {
    mtp_preconnection p;
    mtp_preconnection_init(&p);
    p.members = members;
    p.member_count = 2;
    return p;
  };
  struct refusal {
    const char *what;
    int status;
    void (*change)(mtp_preconnection &);
  };
  const refusal cases[] = {
      {"keys for a group", MTP_EINVAL,
       [](mtp_preconnection &p) {
         static const uint8_t keys[1][32] = {};
         p.member_count = 0, p.group = "g", p.member_keys = keys;
       }},
      {"causal order", MTP_ENOTSUP, [](mtp_preconnection &p) { p.ordering = MTP_ORDER_CAUSAL; }},
      {"total order", MTP_ENOTSUP, [](mtp_preconnection &p) { p.ordering = MTP_ORDER_TOTAL; }},
      {"multicast required", MTP_ENOTSUP, [](mtp_preconnection &p) { p.multicast = MTP_REQUIRE; }},
      {"threshold above n", MTP_EINVAL, [](mtp_preconnection &p) { p.threshold = 3; }},
      {"no members, no group", MTP_EINVAL, [](mtp_preconnection &p) { p.member_count = 0; }},
      {"17 streams", MTP_EINVAL, [](mtp_preconnection &p) { p.streams = 17; }},
      {"a member twice", MTP_EINVAL,
       [](mtp_preconnection &p) {
         static const uint32_t twice[] = {5, 5};
         p.members = twice;
       }},
      {"no struct_size", MTP_EINVAL, [](mtp_preconnection &p) { p.struct_size = 0; }},
      {"a group name too long", MTP_EINVAL,
       [](mtp_preconnection &p) { p.member_count = 0, p.group = "a-group-name-of-thirty-two-chars"; }},
  };
  for (const refusal &r : cases) {
    mtp_preconnection p = base();
    r.change(p);
    mtp_connection c = 42;
    EXPECT_EQ(mtp_initiate(b.ch, &p, &c), r.status) << r.what;
    EXPECT_EQ(c, 0u) << r.what;
  }
  mtp_preconnection p = base();
  p.members = many.data();
  p.member_count = 65;
  mtp_connection c = 0;
  EXPECT_EQ(mtp_initiate(b.ch, &p, &c), MTP_EINVAL) << "more than 64 members";
  p.member_count = 64;
  EXPECT_EQ(mtp_initiate(b.ch, &p, &c), MTP_OK) << "64 members are fine";
  EXPECT_EQ(b.daemon->take().size(), 1u) << "only the good one was posted";
  EXPECT_EQ(mtp_initiate(b.ch, nullptr, &c), MTP_EINVAL);
}

// -- sending -------------------------------------------------------------------

TEST(mtp_api, a_64_byte_send_is_one_command_with_its_bytes_and_properties) {
  bed b;
  ASSERT_EQ(b.status, MTP_OK);
  const mtp_connection c = b.connect();
  const std::string msg = pattern(64, 1);
  ASSERT_EQ(mtp_send(b.ch, c, 0, msg.data(), msg.size(), nullptr, 77), MTP_OK);
  mtp_message_properties props;
  mtp_message_properties_init(&props);
  props.reliability = MTP_PARTIAL;
  props.lifetime_ns = 5'000'000;
  props.max_retransmissions = 3;
  props.low_latency = 1;
  ASSERT_EQ(mtp_send(b.ch, c, 2, msg.data(), msg.size(), &props, 78), MTP_OK);
  props.reliability = MTP_UNRELIABLE;
  props.low_latency = 0;
  props.idempotent = 1;
  ASSERT_EQ(mtp_send(b.ch, c, 0, msg.data(), 10, &props, 79), MTP_OK);
  const std::vector<descriptor> cmds = b.daemon->take();
  ASSERT_EQ(cmds.size(), 3u);
  for (const descriptor &d : cmds) {
    EXPECT_EQ(d.type, static_cast<uint16_t>(command::send));
    EXPECT_EQ(d.connection, c);
    EXPECT_EQ(d.offset, small_plan().buffer_headroom);
    ASSERT_EQ(b.daemon->ledger.take_for_send(d), buffer_check::ok);
    EXPECT_EQ(text_of(b.daemon->bytes(d), d.length), msg.substr(0, d.length));
  }
  EXPECT_EQ(cmds[0].length, 64u);
  EXPECT_EQ(cmds[0].flags, 0);
  EXPECT_EQ(cmds[0].user, 77u);
  EXPECT_EQ(cmds[0].value, 0u);
  EXPECT_EQ(cmds[1].stream, 2u);
  EXPECT_EQ(cmds[1].flags, send_partial | send_low_latency);
  EXPECT_EQ(cmds[1].value, 5'000'000u);
  EXPECT_EQ(cmds[1].member, 3u);
  EXPECT_EQ(cmds[1].user, 78u);
  EXPECT_EQ(cmds[2].flags, send_unreliable | send_idempotent) << "idempotent: may go as early data";
  EXPECT_EQ(cmds[2].length, 10u);
  mtp_channel_stats s{};
  s.struct_size = sizeof s;
  mtp_channel_stats_get(b.ch, &s);
  EXPECT_EQ(s.sends, 3u);
  EXPECT_EQ(s.bytes_sent, 64u + 64u + 10u);
  EXPECT_EQ(s.send_buffers_free, 61u);
  // Local refusals.
  EXPECT_EQ(mtp_send(b.ch, 999, 0, msg.data(), 1, nullptr, 0), MTP_EINVAL) << "unknown handle";
  EXPECT_EQ(mtp_send(b.ch, c, 0, msg.data(), 0, nullptr, 0), MTP_EINVAL) << "empty";
  EXPECT_EQ(mtp_send(b.ch, c, 0, nullptr, 5, nullptr, 0), MTP_EINVAL);
  props.final_message = 1;
  EXPECT_EQ(mtp_send(b.ch, c, 0, msg.data(), 5, &props, 0), MTP_EINVAL) << "final_message on a message stream";
  std::vector<char> huge(mtp_max_message_bytes(b.ch) + 1);
  EXPECT_EQ(mtp_send(b.ch, c, 0, huge.data(), huge.size(), nullptr, 0), MTP_ETOOBIG);
  EXPECT_TRUE(b.daemon->take().empty());
}

// MTP_RELIABILITY_DEFAULT (what mtp_message_properties_init and zeroes
// leave) posts no reliability flag, so mtpd applies the connection's
// default; MTP_RELIABLE asked for posts send_reliable, which mtpd honours
// whatever that default is. Every way of sending carries it.
TEST(mtp_api, reliable_asked_for_is_send_reliable_and_the_default_posts_no_flag) {
  bed b;
  ASSERT_EQ(b.status, MTP_OK);
  const mtp_connection c = b.connect();
  mtp_message_properties def;
  mtp_message_properties_init(&def);
  EXPECT_EQ(def.reliability, MTP_RELIABILITY_DEFAULT);
  mtp_message_properties zero{};
  zero.struct_size = sizeof zero;
  mtp_message_properties rel = def;
  rel.reliability = MTP_RELIABLE;
  mtp_message_properties rel_fast = rel;
  rel_fast.low_latency = 1;
  ASSERT_EQ(mtp_send(b.ch, c, 0, "a", 1, nullptr, 1), MTP_OK);
  ASSERT_EQ(mtp_send(b.ch, c, 0, "b", 1, &def, 2), MTP_OK);
  ASSERT_EQ(mtp_send(b.ch, c, 0, "c", 1, &zero, 3), MTP_OK);
  ASSERT_EQ(mtp_send(b.ch, c, 0, "d", 1, &rel, 4), MTP_OK);
  ASSERT_EQ(mtp_send(b.ch, c, 0, "e", 1, &rel_fast, 5), MTP_OK);
  const std::string big = pattern(2 * payload + 5, 7);  // three pieces
  ASSERT_EQ(mtp_send(b.ch, c, 1, big.data(), big.size(), &rel, 6), MTP_OK);
  mtp_buffer buf;
  ASSERT_EQ(mtp_buffer_get(b.ch, &buf), MTP_OK);
  std::memcpy(buf.data, "f", 1);
  ASSERT_EQ(mtp_send_buffer(b.ch, c, 0, &buf, 1, &rel, 7), MTP_OK);
  const mtp_send_request burst[2] = {{c, 0, "g", 1, 8}, {c, 0, "h", 1, 9}};
  int st = -1;
  ASSERT_EQ(mtp_send_burst(b.ch, burst, 2, &rel, &st), 2u);
  EXPECT_EQ(st, MTP_OK);
  mtp::channel cpp(b.ch);
  const mtp::message_properties cpp_rel = mtp::message_properties().reliability(MTP_RELIABLE);
  const mtp::message_properties cpp_def;
  ASSERT_TRUE(cpp.send(c, 0, "i", 10, &cpp_rel).ok());
  ASSERT_TRUE(cpp.send(c, 0, "j", 11, &cpp_def).ok());
  const std::map<uint64_t, uint16_t> want = {
      {1, 0}, {2, 0}, {3, 0}, {4, send_reliable}, {5, send_reliable | send_low_latency}, {6, send_reliable},
      {7, send_reliable}, {8, send_reliable}, {9, send_reliable}, {10, send_reliable}, {11, 0}};
  const std::vector<descriptor> cmds = b.daemon->take();
  ASSERT_EQ(cmds.size(), 13u);
  for (const descriptor &d : cmds) {
    ASSERT_EQ(d.type, static_cast<uint16_t>(command::send));
    ASSERT_EQ(want.count(d.user), 1u) << d.user;
    EXPECT_EQ(d.flags & ~send_more, want.at(d.user)) << "user " << d.user;
  }
  // Anything else is refused before it takes a buffer; partial and
  // unreliable stay what they were (no send_reliable with them).
  // (4 is written as a C program may: C++ may not make that enum value.)
  const int32_t four = 4;
  mtp_message_properties bad = def;
  std::memcpy(&bad.reliability, &four, sizeof four);
  EXPECT_EQ(mtp_send(b.ch, c, 0, "x", 1, &bad, 0), MTP_EINVAL);
  mtp_message_properties partial = def;
  partial.reliability = MTP_PARTIAL;
  mtp_message_properties unreliable = def;
  unreliable.reliability = MTP_UNRELIABLE;
  ASSERT_EQ(mtp_send(b.ch, c, 0, "y", 1, &partial, 0), MTP_OK);
  ASSERT_EQ(mtp_send(b.ch, c, 0, "z", 1, &unreliable, 0), MTP_OK);
  const std::vector<descriptor> more = b.daemon->take();
  ASSERT_EQ(more.size(), 2u);
  EXPECT_EQ(more[0].flags, send_partial);
  EXPECT_EQ(more[1].flags, send_unreliable);

  // A preconnection's reliability is the connection's default:
  // MTP_RELIABILITY_DEFAULT there means reliable.
  const std::pair<mtp_reliability, uint8_t> defaults[] = {
      {MTP_RELIABILITY_DEFAULT, 0}, {MTP_RELIABLE, 0}, {MTP_PARTIAL, 1}, {MTP_UNRELIABLE, 2}};
  for (const auto &[r, wire] : defaults) {
    mtp_preconnection p;
    mtp_preconnection_init(&p);
    p.group = "all";
    p.reliability = r;
    mtp_connection h = 0;
    ASSERT_EQ(mtp_initiate(b.ch, &p, &h), MTP_OK) << r;
    const std::vector<descriptor> init = b.daemon->take();
    ASSERT_EQ(init.size(), 1u);
    ASSERT_EQ(b.daemon->ledger.take_for_send(init[0]), buffer_check::ok);
    initiate_params ip;
    std::memcpy(&ip, b.daemon->bytes(init[0]), sizeof ip);
    EXPECT_EQ(ip.reliability, wire) << r;
    b.daemon->give_back(init[0]);
  }
  mtp_preconnection p;
  mtp_preconnection_init(&p);
  EXPECT_EQ(p.reliability, MTP_RELIABLE);
  p.group = "all";
  std::memcpy(&p.reliability, &four, sizeof four);
  mtp_connection h = 0;
  EXPECT_EQ(mtp_initiate(b.ch, &p, &h), MTP_EINVAL);
  EXPECT_TRUE(b.daemon->take().empty());
}

TEST(mtp_api, a_10_kb_message_goes_in_pieces_with_send_more_in_order) {
  bed b;
  ASSERT_EQ(b.status, MTP_OK);
  const mtp_connection c = b.connect();
  const std::string msg = pattern(10'000, 2);
  ASSERT_EQ(mtp_send(b.ch, c, 1, msg.data(), msg.size(), nullptr, 5), MTP_OK);
  const std::vector<descriptor> cmds = b.daemon->take();
  ASSERT_EQ(cmds.size(), 6u) << "10000 bytes in pieces of " << payload;
  std::string gathered;
  std::set<uint32_t> buffers;
  for (std::size_t i = 0; i < cmds.size(); ++i) {
    const descriptor &d = cmds[i];
    EXPECT_EQ(d.type, static_cast<uint16_t>(command::send));
    EXPECT_EQ(d.stream, 1u);
    EXPECT_EQ(d.user, 5u);
    EXPECT_EQ((d.flags & send_more) != 0, i + 1 < cmds.size()) << i;
    EXPECT_EQ(d.length, i + 1 < cmds.size() ? payload : 10'000 - 5 * payload) << i;
    ASSERT_EQ(b.daemon->ledger.take_for_send(d), buffer_check::ok) << i;
    gathered += text_of(b.daemon->bytes(d), d.length);
    buffers.insert(d.buffer);
  }
  EXPECT_EQ(gathered, msg);
  EXPECT_EQ(buffers.size(), 6u);
  for (const descriptor &d : cmds) b.daemon->give_back(d);
  mtp_event ev[8];
  EXPECT_EQ(mtp_poll(b.ch, ev, 8), 0u);
  EXPECT_EQ(b.free_buffers(), 64u);
}

TEST(mtp_api, a_final_message_on_a_byte_stream_is_followed_by_finish) {
  bed b;
  ASSERT_EQ(b.status, MTP_OK);
  const mtp_connection c = b.connect(true);
  mtp_message_properties props;
  mtp_message_properties_init(&props);
  props.final_message = 1;
  ASSERT_EQ(mtp_send(b.ch, c, 0, "tail", 4, &props, 1), MTP_OK);
  std::vector<descriptor> cmds = b.daemon->take();
  ASSERT_EQ(cmds.size(), 2u);
  EXPECT_EQ(cmds[0].type, static_cast<uint16_t>(command::send));
  EXPECT_EQ(cmds[0].flags & send_more, 0);
  EXPECT_EQ(cmds[1].type, static_cast<uint16_t>(command::finish));
  EXPECT_EQ(cmds[1].connection, c);
  EXPECT_EQ(cmds[1].buffer, no_buffer);
  EXPECT_EQ(mtp_finish(b.ch, c, 1), MTP_EINVAL) << "stream 1 is a message stream";
  ASSERT_EQ(mtp_finish(b.ch, c, 0), MTP_OK);
  cmds = b.daemon->take();
  ASSERT_EQ(cmds.size(), 1u);
  EXPECT_EQ(cmds[0].type, static_cast<uint16_t>(command::finish));
}

TEST(mtp_api, zero_copy_sends_and_datagrams) {
  bed b;
  ASSERT_EQ(b.status, MTP_OK);
  const mtp_connection c = b.connect();
  mtp_buffer buf;
  ASSERT_EQ(mtp_buffer_get(b.ch, &buf), MTP_OK);
  EXPECT_EQ(buf.capacity, payload);
  EXPECT_EQ(b.free_buffers(), 63u);
  std::memcpy(buf.data, "zero copy", 9);
  ASSERT_EQ(mtp_send_buffer(b.ch, c, 3, &buf, 9, nullptr, 44), MTP_OK);
  std::vector<descriptor> cmds = b.daemon->take();
  ASSERT_EQ(cmds.size(), 1u);
  EXPECT_EQ(cmds[0].type, static_cast<uint16_t>(command::send));
  EXPECT_EQ(cmds[0].buffer, buf.index);
  EXPECT_EQ(cmds[0].stream, 3u);
  EXPECT_EQ(cmds[0].user, 44u);
  ASSERT_EQ(b.daemon->ledger.take_for_send(cmds[0]), buffer_check::ok);
  EXPECT_EQ(text_of(b.daemon->bytes(cmds[0]), cmds[0].length), "zero copy");
  EXPECT_EQ(b.free_buffers(), 63u) << "mtpd's until returned";
  EXPECT_EQ(mtp_send_buffer(b.ch, c, 0, &buf, 9, nullptr, 0), MTP_EINVAL) << "not taken by the application now";
  // A failed send_buffer still gives the buffer back to the channel.
  mtp_buffer other;
  ASSERT_EQ(mtp_buffer_get(b.ch, &other), MTP_OK);
  EXPECT_EQ(mtp_send_buffer(b.ch, 777, 0, &other, 4, nullptr, 0), MTP_EINVAL);
  EXPECT_EQ(b.free_buffers(), 63u);
  ASSERT_EQ(mtp_buffer_get(b.ch, &other), MTP_OK);
  EXPECT_EQ(mtp_send_buffer(b.ch, c, 0, &other, payload + 1, nullptr, 0), MTP_ETOOBIG);
  ASSERT_EQ(mtp_buffer_get(b.ch, &other), MTP_OK);
  mtp_buffer_put(b.ch, &other);
  mtp_buffer_put(b.ch, &other);  // twice: ignored
  EXPECT_EQ(b.free_buffers(), 63u);
  EXPECT_TRUE(b.daemon->take().empty());
  // A datagram: one buffer, its own command.
  ASSERT_EQ(mtp_send_datagram(b.ch, c, "ping", 4), MTP_OK);
  cmds = b.daemon->take();
  ASSERT_EQ(cmds.size(), 1u);
  EXPECT_EQ(cmds[0].type, static_cast<uint16_t>(command::datagram));
  EXPECT_EQ(cmds[0].connection, c);
  ASSERT_EQ(b.daemon->ledger.take_for_send(cmds[0]), buffer_check::ok);
  EXPECT_EQ(text_of(b.daemon->bytes(cmds[0]), cmds[0].length), "ping");
  const std::string big(payload + 1, 'd');
  EXPECT_EQ(mtp_send_datagram(b.ch, c, big.data(), big.size()), MTP_ETOOBIG);
  EXPECT_EQ(mtp_send_datagram(b.ch, c, "x", 0), MTP_EINVAL);
  EXPECT_TRUE(b.daemon->take().empty());
}

TEST(mtp_api, sends_without_buffers_or_ring_room_say_eagain_and_post_nothing) {
  bed b;
  ASSERT_EQ(b.status, MTP_OK);
  const mtp_connection c = b.connect();
  const std::string msg = pattern(64, 3);
  int sent = 0;
  while (mtp_send(b.ch, c, 0, msg.data(), msg.size(), nullptr, 0) == MTP_OK) ++sent;
  EXPECT_EQ(sent, 64) << "one buffer each";
  EXPECT_EQ(mtp_send(b.ch, c, 0, msg.data(), msg.size(), nullptr, 0), MTP_EAGAIN);
  std::vector<descriptor> cmds = b.daemon->take();
  ASSERT_EQ(cmds.size(), 64u);
  // Three buffers back: a six-piece message does not fit and nothing of it goes.
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(b.daemon->ledger.take_for_send(cmds[i]), buffer_check::ok);
    b.daemon->give_back(cmds[i]);
  }
  mtp_event ev[4];
  EXPECT_EQ(mtp_poll(b.ch, ev, 4), 0u);
  EXPECT_EQ(b.free_buffers(), 3u);
  const std::string big = pattern(10'000, 4);
  EXPECT_EQ(mtp_send(b.ch, c, 0, big.data(), big.size(), nullptr, 0), MTP_EAGAIN);
  EXPECT_TRUE(b.daemon->take().empty()) << "nothing half-posted";
  EXPECT_EQ(b.free_buffers(), 3u);
  mtp_channel_stats s{};
  s.struct_size = sizeof s;
  mtp_channel_stats_get(b.ch, &s);
  EXPECT_EQ(s.send_eagain, 3u) << "the one that ended the loop, and two more";
}

TEST(mtp_api, a_full_command_ring_says_eagain_before_any_piece_goes) {
  region_plan plan = small_plan();
  plan.to_daemon_slots = 8;
  bed b(1, plan);
  ASSERT_EQ(b.status, MTP_OK);
  const mtp_connection c = b.connect();
  EXPECT_EQ(mtp_max_message_bytes(b.ch), 7u * payload) << "the ring's slots bound a message's pieces";
  for (int i = 0; i < 5; ++i) ASSERT_EQ(mtp_send(b.ch, c, 0, "abc", 3, nullptr, 0), MTP_OK);
  const std::string big = pattern(3 * payload + 1, 5);  // 4 pieces, 3 slots left
  EXPECT_EQ(mtp_send(b.ch, c, 0, big.data(), big.size(), nullptr, 0), MTP_EAGAIN);
  EXPECT_EQ(b.free_buffers(), 64u - 5u) << "no buffer taken";
  EXPECT_EQ(b.daemon->take().size(), 5u) << "nothing half-posted";
  ASSERT_EQ(mtp_send(b.ch, c, 0, big.data(), big.size(), nullptr, 0), MTP_OK);
  EXPECT_EQ(b.daemon->take().size(), 4u);
}

TEST(mtp_api, buffer_returns_and_bogus_returns) {
  bed b(2);
  ASSERT_EQ(b.status, MTP_OK);
  const mtp_connection c = b.connect();
  ASSERT_EQ(mtp_send(b.ch, c, 0, "abc", 3, nullptr, 0), MTP_OK);
  const std::vector<descriptor> cmds = b.daemon->take();
  ASSERT_EQ(cmds.size(), 1u);
  ASSERT_EQ(b.daemon->ledger.take_for_send(cmds[0]), buffer_check::ok);
  EXPECT_EQ(b.free_buffers(), 31u);
  // A broken daemon returns a buffer of channel 1, a receive buffer, one it
  // never had, and an index past the region: none is taken.
  for (uint32_t bogus : {40u, 70u, 5u, 100000u}) {
    descriptor e = stand_in::make_event(event::buffer_returned, c);
    e.buffer = bogus;
    b.daemon->post(e);
  }
  b.daemon->give_back(cmds[0]);
  descriptor twice = stand_in::make_event(event::buffer_returned, c);
  twice.buffer = cmds[0].buffer;
  b.daemon->post(twice);
  // Buffer returns are applied even by a poll that takes no events.
  EXPECT_EQ(mtp_poll(b.ch, nullptr, 0), 0u);
  EXPECT_EQ(b.free_buffers(), 32u) << "exactly the one buffer came back, once";
  EXPECT_EQ(b.free_buffers(mtp_channel_get(b.ctx, 1)), 32u);
}

TEST(mtp_api, send_burst_posts_every_message_in_order_in_one_go) {
  bed b;
  ASSERT_EQ(b.status, MTP_OK);
  const mtp_connection c = b.connect();
  std::vector<std::string> msgs;
  std::vector<mtp_send_request> reqs;
  for (uint32_t i = 0; i < 64; ++i) msgs.push_back(pattern(64, 100 + i));
  for (uint32_t i = 0; i < 64; ++i) reqs.push_back({c, i % 3, msgs[i].data(), 64, 1000 + i});
  // One push: the ring's head moves by 64 in one store, which a burst that
  // did not fit in the ring at once could not do.
  const ring_indices *idx = to_daemon_indices(b.daemon->channels[0].header, b.daemon->layout);
  const uint32_t head0 = idx->head.load();
  int st = -1;
  EXPECT_EQ(mtp_send_burst(b.ch, reqs.data(), reqs.size(), nullptr, &st), 64u);
  EXPECT_EQ(st, MTP_OK);
  EXPECT_EQ(idx->head.load() - head0, 64u);
  const std::vector<descriptor> cmds = b.daemon->take();
  ASSERT_EQ(cmds.size(), 64u);
  for (uint32_t i = 0; i < 64; ++i) {
    EXPECT_EQ(cmds[i].user, 1000u + i);
    EXPECT_EQ(cmds[i].stream, i % 3);
    EXPECT_EQ(cmds[i].flags, 0);
    ASSERT_EQ(b.daemon->ledger.take_for_send(cmds[i]), buffer_check::ok);
    EXPECT_EQ(text_of(b.daemon->bytes(cmds[i]), 64), msgs[i]) << i;
  }
  EXPECT_EQ(b.free_buffers(), 0u);
  // No buffers: nothing goes, and the status says why.
  EXPECT_EQ(mtp_send_burst(b.ch, reqs.data(), 4, nullptr, &st), 0u);
  EXPECT_EQ(st, MTP_EAGAIN);
  // 40 buffers back: 40 go, in order, and the 41st is the one refused.
  for (uint32_t i = 0; i < 40; ++i) b.daemon->give_back(cmds[i]);
  EXPECT_EQ(mtp_poll(b.ch, nullptr, 0), 0u);
  EXPECT_EQ(mtp_send_burst(b.ch, reqs.data(), reqs.size(), nullptr, &st), 40u);
  EXPECT_EQ(st, MTP_EAGAIN);
  const std::vector<descriptor> again = b.daemon->take();
  ASSERT_EQ(again.size(), 40u);
  for (uint32_t i = 0; i < 40; ++i) EXPECT_EQ(again[i].user, 1000u + i);
  // An unknown handle stops the burst there, after what came before it.
  for (uint32_t i = 40; i < 64; ++i) b.daemon->give_back(cmds[i]);
  EXPECT_EQ(mtp_poll(b.ch, nullptr, 0), 0u);
  reqs[2].connection = 12345;
  EXPECT_EQ(mtp_send_burst(b.ch, reqs.data(), reqs.size(), nullptr, &st), 2u);
  EXPECT_EQ(st, MTP_EINVAL);
  EXPECT_EQ(b.daemon->take().size(), 2u);
}

// The fast path: 64-byte messages in bursts of 64, the stand-in returning
// buffers in the same thread. Only the library's calls are timed.
TEST(mtp_api, send_burst_rate_of_64_byte_messages) {
  bed b;
  ASSERT_EQ(b.status, MTP_OK);
  const mtp_connection c = b.connect();
  const std::string msg = pattern(64, 9);
  mtp_send_request reqs[64];
  for (uint32_t i = 0; i < 64; ++i) reqs[i] = {c, 0, msg.data(), 64, i};
  uint64_t lib_ns = 0, messages = 0;
  descriptor d[64];
  ring_consumer<descriptor> &cmds = b.daemon->channels[0].commands;
  ring_producer<descriptor> &events = b.daemon->channels[0].events;
  for (int round = 0; round < 20'000; ++round) {
    const uint64_t t0 = now_ns();
    int st;
    const std::size_t n = mtp_send_burst(b.ch, reqs, 64, nullptr, &st);
    const uint64_t t1 = now_ns();
    ASSERT_EQ(n, 64u);
    messages += n;
    // The stand-in: take the burst, return the buffers (no ledger: speed).
    ASSERT_EQ(cmds.pop_burst(d, 64), 64u);
    for (uint32_t i = 0; i < 64; ++i) d[i].type = static_cast<uint16_t>(event::buffer_returned);
    ASSERT_EQ(events.push_burst(d, 64), 64u);
    const uint64_t t2 = now_ns();
    EXPECT_EQ(mtp_poll(b.ch, nullptr, 0), 0u);
    lib_ns += (t1 - t0) + (now_ns() - t2);
  }
  const double rate = static_cast<double>(messages) * 1e9 / static_cast<double>(lib_ns);
  std::printf("[ rate     ] mtp_send_burst + buffer returns: %.1f M messages/s of 64 B (library time only)\n",
              rate / 1e6);
  EXPECT_EQ(b.free_buffers(), 64u);
}

// -- receiving -----------------------------------------------------------------

TEST(mtp_api, a_receive_error_says_which_message_will_not_be_completed) {
  bed b;
  ASSERT_EQ(b.status, MTP_OK);
  const mtp_connection c = b.connect();
  b.daemon->post(b.daemon->receive(c, "first piece", 0, 4096));
  descriptor err{};
  err.type = static_cast<uint16_t>(event::receive_error);
  err.connection = c;
  err.buffer = no_buffer;
  err.stream = 3;
  err.member = 7;
  err.value = 4096 + 11;
  err.reason = static_cast<uint32_t>(reason::given_up);
  b.daemon->post(err);
  mtp_event ev[4];
  ASSERT_EQ(mtp_poll(b.ch, ev, 4), 2u);
  EXPECT_EQ(ev[0].type, MTP_EVENT_RECEIVED_PARTIAL);
  EXPECT_EQ(ev[1].type, MTP_EVENT_RECEIVE_ERROR);
  EXPECT_EQ(ev[1].connection, c);
  EXPECT_EQ(ev[1].stream, 3u);
  EXPECT_EQ(ev[1].member, 7u);
  EXPECT_EQ(ev[1].offset, 4096u + 11u);
  EXPECT_EQ(ev[1].reason, static_cast<uint32_t>(MTP_REASON_GIVEN_UP));
  EXPECT_EQ(ev[1].length, 0u);
  EXPECT_STREQ(mtp_reason_text(ev[1].reason), "the sender gave up the rest of the message, or left");
  mtp_release(b.ch, &ev[0]);
  mtp_release(b.ch, &ev[1]);  // no buffer: nothing to release
  mtp_poll(b.ch, nullptr, 0);
  EXPECT_EQ(b.daemon->released(b.daemon->take()), std::vector<uint32_t>{ev[0].buffer}) << "the piece's only";
}

TEST(mtp_api, received_events_map_to_received_partial_and_datagram_and_release_posts_release) {
  bed b;
  ASSERT_EQ(b.status, MTP_OK);
  const mtp_connection c = b.connect();
  descriptor whole = b.daemon->receive(c, "hello", end_of_message, 100);
  whole.stream = 2;
  const descriptor piece = b.daemon->receive(c, "first piece", 0, 0);
  const descriptor dgram = b.daemon->receive(c, "dgram", is_datagram | end_of_message);
  b.daemon->post(whole);
  b.daemon->post(piece);
  b.daemon->post(dgram);
  mtp_event ev[8];
  ASSERT_EQ(mtp_poll(b.ch, ev, 8), 3u);
  EXPECT_EQ(ev[0].type, MTP_EVENT_RECEIVED);
  EXPECT_EQ(ev[0].connection, c);
  EXPECT_EQ(ev[0].stream, 2u);
  EXPECT_EQ(ev[0].offset, 100u);
  EXPECT_EQ(ev[0].length, 5u);
  EXPECT_EQ(ev[0].buffer, whole.buffer);
  EXPECT_EQ(ev[0].data, b.app_buffer(whole.buffer)) << "the application's address of that receive buffer";
  EXPECT_EQ(text_of(static_cast<const std::byte *>(ev[0].data), 5), "hello");
  EXPECT_EQ(ev[1].type, MTP_EVENT_RECEIVED_PARTIAL);
  EXPECT_EQ(text_of(static_cast<const std::byte *>(ev[1].data), ev[1].length), "first piece");
  EXPECT_EQ(ev[2].type, MTP_EVENT_DATAGRAM);
  EXPECT_EQ(text_of(static_cast<const std::byte *>(ev[2].data), ev[2].length), "dgram");
  mtp_channel_stats s{};
  s.struct_size = sizeof s;
  mtp_channel_stats_get(b.ch, &s);
  EXPECT_EQ(s.messages_received, 2u) << "a partial piece is not a message";
  EXPECT_EQ(s.bytes_received, 5u + 11u + 5u);
  EXPECT_EQ(b.daemon->ledger.app_held_receive(), 3u);
  for (int i = 0; i < 3; ++i) mtp_release(b.ch, &ev[i]);
  mtp_release(b.ch, &ev[0]);  // twice: ignored
  EXPECT_TRUE(b.daemon->take().empty()) << "releases are gathered until the next poll";
  mtp_poll(b.ch, nullptr, 0);
  const std::vector<descriptor> cmds = b.daemon->take();
  ASSERT_EQ(cmds.size(), 1u) << "one command for the three";
  EXPECT_EQ(cmds[0].type, static_cast<uint16_t>(command::release_batch));
  EXPECT_EQ(b.daemon->released(cmds), (std::vector<uint32_t>{ev[0].buffer, ev[1].buffer, ev[2].buffer}));
  EXPECT_EQ(b.daemon->ledger.app_held_receive(), 0u);
  EXPECT_TRUE(b.daemon->ledger.consistent());
}

// Security properties (docs/api.md): the preference goes to mtpd, which
// holds the node's mode; expected keys follow the parameters; an accepted
// connection's proved identity is kept with its handle and its buffer
// given straight back.
TEST(mtp_api, security_preferences_expected_keys_and_the_identity_of_an_accepted_connection) {
  bed b;
  ASSERT_EQ(b.status, MTP_OK);
  const uint32_t members[] = {2, 3};
  uint8_t keys[2][32];
  for (int m = 0; m < 2; ++m)
    for (int i = 0; i < 32; ++i) keys[m][i] = static_cast<uint8_t>(m * 100 + i);
  const std::pair<mtp_preference, uint8_t> prefs[] = {
      {MTP_PROHIBIT, 0}, {MTP_AVOID, 1}, {MTP_NO_PREFERENCE, 1}, {MTP_PREFER, 1}, {MTP_REQUIRE, 2}};
  for (const auto &[pref, wire] : prefs) {
    mtp_preconnection p;
    mtp_preconnection_init(&p);
    p.members = members;
    p.member_count = 2;
    p.security = pref;
    p.member_keys = pref == MTP_REQUIRE ? keys : nullptr;
    mtp_connection c = 0;
    ASSERT_EQ(mtp_initiate(b.ch, &p, &c), MTP_OK) << pref;
    const std::vector<descriptor> cmds = b.daemon->take();
    ASSERT_EQ(cmds.size(), 1u);
    ASSERT_EQ(b.daemon->ledger.take_for_send(cmds[0]), buffer_check::ok);
    initiate_params ip;
    std::memcpy(&ip, b.daemon->bytes(cmds[0]), sizeof ip);
    EXPECT_EQ(ip.security, wire) << pref;
    if (pref == MTP_REQUIRE) {
      EXPECT_EQ(ip.member_keys, 1);
      ASSERT_EQ(cmds[0].length, sizeof ip + 64) << "two keys after the parameters";
      EXPECT_EQ(std::memcmp(b.daemon->bytes(cmds[0]) + sizeof ip, keys, 64), 0);
    } else {
      EXPECT_EQ(ip.member_keys, 0);
      EXPECT_EQ(cmds[0].length, sizeof ip);
    }
    b.daemon->give_back(cmds[0]);
    mtp_poll(b.ch, nullptr, 0);
  }

  // An accepted connection with the identity its client proved.
  mtp_connection l = 0;
  ASSERT_EQ(mtp_listen(b.ch, nullptr, &l), MTP_OK);
  b.daemon->take();
  const uint64_t accepted = (uint64_t{1} << 63) | 5;
  const std::string key(reinterpret_cast<const char *>(keys[1]), 32);
  descriptor e = b.daemon->receive(accepted, key, 0);
  e.type = static_cast<uint16_t>(event::connection_received);
  e.value = l;
  e.member = 3;
  const uint32_t lent = e.buffer;
  b.daemon->post(e);
  const uint64_t plain = (uint64_t{1} << 63) | 6;  // a plaintext node's: no buffer
  e = stand_in::make_event(event::connection_received, plain);
  e.value = l;
  b.daemon->post(e);
  const std::vector<mtp_event> ev = b.events(2);
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[0].type, MTP_EVENT_CONNECTION_RECEIVED);
  EXPECT_EQ(ev[0].member, 3u);
  EXPECT_EQ(ev[0].data, nullptr) << "the application has nothing to release";
  uint8_t got[32] = {};
  ASSERT_EQ(mtp_peer_identity(b.ch, accepted, got), MTP_OK);
  EXPECT_EQ(std::memcmp(got, keys[1], 32), 0);
  EXPECT_EQ(mtp_peer_identity(b.ch, plain, got), MTP_EINVAL) << "no identity was proved";
  EXPECT_EQ(mtp_peer_identity(b.ch, 12345, got), MTP_EINVAL);
  mtp_poll(b.ch, nullptr, 0);
  EXPECT_EQ(b.daemon->released(b.daemon->take()), std::vector<uint32_t>{lent}) << "its buffer went straight back";
  EXPECT_TRUE(b.daemon->ledger.consistent());
  mtp::channel cpp(b.ch);
  const auto id = cpp.peer_identity(accepted);
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(std::memcmp(id.value().data(), keys[1], 32), 0);
}

TEST(mtp_api, a_bogus_receive_buffer_never_becomes_a_pointer_outside_the_region) {
  bed b;
  ASSERT_EQ(b.status, MTP_OK);
  const mtp_connection c = b.connect();
  const std::byte *region_start = b.app_buffer(0) - b.daemon->layout.buffers_offset;
  const std::byte *region_end = region_start + b.daemon->layout.region_bytes;
  const auto bogus = [&](uint32_t buffer, uint32_t offset, uint32_t length) {
    descriptor e = stand_in::make_event(event::received, c);
    e.buffer = buffer;
    e.offset = offset;
    e.length = length;
    e.flags = end_of_message;
    b.daemon->post(e);
  };
  bogus(96, 0, 10);                    // one past the last buffer
  bogus(UINT32_MAX - 1, 0, 10);        // far past
  bogus(3, 128, 10);                   // a send buffer
  bogus(70, 2000, 100);                // past the buffer's end
  bogus(70, UINT32_MAX, 2);            // offset + length wraps in 32 bits
  bogus(70, 0, UINT32_MAX);            // a length beyond everything
  const descriptor good = b.daemon->receive(c, "real", end_of_message);
  b.daemon->post(good);
  descriptor again = good;  // the same buffer lent twice
  b.daemon->post(again);
  mtp_event ev[16];
  const std::size_t n = mtp_poll(b.ch, ev, 16);
  ASSERT_EQ(n, 1u) << "only the valid event";
  EXPECT_EQ(ev[0].buffer, good.buffer);
  const auto *p = static_cast<const std::byte *>(ev[0].data);
  EXPECT_GE(p, region_start);
  EXPECT_LE(p + ev[0].length, region_end);
  EXPECT_EQ(text_of(p, ev[0].length), "real");
  mtp_release(b.ch, &ev[0]);
  mtp_poll(b.ch, nullptr, 0);
  EXPECT_EQ(b.daemon->released(b.daemon->take()), std::vector<uint32_t>{good.buffer});
}

TEST(mtp_api, releases_go_fifteen_to_a_command_and_returns_come_many_to_an_event) {
  bed b;
  ASSERT_EQ(b.status, MTP_OK);
  const mtp_connection c = b.connect();
  mtp_event ev[64];
  for (const uint32_t n : {15u, 10u}) {
    SCOPED_TRACE(std::to_string(n) + " released");
    std::vector<uint32_t> lent;
    for (uint32_t i = 0; i < n; ++i) {
      const descriptor d = b.daemon->receive(c, "m" + std::to_string(i), end_of_message);
      lent.push_back(d.buffer);
      b.daemon->post(d);
    }
    ASSERT_EQ(mtp_poll(b.ch, ev, 64), n);
    for (uint32_t i = 0; i < n; ++i) mtp_release(b.ch, &ev[i]);
    std::vector<descriptor> cmds = b.daemon->take();
    if (n == 15) {
      ASSERT_EQ(cmds.size(), 1u) << "posted as soon as 15 wait, without a poll";
    } else {
      EXPECT_TRUE(cmds.empty()) << "fewer wait for the next poll";
      mtp_poll(b.ch, nullptr, 0);
      cmds = b.daemon->take();
      ASSERT_EQ(cmds.size(), 1u);
    }
    EXPECT_EQ(batch_of(cmds[0]).count, n);
    EXPECT_EQ(b.daemon->released(cmds), lent) << "every buffer once, in release order";
    EXPECT_EQ(b.daemon->ledger.app_held_receive(), 0u);
  }

  // Send buffers back, 15 to an event; a count past 15 is dropped whole.
  std::vector<uint32_t> sent;
  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(mtp_send(b.ch, c, 0, "x", 1, nullptr, 0), MTP_OK);
  }
  for (const descriptor &d : b.daemon->take()) {
    ASSERT_EQ(b.daemon->ledger.take_for_send(d), buffer_check::ok);
    ASSERT_TRUE(b.daemon->ledger.complete_send(d.buffer));
    sent.push_back(d.buffer);
  }
  ASSERT_EQ(sent.size(), 20u);
  const uint32_t before = b.free_buffers();
  buffer_batch r{};
  r.type = static_cast<uint16_t>(event::buffers_returned);
  r.count = 15;
  std::copy(sent.begin(), sent.begin() + 15, r.buffers);
  b.daemon->post(descriptor_of(r));
  buffer_batch bad = r;
  bad.count = 16;
  b.daemon->post(descriptor_of(bad));
  r.count = 5;
  std::copy(sent.begin() + 15, sent.end(), r.buffers);
  b.daemon->post(descriptor_of(r));
  EXPECT_EQ(mtp_poll(b.ch, ev, 64), 0u) << "returns are not the application's events";
  EXPECT_EQ(b.free_buffers(), before + 20) << "all 20 back; the malformed batch changed nothing";
}

TEST(mtp_api, releases_that_find_the_ring_full_go_with_the_next_poll) {
  region_plan plan = small_plan();
  plan.to_daemon_slots = 4;
  bed b(1, plan);
  ASSERT_EQ(b.status, MTP_OK);
  const mtp_connection c = b.connect();
  for (int i = 0; i < 4; ++i) ASSERT_EQ(mtp_send(b.ch, c, 0, "x", 1, nullptr, 0), MTP_OK);
  std::vector<descriptor> lent;
  for (int i = 0; i < 6; ++i) {
    lent.push_back(b.daemon->receive(c, "data" + std::to_string(i), end_of_message));
    b.daemon->post(lent.back());
  }
  mtp_event ev[8];
  ASSERT_EQ(mtp_poll(b.ch, ev, 8), 6u);
  for (int i = 0; i < 6; ++i) mtp_release(b.ch, &ev[i]);  // the ring is full of sends
  std::set<uint32_t> released;
  for (int round = 0; round < 5 && released.size() < 6; ++round) {
    for (uint32_t buf : b.daemon->released(b.daemon->take())) EXPECT_TRUE(released.insert(buf).second);
    mtp_poll(b.ch, ev, 8);
  }
  EXPECT_EQ(released.size(), 6u) << "every release went, none twice";
  EXPECT_EQ(b.daemon->ledger.app_held_receive(), 0u);
}

// -- other events and handles ---------------------------------------------------

TEST(mtp_api, events_carry_their_fields_and_end_handles) {
  bed b;
  ASSERT_EQ(b.status, MTP_OK);
  const mtp_connection c = b.connect();
  mtp_connection l = 0;
  mtp_preconnection lp;
  mtp_preconnection_init(&lp);
  lp.byte_stream = 1;
  ASSERT_EQ(mtp_listen(b.ch, &lp, &l), MTP_OK);
  for (const descriptor &d : b.daemon->take()) {
    ASSERT_EQ(b.daemon->ledger.take_for_send(d), buffer_check::ok);
    b.daemon->give_back(d);
  }
  const uint64_t accepted = (uint64_t{1} << 63) | 1;
  descriptor e = stand_in::make_event(event::ready, c);
  b.daemon->post(e);
  e = stand_in::make_event(event::connection_received, accepted);
  e.value = l;
  e.member = 7;
  b.daemon->post(e);
  e = stand_in::make_event(event::sent, c);
  e.stream = 1;
  e.message = 4;
  e.user = 99;
  e.value = 3;
  b.daemon->post(e);
  e = stand_in::make_event(event::member_left, c);
  e.member = 3;
  e.reason = static_cast<uint32_t>(reason::timeout);
  e.value = 0x10;
  b.daemon->post(e);
  const std::vector<mtp_event> ev = b.events(4);
  ASSERT_EQ(ev.size(), 4u);
  EXPECT_EQ(ev[0].type, MTP_EVENT_READY);
  EXPECT_EQ(ev[0].connection, c);
  EXPECT_EQ(ev[1].type, MTP_EVENT_CONNECTION_RECEIVED);
  EXPECT_EQ(ev[1].connection, accepted);
  EXPECT_EQ(ev[1].listener, l);
  EXPECT_EQ(ev[1].member, 7u);
  EXPECT_EQ(ev[2].type, MTP_EVENT_SENT);
  EXPECT_EQ(ev[2].stream, 1u);
  EXPECT_EQ(ev[2].message, 4u);
  EXPECT_EQ(ev[2].user, 99u);
  EXPECT_EQ(ev[2].code, 3u);
  EXPECT_EQ(ev[3].type, MTP_EVENT_MEMBER_LEFT);
  EXPECT_EQ(ev[3].member, 3u);
  EXPECT_EQ(ev[3].reason, static_cast<uint32_t>(MTP_REASON_TIMEOUT));
  EXPECT_EQ(ev[3].code, 0x10u);
  // The accepted handle takes sends; its stream 0 is a byte stream like the listener's.
  mtp_message_properties fin;
  mtp_message_properties_init(&fin);
  fin.final_message = 1;
  ASSERT_EQ(mtp_send(b.ch, accepted, 0, "bye", 3, &fin, 0), MTP_OK);
  std::vector<descriptor> cmds = b.daemon->take();
  ASSERT_EQ(cmds.size(), 2u);
  EXPECT_EQ(cmds[0].connection, accepted);
  EXPECT_EQ(cmds[1].type, static_cast<uint16_t>(command::finish));
  // close: posted once; sends after it are refused; abort may still cut it short.
  ASSERT_EQ(mtp_close(b.ch, c), MTP_OK);
  EXPECT_EQ(mtp_close(b.ch, c), MTP_ECLOSED);
  EXPECT_EQ(mtp_send(b.ch, c, 0, "x", 1, nullptr, 0), MTP_ECLOSED);
  ASSERT_EQ(mtp_abort(b.ch, c, 300), MTP_OK);
  EXPECT_EQ(mtp_abort(b.ch, c, 300), MTP_ECLOSED);
  ASSERT_EQ(mtp_clone(b.ch, accepted, 5, 1), MTP_OK);
  cmds = b.daemon->take();
  ASSERT_EQ(cmds.size(), 3u);
  EXPECT_EQ(cmds[0].type, static_cast<uint16_t>(command::close));
  EXPECT_EQ(cmds[0].connection, c);
  EXPECT_EQ(cmds[1].type, static_cast<uint16_t>(command::abort));
  EXPECT_EQ(cmds[1].value, 300u);
  EXPECT_EQ(cmds[2].type, static_cast<uint16_t>(command::open_stream));
  EXPECT_EQ(cmds[2].connection, accepted);
  EXPECT_EQ(cmds[2].stream, 5u);
  EXPECT_EQ(cmds[2].flags, stream_unordered);
  // Closed: the handle is gone.
  e = stand_in::make_event(event::closed, c);
  e.value = 300;
  b.daemon->post(e);
  const std::vector<mtp_event> end = b.events(1);
  ASSERT_EQ(end.size(), 1u);
  EXPECT_EQ(end[0].type, MTP_EVENT_CLOSED);
  EXPECT_EQ(end[0].code, 300u);
  EXPECT_EQ(mtp_send(b.ch, c, 0, "x", 1, nullptr, 0), MTP_EINVAL);
  EXPECT_EQ(mtp_abort(b.ch, c, 0), MTP_EINVAL);
}

TEST(mtp_api, a_refused_initiate_is_a_command_error_and_forgets_its_handle) {
  bed b;
  ASSERT_EQ(b.status, MTP_OK);
  mtp_preconnection p;
  mtp_preconnection_init(&p);
  p.group = "nosuch";
  mtp_connection c = 0;
  ASSERT_EQ(mtp_initiate(b.ch, &p, &c), MTP_OK);
  std::vector<descriptor> cmds = b.daemon->take();
  ASSERT_EQ(cmds.size(), 1u);
  ASSERT_EQ(b.daemon->ledger.take_for_send(cmds[0]), buffer_check::ok);
  b.daemon->ledger.complete_send(cmds[0].buffer);
  descriptor e = stand_in::make_event(event::command_error, c);
  e.user = cmds[0].user;
  e.value = cmds[0].type;
  e.reason = static_cast<uint32_t>(reason::unknown_group);
  e.buffer = cmds[0].buffer;  // a refused command returns its buffer
  b.daemon->post(e);
  const std::vector<mtp_event> ev = b.events(1);
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].type, MTP_EVENT_COMMAND_ERROR);
  EXPECT_EQ(ev[0].connection, c);
  EXPECT_EQ(ev[0].reason, static_cast<uint32_t>(MTP_REASON_UNKNOWN_GROUP));
  EXPECT_EQ(ev[0].code, static_cast<uint64_t>(command::initiate));
  EXPECT_EQ(b.free_buffers(), 64u);
  EXPECT_EQ(mtp_send(b.ch, c, 0, "x", 1, nullptr, 0), MTP_EINVAL) << "the handle never lived";
  // A send refused with send_error gives its buffer back too.
  const mtp_connection c2 = b.connect();
  ASSERT_EQ(mtp_send(b.ch, c2, 9, "x", 1, nullptr, 17), MTP_OK);
  cmds = b.daemon->take();
  ASSERT_EQ(b.daemon->ledger.take_for_send(cmds[0]), buffer_check::ok);
  b.daemon->ledger.complete_send(cmds[0].buffer);
  e = stand_in::make_event(event::send_error, c2);
  e.buffer = cmds[0].buffer;
  e.stream = 9;
  e.message = UINT64_MAX;
  e.user = 17;
  e.reason = static_cast<uint32_t>(reason::bad_stream);
  b.daemon->post(e);
  const std::vector<mtp_event> ev2 = b.events(1);
  ASSERT_EQ(ev2.size(), 1u);
  EXPECT_EQ(ev2[0].type, MTP_EVENT_SEND_ERROR);
  EXPECT_EQ(ev2[0].user, 17u);
  EXPECT_EQ(ev2[0].reason, static_cast<uint32_t>(MTP_REASON_BAD_STREAM));
  EXPECT_EQ(b.free_buffers(), 64u);
}

// Many connections come and go: the handle table keeps finding every live
// one (backward-shift deletion) and forgets every closed one.
TEST(mtp_api, many_connections_come_and_go) {
  bed b;
  ASSERT_EQ(b.status, MTP_OK);
  std::set<uint64_t> live;
  uint64_t accepted = uint64_t{1} << 63;
  for (int round = 0; round < 40; ++round) {
    for (int i = 0; i < 50; ++i) {
      descriptor e = stand_in::make_event(event::connection_received, ++accepted);
      b.daemon->post(e);
      live.insert(accepted);
      if (i % 16 == 15) {
        EXPECT_EQ(b.events(16).size(), 16u);
      }
    }
    EXPECT_EQ(b.events(2).size(), 2u);
    // Close every third live one.
    int k = 0;
    for (auto it = live.begin(); it != live.end();) {
      if (k++ % 3 != 0) {
        ++it;
        continue;
      }
      b.daemon->post(stand_in::make_event(event::closed, *it));
      EXPECT_EQ(b.events(1).size(), 1u);
      it = live.erase(it);
    }
  }
  for (uint64_t h : live) ASSERT_EQ(mtp_send(b.ch, h, 0, "x", 1, nullptr, 0) != MTP_EINVAL, true) << h;
  EXPECT_EQ(mtp_send(b.ch, (uint64_t{1} << 63) | 1, 0, "x", 1, nullptr, 0), MTP_EINVAL) << "closed in round 0";
}

// -- mtpd gone, rings broken -------------------------------------------------------

TEST(mtp_api, daemon_gone_gives_connection_error_per_live_handle_then_edaemon) {
  bed b;
  ASSERT_EQ(b.status, MTP_OK);
  const mtp_connection c1 = b.connect();
  const mtp_connection c2 = b.connect();
  mtp_connection l = 0;
  ASSERT_EQ(mtp_listen(b.ch, nullptr, &l), MTP_OK);
  b.daemon->take();
  b.daemon->post(stand_in::make_event(event::ready, c1));  // posted before mtpd died: still delivered, first
  b.daemon.reset();
  b.server.close_all();  // mtpd is gone: the socket closes
  const std::vector<mtp_event> ev = b.events(4);
  ASSERT_EQ(ev.size(), 4u);
  EXPECT_EQ(ev[0].type, MTP_EVENT_READY);
  std::set<uint64_t> failed;
  for (std::size_t i = 1; i < ev.size(); ++i) {
    EXPECT_EQ(ev[i].type, MTP_EVENT_CONNECTION_ERROR);
    EXPECT_EQ(ev[i].reason, static_cast<uint32_t>(MTP_REASON_DAEMON_GONE));
    failed.insert(ev[i].connection);
  }
  EXPECT_EQ(failed, (std::set<uint64_t>{c1, c2, l}));
  mtp_event more[4];
  EXPECT_EQ(mtp_poll(b.ch, more, 4), 0u);
  EXPECT_EQ(mtp_send(b.ch, c1, 0, "x", 1, nullptr, 0), MTP_EDAEMON);
  mtp_connection c = 0;
  mtp_preconnection p;
  mtp_preconnection_init(&p);
  p.group = "all";
  EXPECT_EQ(mtp_initiate(b.ch, &p, &c), MTP_EDAEMON);
  EXPECT_EQ(mtp_wait(b.ch, 1000), MTP_EDAEMON);
  EXPECT_LT(mtp_arm(b.ch), 0);
  int st = 0;
  EXPECT_EQ(mtp_send_burst(b.ch, nullptr, 0, nullptr, &st), 0u);
  EXPECT_EQ(st, MTP_EDAEMON);
}

TEST(mtp_api, a_sleeping_application_wakes_when_mtpd_dies) {
  bed b;
  ASSERT_EQ(b.status, MTP_OK);
  const mtp_connection c = b.connect();
  std::atomic<int> woke{-1};
  const uint64_t t0 = now_ns();
  std::thread app([&] { woke = mtp_wait(b.ch, 10'000); });
  channel_header *h = b.daemon->channels[0].header;
  for (int i = 0; i < 2000 && h->app_sleeping.load() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  b.daemon.reset();
  b.server.close_all();
  app.join();
  EXPECT_EQ(woke, MTP_OK);
  EXPECT_LT(now_ns() - t0, 5'000'000'000u);
  mtp_event ev[4];
  ASSERT_EQ(mtp_poll(b.ch, ev, 4), 1u);
  EXPECT_EQ(ev[0].type, MTP_EVENT_CONNECTION_ERROR);
  EXPECT_EQ(ev[0].connection, c);
}

TEST(mtp_api, a_corrupt_event_ring_breaks_the_channel_not_the_process) {
  bed b(2);
  ASSERT_EQ(b.status, MTP_OK);
  const mtp_connection c = b.connect();
  ring_indices *idx = to_app_indices(b.daemon->channels[0].header, b.daemon->layout);
  idx->head.store(idx->tail.load() + small_plan().to_app_slots + 5);  // beyond the ring
  const std::vector<mtp_event> ev = b.events(1);
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].type, MTP_EVENT_CONNECTION_ERROR);
  EXPECT_EQ(ev[0].connection, c);
  EXPECT_EQ(ev[0].reason, static_cast<uint32_t>(MTP_REASON_CHANNEL_BROKEN));
  mtp_event more[4];
  EXPECT_EQ(mtp_poll(b.ch, more, 4), 0u);
  EXPECT_EQ(mtp_send(b.ch, c, 0, "x", 1, nullptr, 0), MTP_EBROKEN);
  EXPECT_EQ(mtp_wait(b.ch, 0), MTP_EBROKEN);
  // The other channel works on.
  mtp_channel *c1 = mtp_channel_get(b.ctx, 1);
  mtp_connection l = 0;
  EXPECT_EQ(mtp_listen(c1, nullptr, &l), MTP_OK);
  EXPECT_EQ(b.daemon->take(1).size(), 1u);
}

// mtpd's side moves the command ring's tail backwards past the head: the
// next post finds it, and the channel ends even with events left unread.
TEST(mtp_api, a_corrupt_command_ring_breaks_the_channel_even_with_events_unread) {
  bed b;
  ASSERT_EQ(b.status, MTP_OK);
  const mtp_connection c = b.connect();
  for (int i = 0; i < 3; ++i) b.daemon->post(stand_in::make_event(event::ready, c));
  mtp_event ev[4];
  ASSERT_EQ(mtp_poll(b.ch, ev, 1), 1u) << "two left in the library's stash";
  ring_indices *idx = to_daemon_indices(b.daemon->channels[0].header, b.daemon->layout);
  idx->tail.store(idx->head.load() + 1);
  // (A one-piece send looks at the tail only when the ring seems full; a
  // message in pieces asks for the room first.)
  const std::string big = pattern(3 * payload, 6);
  EXPECT_EQ(mtp_send(b.ch, c, 0, big.data(), big.size(), nullptr, 0), MTP_EBROKEN);
  EXPECT_EQ(b.free_buffers(), 64u) << "no buffer taken";
  EXPECT_EQ(mtp_send(b.ch, c, 0, "x", 1, nullptr, 0), MTP_EBROKEN);
  const std::vector<mtp_event> end = b.events(1);
  ASSERT_EQ(end.size(), 1u);
  EXPECT_EQ(end[0].type, MTP_EVENT_CONNECTION_ERROR);
  EXPECT_EQ(end[0].reason, static_cast<uint32_t>(MTP_REASON_CHANNEL_BROKEN));
  EXPECT_EQ(mtp_poll(b.ch, ev, 4), 0u);
  EXPECT_EQ(mtp_arm(b.ch), -MTP_EBROKEN);
}

// -- sleeping ----------------------------------------------------------------------

TEST(mtp_api, wait_sleeps_until_mtpd_signals_after_seeing_app_sleeping) {
  bed b;
  ASSERT_EQ(b.status, MTP_OK);
  const mtp_connection c = b.connect();
  // Nothing comes: the timeout.
  uint64_t t0 = now_ns();
  EXPECT_EQ(mtp_wait(b.ch, 30), MTP_ETIMEDOUT);
  EXPECT_GE(now_ns() - t0, 25'000'000u);
  channel_header *h = b.daemon->channels[0].header;
  EXPECT_EQ(h->app_sleeping.load(), 0u) << "cleared on waking";
  // mtpd sees app_sleeping, posts, signals.
  std::atomic<bool> returned{false};
  t0 = now_ns();
  std::thread app([&] {
    EXPECT_EQ(mtp_wait(b.ch, 10'000), MTP_OK);
    returned = true;
  });
  for (int i = 0; i < 2000 && h->app_sleeping.load() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_EQ(h->app_sleeping.load(), 1u);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_FALSE(returned) << "asleep until signalled";
  b.daemon->post(stand_in::make_event(event::ready, c));
  b.daemon->signal_app();
  app.join();
  EXPECT_LT(now_ns() - t0, 5'000'000'000u);
  EXPECT_EQ(h->app_sleeping.load(), 0u);
  mtp_event ev[4];
  ASSERT_EQ(mtp_poll(b.ch, ev, 4), 1u);
  EXPECT_EQ(ev[0].type, MTP_EVENT_READY);
  // An event already waiting: no sleep at all (the re-check after app_sleeping).
  b.daemon->post(stand_in::make_event(event::ready, c));
  t0 = now_ns();
  EXPECT_EQ(mtp_wait(b.ch, 10'000), MTP_OK);
  EXPECT_LT(now_ns() - t0, 1'000'000'000u);
  EXPECT_EQ(mtp_poll(b.ch, ev, 4), 1u);
}

// mtp_wait's result tells a timeout from a wake-up; a dead channel's
// status is what it was (MTP_EDAEMON, MTP_EBROKEN).
TEST(mtp_api, wait_says_whether_it_was_woken_or_timed_out) {
  bed b;
  ASSERT_EQ(b.status, MTP_OK);
  const mtp_connection c = b.connect();
  // Nothing posted: the timeout, once it passed.
  uint64_t t0 = now_ns();
  EXPECT_EQ(mtp_wait(b.ch, 20), MTP_ETIMEDOUT);
  EXPECT_GE(now_ns() - t0, 15'000'000u);
  EXPECT_EQ(mtp_wait(b.ch, 0), MTP_ETIMEDOUT) << "0 only looks";
  // An event waiting already: woken at once.
  b.daemon->post(stand_in::make_event(event::ready, c));
  EXPECT_EQ(mtp_wait(b.ch, 0), MTP_OK);
  t0 = now_ns();
  EXPECT_EQ(mtp_wait(b.ch, 10'000), MTP_OK);
  EXPECT_LT(now_ns() - t0, 1'000'000'000u);
  mtp_event ev[4];
  ASSERT_EQ(mtp_poll(b.ch, ev, 4), 1u);
  // An event posted (and signalled) while asleep: woken.
  std::atomic<int> woke{-1};
  std::thread app([&] { woke = mtp_wait(b.ch, 10'000); });
  channel_header *h = b.daemon->channels[0].header;
  for (int i = 0; i < 2000 && h->app_sleeping.load() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_EQ(h->app_sleeping.load(), 1u);
  b.daemon->post(stand_in::make_event(event::ready, c));
  b.daemon->signal_app();
  app.join();
  EXPECT_EQ(woke, MTP_OK);
  ASSERT_EQ(mtp_poll(b.ch, ev, 4), 1u);
  // mtp.hpp: the same as a value.
  mtp::channel cpp(b.ch);
  auto w = cpp.wait(0);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w.value(), mtp::wait_outcome::timed_out);
  b.daemon->post(stand_in::make_event(event::ready, c));
  w = cpp.wait(1000);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w.value(), mtp::wait_outcome::woken);
  ASSERT_EQ(mtp_poll(b.ch, ev, 4), 1u);
  EXPECT_STREQ(mtp_status_text(MTP_ETIMEDOUT), "the wait timed out: nothing woke the channel");
  // Dead: the status, as before; in C++ not ok().
  b.daemon.reset();
  b.server.close_all();
  ASSERT_EQ(b.events(1).size(), 1u);  // the CONNECTION_ERROR
  EXPECT_EQ(mtp_wait(b.ch, 1000), MTP_EDAEMON);
  const auto dead = cpp.wait(1000);
  EXPECT_FALSE(dead.ok());
  EXPECT_EQ(dead.status(), MTP_EDAEMON);
  EXPECT_EQ(mtp_wait(nullptr, 0), MTP_EINVAL);
  EXPECT_EQ(mtp::channel().wait(0).status(), MTP_EINVAL);
}

TEST(mtp_api, arm_and_the_channel_fd_for_an_epoll_loop) {
  bed b;
  ASSERT_EQ(b.status, MTP_OK);
  const mtp_connection c = b.connect();
  const int fd = mtp_channel_fd(b.ch);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(mtp_arm(b.ch), 1);
  EXPECT_EQ(b.daemon->channels[0].header->app_sleeping.load(), 1u);
  pollfd p{fd, POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 0), 0) << "nothing yet";
  b.daemon->post(stand_in::make_event(event::ready, c));
  b.daemon->signal_app();
  EXPECT_EQ(::poll(&p, 1, 1000), 1);
  mtp_event ev[4];
  ASSERT_EQ(mtp_poll(b.ch, ev, 4), 1u);
  EXPECT_EQ(b.daemon->channels[0].header->app_sleeping.load(), 0u) << "poll clears it";
  b.daemon->post(stand_in::make_event(event::ready, c));
  EXPECT_EQ(mtp_arm(b.ch), 0) << "an event waits: poll, do not sleep";
  EXPECT_EQ(mtp_poll(b.ch, ev, 4), 1u);
  ASSERT_EQ(mtp_arm(b.ch), 1);
  EXPECT_EQ(::poll(&p, 1, 0), 0) << "the last signal was read by arm";
  // mtpd dying makes the fd readable too.
  b.daemon.reset();
  b.server.close_all();
  EXPECT_EQ(::poll(&p, 1, 2000), 1);
  EXPECT_EQ(mtp_arm(b.ch), 0);
  ASSERT_EQ(mtp_poll(b.ch, ev, 4), 1u);
  EXPECT_EQ(ev[0].type, MTP_EVENT_CONNECTION_ERROR);
  EXPECT_EQ(mtp_arm(b.ch), -MTP_EDAEMON);
}

// Two channels' threads sleep on the one app eventfd: a signal meant for
// one and read by the other is passed on, not lost.
TEST(mtp_api, a_wake_up_read_by_the_wrong_channel_is_passed_on) {
  bed b(2);
  ASSERT_EQ(b.status, MTP_OK);
  mtp_channel *c0 = mtp_channel_get(b.ctx, 0), *c1 = mtp_channel_get(b.ctx, 1);
  channel_header *h1 = b.daemon->channels[1].header;
  pollfd p{mtp_channel_fd(c0), POLLIN, 0};
  // The worst interleaving, step by step: channel 1's thread has set
  // app_sleeping and found its ring empty, but is not in poll() yet; mtpd
  // posts to channel 1 and signals; channel 0's thread reads the signal
  // (arming). Channel 1 must still find the fd readable.
  h1->app_sleeping.store(1);
  b.daemon->post(stand_in::make_event(event::ready, 9), 1);
  b.daemon->signal_app();
  EXPECT_EQ(mtp_arm(c0), 1);
  EXPECT_EQ(::poll(&p, 1, 0), 1) << "raised again for channel 1";
  h1->app_sleeping.store(0);
  mtp_event ev[2];
  EXPECT_EQ(mtp_poll(c1, ev, 2), 1u);
  EXPECT_EQ(mtp_poll(c0, ev, 2), 0u);
  // Nobody else asleep with events: arming reads the signal and that is all.
  b.daemon->signal_app();
  EXPECT_EQ(mtp_arm(c0), 1);
  EXPECT_EQ(::poll(&p, 1, 0), 0);
  EXPECT_EQ(mtp_poll(c0, ev, 2), 0u);
  // The same with a real sleeper.
  std::atomic<bool> woke{false};
  std::thread t1([&] {
    EXPECT_EQ(mtp_wait(c1, 5000), MTP_OK);
    woke = true;
  });
  for (int i = 0; i < 2000 && h1->app_sleeping.load() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  b.daemon->post(stand_in::make_event(event::ready, 9), 1);
  b.daemon->signal_app();
  (void)mtp_arm(c0);
  t1.join();
  EXPECT_TRUE(woke);
  EXPECT_EQ(mtp_poll(c1, ev, 2), 1u);
  EXPECT_EQ(mtp_poll(c0, ev, 2), 0u);
}

// -- stats -----------------------------------------------------------------------------

namespace {
// The counters of an mtp_channel_stats: where each lies, its size, its value.
struct stats_field {
  const char *name;
  std::size_t offset, size;
  uint64_t value;
};
std::vector<stats_field> fields_of(const mtp_channel_stats &s) {
#define MTP_FIELD(f) stats_field{#f, offsetof(mtp_channel_stats, f), sizeof s.f, static_cast<uint64_t>(s.f)}
  return {MTP_FIELD(commands_posted), MTP_FIELD(events_polled),     MTP_FIELD(sends),
          MTP_FIELD(send_eagain),     MTP_FIELD(bytes_sent),        MTP_FIELD(messages_received),
          MTP_FIELD(bytes_received),  MTP_FIELD(send_buffers_free), MTP_FIELD(send_buffers_total)};
#undef MTP_FIELD
}
}  // namespace

// mtp_channel_stats_get writes the fields that lie wholly within the
// caller's struct_size, and nothing else: an older (shorter) struct gets
// its prefix, a struct_size too small for the first counter is left alone.
TEST(mtp_api, stats_fill_only_the_fields_within_struct_size) {
  bed b;
  ASSERT_EQ(b.status, MTP_OK);
  const mtp_connection c = b.connect();
  ASSERT_EQ(mtp_send(b.ch, c, 0, "abc", 3, nullptr, 0), MTP_OK);
  b.daemon->post(b.daemon->receive(c, "hello", end_of_message));
  ASSERT_EQ(b.events(1).size(), 1u);
  mtp_channel_stats full{};
  full.struct_size = sizeof full;
  mtp_channel_stats_get(b.ch, &full);
  EXPECT_EQ(full.struct_size, sizeof full) << "not written";
  EXPECT_EQ(full.commands_posted, 2u);
  EXPECT_EQ(full.sends, 1u);
  EXPECT_EQ(full.bytes_sent, 3u);
  EXPECT_EQ(full.messages_received, 1u);
  EXPECT_EQ(full.bytes_received, 5u);
  EXPECT_EQ(full.send_buffers_free, 63u);
  EXPECT_EQ(full.send_buffers_total, 64u);
  const std::vector<stats_field> truth = fields_of(full);
  const uint64_t mark = 0xabababababababab;
  const auto check = [&](uint32_t size) {
    mtp_channel_stats s;
    std::memset(&s, 0xab, sizeof s);
    s.struct_size = size;
    mtp_channel_stats_get(b.ch, &s);
    EXPECT_EQ(s.struct_size, size);
    const std::vector<stats_field> got = fields_of(s);
    for (std::size_t i = 0; i < got.size(); ++i) {
      const bool fits = got[i].offset + got[i].size <= size;
      const uint64_t untouched = got[i].size == 8 ? mark : mark & 0xffffffffu;
      EXPECT_EQ(got[i].value, fits ? truth[i].value : untouched) << got[i].name << " with struct_size " << size;
    }
  };
  for (uint32_t size : {0u, 4u, 8u, 15u}) check(size);  // too small for commands_posted: untouched
  check(16);                                               // commands_posted only
  check(offsetof(mtp_channel_stats, sends) + 4);           // sends cut in two: not written
  check(offsetof(mtp_channel_stats, messages_received));   // an older header's struct
  check(offsetof(mtp_channel_stats, send_buffers_total));  // all but the last
  check(sizeof(mtp_channel_stats));                        // everything
  // A newer header's larger struct: what this library knows; the rest as it was.
  struct {
    mtp_channel_stats known;
    uint64_t later;
  } newer;
  std::memset(&newer, 0xab, sizeof newer);
  newer.known.struct_size = sizeof newer;
  mtp_channel_stats_get(b.ch, &newer.known);
  EXPECT_EQ(newer.known.send_buffers_total, 64u);
  EXPECT_EQ(newer.later, mark);
  // No channel: zeroes, within struct_size too.
  mtp_channel_stats none;
  std::memset(&none, 0xab, sizeof none);
  none.struct_size = offsetof(mtp_channel_stats, events_polled);
  mtp_channel_stats_get(nullptr, &none);
  EXPECT_EQ(none.commands_posted, 0u);
  EXPECT_EQ(none.events_polled, mark);
  mtp_channel_stats_get(b.ch, nullptr);  // no crash
  // The C++ layer sets struct_size itself.
  EXPECT_EQ(mtp::channel(b.ch).stats().send_buffers_total, 64u);
  EXPECT_EQ(mtp::channel(b.ch).stats().bytes_received, 5u);
}

// -- C++ -------------------------------------------------------------------------------

TEST(mtp_api, the_cpp_layer_attaches_sends_polls_and_detaches) {
  bed b(0);
  std::atomic<bool> done{false};
  std::thread server([&] {
    while (!done) {
      b.server.poll(b.listen_fd, now_ns());
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  auto bad = mtp::context::attach("/nonexistent/socket", 1);
  EXPECT_FALSE(bad.ok());
  EXPECT_EQ(bad.status(), MTP_ECONNECT);
  EXPECT_NE(std::string(bad.message()).find("cannot reach mtpd"), std::string::npos) << bad.message();
  auto attached = mtp::context::attach(b.path.c_str(), 1);
  done = true;
  server.join();
  ASSERT_TRUE(attached.ok()) << attached.message();
  mtp::context ctx = std::move(attached).value();
  mtp::context moved = std::move(ctx);
  EXPECT_EQ(ctx.get(), nullptr);
  EXPECT_EQ(moved.node_id(), stand_in_node);
  EXPECT_EQ(ctx.node_id(), 0u) << "an empty context knows no node";
  mtp::channel ch = moved.channel(0);
  ASSERT_TRUE(ch);
  EXPECT_FALSE(moved.channel(1));
  stand_in daemon(*b.server.apps()[0]);

  auto refused = ch.initiate(mtp::preconnection().members({2, 3}).ordering(MTP_ORDER_TOTAL));
  EXPECT_EQ(refused.status(), MTP_ENOTSUP);
  auto conn = ch.initiate(mtp::preconnection().members({2, 3}).threshold(1).streams(2));
  ASSERT_TRUE(conn.ok()) << conn.message();
  std::vector<descriptor> cmds = daemon.take();
  ASSERT_EQ(cmds.size(), 1u);
  ASSERT_EQ(daemon.ledger.take_for_send(cmds[0]), buffer_check::ok);
  initiate_params ip;
  std::memcpy(&ip, daemon.bytes(cmds[0]), sizeof ip);
  EXPECT_EQ(ip.member_count, 2u);
  EXPECT_EQ(ip.threshold, 1u);
  EXPECT_EQ(ip.streams, 2u);
  daemon.give_back(cmds[0]);

  const auto sent = ch.send(conn.value(), 1, "hello", 5);
  EXPECT_TRUE(sent.ok()) << sent.message();
  EXPECT_EQ(ch.send(conn.value() + 100, 0, "x").status(), MTP_EINVAL);
  cmds = daemon.take();
  ASSERT_EQ(cmds.size(), 1u);
  ASSERT_EQ(daemon.ledger.take_for_send(cmds[0]), buffer_check::ok);
  EXPECT_EQ(text_of(daemon.bytes(cmds[0]), cmds[0].length), "hello");
  EXPECT_EQ(cmds[0].user, 5u);
  daemon.give_back(cmds[0]);
  daemon.post(daemon.receive(conn.value(), "world", end_of_message));
  mtp_event storage[8];
  std::span<mtp_event> got;
  for (int i = 0; i < 100 && got.empty(); ++i) got = ch.poll(storage);
  ASSERT_EQ(got.size(), 1u);
  const auto bytes = mtp::data_of(got[0]);
  EXPECT_EQ(text_of(bytes.data(), bytes.size()), "world");
  ch.release(got[0]);
  ch.poll(storage);  // posts the gathered release
  cmds = daemon.take();
  ASSERT_EQ(cmds.size(), 1u);
  EXPECT_EQ(cmds[0].type, static_cast<uint16_t>(command::release_batch));
  EXPECT_EQ(ch.stats().send_buffers_free, ch.stats().send_buffers_total);
  EXPECT_TRUE(ch.close(conn.value()).ok());
  EXPECT_EQ(ch.close(conn.value()).status(), MTP_ECLOSED);
  moved.reset();
  EXPECT_TRUE(b.poll_server_until([&] { return b.server.apps().empty(); }));
}
