// SPDX-License-Identifier: BSD-3-Clause
// group_chat: every participant listens and also opens one connection to
// all the others; what it says goes to the group on that connection, what
// the others say arrives on the connections it accepted, one per member.
//
//   group_chat --socket S --members 2,3,4                  (lines from stdin)
//   group_chat --socket S --members 2,3,4 --say hi --count 5
//
// Received lines are printed "<member>: text" on stdout; what happens to
// the connections goes to stderr, prefixed "* ", starting with this
// node's id (mtp_node_id: the one the others print). With --say it sends
// "TEXT (k/N)" for k = 1..N, and exits 0 once its own lines are stable at
// every other member, it heard N lines from each of them and every
// connection closed. Without, it sends stdin's lines and exits 0 at the
// end of stdin once its lines are stable and its connection closed.
//
// What it shows (docs/api.md): listening and initiating on one channel,
// telling accepted connections apart by their client, sleeping in epoll
// on the channel's fd beside stdin (mtp_arm), and retrying a connection
// a member refused because nothing listened there yet.
#include <sys/epoll.h>
#include <unistd.h>

#include <cinttypes>
#include <deque>
#include <map>
#include <set>

#include "example.h"

using namespace example;

namespace {

const char usage[] =
    "usage: group_chat --socket PATH --members ID,ID,... [--say TEXT [--count N]] [--timeout SECONDS]\n"
    "Chats with the other members (every member runs group_chat): lines from stdin,\n"
    "or TEXT N times, go to all of them; theirs are printed as \"<member>: text\".\n";

void note(const char *fmt, ...) {
  std::fputs("* ", stderr);
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fputc('\n', stderr);
}

struct chat {
  mtp_channel *ch = nullptr;
  std::vector<uint32_t> others;
  mtp_connection out = 0;       // ours, to every other member
  bool scripted = false;        // a member leaving is then a failure, not news
  bool out_ready = false, giving_up = false, closing = false;
  uint64_t retry_at_ms = 0;     // when to initiate again after a refusal
  std::deque<std::string> to_send;
  uint64_t posted = 0, stable = 0;
  std::map<mtp_connection, uint32_t> accepted;  // connections the others opened to us -> who
  std::map<uint32_t, uint64_t> heard;           // lines received per member
  std::map<mtp_connection, std::string> pieces; // a line that came in pieces, so far
  std::set<mtp_connection> ended;               // ours that closed or failed

  void initiate() {
    mtp_preconnection p;
    mtp_preconnection_init(&p);
    p.members = others.data();
    p.member_count = static_cast<uint32_t>(others.size());
    check(mtp_initiate(ch, &p, &out), "initiate");
    out_ready = giving_up = false;
  }

  void send_pending() {
    while (out_ready && !to_send.empty()) {
      const std::string &line = to_send.front();
      const int st = mtp_send(ch, out, 0, line.data(), line.size(), nullptr, posted);
      if (st == MTP_EAGAIN) return;  // no free send buffer: after the next poll
      if (st == MTP_ETOOBIG) {
        note("a line of %zu bytes is too long for one message; not sent", line.size());
      } else {
        check(st, "send");
        ++posted;
      }
      to_send.pop_front();
    }
  }

  void on(const mtp_event &e) {
    const bool ours = e.connection == out && out != 0;
    switch (e.type) {
      case MTP_EVENT_CONNECTION_RECEIVED:
        accepted[e.connection] = e.member;
        note("member %u connected to us", e.member);
        return;
      case MTP_EVENT_RECEIVED:
      case MTP_EVENT_RECEIVED_PARTIAL: {
        // A line longer than a receive buffer comes in pieces: the last
        // one is Received, the others ReceivedPartial.
        std::string &line = pieces[e.connection];
        line.append(static_cast<const char *>(e.data), e.length);
        mtp_release(ch, &e);
        const auto it = accepted.find(e.connection);
        if (e.type == MTP_EVENT_RECEIVED && it != accepted.end()) {
          say("%u: %s", it->second, line.c_str());
          ++heard[it->second];
        }
        if (e.type == MTP_EVENT_RECEIVED) pieces.erase(e.connection);
        return;
      }
      case MTP_EVENT_MEMBER_JOINED:  // one of the others accepted ours; Ready once all did
        return;
      case MTP_EVENT_READY:
        if (!ours) return;
        out_ready = true;
        note("connected to all %zu other member(s)", others.size());
        return;
      case MTP_EVENT_SENT:
        stable += ours;
        return;
      case MTP_EVENT_MEMBER_LEFT:
        if (!ours) return;
        if (e.reason == MTP_REASON_REFUSED && !out_ready) {
          // Nothing listens there yet: give this connection up (Closed
          // follows) and try again shortly.
          note("member %u does not listen yet; trying again", e.member);
          if (!giving_up) mtp_abort(ch, out, 256);
          giving_up = true;
          return;
        }
        if (scripted) die("member %u left: %s", e.member, mtp_reason_text(e.reason));
        note("member %u left: %s", e.member, mtp_reason_text(e.reason));
        return;
      case MTP_EVENT_CLOSED:
      case MTP_EVENT_CONNECTION_ERROR:
        if (accepted.count(e.connection)) {
          if (e.type == MTP_EVENT_CLOSED && e.code == 0)
            note("member %u closed its connection", accepted[e.connection]);
          else
            note("member %u's connection ended: %s (code %" PRIu64 ")", accepted[e.connection],
                 mtp_reason_text(e.reason), e.code);
          accepted.erase(e.connection);
          pieces.erase(e.connection);
          return;
        }
        if (!ours) return;
        ended.insert(out);
        if (!out_ready && !closing) {  // given up above, or failed before Ready: again
          out = 0;
          retry_at_ms = now_ms() + 200;
          return;
        }
        if (e.type == MTP_EVENT_CONNECTION_ERROR || !closing || e.code != 0) die_on(e);
        out = 0;
        return;
      case MTP_EVENT_COMMAND_ERROR:
        // An abort posted while the connection was failing anyway reaches
        // mtpd after the handle is gone: nothing to do.
        if (e.reason == MTP_REASON_BAD_HANDLE && ended.count(e.connection)) return;
        die_on(e);  // the listen or a send refused
      default:  // SendError, Expired, Datagram
        die_on(e);
    }
  }
};

}  // namespace

