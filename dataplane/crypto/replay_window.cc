// SPDX-License-Identifier: BSD-3-Clause
// The replay window's update (see replay_window.h for the layout).
#include "replay_window.h"

namespace mtp::crypto {

replay_status replay_window::accept(uint64_t pn) {
  const replay_status status = check(pn);
  if (status != replay_status::ok) return status;
  if (next_ == 0 || pn >= next_) {
    // Slide: clear the blocks the new highest number enters. The old
    // highest's block keeps its bits (numbers below pn in it are still in
    // the window); a jump of ring_blocks blocks or more clears them all.
    const uint64_t old_block = next_ == 0 ? 0 : (next_ - 1) >> 6;
    const uint64_t new_block = pn >> 6;
    if (next_ == 0 || new_block - old_block >= ring_blocks) {
      for (uint64_t &b : ring_) b = 0;
    } else {
      for (uint64_t b = old_block + 1; b <= new_block; ++b) ring_[b % ring_blocks] = 0;
    }
    next_ = pn + 1;
  }
  ring_[slot(pn)] |= uint64_t{1} << (pn & 63);
  return replay_status::ok;
}

}  // namespace mtp::crypto
