// SPDX-License-Identifier: BSD-3-Clause
// See sim.h.
#include "sim.h"

#include <chrono>
#include <cstring>

namespace mtp::sim {

void network::set_link(uint32_t from, uint32_t to, const link_params &p, bool both) {
  links_[{from, to}].p = p;
  if (both) links_[{to, from}].p = p;
}

void network::at(time_ns t, std::function<void()> fn) { timeline_.push({t, seq_++, std::move(fn)}); }

endpoint &network::add(uint32_t node, std::unique_ptr<core::connection> c, std::vector<uint32_t> member_nodes) {
  auto e = std::make_unique<endpoint>();
  e->node = node;
  e->conn = std::move(c);
  e->member_nodes = std::move(member_nodes);
  eps_.push_back(std::move(e));
  return *eps_.back();
}

void network::crash(uint32_t node) {
  crashed_[node] = true;
  for (auto &e : eps_)
    if (e->node == node) e->removed = true;
}

bool network::crashed(uint32_t node) const {
  auto it = crashed_.find(node);
  return it != crashed_.end() && it->second;
}

void network::partition(uint32_t a, uint32_t b, time_ns from, time_ns to) { cuts_.push_back({a, b, from, to}); }

bool network::partitioned(uint32_t a, uint32_t b) const {
  for (const auto &c : cuts_)
    if (((c.a == a && c.b == b) || (c.a == b && c.b == a)) && now_ >= c.from && now_ < c.to) return true;
  return false;
}

void network::inject(uint32_t from, uint32_t to, std::span<const std::byte> pkt) { send(from, to, pkt, true); }

void network::send(uint32_t from, uint32_t to, std::span<const std::byte> pkt, bool injected) {
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
  const time_ns tx_ns =
      static_cast<time_ns>(pkt.size() * 8ull * 1'000'000'000ull / std::max<uint64_t>(l.p.bandwidth_bps, 1));
  const time_ns start = std::max(now_, l.busy_until);
  if ((start - now_) * l.p.bandwidth_bps / 8'000'000'000ull > l.p.queue_bytes) drop = true;
  if (tap_) tap_({from, to, pkt, false, drop, injected});
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
    if (c == 1 && l.p.duplicate_delay_ns) f.at += rng_.below(l.p.duplicate_delay_ns);
    f.seq = seq_++;
    f.from = from;
    f.to = to;
    f.injected = injected;
    f.bytes.assign(pkt.begin(), pkt.end());
    if (impair && rng_.uniform() < l.p.corrupt && !f.bytes.empty()) {
      const uint32_t bits = 1 + static_cast<uint32_t>(rng_.below(std::max<uint32_t>(l.p.corrupt_bits, 1)));
      for (uint32_t k = 0; k < bits; ++k) {
        const uint64_t bit = rng_.below(f.bytes.size() * 8);
        f.bytes[bit / 8] ^= static_cast<std::byte>(1u << (bit % 8));
      }
      ++corrupted_;
      last_impairment_ = now_;
    }
    if (impair && rng_.uniform() < l.p.truncate && f.bytes.size() > 1) {
      f.bytes.resize(rng_.below(f.bytes.size()));
      ++corrupted_;
      last_impairment_ = now_;
    }
    q_.push(std::move(f));
  }
}

void network::deliver(in_flight &f) {
  if (crashed(f.to)) return;
  if (tap_) tap_({f.from, f.to, f.bytes, true, false, f.injected});
  uint32_t sender = 0;
  uint64_t cid = 0;
  if (!core::peek_ids(f.bytes, sender, cid)) return;
  for (auto &e : eps_) {
    if (e->removed || e->node != f.to || e->conn->id() != cid) continue;
    // Address binding (the daemon's check): a sender id is accepted only
    // from the node it belongs to.
    const std::size_t mi = e->conn->member_index(sender);
    if (mi < e->member_nodes.size() && e->member_nodes[mi] != f.from) {
      ++wrong_address_;
      return;
    }
    e->conn->on_packet(f.bytes, now_);
    return;
  }
  auto acc = acceptors_.find(f.to);
  if (acc == acceptors_.end() || !core::is_opening_packet(f.bytes)) return;
  auto c = acc->second(f.to, f.from, f.bytes, now_);
  if (!c) return;
  endpoint &e = add(f.to, std::move(c), {f.from});
  e.conn->on_packet(f.bytes, now_);
}

void network::forget_finished() {
  for (auto &e : eps_)
    if (!e->removed && e->conn->finished()) e->removed = true;
}

void network::pump() {
  for (std::size_t i = 0; i < eps_.size(); ++i) {
    endpoint &e = *eps_[i];
    if (e.removed || crashed(e.node)) continue;
    for (int guard = 0; guard < 100000; ++guard) {
      const core::transmit t = e.conn->poll_transmit(buf_, now_);
      if (t.bytes == 0) break;
      for (std::size_t m = 0; m < e.member_nodes.size(); ++m)
        if (t.member_mask & (uint64_t{1} << m)) send(e.node, e.member_nodes[m], {buf_.data(), t.bytes}, false);
    }
  }
}

run_end network::run(time_ns limit, const std::function<bool()> &done, const std::function<void()> &app,
                     const std::function<uint64_t()> &progress, time_ns stall_ns, uint64_t max_steps) {
  app();
  pump();
  uint64_t last_progress = progress();
  time_ns progress_at = now_;
  while (!done()) {
    if (++steps_ > max_steps) return run_end::stalled;
    time_ns next = core::never;
    if (!q_.empty()) next = q_.top().at;
    if (!timeline_.empty()) next = std::min(next, timeline_.top().at);
    for (auto &e : eps_)
      if (!e->removed && !crashed(e->node)) next = std::min(next, e->conn->next_expiry());
    if (next == core::never) return done() ? run_end::done : run_end::quiet;
    if (next > limit) return run_end::time_limit;
    now_ = std::max(now_ + 1, next);
    while (!timeline_.empty() && timeline_.top().at <= now_) {
      auto fn = timeline_.top().fn;
      timeline_.pop();
      fn();
    }
    while (!q_.empty() && q_.top().at <= now_) {
      in_flight f = q_.top();
      q_.pop();
      deliver(f);
      app();
    }
    for (auto &e : eps_)
      if (!e->removed && !crashed(e->node) && e->conn->next_expiry() <= now_) e->conn->on_expiry(now_);
    app();
    pump();
    forget_finished();
    const uint64_t p = progress();
    if (p != last_progress) {
      last_progress = p;
      progress_at = now_;
    } else if (now_ - progress_at > stall_ns) {
      return run_end::stalled;
    }
  }
  return run_end::done;
}

}  // namespace mtp::sim
