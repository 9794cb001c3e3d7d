// SPDX-License-Identifier: BSD-3-Clause
// request_reply: one request to a t-of-n group, done when t members
// answered; and the servers that answer. Written over mtp.hpp, the C++
// layer (the other examples use mtp.h directly).
//
//   request_reply --socket S --members 2,3,4 --threshold 2 [--request TEXT]
//   request_reply --socket S --serve [--connections K]
//
// The client is Ready once t members accepted, sends its request once
// (to every member), and counts the distinct members that replied; with
// t of them it closes and exits 0. A member that is down or does not
// listen leaves (MemberLeft) and the connection goes on while t are live.
// A server listens and answers every request with its node id; it exits
// 0 once K connections (default 1) closed normally.
//
// mtp_event names no member for Received, so a reply names its member in
// its text ("member 3: ..."): the server's node id, which mtpd tells it
// (context::node_id).
#include <mtp/mtp.hpp>

#include <cinttypes>
#include <deque>
#include <map>
#include <set>

#include "example.h"

using namespace example;

namespace {

const char usage[] =
    "usage: request_reply --socket PATH --members ID,ID,... [--threshold T] [--request TEXT]\n"
    "                     [--timeout SECONDS]\n"
    "       request_reply --socket PATH --serve [--connections K] [--timeout SECONDS]\n"
    "The client sends TEXT to the group and exits 0 once T distinct members (default\n"
    "all) replied; --serve answers each request with \"member N: TEXT\".\n";

mtp::context attach(const char *socket) {
  auto ctx = mtp::context::attach(socket, 1);
  if (!ctx) die("%s", ctx.message());
  return std::move(ctx).value();
}

int client(const command_line &cl, uint64_t deadline) {
  mtp::context ctx = attach(cl.get("--socket"));
  mtp::channel ch = ctx.channel(0);
  const std::vector<uint32_t> members = id_list(cl.get("--members"));
  const auto threshold = static_cast<uint32_t>(number(cl.get("--threshold", "0"), "--threshold"));
  const std::size_t needed = threshold != 0 ? threshold : members.size();
  const std::string request = cl.get("--request", "what is your node id?");
  // Reliable fifo messages (the defaults); Ready once t members accepted.
  auto conn = ch.initiate(mtp::preconnection().members(members).threshold(threshold));
  if (!conn) die("initiate: %s", conn.message());

  bool ready = false, sent = false, closing = false;
  std::set<uint32_t> repliers;
  mtp_event events[16];
  for (;;) {
    if (now_ms() > deadline)
      die("timed out: ready=%d, sent=%d, %zu of %zu replies", ready, sent, repliers.size(), needed);
    // One request to all of the group (MTP_EAGAIN: no free send buffer
    // yet; poll and try again).
    if (ready && !sent) {
      const auto st = ch.send(conn.value(), 0, request);
      if (!st && st.status() != MTP_EAGAIN) die("send: %s", st.message());
      sent = st.ok();
    }
    const auto got = ch.poll(events);
    if (got.empty()) {
      (void)ch.wait(100);
      continue;
    }
    for (const mtp_event &e : got) {
      switch (e.type) {
        case MTP_EVENT_MEMBER_JOINED:
          say("member %u joined", e.member);
          break;
        case MTP_EVENT_READY:
          say("ready: sending the request to %zu member(s), waiting for %zu replies", members.size(), needed);
          ready = true;
          break;
        case MTP_EVENT_SENT:
          say("request stable at %llu member(s)", static_cast<unsigned long long>(e.code));
          break;
        case MTP_EVENT_RECEIVED: {
          const std::string reply(static_cast<const char *>(e.data), e.length);
          ch.release(e);
          uint32_t member = 0;
          if (std::sscanf(reply.c_str(), "member %" SCNu32 ":", &member) != 1)
            die("a reply that names no member: '%s'", reply.c_str());
          const bool fresh = repliers.insert(member).second;
          say("reply from member %u: %s%s", member, reply.c_str(), fresh ? "" : " (again)");
          if (repliers.size() >= needed && !closing) {
            std::string who;
            for (uint32_t m : repliers) who += (who.empty() ? "" : ",") + std::to_string(m);
            say("done: %zu of %zu members replied (%s)", repliers.size(), members.size(), who.c_str());
            if (const auto st = ch.close(conn.value()); !st) die("close: %s", st.message());
            closing = true;
          }
          break;
        }
        case MTP_EVENT_MEMBER_LEFT:
          // Not fatal: a t-of-n connection goes on while t members live.
          say("member %u left: %s", e.member, mtp_reason_text(e.reason));
          break;
        case MTP_EVENT_CLOSED:
          if (!closing || e.code != 0) die_on(e);
          return 0;
        default:  // ConnectionError (fewer than t live), SendError, CommandError, ...
          die_on(e);
      }
    }
  }
}

int server(const command_line &cl, uint64_t deadline) {
  const uint64_t wanted = number(cl.get("--connections", "1"), "--connections");
  mtp::context ctx = attach(cl.get("--socket"));
  const uint32_t me = ctx.node_id();
  if (me == 0) die("mtpd did not say this node's id (the replies carry it): an mtpd older than libmtp?");
  mtp::channel ch = ctx.channel(0);
  if (auto l = ch.listen(); !l) die("listen: %s", l.message());
  say("listening as node %u", me);

  std::map<mtp_connection, uint32_t> clients;                   // accepted connection -> its client
  std::deque<std::pair<mtp_connection, std::string>> replies;  // waiting for a send buffer
  std::set<mtp_connection> ended;                               // connections that closed
  uint64_t closed = 0;
  mtp_event events[16];
  while (closed < wanted) {
    if (now_ms() > deadline) die("timed out after %" PRIu64 " of %" PRIu64 " connections", closed, wanted);
    while (!replies.empty()) {
      const auto st = ch.send(replies.front().first, 0, replies.front().second);
      if (st.status() == MTP_EAGAIN) break;
      if (!st && st.status() != MTP_ECLOSED) die("send: %s", st.message());  // ECLOSED: the client is gone
      replies.pop_front();
    }
    const auto got = ch.poll(events);
    if (got.empty()) {
      (void)ch.wait(100);
      continue;
    }
    for (const mtp_event &e : got) {
      switch (e.type) {
        case MTP_EVENT_CONNECTION_RECEIVED:
          clients[e.connection] = e.member;
          say("connection from member %u", e.member);
          break;
        case MTP_EVENT_RECEIVED: {
          const std::string request(static_cast<const char *>(e.data), e.length);
          ch.release(e);
          say("request from member %u: %s", clients[e.connection], request.c_str());
          replies.emplace_back(e.connection, "member " + std::to_string(me) + ": " + request);
          break;
        }
        case MTP_EVENT_SENT:
          break;
        case MTP_EVENT_SEND_ERROR:
          // The client closed once it had its t replies; ours may be late.
          say("reply to member %u not delivered: %s", clients[e.connection], mtp_reason_text(e.reason));
          break;
        case MTP_EVENT_CLOSED:
          if (e.code != 0) die_on(e);
          say("connection from member %u closed", clients[e.connection]);
          clients.erase(e.connection);
          ended.insert(e.connection);
          ++closed;
          break;
        case MTP_EVENT_COMMAND_ERROR:
          // A reply posted just before the client's close arrived reaches
          // mtpd after the handle is gone: it is refused, after Closed.
          if (e.reason == MTP_REASON_BAD_HANDLE && ended.count(e.connection)) {
            say("a reply came too late: the connection had closed");
            break;
          }
          die_on(e);
        default:
          die_on(e);
      }
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char **argv) {
  program = "request_reply";
  const command_line cl(
      argc, argv, {"--socket", "--members", "--threshold", "--request", "--connections", "--timeout"},
      {"--serve"}, usage);
  if (!cl.positional.empty() || (!cl.has("--serve") && !cl.has("--members"))) die("%s", usage);
  const uint64_t deadline = now_ms() + 1000 * number(cl.get("--timeout", "30"), "--timeout");
  return cl.has("--serve") ? server(cl, deadline) : client(cl, deadline);
}
