// SPDX-License-Identifier: BSD-3-Clause
// See yaml_reader.h.
#include "yaml_reader.h"

#include <algorithm>
#include <charconv>
#include <map>

namespace mtp::cfg {

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

std::optional<std::string> nearest(std::string_view word, const std::vector<std::string> &candidates) {
  std::optional<std::string> best;
  std::size_t best_d = 0;
  for (const auto &c : candidates) {
    const std::size_t d = edit_distance(word, c);
    if (!best || d < best_d) {
      best = c;
      best_d = d;
    }
  }
  // A typo is a few edits away relative to the word's length; "did you
  // mean" on an unrelated word only misleads.
  const std::size_t limit = std::max<std::size_t>(1, std::min(word.size(), best ? best->size() : 0) / 3);
  if (best && best_d <= limit) return best;
  return std::nullopt;
}

std::string yaml_reader::describe(const YAML::Node &n) {
  if (!n.IsDefined() || n.IsNull()) return "nothing";
  if (n.IsSequence()) return "a list";
  if (n.IsMap()) return "a mapping";
  const std::string &s = n.Scalar();
  if (!s.empty() && std::all_of(s.begin(), s.end(), [](char ch) { return ch >= '0' && ch <= '9'; })) return s;
  if (s.size() > 1 && s[0] == '-' && std::all_of(s.begin() + 1, s.end(), [](char ch) { return ch >= '0' && ch <= '9'; }))
    return s;
  return "'" + s + "'";
}

bool yaml_reader::check_map(const YAML::Node &n, const std::string &path, const std::vector<std::string> &known) {
  if (n.IsNull()) return true;
  if (!n.IsMap()) {
    report(n, path, "expected a mapping of keys, found " + describe(n));
    return false;
  }
  std::map<std::string, int> seen;  // key -> line
  for (auto it = n.begin(); it != n.end(); ++it) {
    const YAML::Node key = it->first;
    const std::string k = key.IsScalar() ? key.Scalar() : std::string("?");
    const std::string kpath = join(path, k);
    if (auto [pos, fresh] = seen.emplace(k, mark(key).line); !fresh) {
      report(key, kpath, "duplicate key (first at line " + std::to_string(pos->second) + ")");
      continue;
    }
    if (std::find(known.begin(), known.end(), k) != known.end()) continue;
    std::string msg = "unknown key";
    if (auto near = nearest(k, known)) {
      msg += "; did you mean '" + *near + "'?";
    } else {
      msg += " (known keys: ";
      for (std::size_t i = 0; i < known.size(); ++i) msg += (i ? ", " : "") + known[i];
      msg += ")";
    }
    report(key, kpath, msg);
  }
  return true;
}

bool yaml_reader::check_list(const YAML::Node &n, const std::string &path, std::string_view of_what) {
  if (n.IsNull() || n.IsSequence()) return true;
  report(n, path, "expected a list of " + std::string(of_what) + ", found " + describe(n));
  return false;
}

std::optional<YAML::Node> yaml_reader::child(const YAML::Node &map, const std::string &path, const char *key) {
  if (!map.IsMap()) return std::nullopt;
  YAML::Node c = map[key];
  if (!c.IsDefined() || c.IsNull()) return std::nullopt;
  marks_[join(path, key)] = mark(c);
  return c;
}

std::optional<uint64_t> yaml_reader::as_uint(const YAML::Node &n, const std::string &path, uint64_t min,
                                             uint64_t max) {
  const std::string expected = "expected an integer from " + std::to_string(min) + " to " + std::to_string(max);
  if (!n.IsScalar()) {
    report(n, path, expected + ", found " + describe(n));
    return std::nullopt;
  }
  const std::string &s = n.Scalar();
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec == std::errc::invalid_argument || end != s.data() + s.size()) {
    report(n, path, expected + ", found " + describe(n));
    return std::nullopt;
  }
  if (ec == std::errc::result_out_of_range || v < min || v > max) {
    report(n, path, expected + ", found " + s);
    return std::nullopt;
  }
  return v;
}

std::optional<bool> yaml_reader::as_bool(const YAML::Node &n, const std::string &path) {
  if (n.IsScalar()) {
    if (n.Scalar() == "true") return true;
    if (n.Scalar() == "false") return false;
  }
  report(n, path, "expected true or false, found " + describe(n));
  return std::nullopt;
}

std::optional<std::string> yaml_reader::as_string(const YAML::Node &n, const std::string &path,
                                                  std::string_view expected) {
  if (n.IsScalar()) return n.Scalar();
  report(n, path, "expected " + std::string(expected) + ", found " + describe(n));
  return std::nullopt;
}

std::optional<std::size_t> yaml_reader::as_choice(const YAML::Node &n, const std::string &path,
                                                  const std::vector<std::string> &choices) {
  if (n.IsScalar()) {
    for (std::size_t i = 0; i < choices.size(); ++i)
      if (n.Scalar() == choices[i]) return i;
  }
  std::string msg = "expected one of ";
  for (std::size_t i = 0; i < choices.size(); ++i) msg += (i ? ", " : "") + choices[i];
  msg += ", found " + describe(n);
  if (n.IsScalar())
    if (auto near = nearest(n.Scalar(), choices)) msg += "; did you mean '" + *near + "'?";
  report(n, path, msg);
  return std::nullopt;
}

}  // namespace mtp::cfg
