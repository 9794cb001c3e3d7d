// SPDX-License-Identifier: BSD-3-Clause
// A set of disjoint half-open ranges [lo, hi) of uint64, kept sorted and
// merged. Used for received packet numbers, received and acknowledged
// stream bytes, and bytes owed a FORWARD. Storage starts empty and doubles
// as ranges are added, up to a fixed number of ranges; growth is charged
// to the owner's memory account. Inserting a range that would need more
// fails (the set is unchanged and the caller decides: drop, wait or
// forget the oldest) instead of allocating without bound. One owner.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "memory.h"

namespace mtp::core {

class range_set {
 public:
  struct range {
    uint64_t lo, hi;  // [lo, hi)
  };

  /// @param max_ranges the most disjoint ranges it will hold
  explicit range_set(std::size_t max_ranges = 16, memory_account *acct = nullptr) : cap_(max_ranges), acct_(acct) {}
  ~range_set() { give_back(); }
  range_set(range_set &&o) noexcept : r_(std::move(o.r_)), cap_(o.cap_), acct_(o.acct_), charged_(o.charged_) {
    o.charged_ = 0;
  }
  range_set &operator=(range_set &&o) noexcept {
    if (this != &o) {
      give_back();
      r_ = std::move(o.r_);
      cap_ = o.cap_;
      acct_ = o.acct_;
      charged_ = o.charged_;
      o.charged_ = 0;
    }
    return *this;
  }
  range_set(const range_set &) = delete;
  range_set &operator=(const range_set &) = delete;

  /// Makes sure insert(lo, hi) will succeed: no new range is needed (it
  /// touches one), or there is one to spare beyond `keep_free`, growing
  /// the storage if need be. Callers keep a slot free for out-of-order
  /// inserts so the one that fills the lowest gap always fits.
  /// @return false if it would not (the set is unchanged).
  bool make_room(uint64_t lo, uint64_t hi, std::size_t keep_free = 0) {
    if (lo >= hi) return true;
    if (!r_.empty() && lo >= r_.back().lo && lo <= r_.back().hi) return true;  // extends the last range
    if (touches(lo, hi)) return true;
    if (r_.size() + 1 + keep_free > cap_) return false;
    return r_.size() < r_.capacity() || grow();
  }

  /// Adds [lo, hi). @return false if it would need more than the maximum
  /// number of disjoint ranges (less `keep_free`), or memory was refused;
  /// the set is then unchanged.
  bool insert(uint64_t lo, uint64_t hi, std::size_t keep_free = 0) {
    if (lo >= hi) return true;
    // Fast path: extends the last range (in-order arrival).
    if (!r_.empty() && lo >= r_.back().lo && lo <= r_.back().hi) {
      r_.back().hi = std::max(r_.back().hi, hi);
      return true;
    }
    if (!make_room(lo, hi, keep_free)) return false;
    auto first = std::lower_bound(r_.begin(), r_.end(), lo, [](const range &a, uint64_t v) { return a.hi < v; });
    auto last = first;
    while (last != r_.end() && last->lo <= hi) ++last;
    if (first == last) {
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

  /// True if [lo, hi) touches or overlaps a range (an insert would merge).
  bool touches(uint64_t lo, uint64_t hi) const {
    auto it = std::lower_bound(r_.begin(), r_.end(), lo, [](const range &a, uint64_t v) { return a.hi < v; });
    return it != r_.end() && it->lo <= hi;
  }

  /// True if some value of [lo, hi) is in the set.
  bool overlaps(uint64_t lo, uint64_t hi) const {
    if (lo >= hi) return false;
    auto it = std::lower_bound(r_.begin(), r_.end(), lo, [](const range &a, uint64_t v) { return a.hi <= v; });
    return it != r_.end() && it->lo < hi;
  }

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

  /// Room for `n` ranges now (charged), so inserts up to that many never
  /// need memory later. @return false if refused.
  /// With `force`, past the budget's limit (a minimum that cannot be refused).
  bool reserve(std::size_t n, bool force = false) {
    n = std::min(n, cap_);
    if (n <= r_.capacity()) return true;
    const uint64_t more = (n - r_.capacity()) * sizeof(range);
    if (acct_ != nullptr) {
      if (force)
        acct_->charge_always(more);
      else if (!acct_->charge(more))
        return false;
    }
    r_.reserve(n);
    charged_ += more;
    return true;
  }

  /// Gives back the storage of an empty set.
  void trim() {
    if (r_.empty() && r_.capacity() > 0) give_back();
  }
  /// Gives back storage beyond `keep` ranges when the set is empty.
  void trim_to(std::size_t keep) {
    if (r_.empty() && r_.capacity() > keep) {
      give_back();
      (void)reserve(keep);
    }
  }

  bool empty() const { return r_.empty(); }
  /// Full: another disjoint range would exceed the maximum.
  bool full() const { return r_.size() >= cap_; }
  std::size_t size() const { return r_.size(); }
  std::size_t max_ranges() const { return cap_; }
  const range &operator[](std::size_t i) const { return r_[i]; }
  const range &front() const { return r_.front(); }
  uint64_t max() const { return r_.empty() ? 0 : r_.back().hi; }  ///< one past the highest value
  void clear() { r_.clear(); }

 private:
  bool grow() {
    const std::size_t want = std::min<std::size_t>(cap_, std::max<std::size_t>(4, r_.capacity() * 2));
    const uint64_t more = (want - r_.capacity()) * sizeof(range);
    if (acct_ != nullptr && !acct_->charge(more)) return false;
    r_.reserve(want);
    charged_ += more;
    return true;
  }
  void give_back() {
    if (acct_ != nullptr) acct_->release(charged_);
    charged_ = 0;
    std::vector<range>().swap(r_);
  }

  std::vector<range> r_;
  std::size_t cap_;
  memory_account *acct_ = nullptr;
  uint64_t charged_ = 0;
};

}  // namespace mtp::core
