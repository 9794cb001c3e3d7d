// SPDX-License-Identifier: BSD-3-Clause
// A set of disjoint half-open ranges [lo, hi) of uint64, kept sorted and
// merged, in storage sized once at creation. Used for received packet
// numbers, received and acknowledged stream bytes. Inserting past capacity
// fails (the caller drops and counts) instead of allocating. One owner.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace mtp::core {

class range_set {
 public:
  struct range {
    uint64_t lo, hi;  // [lo, hi)
  };

  explicit range_set(std::size_t capacity = 16) { r_.reserve(capacity); cap_ = capacity; }

  /// Adds [lo, hi). @return false if it would need more than `capacity`
  /// disjoint ranges (the set is then unchanged).
  bool insert(uint64_t lo, uint64_t hi) {
    if (lo >= hi) return true;
    // Fast path: extends the last range (in-order arrival).
    if (!r_.empty() && lo >= r_.back().lo && lo <= r_.back().hi) {
      r_.back().hi = std::max(r_.back().hi, hi);
      return true;
    }
    auto first = std::lower_bound(r_.begin(), r_.end(), lo, [](const range &a, uint64_t v) { return a.hi < v; });
    auto last = first;
    while (last != r_.end() && last->lo <= hi) ++last;
    if (first == last) {
      if (r_.size() >= cap_) return false;
      r_.insert(first, range{lo, hi});
      return true;
    }
    first->lo = std::min(first->lo, lo);
    first->hi = std::max((last - 1)->hi, hi);
    r_.erase(first + 1, last);
    return true;
  }

  /// True if every value of [lo, hi) is in the set.
  bool contains(uint64_t lo, uint64_t hi) const {
    if (lo >= hi) return true;
    auto it = std::lower_bound(r_.begin(), r_.end(), lo, [](const range &a, uint64_t v) { return a.hi <= v; });
    return it != r_.end() && it->lo <= lo && it->hi >= hi;
  }
  bool contains(uint64_t v) const { return contains(v, v + 1); }

  /// End of the range that starts at or covers `from`, or `from` if none.
  uint64_t contiguous_end(uint64_t from) const {
    auto it = std::lower_bound(r_.begin(), r_.end(), from, [](const range &a, uint64_t v) { return a.hi <= v; });
    return it != r_.end() && it->lo <= from ? it->hi : from;
  }

  /// Forgets everything below `v` (values < v).
  void erase_below(uint64_t v) {
    std::size_t n = 0;
    while (n < r_.size() && r_[n].hi <= v) ++n;
    r_.erase(r_.begin(), r_.begin() + static_cast<long>(n));
    if (!r_.empty() && r_.front().lo < v) r_.front().lo = v;
  }

  /// Drops the lowest range (to make room when only recent ranges matter).
  void drop_lowest() {
    if (!r_.empty()) r_.erase(r_.begin());
  }

  bool empty() const { return r_.empty(); }
  bool full() const { return r_.size() >= cap_; }
  std::size_t size() const { return r_.size(); }
  const range &operator[](std::size_t i) const { return r_[i]; }
  uint64_t max() const { return r_.empty() ? 0 : r_.back().hi; }  ///< one past the highest value
  void clear() { r_.clear(); }

 private:
  std::vector<range> r_;
  std::size_t cap_;
};

}  // namespace mtp::core