int main(int argc, char **argv) {
  program = "group_chat";
  const command_line cl(argc, argv, {"--socket", "--members", "--say", "--count", "--timeout"}, {}, usage);
  if (!cl.positional.empty() || !cl.has("--members")) die("%s", usage);
  const bool scripted = cl.has("--say");
  const uint64_t count = number(cl.get("--count", "1"), "--count");
  const uint64_t timeout_s = number(cl.get("--timeout", scripted ? "60" : "0"), "--timeout");
  const uint64_t deadline = timeout_s ? now_ms() + 1000 * timeout_s : UINT64_MAX;

  mtp_context *ctx = nullptr;
  char error[256];
  if (mtp_attach(cl.get("--socket"), 1, &ctx, error, sizeof error) != MTP_OK) die("%s", error);
  // Which of --members is us: mtpd knows this node's id.
  const uint32_t me = mtp_node_id(ctx);
  if (me == 0) die("mtpd did not say this node's id: an mtpd older than libmtp?");
  chat c;
  c.ch = mtp_channel_get(ctx, 0);
  c.scripted = scripted;
  for (uint32_t id : id_list(cl.get("--members")))
    if (id != me) c.others.push_back(id);
  if (c.others.empty()) die("--members names nobody but me (node %u)", me);
  note("node %u in the group %s", me, cl.get("--members"));
  if (scripted)
    for (uint64_t k = 1; k <= count; ++k)
      c.to_send.push_back(std::string(cl.get("--say")) + " (" + std::to_string(k) + "/" + std::to_string(count) + ")");
  const uint64_t total = c.to_send.size();

  mtp_connection listener = 0;
  check(mtp_listen(c.ch, nullptr, &listener), "listen");
  c.initiate();

  // One epoll set: the channel's fd, and stdin when we read it.
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  epoll_event watch{};
  watch.events = EPOLLIN;
  watch.data.fd = mtp_channel_fd(c.ch);
  if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, watch.data.fd, &watch) != 0) die("epoll: %s", std::strerror(errno));
  bool reading = !scripted;
  watch.data.fd = STDIN_FILENO;
  if (reading && epoll_ctl(ep, EPOLL_CTL_ADD, STDIN_FILENO, &watch) != 0) die("epoll stdin: %s", std::strerror(errno));
  std::string partial;

  mtp_event events[32];
  for (;;) {
    if (now_ms() > deadline)
      die("timed out: %" PRIu64 " of %" PRIu64 " lines stable, %zu connection(s) from others open", c.stable, total,
          c.accepted.size());
    if (c.retry_at_ms != 0 && now_ms() >= c.retry_at_ms) {
      c.retry_at_ms = 0;
      c.initiate();
    }
    c.send_pending();
    // Done talking: all of ours stable (and, scripted, all of theirs heard).
    bool done = c.out_ready && !c.closing && c.to_send.empty() && c.stable == c.posted && !reading;
    for (uint32_t m : c.others) done = done && (!scripted || c.heard[m] == count);
    if (done) {
      check(mtp_close(c.ch, c.out), "close");
      c.closing = true;
    }
    if (c.closing && c.out == 0 && (!scripted || c.accepted.empty())) break;

    const std::size_t n = mtp_poll(c.ch, events, 32);
    for (std::size_t i = 0; i < n; ++i) c.on(events[i]);
    if (n > 0) continue;
    // Nothing now: arm the channel's fd and sleep (mtp_arm says 0 when
    // events came in meanwhile: poll instead).
    if (mtp_arm(c.ch) != 1) continue;
    epoll_event ready[2];
    const int k = epoll_wait(ep, ready, 2, 100);
    for (int i = 0; i < k; ++i) {
      if (ready[i].data.fd != STDIN_FILENO) continue;
      char buf[4096];
      const ssize_t got = read(STDIN_FILENO, buf, sizeof buf);
      if (got <= 0) {  // end of stdin: say goodbye once what we said is stable
        epoll_ctl(ep, EPOLL_CTL_DEL, STDIN_FILENO, nullptr);
        reading = false;
        continue;
      }
      partial.append(buf, static_cast<std::size_t>(got));
      for (std::size_t nl; (nl = partial.find('\n')) != std::string::npos; partial.erase(0, nl + 1))
        if (nl > 0) c.to_send.push_back(partial.substr(0, nl));
    }
    if (!reading && !scripted && !c.out_ready)
      die("end of input before the others were there; %zu line(s) not sent", c.to_send.size());
  }
  std::string heard;
  for (uint32_t m : c.others)
    heard += (heard.empty() ? "" : ", ") + std::to_string(c.heard[m]) + " from " + std::to_string(m);
  note("said %" PRIu64 " line(s), every one stable; heard %s; bye", c.posted, heard.c_str());
  close(ep);
  mtp_detach(ctx);
  return 0;
}
