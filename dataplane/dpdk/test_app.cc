// SPDX-License-Identifier: BSD-3-Clause
// See test_app.h.
#include "test_app.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "log.h"

namespace mtp::dp {

namespace {

using shm::descriptor;

/// The region of a built-in application: one channel, rings deep enough
/// for a poll's worth of messages, buffers of a 1400 B message each, and
/// as many send buffers as a 4 MiB stream window holds of 512 B messages:
/// send buffers stay with mtpd until their message is stable, so they,
/// not the connection, would otherwise bound what is in flight (32 MiB of
/// heap per worker running the source or a sink).
shm::region_plan builtin_plan() {
  shm::region_plan p;
  p.channel_count = 1;
  p.to_daemon_slots = 8192;
  p.to_app_slots = 8192;
  p.buffer_count = 16384;
  p.buffer_bytes = 2048;
  p.buffer_headroom = 128;
  p.tx_buffers = 8192;
  return p;
}

const char *reason_text(uint32_t r) {
  switch (static_cast<shm::reason>(r)) {
#define MTP_X(name, value, text) \
  case shm::reason::name:        \
    return text;
    MTP_SHM_REASONS(MTP_X)
#undef MTP_X
  }
  return "unknown reason";
}

uint8_t log2_of(uint32_t bytes) {
  uint8_t n = 12;
  while (n < 26 && (uint64_t{1} << n) < bytes) ++n;
  return n;
}

}  // namespace

test_app::test_app(const runtime &rt, worker_context &w, bool source, bool sink, core::time_ns now_ns)
    : rt_(rt), w_(w), source_(source), start_ns_(now_ns), sink_(sink) {
  if (const char *why = shm::region_layout_of(builtin_plan(), layout_)) {
    MTP_LOG(ERR, "test application: bad region plan: %s\n", why);
    return;
  }
  const uint64_t bytes = (layout_.region_bytes + 4095) & ~uint64_t{4095};
  base_ = std::aligned_alloc(4096, bytes);
  if (base_ == nullptr) {
    MTP_LOG(ERR, "test application: no memory for its %llu B region; the test source and sink do not run on "
            "worker lcore %u\n", static_cast<unsigned long long>(bytes), w_.lcore);
    return;
  }
  std::memset(base_, 0, bytes);
  shm::init_region(base_, layout_, static_cast<uint64_t>(getpid()), rt_.config.node.id);
  handoff_.app_id = 0;
  handoff_.pid = getpid();
  handoff_.base = base_;
  handoff_.layout = layout_;
  shm::channel_header *ch = shm::channel_at(base_, layout_, 0);
  commands_ = shm::ring_producer<descriptor>(shm::to_daemon_indices(ch, layout_), shm::to_daemon_slots(ch, layout_),
                                             layout_.plan.to_daemon_slots);
  events_ = shm::ring_consumer<descriptor>(shm::to_app_indices(ch, layout_), shm::to_app_slots(ch, layout_),
                                           layout_.plan.to_app_slots);
  for (uint32_t b = layout_.plan.tx_buffers; b-- > 0;) free_send_.push_back(b);
  data_room_ = layout_.plan.buffer_bytes - layout_.plan.buffer_headroom;
  const auto &src = rt_.config.test.source;
  messages_ = src.message_bytes ? (src.total_bytes + src.message_bytes - 1) / src.message_bytes : 0;
}

test_app::~test_app() { std::free(base_); }

void test_app::command(const descriptor &d) {
  if (backlog_.empty() && commands_.push(d)) return;
  backlog_.push_back(d);
}

bool test_app::flush_backlog() {
  while (!backlog_.empty()) {
    if (!commands_.push(backlog_.front())) return false;
    backlog_.pop_front();
  }
  return true;
}

bool test_app::post_params(shm::command type, uint64_t handle, const shm::initiate_params &ip) {
  if (free_send_.empty()) return false;
  const uint32_t b = free_send_.back();
  free_send_.pop_back();
  std::memcpy(shm::buffer_at(base_, layout_, b) + layout_.plan.buffer_headroom, &ip, sizeof ip);
  descriptor d{};
  d.type = static_cast<uint16_t>(type);
  d.buffer = b;
  d.offset = layout_.plan.buffer_headroom;
  d.length = sizeof ip;
  d.connection = handle;
  command(d);
  return true;
}

bool test_app::send(uint64_t handle, uint64_t stream, const std::byte *bytes, std::size_t len, uint16_t flags,
                    uint32_t max_retx) {
  const std::size_t pieces = std::max<std::size_t>(1, (len + data_room_ - 1) / data_room_);
  if (free_send_.size() < pieces || !backlog_.empty() || !commands_.has_room(static_cast<uint32_t>(pieces)))
    return false;
  for (std::size_t done = 0, k = 0; k < pieces; ++k) {
    const std::size_t n = std::min<std::size_t>(data_room_, len - done);
    const uint32_t b = free_send_.back();
    free_send_.pop_back();
    // The copy an application makes into its send buffer; mtpd reads it
    // in place from here on.
    std::memcpy(shm::buffer_at(base_, layout_, b) + layout_.plan.buffer_headroom, bytes + done, n);
    descriptor d{};
    d.type = static_cast<uint16_t>(shm::command::send);
    d.flags = static_cast<uint16_t>(flags | (k + 1 < pieces ? shm::send_more : 0));
    d.buffer = b;
    d.offset = layout_.plan.buffer_headroom;
    d.length = static_cast<uint32_t>(n);
    d.connection = handle;
    d.stream = stream;
    d.member = max_retx;
    commands_.push(d);
    done += n;
  }
  return true;
}

unsigned test_app::feed_source(core::time_ns now_ns) {
  const auto &src = rt_.config.test.source;
  if (!source_started_) {
    shm::initiate_params ip{};
    ip.magic = shm::initiate_params::current_magic;
    ip.security = 1;  // whatever the node runs
    ip.member_count = static_cast<uint32_t>(std::min<std::size_t>(src.members.size(), shm::initiate_params::max_members));
    std::copy_n(src.members.begin(), ip.member_count, ip.members);
    ip.threshold = src.threshold;
    ip.ordering = src.unordered ? 0 : 1;
    ip.reliability = static_cast<uint8_t>(src.reliability);
    ip.streams = src.streams;
    ip.window_log2 = log2_of(src.window_bytes);
    ip.connection_id = src.connection_id;
    if (!post_params(shm::command::initiate, source_handle_, ip)) return 0;
    source_started_ = true;
    start_ns_ = now_ns;
    MTP_LOG(INFO, "source: connection %llx on worker lcore %u to %zu member(s), %llu bytes in %u B messages on %u "
            "stream(s)\n", static_cast<unsigned long long>(src.connection_id), w_.lcore, src.members.size(),
            static_cast<unsigned long long>(src.total_bytes), src.message_bytes, src.streams);
  }
  unsigned work = 0;
  const uint16_t flags = static_cast<uint16_t>((src.reliability == 1   ? shm::send_partial
                                                : src.reliability == 2 ? shm::send_unreliable
                                                                       : shm::send_reliable) |
                                               (src.pingpong ? shm::send_low_latency : 0));
  // A rate, if set, caps what has been queued since the start.
  const uint64_t allowed = src.rate_bytes_per_s == 0
                               ? src.total_bytes
                               : static_cast<uint64_t>(static_cast<double>(src.rate_bytes_per_s) *
                                                       static_cast<double>(now_ns - start_ns_) / 1e9) + src.message_bytes;
  while (next_ < std::min(src.total_bytes, allowed) && !(src.pingpong && ping_outstanding_)) {
    // Round-robin over streams, one message at a time.
    const uint64_t msg_index = next_ / src.message_bytes;
    const uint64_t stream = msg_index % src.streams;
    const uint64_t off = msg_index / src.streams * src.message_bytes;
    const uint64_t len = std::min<uint64_t>(src.message_bytes, src.total_bytes - next_);
    if (!send(source_handle_, stream, pattern_.at(stream, off), static_cast<std::size_t>(len), flags,
              src.max_retransmissions))
      break;
    if (src.pingpong) {
      ping_outstanding_ = true;
      ping_sent_ns_ = now_ns;
    }
    next_ += len;
    w_.counters.source_bytes_queued.add(len);
    ++work;
  }
  return work;
}

void test_app::on_received(const descriptor &e, core::time_ns now_ns) {
  const auto &sk = rt_.config.test.sink;
  const std::byte *data = shm::buffer_at(base_, layout_, e.buffer) + e.offset;
  const bool eom = (e.flags & shm::end_of_message) != 0;
  if (source_ && e.connection == source_handle_) {
    // Ping-pong: the echo of the outstanding message is back.
    if (eom && ping_outstanding_) {
      w_.counters.record_rtt(now_ns - ping_sent_ns_);
      ping_outstanding_ = false;
    }
  } else if (auto it = sinks_.find(e.connection); it != sinks_.end() && !(e.flags & shm::is_datagram)) {
    sink_connection &c = it->second;
    if (e.stream < c.next_offset.size()) {
      if (e.value != c.next_offset[e.stream]) w_.counters.sink_order_errors.inc();
      c.next_offset[e.stream] = e.value + e.length;
    }
    if (sk.verify && std::memcmp(data, pattern_.at(e.stream, e.value), e.length) != 0) {
      const std::byte *want = pattern_.at(e.stream, e.value);
      uint64_t bad = 0;
      for (uint32_t i = 0; i < e.length; ++i) bad += data[i] != want[i];
      w_.counters.sink_verify_errors.add(bad);
    }
    w_.counters.sink_bytes.add(e.length);
    if (eom) w_.counters.sink_messages.inc();
    if (sk.echo) {
      c.echo.insert(c.echo.end(), data, data + e.length);
      if (eom) {
        // Sent back whole, at once; without room now it is dropped and the
        // source's round trip never ends: counted where it shows.
        if (!send(e.connection, e.stream, c.echo.data(), c.echo.size(), shm::send_low_latency, 0))
          w_.counters.app_backpressure.inc();
        c.echo.clear();
      }
    }
  }
  // The receive buffer goes back to mtpd.
  descriptor r{};
  r.type = static_cast<uint16_t>(shm::command::release);
  r.buffer = e.buffer;
  command(r);
}

void test_app::on_event(const descriptor &e, core::time_ns now_ns) {
  const auto &src = rt_.config.test.source;
  const bool from_source = source_ && e.connection == source_handle_;
  switch (static_cast<shm::event>(e.type)) {
    case shm::event::received:
      on_received(e, now_ns);
      return;
    case shm::event::buffer_returned:
      if (e.buffer < layout_.plan.tx_buffers) free_send_.push_back(e.buffer);
      return;
    case shm::event::buffers_returned: {
      const shm::buffer_batch b = shm::batch_of(e);
      for (uint32_t k = 0; k < b.count && k < shm::buffer_batch::max_buffers; ++k)
        if (b.buffers[k] < layout_.plan.tx_buffers) free_send_.push_back(b.buffers[k]);
      return;
    }
    case shm::event::command_error:
      if (e.buffer < layout_.plan.tx_buffers) free_send_.push_back(e.buffer);
      if (!warned_) {
        warned_ = true;
        MTP_LOG(ERR, "test application on worker lcore %u: command %llu refused: %s\n", w_.lcore,
                static_cast<unsigned long long>(e.value), reason_text(e.reason));
      }
      if (e.value == static_cast<uint64_t>(shm::command::initiate)) source_done_ = true;
      return;
    case shm::event::connection_received:
      sinks_[e.connection].next_offset.assign(rt_.config.limits.streams_per_session, 0);
      if (e.buffer != shm::no_buffer) {
        // A secured node lends the client's identity: the sink trusts the
        // handshake and gives the buffer straight back.
        descriptor r{};
        r.type = static_cast<uint16_t>(shm::command::release);
        r.buffer = e.buffer;
        command(r);
      }
      return;
    case shm::event::sent:
      if (!from_source) return;
      ++outcomes_;
      w_.counters.source_messages_stable.inc();
      {
        // Messages are message_bytes long except the very last one.
        const uint64_t before = std::min(src.total_bytes, stable_msgs_ * src.message_bytes);
        ++stable_msgs_;
        w_.counters.source_bytes_stable.add(std::min(src.total_bytes, stable_msgs_ * src.message_bytes) - before);
      }
      return;
    case shm::event::expired:
      if (!from_source) return;
      ++outcomes_;
      w_.counters.source_messages_expired.inc();
      return;
    case shm::event::send_error:
      if (e.buffer < layout_.plan.tx_buffers) free_send_.push_back(e.buffer);
      if (from_source && e.message != UINT64_MAX) ++outcomes_;
      return;
    case shm::event::closed:
      if (from_source) {
        source_done_ = true;
        MTP_LOG(INFO, "source: connection %llx closed (code %llu)\n",
                static_cast<unsigned long long>(src.connection_id), static_cast<unsigned long long>(e.value));
      } else if (sinks_.erase(e.connection)) {
        w_.counters.sink_closed.inc();
        MTP_LOG(INFO, "sink: a connection was closed by its sender (code %llu)\n", static_cast<unsigned long long>(e.value));
      }
      return;
    case shm::event::connection_error:
      if (from_source) source_done_ = true;
      sinks_.erase(e.connection);
      return;
    default:
      return;
  }
}

unsigned test_app::run(core::time_ns now_ns) {
  if (base_ == nullptr) return 0;
  unsigned work = 0;
  descriptor evs[64];
  for (uint32_t n; (n = events_.pop_burst(evs, 64)) != 0;) {
    for (uint32_t i = 0; i < n; ++i) on_event(evs[i], now_ns);
    work += n;
  }
  if (!flush_backlog()) return work + 1;
  if (sink_ && !listening_) {
    shm::initiate_params ip{};
    ip.magic = shm::initiate_params::current_magic;
    ip.security = 1;  // whatever the node runs
    // Every stream the source may send on, so echoes go back on theirs.
    ip.streams = rt_.config.test.sink.echo ? rt_.config.limits.streams_per_session : 1;
    ip.ordering = 1;
    ip.window_log2 = log2_of(rt_.config.test.sink.window_bytes);
    if (post_params(shm::command::listen, listener_handle, ip)) listening_ = true;
  }
  if (source_ && !source_done_) {
    work += feed_source(now_ns);
    const auto &src = rt_.config.test.source;
    if (next_ >= src.total_bytes && outcomes_ >= messages_ && source_started_) {
      source_done_ = true;
      const double secs = static_cast<double>(now_ns - start_ns_) / 1e9;
      w_.counters.source_complete_us.add(std::max<uint64_t>(1, (now_ns - start_ns_) / 1000));
      MTP_LOG(INFO, "source: all %llu bytes stable at %u member(s) in %.3f s (%.2f Gbit/s); closing\n",
              static_cast<unsigned long long>(src.total_bytes), static_cast<unsigned>(src.members.size()), secs,
              static_cast<double>(src.total_bytes) * 8 / secs / 1e9);
      descriptor d{};
      d.type = static_cast<uint16_t>(shm::command::close);
      d.connection = source_handle_;
      command(d);
      ++work;
    }
  }
  return work;
}

}  // namespace mtp::dp
