// SPDX-License-Identifier: BSD-3-Clause
// result<T, E>: the slow-path error carrier (config, control, start-up).
// A value or an error; errors gather context as they climb the layers so the
// final message reads "loading config: port 'p0': <root cause>". The fast
// path does not use this: it returns status enums and bumps drop counters.
// std::expected is not available to g++ 12 in C++20 nor to clang 14.
#pragma once

#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace mtp {

/// An error message with the context chain added by each caller.
struct error {
  std::string message;

  /// Prefixes a context ("what we were doing") to the message.
  /// @return *this, so calls chain.
  error &context(const std::string &what) {
    message = what + ": " + message;
    return *this;
  }
};

/// Holds either a T or an E. Thread-safety: a plain value type.
template <class T, class E = error>
class [[nodiscard]] result {
 public:
  result(T value) : v_(std::in_place_index<0>, std::move(value)) {}
  result(E err) : v_(std::in_place_index<1>, std::move(err)) {}

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T &value() & { return std::get<0>(v_); }
  const T &value() const & { return std::get<0>(v_); }
  T &&value() && { return std::get<0>(std::move(v_)); }
  T *operator->() { return &value(); }
  const T *operator->() const { return &value(); }
  T &operator*() & { return value(); }
  const T &operator*() const & { return value(); }

  E &err() & { return std::get<1>(v_); }
  const E &err() const & { return std::get<1>(v_); }

 private:
  std::variant<T, E> v_;
};

/// result<void>: success or an error.
template <class E>
class [[nodiscard]] result<void, E> {
 public:
  result() = default;
  result(E err) : err_(std::move(err)), failed_(true) {}

  bool ok() const { return !failed_; }
  explicit operator bool() const { return ok(); }
  E &err() & { return err_; }
  const E &err() const & { return err_; }

 private:
  E err_{};
  bool failed_ = false;
};

/// Builds an error from a message (reads well at return sites).
inline error make_error(std::string message) { return error{std::move(message)}; }

}  // namespace mtp
