// SPDX-License-Identifier: BSD-3-Clause
// What the libmtp examples share that is not MTP: reading the command
// line, a monotonic clock, and dying with a clear message. Everything an
// example does with MTP is in the example itself (docs/api.md walks
// through them). Single-threaded, like the examples.
#pragma once

#include <mtp/mtp.h>
#include <time.h>

#include <algorithm>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

namespace example {

/// The program's name, for messages ("file_sender: ...").
inline const char *program = "example";

/// Prints "<program>: <message>" on stderr and exits 1.
[[noreturn]] inline void die(const char *fmt, ...) {
  std::fprintf(stderr, "%s: ", program);
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fputc('\n', stderr);
  std::exit(1);
}

/// Dies unless `status` is MTP_OK, naming what failed and why.
inline void check(int status, const char *what) {
  if (status != MTP_OK) die("%s: %s", what, mtp_status_text(status));
}

/// A line on stdout, flushed at once (the tests read it through a pipe).
inline void say(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::vprintf(fmt, ap);
  va_end(ap);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

inline uint64_t now_ms() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1'000'000;
}

/// The command line: options with values ("--members 2,3,4"), flags
/// without ("--serve") and the rest, in order. Dies with `usage` on an
/// option it does not know or one missing its value.
struct command_line {
  std::vector<std::pair<std::string, std::string>> options;
  std::vector<std::string> positional;

  command_line(int argc, char **argv, const std::vector<std::string> &with_value,
               const std::vector<std::string> &flags, const char *usage) {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto known = [&](const std::vector<std::string> &names) {
        for (const auto &n : names)
          if (n == a) return true;
        return false;
      };
      if (a == "--help" || a == "-h") {
        std::fputs(usage, stdout);
        std::exit(0);
      }
      if (known(flags)) {
        options.emplace_back(a, "1");
      } else if (known(with_value)) {
        if (i + 1 == argc) die("%s needs a value\n%s", a.c_str(), usage);
        options.emplace_back(a, argv[++i]);
      } else if (a.rfind("--", 0) == 0) {
        die("unknown option %s\n%s", a.c_str(), usage);
      } else {
        positional.push_back(a);
      }
    }
  }
  /// The option's value, or `fallback` when it was not given.
  const char *get(const char *name, const char *fallback = nullptr) const {
    for (const auto &[n, v] : options)
      if (n == name) return v.c_str();
    return fallback;
  }
  bool has(const char *name) const { return get(name) != nullptr; }
};

inline uint64_t number(const char *text, const char *what) {
  char *end = nullptr;
  const unsigned long long v = std::strtoull(text, &end, 10);
  if (end == text || *end != '\0') die("%s: expected a number, found '%s'", what, text);
  return v;
}

/// "2,3,4" -> {2, 3, 4}.
inline std::vector<uint32_t> id_list(const char *text) {
  std::vector<uint32_t> ids;
  std::string s(text);
  for (std::size_t at = 0; at <= s.size();) {
    const std::size_t comma = std::min(s.find(',', at), s.size());
    ids.push_back(static_cast<uint32_t>(number(s.substr(at, comma - at).c_str(), "member id")));
    at = comma + 1;
  }
  return ids;
}

/// Event names as docs/api.md spells them.
inline const char *event_name(int type) {
  switch (type) {
    case MTP_EVENT_READY: return "Ready";
    case MTP_EVENT_CONNECTION_RECEIVED: return "ConnectionReceived";
    case MTP_EVENT_RECEIVED: return "Received";
    case MTP_EVENT_RECEIVED_PARTIAL: return "ReceivedPartial";
    case MTP_EVENT_SENT: return "Sent";
    case MTP_EVENT_EXPIRED: return "Expired";
    case MTP_EVENT_SEND_ERROR: return "SendError";
    case MTP_EVENT_MEMBER_JOINED: return "MemberJoined";
    case MTP_EVENT_MEMBER_LEFT: return "MemberLeft";
    case MTP_EVENT_CLOSED: return "Closed";
    case MTP_EVENT_CONNECTION_ERROR: return "ConnectionError";
    case MTP_EVENT_COMMAND_ERROR: return "CommandError";
    case MTP_EVENT_DATAGRAM: return "Datagram";
  }
  return "unknown event";
}

/// Dies describing an event the program cannot go on after.
[[noreturn]] inline void die_on(const mtp_event &e) {
  die("%s on connection %llu: %s (reason %u, code %llu)", event_name(e.type),
      static_cast<unsigned long long>(e.connection), mtp_reason_text(e.reason), e.reason,
      static_cast<unsigned long long>(e.code));
}

}  // namespace example
