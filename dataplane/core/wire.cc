// SPDX-License-Identifier: BSD-3-Clause
// See wire.h and docs/protocol.md.
#include "wire.h"

#include <cstring>

#include "crc32c.h"

namespace mtp::core {

namespace {

constexpr std::string_view status_names[] = {
#define MTP_X(name, text) #name,
    MTP_PARSE_STATUSES(MTP_X)
#undef MTP_X
};

constexpr std::string_view drop_names[] = {
#define MTP_X(name, text) #name,
    MTP_DROP_REASONS(MTP_X)
#undef MTP_X
};

// drop_reason_of() relies on the parse failures leading the drop list in
// the same order, which one list gives both.
#define MTP_X(name, text) \
  static_assert(static_cast<int>(drop_reason::name) + 1 == static_cast<int>(parse_status::name));
MTP_PARSE_FAILURES(MTP_X)
#undef MTP_X

constexpr uint8_t stream_flag_fin = 0x01;
constexpr uint8_t stream_flag_msg = 0x02;
constexpr uint8_t stream_flag_unordered = 0x04;

inline uint64_t load_be(const std::byte *p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | std::to_integer<uint64_t>(p[i]);
  return v;
}
inline void store_be(std::byte *p, uint64_t v, int n) {
  for (int i = n - 1; i >= 0; --i) {
    p[i] = static_cast<std::byte>(v & 0xff);
    v >>= 8;
  }
}

}  // namespace

std::string_view parse_status_name(parse_status s) {
  const auto i = static_cast<std::size_t>(s);
  return i < parse_status_count ? status_names[i] : "invalid";
}

std::string_view drop_reason_name(drop_reason r) {
  const auto i = static_cast<std::size_t>(r);
  return i < drop_reason_count ? drop_names[i] : "invalid";
}

parse_status parse_packet(std::span<const std::byte> packet, packet_header &hdr, std::span<const std::byte> &frames,
                          protection p) {
  // The version first (protocol.md 3.5): the rest depends on it.
  if (packet.empty()) return parse_status::too_short;
  hdr.version = std::to_integer<uint8_t>(packet[0]);
  if (hdr.version != protocol_version) return parse_status::bad_version;
  const std::size_t trailer = trailer_size(p);
  // A plaintext packet on a secured connection is named for what it is,
  // whatever its length.
  if (p == protection::sealed && packet.size() >= header_size &&
      !(std::to_integer<uint8_t>(packet[2]) & flag_sealed))
    return parse_status::not_sealed;
  if (packet.size() < header_size + trailer) return parse_status::too_short;
  const uint8_t type = std::to_integer<uint8_t>(packet[1]);
  if (type != static_cast<uint8_t>(packet_type::data)) return parse_status::bad_type;
  hdr.type = static_cast<packet_type>(type);
  hdr.flags = std::to_integer<uint8_t>(packet[2]);
  const std::size_t body = packet.size() - trailer;
  if (p == protection::sealed) {
    // Opened by the caller: the tag covered every byte (9.4).
  } else {
    if (!(hdr.flags & flag_crc)) return parse_status::no_crc;
    if (crc32c(packet.first(body)) != static_cast<uint32_t>(load_be(packet.data() + body, 4)))
      return parse_status::bad_crc;
  }
  hdr.sender_id = static_cast<uint32_t>(load_be(packet.data() + 4, 4));
  hdr.connection_id = load_be(packet.data() + 8, 8);
  hdr.packet_number = load_be(packet.data() + 16, 8);
  if (hdr.packet_number > max_packet_number) return parse_status::bad_packet_number;
  if (hdr.sender_id == reserved_member_id_low || hdr.sender_id == reserved_member_id_high)
    return parse_status::bad_sender_id;
  frames = packet.subspan(header_size, body - header_size);
  return parse_status::ok;
}

parse_status frame_reader::next(frame &f) {
  const std::size_t start = pos_;
  auto fail = [&](parse_status s) {
    pos_ = start;
    return s;
  };
  auto var = [&](uint64_t &v) { return read_varint(in_, pos_, v); };
  auto bytes = [&](uint64_t n, std::span<const std::byte> &out) {
    if (n > in_.size() - pos_) return false;
    out = in_.subspan(pos_, static_cast<std::size_t>(n));
    pos_ += static_cast<std::size_t>(n);
    return true;
  };
  if (pos_ >= in_.size()) return parse_status::malformed_frame;
  const uint8_t t = std::to_integer<uint8_t>(in_[pos_++]);
  f.type = static_cast<frame_type>(t);
  switch (f.type) {
    case frame_type::padding:
      // Padding runs to the end of the packet (protocol.md 4.1).
      while (pos_ < in_.size())
        if (std::to_integer<uint8_t>(in_[pos_++]) != 0) return fail(parse_status::malformed_frame);
      return parse_status::ok;
    case frame_type::ping:
      return parse_status::ok;
    case frame_type::ack: {
      auto &a = f.ack;
      if (!var(a.largest) || !var(a.ack_delay_us) || !var(a.range_count) || !var(a.first_range))
        return fail(parse_status::malformed_frame);
      if (a.first_range > a.largest) return fail(parse_status::malformed_frame);
      const std::size_t ranges_start = pos_;
      uint64_t v;
      for (uint64_t i = 0; i < a.range_count * 2; ++i)
        if (!var(v)) return fail(parse_status::malformed_frame);
      a.ranges = in_.subspan(ranges_start, pos_ - ranges_start);
      // Underflow below packet number 0 is checked here so the engine never
      // sees a frame whose ranges it cannot walk.
      ack_range_iter it(a);
      uint64_t lo, hi;
      while (it.next(lo, hi)) {
      }
      if (it.error()) return fail(parse_status::malformed_frame);
      return parse_status::ok;
    }
    case frame_type::group_ack: {
      auto &g = f.group_ack;
      if (!var(g.stream_id) || !var(g.stable_offset) || !var(g.acked_members) || !var(g.total_members) ||
          g.acked_members > g.total_members)
        return fail(parse_status::malformed_frame);
      return parse_status::ok;
    }
    case frame_type::stream: {
      auto &s = f.stream;
      if (pos_ >= in_.size()) return fail(parse_status::malformed_frame);
      const uint8_t flags = std::to_integer<uint8_t>(in_[pos_++]);
      if (flags & ~(stream_flag_fin | stream_flag_msg | stream_flag_unordered)) return fail(parse_status::malformed_frame);
      s.fin = flags & stream_flag_fin;
      s.message = flags & stream_flag_msg;
      s.unordered = flags & stream_flag_unordered;
      if (s.unordered && !s.message) return fail(parse_status::malformed_frame);
      uint64_t len = 0;
      if (!var(s.stream_id) || !var(s.offset) || !var(len)) return fail(parse_status::malformed_frame);
      if (s.offset + len > varint_max) return fail(parse_status::malformed_frame);
      s.msg_start = s.msg_length = 0;
      if (s.message) {
        uint64_t delta = 0;
        if (!var(delta) || !var(s.msg_length) || delta > s.offset) return fail(parse_status::malformed_frame);
        s.msg_start = s.offset - delta;
        if (s.msg_length == 0 || s.offset + len > s.msg_start + s.msg_length) return fail(parse_status::malformed_frame);
      }
      if (!bytes(len, s.data)) return fail(parse_status::malformed_frame);
      return parse_status::ok;
    }
    case frame_type::datagram: {
      uint64_t len = 0;
      if (!var(len) || !bytes(len, f.datagram)) return fail(parse_status::malformed_frame);
      return parse_status::ok;
    }
    case frame_type::credit: {
      uint64_t id1 = 0;
      if (!var(id1) || !var(f.credit.max_offset)) return fail(parse_status::malformed_frame);
      f.credit.connection = id1 == 0;
      f.credit.stream_id = id1 ? id1 - 1 : 0;
      return parse_status::ok;
    }
    case frame_type::heartbeat:
      if (!var(f.heartbeat_seq)) return fail(parse_status::malformed_frame);
      return parse_status::ok;
    case frame_type::close: {
      uint64_t len = 0;
      std::span<const std::byte> reason;
      if (!var(f.close.error_code) || !var(len) || !bytes(len, reason)) return fail(parse_status::malformed_frame);
      f.close.reason = {reinterpret_cast<const char *>(reason.data()), reason.size()};
      return parse_status::ok;
    }
    case frame_type::forward:
      if (!var(f.forward.stream_id) || !var(f.forward.offset) || !var(f.forward.length) ||
          f.forward.offset + f.forward.length > varint_max)
        return fail(parse_status::malformed_frame);
      return parse_status::ok;
    case frame_type::group_key:
      // Known only inside a sealed packet (9.6): plaintext keeps it reserved.
      if (!sealed_) return fail(parse_status::unknown_frame);
      if (!var(f.key_epoch) || !bytes(group_secret_size, f.group_secret)) return fail(parse_status::malformed_frame);
      return parse_status::ok;
    default:
      if (is_extension_frame(t)) {
        uint64_t len = 0;
        if (!var(len) || !bytes(len, f.extension)) return fail(parse_status::malformed_frame);
        return parse_status::ok;
      }
      return fail(parse_status::unknown_frame);
  }
}

ack_range_iter::ack_range_iter(const ack_frame &a) : a_(a), next_hi_(a.largest) {}

bool ack_range_iter::next(uint64_t &lo, uint64_t &hi) {
  if (error_ || index_ > a_.range_count) return false;
  if (index_ == 0) {
    if (a_.first_range > a_.largest) return error_ = true, false;
    hi = a_.largest;
    lo = a_.largest - a_.first_range;
  } else {
    uint64_t gap = 0, len = 0;
    if (!read_varint(a_.ranges, pos_, gap) || !read_varint(a_.ranges, pos_, len)) return error_ = true, false;
    // next_hi_ holds the previous range's low end.
    if (next_hi_ < gap + 2) return error_ = true, false;
    hi = next_hi_ - gap - 2;
    if (len > hi) return error_ = true, false;
    lo = hi - len;
  }
  next_hi_ = lo;
  ++index_;
  return true;
}

packet_builder::packet_builder(std::span<std::byte> out, const packet_header &hdr, protection p)
    : out_(out),
      protection_(p),
      pos_(header_size),
      limit_(out.size() >= header_size + trailer_size(p) ? out.size() - trailer_size(p) : 0) {
  if (limit_ == 0) {
    pos_ = 0;
    return;
  }
  out[0] = static_cast<std::byte>(hdr.version);
  out[1] = static_cast<std::byte>(hdr.type);
  out[2] = static_cast<std::byte>(p == protection::sealed ? (hdr.flags & ~flag_crc) | flag_sealed : hdr.flags | flag_crc);
  out[3] = std::byte{0};
  store_be(out.data() + 4, hdr.sender_id, 4);
  store_be(out.data() + 8, hdr.connection_id, 8);
  store_be(out.data() + 16, hdr.packet_number, 8);
}

bool packet_builder::put_u8(uint8_t v) {
  if (pos_ >= limit_) return false;
  out_[pos_++] = static_cast<std::byte>(v);
  return true;
}

bool packet_builder::append_ping() { return put_u8(static_cast<uint8_t>(frame_type::ping)); }

bool packet_builder::append_heartbeat(uint64_t seq) {
  const std::size_t start = pos_;
  auto lim = out_.first(limit_);
  if (put_u8(static_cast<uint8_t>(frame_type::heartbeat)) && write_varint(lim, pos_, seq)) return true;
  pos_ = start;
  return false;
}

bool packet_builder::append_ack(std::span<const uint64_t> r, uint64_t ack_delay_us) {
  if (r.size() < 2 || r.size() % 2) return false;
  const std::size_t start = pos_;
  auto lim = out_.first(limit_);
  bool ok = put_u8(static_cast<uint8_t>(frame_type::ack)) && write_varint(lim, pos_, r[1]) &&
            write_varint(lim, pos_, ack_delay_us) && write_varint(lim, pos_, r.size() / 2 - 1) &&
            write_varint(lim, pos_, r[1] - r[0]);
  for (std::size_t i = 2; ok && i < r.size(); i += 2) {
    const uint64_t prev_lo = r[i - 2], lo = r[i], hi = r[i + 1];
    ok = hi + 2 <= prev_lo && lo <= hi && write_varint(lim, pos_, prev_lo - hi - 2) && write_varint(lim, pos_, hi - lo);
  }
  if (!ok) pos_ = start;
  return ok;
}

bool packet_builder::append_group_ack(const group_ack_frame &g) {
  const std::size_t start = pos_;
  auto lim = out_.first(limit_);
  if (put_u8(static_cast<uint8_t>(frame_type::group_ack)) && write_varint(lim, pos_, g.stream_id) &&
      write_varint(lim, pos_, g.stable_offset) && write_varint(lim, pos_, g.acked_members) &&
      write_varint(lim, pos_, g.total_members))
    return true;
  pos_ = start;
  return false;
}

std::size_t packet_builder::stream_room(const stream_frame &s) const {
  std::size_t fixed = 2 + varint_size(s.stream_id) + varint_size(s.offset);
  if (s.message) fixed += varint_size(s.offset - s.msg_start) + varint_size(s.msg_length);
  const std::size_t avail = room();
  if (avail <= fixed + 1) return 0;
  const std::size_t n = avail - fixed;  // for the length varint and the data
  // The length field grows with the data: take the largest that fits.
  for (std::size_t lsize : {std::size_t{1}, std::size_t{2}, std::size_t{4}}) {
    const std::size_t data = n - lsize;
    if (varint_size(data) <= lsize) return data;
  }
  return n - 8;
}

std::span<std::byte> packet_builder::append_stream_header(const stream_frame &s, std::size_t len) {
  const std::size_t start = pos_;
  auto lim = out_.first(limit_);
  const uint8_t flags = (s.fin ? stream_flag_fin : 0) | (s.message ? stream_flag_msg : 0) |
                        (s.message && s.unordered ? stream_flag_unordered : 0);
  bool ok = put_u8(static_cast<uint8_t>(frame_type::stream)) && put_u8(flags) && write_varint(lim, pos_, s.stream_id) &&
            write_varint(lim, pos_, s.offset) && write_varint(lim, pos_, len);
  if (ok && s.message)
    ok = write_varint(lim, pos_, s.offset - s.msg_start) && write_varint(lim, pos_, s.msg_length);
  if (ok && limit_ - pos_ >= len) {
    const std::span<std::byte> data = out_.subspan(pos_, len);
    pos_ += len;
    return data;
  }
  pos_ = start;
  return {};
}

bool packet_builder::append_stream(const stream_frame &s) {
  const std::size_t start = pos_;
  const std::span<std::byte> data = append_stream_header(s, s.data.size());
  if (data.data() == nullptr && pos_ == start) return false;
  if (!s.data.empty()) std::memcpy(data.data(), s.data.data(), s.data.size());
  return true;
}

std::span<std::byte> packet_builder::append_datagram_header(std::size_t len) {
  const std::size_t start = pos_;
  auto lim = out_.first(limit_);
  if (put_u8(static_cast<uint8_t>(frame_type::datagram)) && write_varint(lim, pos_, len) && limit_ - pos_ >= len) {
    const std::span<std::byte> data = out_.subspan(pos_, len);
    pos_ += len;
    return data;
  }
  pos_ = start;
  return {};
}

bool packet_builder::append_datagram(std::span<const std::byte> data) {
  const std::size_t start = pos_;
  const std::span<std::byte> dst = append_datagram_header(data.size());
  if (dst.data() == nullptr && pos_ == start) return false;
  if (!data.empty()) std::memcpy(dst.data(), data.data(), data.size());
  return true;
}

bool packet_builder::append_extension(uint8_t type, std::span<const std::byte> body) {
  if (!is_extension_frame(type)) return false;
  const std::size_t start = pos_;
  auto lim = out_.first(limit_);
  if (put_u8(type) && write_varint(lim, pos_, body.size()) && limit_ - pos_ >= body.size()) {
    if (!body.empty()) std::memcpy(out_.data() + pos_, body.data(), body.size());
    pos_ += body.size();
    return true;
  }
  pos_ = start;
  return false;
}

bool packet_builder::append_credit(const credit_frame &c) {
  const std::size_t start = pos_;
  auto lim = out_.first(limit_);
  if (put_u8(static_cast<uint8_t>(frame_type::credit)) &&
      write_varint(lim, pos_, c.connection ? 0 : c.stream_id + 1) && write_varint(lim, pos_, c.max_offset))
    return true;
  pos_ = start;
  return false;
}

bool packet_builder::append_group_key(uint64_t epoch, std::span<const std::byte> secret) {
  const std::size_t start = pos_;
  auto lim = out_.first(limit_);
  if (secret.size() == group_secret_size && put_u8(static_cast<uint8_t>(frame_type::group_key)) &&
      write_varint(lim, pos_, epoch) && limit_ - pos_ >= secret.size()) {
    std::memcpy(out_.data() + pos_, secret.data(), secret.size());
    pos_ += secret.size();
    return true;
  }
  pos_ = start;
  return false;
}

bool packet_builder::append_close(uint64_t error_code, std::string_view reason) {
  const std::size_t start = pos_;
  auto lim = out_.first(limit_);
  if (put_u8(static_cast<uint8_t>(frame_type::close)) && write_varint(lim, pos_, error_code) &&
      write_varint(lim, pos_, reason.size()) && limit_ - pos_ >= reason.size()) {
    std::memcpy(out_.data() + pos_, reason.data(), reason.size());
    pos_ += reason.size();
    return true;
  }
  pos_ = start;
  return false;
}

bool packet_builder::append_forward(const forward_frame &f) {
  const std::size_t start = pos_;
  auto lim = out_.first(limit_);
  if (put_u8(static_cast<uint8_t>(frame_type::forward)) && write_varint(lim, pos_, f.stream_id) &&
      write_varint(lim, pos_, f.offset) && write_varint(lim, pos_, f.length))
    return true;
  pos_ = start;
  return false;
}

std::size_t packet_builder::finish() {
  if (pos_ < header_size) return 0;
  if (protection_ == protection::sealed) {
    std::memset(out_.data() + pos_, 0, tag_size);
    return pos_ + tag_size;
  }
  store_be(out_.data() + pos_, crc32c(out_.first(pos_)), 4);
  return pos_ + crc_size;
}

// Version negotiation (protocol.md 3.3): the invariant 16 bytes (version
// 0, three zero bytes, sender id, connection id), then the versions this
// endpoint speaks, 32 bits each (we speak one), then CRC32C.
constexpr std::size_t vn_header_size = 16;

std::size_t build_version_negotiation(std::span<std::byte> out, uint64_t connection_id, uint32_t sender_id) {
  const std::size_t len = vn_header_size + 4;
  if (out.size() < len + crc_size) return 0;
  out[0] = static_cast<std::byte>(version_negotiation_version);
  out[1] = out[2] = out[3] = std::byte{0};
  store_be(out.data() + 4, sender_id, 4);
  store_be(out.data() + 8, connection_id, 8);
  store_be(out.data() + vn_header_size, protocol_version, 4);
  store_be(out.data() + len, crc32c(out.first(len)), 4);
  return len + crc_size;
}

bool version_list::lists(uint32_t v) const {
  for (std::size_t i = 0; i + 4 <= versions.size(); i += 4)
    if (static_cast<uint32_t>(load_be(versions.data() + i, 4)) == v) return true;
  return false;
}

parse_status parse_version_negotiation(std::span<const std::byte> packet, uint32_t &sender_id,
                                       uint64_t &connection_id, version_list &out) {
  if (packet.size() < vn_header_size + crc_size) return parse_status::too_short;
  if (std::to_integer<uint8_t>(packet[0]) != version_negotiation_version) return parse_status::bad_version;
  const std::size_t body = packet.size() - crc_size;
  if (crc32c(packet.first(body)) != static_cast<uint32_t>(load_be(packet.data() + body, 4)))
    return parse_status::bad_crc;
  if ((body - vn_header_size) % 4 != 0) return parse_status::malformed_frame;
  sender_id = static_cast<uint32_t>(load_be(packet.data() + 4, 4));
  connection_id = load_be(packet.data() + 8, 8);
  out.versions = packet.subspan(vn_header_size, body - vn_header_size);
  return parse_status::ok;
}

bool is_opening_packet(std::span<const std::byte> packet, protection p) {
  packet_header h;
  std::span<const std::byte> frames;
  if (parse_packet(packet, h, frames, p) != parse_status::ok || !(h.flags & flag_opening)) return false;
  frame_reader rd(frames, p == protection::sealed);
  frame f;
  bool eliciting = false;
  while (!rd.done()) {
    if (rd.next(f) != parse_status::ok) return false;
    eliciting |= is_ack_eliciting(f.type);
  }
  return eliciting;
}

}  // namespace mtp::core
