// SPDX-License-Identifier: BSD-3-Clause
// mtpd's entry: command line, config, EAL, lcores; nothing else.
//
// Exit codes: 0 clean stop (SIGINT/SIGTERM) or --check-config passed;
// 1 the host could not run the config (EAL, hugepages, ports, sockets);
// 2 bad command line or bad config.
#include <rte_eal.h>
#include <rte_version.h>

#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "config.h"
#include "daemon.h"
#include "keyfile.h"
#include "mtp_version.h"

namespace {

using mtp::dp::exit_ok;
using mtp::dp::exit_usage;

const char usage_text[] =
    "usage: mtpd [--config FILE] [-- EAL-ARGS...]\n"
    "       mtpd --check-config FILE\n"
    "       mtpd keygen KEY-FILE | mtpd pubkey KEY-FILE\n"
    "       mtpd --print-default-config | --version | --help\n"
    "\n"
    "  --config FILE          run with FILE (default: the embedded default, see\n"
    "                         --print-default-config: one net_tap port, no hugepages)\n"
    "  --check-config FILE    validate FILE against this host; exit 0 if good, 2 if not\n"
    "  --print-default-config print the embedded default config\n"
    "  --version              print the version\n"
    "  --help                 print this help\n"
    "  keygen KEY-FILE        write a new static key pair's private key to KEY-FILE\n"
    "                         (created mode 0600, never overwritten) and print\n"
    "                         its public key, for the peers' configs\n"
    "  pubkey KEY-FILE        print the public key of a private key file\n"
    "  -- EAL-ARGS            passed to DPDK's EAL after those the config sets\n"
    "\n"
    "Stop with SIGINT or SIGTERM. Exit codes: 0 clean stop, 1 runtime failure,\n"
    "2 bad command line or config. Docs: docs/operations.md.\n";

struct options {
  std::string config_path;
  bool check_only = false;
  std::vector<std::string> eal_extra;
};

// `mtpd keygen FILE` and `mtpd pubkey FILE` (docs/security.md).
int key_command(const std::string &verb, int argc, char **argv) {
  if (argc != 3) {
    std::fprintf(stderr, "mtpd: %s needs exactly one key file name\n%s", verb.c_str(), usage_text);
    return exit_usage;
  }
  mtp::crypto::static_keypair keys{};
  std::string why;
  const bool ok = verb == "keygen" ? mtp::crypto::generate_keypair(keys) &&
                                         mtp::crypto::write_private_key_file(argv[2], keys, why)
                                   : mtp::crypto::load_private_key_file(argv[2], keys, why);
  if (!ok) {
    std::fprintf(stderr, "mtpd: %s\n", why.empty() ? "cannot generate a key pair" : why.c_str());
    return mtp::dp::exit_runtime;
  }
  std::printf("%s\n", mtp::crypto::key_to_base64(keys.pub).c_str());
  mtp::crypto::wipe(&keys, sizeof keys);
  return exit_ok;
}

/// @return exit code to leave with, or -1 to go on.
int parse_options(int argc, char **argv, options &o) {
  if (argc >= 2 && (std::strcmp(argv[1], "keygen") == 0 || std::strcmp(argv[1], "pubkey") == 0))
    return key_command(argv[1], argc, argv);
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--") {
      o.eal_extra.assign(argv + i + 1, argv + argc);
      break;
    }
    if (a == "--help" || a == "-h") {
      std::fputs(usage_text, stdout);
      return exit_ok;
    }
    if (a == "--version") {
      std::printf("mtpd %s (%s)\n", MTP_VERSION, rte_version());
      return exit_ok;
    }
    if (a == "--print-default-config") {
      std::fputs(mtp::cfg::default_config_text().c_str(), stdout);
      return exit_ok;
    }
    if (a == "--config" || a == "--check-config") {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "mtpd: %s needs a file name\n%s", a.c_str(), usage_text);
        return exit_usage;
      }
      o.config_path = argv[++i];
      o.check_only = a == "--check-config";
      continue;
    }
    std::fprintf(stderr, "mtpd: unknown option '%s' (EAL options go after '--')\n%s", a.c_str(), usage_text);
    return exit_usage;
  }
  return -1;
}

bool report(const mtp::cfg::problems &ps) {
  for (const auto &p : ps) std::fprintf(stderr, "%s\n", p.to_string().c_str());
  if (!ps.empty()) std::fprintf(stderr, "mtpd: %zu problem(s) in the config\n", ps.size());
  return ps.empty();
}

}  // namespace

int main(int argc, char **argv) {
  options opt;
  if (int rc = parse_options(argc, argv, opt); rc >= 0) return rc;

  auto loaded = opt.config_path.empty() ? mtp::cfg::load_default_config() : mtp::cfg::load_config_file(opt.config_path);
  if (!loaded) return report(loaded.err()), exit_usage;
  if (!report(mtp::cfg::check_host(*loaded))) return exit_usage;
  if (opt.check_only) {
    // The key file too (a missing one is fine where it will be generated).
    mtp::crypto::static_keypair keys{};
    std::string why;
    struct stat st {};
    const bool will_generate = loaded->security.generate_key && ::stat(loaded->security.key_file.c_str(), &st) != 0;
    if (!mtp::dp::load_peer_keys(*loaded, why) || (!will_generate && !mtp::dp::load_identity(*loaded, keys, why))) {
      std::fprintf(stderr, "%s: %s\n", loaded->source.c_str(), why.c_str());
      return exit_usage;
    }
    mtp::crypto::wipe(&keys, sizeof keys);
    std::printf("%s: ok\n", loaded->source.c_str());
    return exit_ok;
  }

  return mtp::dp::run_daemon(std::move(*loaded), opt.eal_extra, {});
}
