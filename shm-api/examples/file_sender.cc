// SPDX-License-Identifier: BSD-3-Clause
// file_sender: sends a file to a group of members over one MTP
// connection, reliably and in order, and exits 0 only once every message
// is stable (acknowledged by every member) and the connection closed.
//
//   file_sender --socket S --members 2,3,4 FILE
//   file_sender --socket S --group trio FILE     (a group of mtpd's config)
//
// The members run file_receiver. What it shows (docs/api.md): attach, a
// preconnection, initiate, Ready, sending with back-pressure (MTP_EAGAIN),
// Sent, a graceful close and Closed, failures as events.
#include <cinttypes>
#include <fstream>
#include <iterator>

#include "example.h"

using namespace example;

namespace {

const char usage[] =
    "usage: file_sender --socket PATH (--members ID,ID,... | --group NAME) [--threshold T]\n"
    "                   [--message-bytes B] [--timeout SECONDS] FILE\n"
    "Sends FILE to the group on stream 0 (reliable, fifo) in messages of B bytes\n"
    "(default 1200); exits 0 once every message is Sent and the connection Closed.\n";

}  // namespace

int main(int argc, char **argv) {
  program = "file_sender";
  const command_line cl(argc, argv, {"--socket", "--members", "--group", "--threshold", "--message-bytes", "--timeout"},
                        {}, usage);
  if (cl.positional.size() != 1 || (!cl.has("--members") && !cl.has("--group"))) die("%s", usage);
  const std::string path = cl.positional[0];
  std::ifstream in(path, std::ios::binary);
  if (!in) die("cannot read %s", path.c_str());
  const std::vector<char> file{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  const std::size_t message_bytes = number(cl.get("--message-bytes", "1200"), "--message-bytes");
  const uint64_t deadline = now_ms() + 1000 * number(cl.get("--timeout", "60"), "--timeout");

  // One channel: this program has one thread.
  mtp_context *ctx = nullptr;
  char error[256];
  if (mtp_attach(cl.get("--socket"), 1, &ctx, error, sizeof error) != MTP_OK) die("%s", error);
  mtp_channel *ch = mtp_channel_get(ctx, 0);
  if (message_bytes == 0 || message_bytes > mtp_max_message_bytes(ch))
    die("--message-bytes must be 1 .. %zu", mtp_max_message_bytes(ch));

  // The preconnection: who, and how. The defaults are reliable, fifo,
  // message mode and one stream; threshold 0 means every member.
  const std::vector<uint32_t> members = cl.has("--members") ? id_list(cl.get("--members")) : std::vector<uint32_t>{};
  mtp_preconnection p;
  mtp_preconnection_init(&p);
  p.members = members.data();
  p.member_count = static_cast<uint32_t>(members.size());
  p.group = cl.get("--group");
  p.threshold = static_cast<uint32_t>(number(cl.get("--threshold", "0"), "--threshold"));
  p.reliability = MTP_RELIABLE;
  p.ordering = MTP_ORDER_FIFO;
  mtp_connection conn = 0;
  check(mtp_initiate(ch, &p, &conn), "initiate");

  const uint64_t count = (file.size() + message_bytes - 1) / message_bytes;
  uint64_t posted = 0, stable = 0, joined = 0, min_holders = UINT64_MAX;
  bool ready = false, closing = false;
  const uint64_t t0 = now_ms();
  mtp_event events[64];
  for (;;) {
    if (now_ms() > deadline)
      die("timed out: ready=%d, %" PRIu64 " of %" PRIu64 " messages posted, %" PRIu64 " stable", ready, posted, count,
          stable);
    // Send what we can. MTP_EAGAIN is back-pressure (no free send buffer,
    // a full command ring, or mtpd holding our sends until the members
    // acknowledge): nothing was posted; poll, then try again.
    while (ready && posted < count) {
      const std::size_t at = posted * message_bytes;
      const std::size_t len = std::min(message_bytes, file.size() - at);
      const int st = mtp_send(ch, conn, 0, file.data() + at, len, nullptr, /*user=*/posted);
      if (st == MTP_EAGAIN) break;
      check(st, "send");
      ++posted;
    }
    // Everything stable at every member: close gracefully.
    if (ready && stable == count && !closing) {
      check(mtp_close(ch, conn), "close");
      closing = true;
    }
    const std::size_t n = mtp_poll(ch, events, 64);
    if (n == 0) {
      mtp_wait(ch, 100);
      continue;
    }
    for (std::size_t i = 0; i < n; ++i) {
      const mtp_event &e = events[i];
      switch (e.type) {
        case MTP_EVENT_MEMBER_JOINED:
          ++joined;
          say("member %u joined", e.member);
          break;
        case MTP_EVENT_READY:
          ready = true;
          say("ready: %" PRIu64 " member(s) joined; sending %zu bytes in %" PRIu64 " messages", joined, file.size(),
              count);
          break;
        case MTP_EVENT_SENT:
          // Sent comes in send order; `user` is what we gave mtp_send and
          // `code` the number of members that hold the message.
          if (e.user != stable) die("Sent for message %" PRIu64 ", expected %" PRIu64, e.user, stable);
          min_holders = std::min<uint64_t>(min_holders, e.code);
          ++stable;
          break;
        case MTP_EVENT_CLOSED:
          if (e.code != 0) die_on(e);
          say("sent %zu bytes in %" PRIu64 " messages in %.2f s; every message stable at %" PRIu64
              " member(s); closed",
              file.size(), count, static_cast<double>(now_ms() - t0) / 1000, count ? min_holders : joined);
          mtp_detach(ctx);
          return 0;
        case MTP_EVENT_MEMBER_LEFT:
          // The connection would go on without it, but this program
          // promises the file at every member.
          die("member %u left: %s", e.member, mtp_reason_text(e.reason));
        default:  // SendError, Expired, ConnectionError, CommandError
          die_on(e);
      }
    }
  }
}
