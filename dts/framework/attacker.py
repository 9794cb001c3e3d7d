# SPDX-License-Identifier: BSD-3-Clause
"""A scapy attacker, run inside its own namespace: builds CRC-valid MTP
packets (docs/protocol.md) that a stranger could send, and sends them on
one interface. Run as:

    python3 attacker.py <iface> <json spec>

The spec names the attack, the target (MAC, IP, UDP port), the source the
packets claim (IP, port: our own, or a spoofed one) and its parameters.
Prints one JSON line: what was sent and, where the attack listens for
replies (amplification), what came back."""
import json
import random
import struct
import sys
import time

from scapy.all import AsyncSniffer, Ether, IP, UDP, conf, sendp  # noqa: E402

conf.verb = 0


def crc32c(data):
    """CRC32C (Castagnoli), as protocol.md 3.4."""
    table = crc32c.table
    if table is None:
        table = []
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
            table.append(c)
        crc32c.table = table
    crc = 0xFFFFFFFF
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


crc32c.table = None


def varint(v):
    if v < 64:
        return bytes([v])
    if v < 16384:
        return struct.pack(">H", 0x4000 | v)
    if v < 2 ** 30:
        return struct.pack(">I", 0x80000000 | v)
    return struct.pack(">Q", (3 << 62) | v)


def packet(sender, cid, pn, frames, version=1, flags=0x01):
    body = struct.pack(">BBBBIQQ", version, 0x01, flags, 0, sender, cid, pn) + frames
    return body + struct.pack(">I", crc32c(body))


PING = b"\x01"


def ack(largest, first_range):
    return b"\x02" + varint(largest) + varint(0) + varint(0) + varint(first_range)


def ack_ranges(ranges):
    """ranges: [(lo, hi)] highest first, disjoint."""
    (lo0, hi0) = ranges[0]
    out = b"\x02" + varint(hi0) + varint(0) + varint(len(ranges) - 1) + varint(hi0 - lo0)
    prev_lo = lo0
    for lo, hi in ranges[1:]:
        out += varint(prev_lo - hi - 2) + varint(hi - lo)
        prev_lo = lo
    return out


def forward(stream, offset, length):
    return b"\x09" + varint(stream) + varint(offset) + varint(length)


def sniff_pn(iface, spec):
    """The packet number of a packet of the live connection seen on the wire."""
    from scapy.all import sniff
    got = sniff(iface=iface, count=1, timeout=10,
                filter=f"udp and src host {spec['src_ip']} and dst host {spec['dst_ip']} and dst port 7400")
    if not got:
        raise SystemExit("no packet of the connection seen: is the bridge flooding?")
    payload = bytes(got[0][UDP].payload)
    return struct.unpack(">Q", payload[16:24])[0]


def sniff_sealed(iface, spec, count):
    """Sealed packets of the live connection (flag S) seen on the wire, as
    UDP payloads: what an on-path attacker can replay or tamper with."""
    from scapy.all import sniff
    got = sniff(iface=iface, count=count, timeout=20,
                lfilter=lambda p: UDP in p and p[IP].src == spec["src_ip"] and p[IP].dst == spec["dst_ip"] and
                len(bytes(p[UDP].payload)) >= 40 and bytes(p[UDP].payload)[2] & 0x04)
    if len(got) < count:
        raise SystemExit(f"only {len(got)} sealed packets seen: is the bridge flooding?")
    return [bytes(p[UDP].payload) for p in got]


def mac1_of(msg, receiver_public):
    """mac1 (protocol.md 9.3.1): anyone who knows the receiver's public key
    (it is public) can make it, so a flood passes this first check."""
    import hashlib
    import hmac
    key = hashlib.sha256(b"mac1----" + receiver_public).digest()
    return hmac.new(key, msg, hashlib.sha256).digest()[:16]


