// SPDX-License-Identifier: BSD-3-Clause
// Fuzzes the config loader with arbitrary text: it must return a config or
// problems, never throw or crash, and every problem must carry a message.
#include <string>

#include "config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const std::string text(reinterpret_cast<const char *>(data), size);
  auto r = mtp::cfg::load_config_string(text, "fuzz.yaml");
  if (!r.ok()) {
    if (r.err().empty()) __builtin_trap();
    for (const auto &p : r.err())
      if (p.message.empty() || p.mark.line < 1 || p.mark.column < 1) __builtin_trap();
  } else if (r->ports.empty()) {
    __builtin_trap();  // a loaded config always has a port
  }
  return 0;
}
