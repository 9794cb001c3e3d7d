// SPDX-License-Identifier: BSD-3-Clause
// file_receiver: accepts one connection, receives a file in order and
// checks its length and SHA-256; exits 0 only when the sender closed the
// connection and everything matched.
//
//   file_receiver --socket S --expect-bytes N --sha256 HEX
//
// What it shows (docs/api.md): mtp_node_id, listen, ConnectionReceived,
// Received with its stream offset, mtp_release (a receive buffer is mtpd's
// until it is handed back), Closed.
#include <openssl/evp.h>

#include <cinttypes>

#include "example.h"

using namespace example;

namespace {

const char usage[] =
    "usage: file_receiver --socket PATH [--expect-bytes N] [--sha256 HEX] [--timeout SECONDS]\n"
    "Listens, accepts one connection, receives every message on it in order and\n"
    "prints the byte count and SHA-256; exits 0 once the connection is Closed and\n"
    "both match what was expected.\n";

std::string hex(const unsigned char *p, unsigned n) {
  std::string s;
  char two[3];
  for (unsigned i = 0; i < n; ++i) {
    std::snprintf(two, sizeof two, "%02x", p[i]);
    s += two;
  }
  return s;
}

}  // namespace

int main(int argc, char **argv) {
  program = "file_receiver";
  const command_line cl(argc, argv, {"--socket", "--expect-bytes", "--sha256", "--timeout"}, {}, usage);
  if (!cl.positional.empty()) die("%s", usage);
  const uint64_t deadline = now_ms() + 1000 * number(cl.get("--timeout", "60"), "--timeout");

  mtp_context *ctx = nullptr;
  char error[256];
  if (mtp_attach(cl.get("--socket"), 1, &ctx, error, sizeof error) != MTP_OK) die("%s", error);
  mtp_channel *ch = mtp_channel_get(ctx, 0);

  // NULL preconnection: accepted connections get the defaults (one
  // fifo message stream back to the client). A refusal (another
  // application listens already) comes as CommandError.
  mtp_connection listener = 0;
  check(mtp_listen(ch, nullptr, &listener), "listen");
  // The id the sender names as a member: this node's, as mtpd knows it.
  say("listening as node %u", mtp_node_id(ctx));

  EVP_MD_CTX *sha = EVP_MD_CTX_new();
  if (sha == nullptr || EVP_DigestInit_ex(sha, EVP_sha256(), nullptr) != 1) die("OpenSSL: no SHA-256");
  mtp_connection conn = 0;
  uint32_t client = 0;
  uint64_t bytes = 0, messages = 0;
  mtp_event events[64];
  for (;;) {
    if (now_ms() > deadline) die("timed out with %" PRIu64 " bytes in %" PRIu64 " messages", bytes, messages);
    const std::size_t n = mtp_poll(ch, events, 64);
    if (n == 0) {
      mtp_wait(ch, 100);
      continue;
    }
    for (std::size_t i = 0; i < n; ++i) {
      const mtp_event &e = events[i];
      switch (e.type) {
        case MTP_EVENT_CONNECTION_RECEIVED:
          if (conn != 0) die("a second connection (from member %u); this receiver takes one", e.member);
          conn = e.connection;
          client = e.member;
          say("connection from member %u", client);
          break;
        case MTP_EVENT_RECEIVED:
        case MTP_EVENT_RECEIVED_PARTIAL:
          // A message, or a piece of one when it is larger than a
          // receive buffer; `offset` is where its bytes start in the
          // stream, so in-order delivery means offset == bytes so far.
          if (e.connection != conn || e.stream != 0)
            die("data on connection %" PRIu64 " stream %" PRIu64, e.connection, e.stream);
          if (e.offset != bytes) die("out of order: data at offset %" PRIu64 ", expected %" PRIu64, e.offset, bytes);
          EVP_DigestUpdate(sha, e.data, e.length);
          bytes += e.length;
          messages += e.type == MTP_EVENT_RECEIVED;
          mtp_release(ch, &e);  // the buffer is mtpd's again: without this, receiving stops
          break;
        case MTP_EVENT_CLOSED: {
          if (e.connection != conn || e.code != 0) die_on(e);
          unsigned char digest[EVP_MAX_MD_SIZE];
          unsigned digest_len = 0;
          EVP_DigestFinal_ex(sha, digest, &digest_len);
          EVP_MD_CTX_free(sha);
          const std::string got = hex(digest, digest_len);
          say("received %" PRIu64 " bytes in %" PRIu64 " messages from member %u, sha256 %s", bytes, messages, client,
              got.c_str());
          mtp_detach(ctx);
          if (cl.has("--expect-bytes") && bytes != number(cl.get("--expect-bytes"), "--expect-bytes"))
            die("expected %s bytes, received %" PRIu64, cl.get("--expect-bytes"), bytes);
          if (cl.has("--sha256") && got != cl.get("--sha256"))
            die("expected sha256 %s, received %s", cl.get("--sha256"), got.c_str());
          say("OK");
          return 0;
        }
        default:  // CommandError (the listen refused), ConnectionError, ...
          die_on(e);
      }
    }
  }
}
