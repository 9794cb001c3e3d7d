// SPDX-License-Identifier: BSD-3-Clause
// Typed reads from a yaml-cpp tree that turn every mistake into a problem
// with file:line:column and key path instead of an exception. Used only by
// the loader; yaml-cpp exceptions never leave config/.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config.h"

namespace mtp::cfg {

/// Edit distance, for "did you mean" on unknown keys and values.
std::size_t edit_distance(std::string_view a, std::string_view b);

/// The candidate closest to `word` if it is a plausible typo of it.
std::optional<std::string> nearest(std::string_view word, const std::vector<std::string> &candidates);

class yaml_reader {
 public:
  yaml_reader(std::string file, problems &out, std::map<std::string, source_mark> &marks)
      : file_(std::move(file)), out_(out), marks_(marks) {}

  static std::string join(const std::string &path, std::string_view key) {
    return path.empty() ? std::string(key) : path + "." + std::string(key);
  }
  static std::string index(const std::string &path, std::size_t i) { return path + "[" + std::to_string(i) + "]"; }
  static source_mark mark(const YAML::Node &n) {
    const YAML::Mark m = n.Mark();
    return m.is_null() ? source_mark{} : source_mark{m.line + 1, m.column + 1};
  }

  /// Records a problem at node `at`.
  void report(const YAML::Node &at, const std::string &path, std::string message) {
    report(mark(at), path, std::move(message));
  }
  void report(source_mark at, const std::string &path, std::string message) {
    out_.push_back(problem{file_, at, path, std::move(message)});
  }

  /// Checks that `n` is a mapping (null counts as empty) whose keys are all
  /// in `known`, with no key twice. @return false if `n` is not a mapping.
  bool check_map(const YAML::Node &n, const std::string &path, const std::vector<std::string> &known);

  /// Checks that `n` is a list (null counts as empty).
  bool check_list(const YAML::Node &n, const std::string &path, std::string_view of_what);

  /// Present, non-null child, with its mark remembered under its key path.
  std::optional<YAML::Node> child(const YAML::Node &map, const std::string &path, const char *key);

  /// Remembers where `n` (a list item, say) was written, for later checks.
  void remember(const std::string &path, const YAML::Node &n) { marks_[path] = mark(n); }

  // Typed reads of a scalar node. Each returns nullopt after reporting.
  std::optional<uint64_t> as_uint(const YAML::Node &n, const std::string &path, uint64_t min, uint64_t max);
  std::optional<bool> as_bool(const YAML::Node &n, const std::string &path);
  std::optional<std::string> as_string(const YAML::Node &n, const std::string &path, std::string_view expected);
  std::optional<std::size_t> as_choice(const YAML::Node &n, const std::string &path,
                                       const std::vector<std::string> &choices);

  /// Reads map[key] into `out` if present; leaves `out` alone otherwise.
  template <class T>
  void read_uint(const YAML::Node &map, const std::string &path, const char *key, T &out, uint64_t min,
                 uint64_t max) {
    if (auto c = child(map, path, key))
      if (auto v = as_uint(*c, join(path, key), min, max)) out = static_cast<T>(*v);
  }
  void read_bool(const YAML::Node &map, const std::string &path, const char *key, bool &out) {
    if (auto c = child(map, path, key))
      if (auto v = as_bool(*c, join(path, key))) out = *v;
  }

  /// How a found value reads in a message: 70000, 'abc', a list, a mapping.
  static std::string describe(const YAML::Node &n);

  const std::string &file() const { return file_; }

 private:
  std::string file_;
  problems &out_;
  std::map<std::string, source_mark> &marks_;
};

}  // namespace mtp::cfg