def initiation(rng, sender, cid, receiver_public=None, length=164):
    """An INITIATION-shaped packet (protocol.md 9.2.4.1) of random keys and
    ciphertext: with the receiver's public key its mac1 is right, and it
    costs the responder its Diffie-Hellman before decrypt_failed."""
    body = struct.pack(">BBBBIQQ", 1, 0x02, 0, 0, sender, cid, 0) + rng.randbytes(108)
    if receiver_public is not None:
        body += mac1_of(body, receiver_public)
    else:
        body += rng.randbytes(16)
    p = body + bytes(16)  # no cookie: mac2 zero
    return p[:length] if length <= len(p) else p + rng.randbytes(length - len(p))


def frame(spec, payload, src_ip=None):
    return (Ether(src=spec["src_mac"], dst=spec.get("dst_mac_override", spec["dst_mac"])) /
            IP(src=src_ip or spec["src_ip"], dst=spec["dst_ip"]) /
            UDP(sport=spec.get("src_port", 7400), dport=spec.get("dst_port", 7400)) / payload)


def main():
    iface = sys.argv[1]
    spec = json.loads(sys.argv[2])
    kind = spec["kind"]
    count = spec.get("count", 100)
    rng = random.Random(spec.get("seed", 1))
    frames = []
    sent_bytes = 0
    listen = None
    if kind == "session_flood":
        # Opening packets (O flag, a PING) for fresh connection ids.
        for _ in range(count):
            p = packet(rng.randrange(1, 2 ** 31), rng.getrandbits(64), rng.randrange(2 ** 31), PING, flags=0x03)
            frames.append(frame(spec, p))
            sent_bytes += len(p)
    elif kind == "spoofed_opening":
        # Openers claiming a victim's address: the replies to it are the
        # amplification a reflector would give.
        for _ in range(count):
            p = packet(rng.randrange(1, 2 ** 31), rng.getrandbits(64), rng.randrange(2 ** 31), PING, flags=0x03)
            frames.append(frame(spec, p, src_ip=spec["victim_ip"]))
            sent_bytes += len(p)
        listen = f"udp and dst host {spec['victim_ip']}"
    elif kind == "far_ahead":
        # Packets of the live connection with numbers far ahead.
        for i in range(count):
            p = packet(spec["sender"], spec["cid"], (2 ** 40) + i * 1000, PING)
            frames.append(frame(spec, p))
            sent_bytes += len(p)
    elif kind == "forward_max":
        # FORWARD of 2^62-1 bytes: skip the stream forever. An on-path
        # attacker (the bridge floods) first reads a packet number of the
        # live connection, then numbers its packets just ahead of it, where
        # the receiver takes them: the FORWARD itself must be refused.
        seen = sniff_pn(iface, spec)
        for i in range(count):
            p = packet(spec["sender"], spec["cid"], seen + 100 + i, forward(0, 0, 2 ** 62 - 1))
            frames.append(frame(spec, p))
            sent_bytes += len(p)
    elif kind == "optimistic_ack":
        # ACKs of everything up to far beyond what was sent.
        for i in range(count):
            p = packet(spec["sender"], spec["cid"], 2 ** 30 + i, ack(2 ** 40, 2 ** 40))
            frames.append(frame(spec, p))
            sent_bytes += len(p)
    elif kind == "ack_crowding":
        # Isolated high packet numbers, each a PING: 32 new ranges.
        base = spec.get("pn", 2 ** 31)
        for i in range(count):
            p = packet(spec["sender"], spec["cid"], base + 2 * i + 1, PING)
            frames.append(frame(spec, p))
            sent_bytes += len(p)
    elif kind == "bad_version":
        # Packets of versions we do not speak: version negotiation replies.
        for i in range(count):
            p = packet(spec["sender"], spec["cid"], i, PING, version=2 + i % 200)
            frames.append(frame(spec, p))
            sent_bytes += len(p)
        listen = f"udp and src port {spec.get('dst_port', 7400)} and dst host {spec['src_ip']}"
    elif kind == "wrong_destination":
        # The target's IP behind a MAC that is not its own (a flooding bridge).
        for i in range(count):
            p = packet(rng.randrange(1, 2 ** 31), rng.getrandbits(64), i, PING, flags=0x03)
            frames.append(frame(dict(spec, dst_mac_override="02:00:00:00:99:99"), p))
            sent_bytes += len(p)
    elif kind == "replay_sealed":
        # Sealed packets read off the wire, sent again verbatim: each must
        # be dropped as replayed (the replay window, protocol.md 9.4); with
        # delay_s, once thousands of newer packets have moved the window
        # past them.
        captured = sniff_sealed(iface, spec, count)
        time.sleep(spec.get("delay_s", 0))
        for p in captured:
            frames.append(frame(spec, p))
            sent_bytes += len(p)
    elif kind == "tamper_sealed":
        # Sealed packets read off the wire with one bit flipped: in the
        # ciphertext, the tag, or the header (packet number, key byte),
        # and numbered ahead so the replay window lets them through to
        # the tag check. Each must fail it (auth_failed) or name no key.
        for i, p in enumerate(sniff_sealed(iface, spec, count)):
            b = bytearray(p)
            pn = struct.unpack(">Q", b[16:24])[0]
            b[16:24] = struct.pack(">Q", pn + 100000 + i)  # the header changed: the tag no longer matches
            where = i % 3
            if where == 0:
                b[24 + rng.randrange(len(b) - 40)] ^= 1 << rng.randrange(8)
            elif where == 1:
                b[-1 - rng.randrange(16)] ^= 1 << rng.randrange(8)
            frames.append(frame(spec, bytes(b)))
            sent_bytes += len(b)
    elif kind == "plaintext_to_secured":
        # CRC-valid plaintext: openers for fresh ids, and packets of the
        # live connection (a downgrade). A secured node reads none.
        for i in range(count):
            if i % 2:
                p = packet(rng.randrange(1, 2 ** 31), rng.getrandbits(64), rng.randrange(2 ** 31), PING, flags=0x03)
            else:
                p = packet(spec["sender"], spec["cid"], 2 ** 30 + i, PING)
            frames.append(frame(spec, p))
            sent_bytes += len(p)
    elif kind == "handshake_flood":
        # Initiations from spoofed addresses, each with a right mac1 (the
        # responder's public key is public): under load the responder
        # must answer cookies and keep nothing.
        public = bytes.fromhex(spec["public_key_hex"])
        for i in range(count):
            p = initiation(rng, spec["sender"], rng.getrandbits(64), public)
            victim = f"10.66.{rng.randrange(256)}.{rng.randrange(1, 255)}"
            frames.append(frame(spec, p, src_ip=victim))
            sent_bytes += len(p)
        listen = f"udp and src host {spec['dst_ip']} and src port 7400 and net 10.66.0.0/16"
    elif kind == "handshake_garbage":
        # Initiation-typed packets: random mac1, truncated, oversized, and
        # the other handshake types where no handshake is pending.
        for i in range(count):
            k = i % 4
            if k == 0:
                p = initiation(rng, spec["sender"], rng.getrandbits(64))
            elif k == 1:
                p = initiation(rng, spec["sender"], rng.getrandbits(64), length=rng.randrange(24, 164))
            elif k == 2:
                p = initiation(rng, spec["sender"], rng.getrandbits(64), length=rng.randrange(165, 1400))
            else:
                p = struct.pack(">BBBBIQQ", 1, 0x03, 0, 0, spec["sender"], rng.getrandbits(64), 0) + rng.randbytes(80)
            frames.append(frame(spec, p))
            sent_bytes += len(p)
    else:
        raise SystemExit(f"unknown attack {kind}")

    sniffer = None
    if listen:
        sniffer = AsyncSniffer(iface=iface, filter=listen, store=True)
        sniffer.start()
        time.sleep(0.5)
    rate = spec.get("rate_pps", 0)
    if rate:
        for f in frames:
            sendp(f, iface=iface)
            time.sleep(1.0 / rate)
    else:
        sendp(frames, iface=iface)
    replies, reply_bytes = 0, 0
    if sniffer:
        time.sleep(spec.get("listen_s", 2.0))
        got = sniffer.stop() or []
        for r in got:
            if UDP in r:
                replies += 1
                reply_bytes += len(bytes(r[UDP].payload))
    print(json.dumps({"sent": len(frames), "sent_bytes": sent_bytes, "replies": replies, "reply_bytes": reply_bytes}))


if __name__ == "__main__":
    main()
