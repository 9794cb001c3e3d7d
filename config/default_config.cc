// SPDX-License-Identifier: BSD-3-Clause
// The embedded default config (config/default.yaml, compiled in).
#include "config.h"

namespace mtp::cfg {

extern const char default_config_yaml[];

const std::string &default_config_text() {
  static const std::string text(default_config_yaml);
  return text;
}

result<config, problems> load_default_config() { return load_config_string(default_config_text(), "<embedded default>"); }

}  // namespace mtp::cfg
