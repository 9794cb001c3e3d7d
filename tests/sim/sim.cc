// SPDX-License-Identifier: BSD-3-Clause
// See sim.h.
#include "sim.h"

#include <cstring>

namespace mtp::sim {

void network::set_link(uint32_t from, uint32_t to, const link_params &p, bool both) {
  links_[{from, to}].p = p;
  if (both) links_[{to, from}].p = p;
}

endpoint &network::add(uint32_t node, std::unique_ptr<core::connection> c, std::vector<uint32_t> member_nodes) {
  auto e = std::make_unique<endpoint>();
  e->node = node;
  e->conn = std::move(c);
  e->member_nodes = std::move(member_nodes);
  eps_.push_back(std::move(e));
  return *eps_.back();
}

void network::partition(uint32_t a, uint32_t b, time_ns from, time_ns to) { cuts_.push_back({a, b, from, to}); }

bool network::partitioned(uint32_t a, uint32_t b) const {
  for (const auto &c : cuts_)
    if (((c.a == a && c.b == b) || (c.a == b && c.b == a)) && now_ >= c.from && now_ < c.to) return true;
  return false;
}

void network::send(uint32_t from, uint32_t to, uint64_t conn_id, std::span<const std::byte> pkt) {
  link_state &l = links_[{from, to}];
  const bool impair = now_ < calm_after_;
  bool drop = partitioned(from, to);
  if (impair && !drop) {
    if (l.p.burst_enter > 0) {
      if (l.bad ? rng_.uniform() < l.p.burst_exit : rng_.uniform() < l.p.burst_enter) l.bad = !l.bad;
      if (l.bad && rng_.uniform() < l.p.burst_loss) drop = true;
    }
    if (rng_.uniform() < l.p.loss) drop = true;
  }
  // Bandwidth: serialise behind what is queued; tail-drop past the queue.
  const time_ns tx_ns = static_cast<time_ns>(pkt.size() * 8ull * 1'000'000'000ull / std::max<uint64_t>(l.p.bandwidth_bps, 1));
  const time_ns start = std::max(now_, l.busy_until);
  if ((start - now_) * l.p.bandwidth_bps / 8'000'000'000ull > l.p.queue_bytes) drop = true;
  if (tap_) tap_(from, to, pkt, drop);
  if (drop) {
    ++dropped_;
    if (impair) last_impairment_ = now_;
    return;
  }
  l.busy_until = start + tx_ns;
  int copies = 1;
  if (impair && rng_.uniform() < l.p.duplicate) {
    copies = 2;
    last_impairment_ = now_;
  }
  for (int c = 0; c < copies; ++c) {
    in_flight f;
    f.at = l.busy_until + l.p.delay_ns + (l.p.jitter_ns ? rng_.below(l.p.jitter_ns) : 0);
    f.seq = seq_++;
    f.from = from;
    f.to = to;
    f.conn_id = conn_id;
    f.bytes.assign(pkt.begin(), pkt.end());
    if (impair && rng_.uniform() < l.p.corrupt && !f.bytes.empty()) {
      const uint64_t bit = rng_.below(f.bytes.size() * 8);
      f.bytes[bit / 8] ^= static_cast<std::byte>(1u << (bit % 8));
      ++corrupted_;
      last_impairment_ = now_;
    }
    q_.push(std::move(f));
  }
}

void network::pump() {
  for (auto &e : eps_) {
    if (crashed_[e->node]) continue;
    for (int guard = 0; guard < 100000; ++guard) {
      const core::transmit t = e->conn->poll_transmit(buf_, now_);
      if (t.bytes == 0) break;
      // The connection id is in the header at offset 8 (protocol.md 3.1).
      uint64_t cid = 0;
      for (int i = 0; i < 8; ++i) cid = (cid << 8) | std::to_integer<uint64_t>(buf_[8 + static_cast<std::size_t>(i)]);
      for (std::size_t m = 0; m < e->member_nodes.size(); ++m)
        if (t.member_mask & (uint64_t{1} << m)) send(e->node, e->member_nodes[m], cid, {buf_.data(), t.bytes});
    }
  }
}

bool network::run(time_ns limit, const std::function<bool()> &done, const std::function<void()> &app) {
  app();
  pump();
  while (!done()) {
    time_ns next = core::never;
    if (!q_.empty()) next = q_.top().at;
    for (auto &e : eps_)
      if (!crashed_[e->node]) next = std::min(next, e->conn->next_expiry());
    if (next == core::never || next > limit) return done();
    now_ = std::max(now_ + 1, next);
    while (!q_.empty() && q_.top().at <= now_) {
      in_flight f = q_.top();
      q_.pop();
      if (crashed_[f.to]) continue;
      for (auto &e : eps_)
        if (e->node == f.to && e->conn->id() == f.conn_id) e->conn->on_packet(f.bytes, now_);
      app();
    }
    for (auto &e : eps_)
      if (!crashed_[e->node] && e->conn->next_expiry() <= now_) e->conn->on_expiry(now_);
    app();
    pump();
  }
  return true;
}

}  // namespace mtp::sim
