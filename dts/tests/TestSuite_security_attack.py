# SPDX-License-Identifier: BSD-3-Clause
"""An attacker on the path of a secured transfer (docs/security.md,
protocol.md 9): a scapy attacker in its own namespace, on the flooding
bridge that joins a secured source and sink (net_tap), sees every sealed
packet and has every public key, but no private one. While the source
moves a verified byte pattern, it replays sealed packets, flips bits in
them, sends plaintext (a downgrade), floods initiations from spoofed
addresses with a right mac1, and sends truncated, oversized and
unexpected handshake packets. Each attack must move the counter that
says it was stopped, no attack may open a session or cost more than a
cookie, and the transfer must complete with every byte verified."""
import base64
import json
import time

import pytest

from framework.bridge import bridged_taps
from framework.keys import Keyring
from framework.on_path import moved, run_attack
from framework.testbed import TESTBED, run

MIB = 1 << 20
ATTACKER_NS = TESTBED["namespace_prefix"] + "satkx"
CID = 0x5EC0001
SOURCE_ID, SINK_ID = 1, 2
TOTAL = 48 * MIB
RATE = 2 * MIB  # bytes/s: about 24 s, through every attack


def mac(i):
    return f"02:00:00:00:0d:{i:02x}"


def ip(i):
    return f"10.97.0.{i}"


@pytest.fixture
def bed():
    keys = Keyring()
    run("ip", "netns", "add", ATTACKER_NS)
    try:
        with bridged_taps("satk", flood=True) as start_tap:
            ns = TESTBED["namespace_prefix"] + "satk"
            run("ip", "-n", ns, "link", "add", "atkbr", "type", "veth", "peer", "name", "eth0", "netns", ATTACKER_NS)
            run("ip", "-n", ns, "link", "set", "atkbr", "master", "br0", "up")
            run("ip", "-n", ATTACKER_NS, "addr", "add", f"{ip(66)}/24", "dev", "eth0")
            run("ip", "-n", ATTACKER_NS, "link", "set", "eth0", "up")

            def start(name, i, peer, security, **kw):
                return start_tap(name, i, {"addresses": [f"{ip(i)}/24"]}, {"size_mb": 512, "mbufs": 16383},
                                 peers=[keys.peer({"id": peer, "ip": ip(peer), "mac": mac(peer)}, peer)],
                                 security=keys.security(i, **security), **kw)

            yield start, keys
    finally:
        run("ip", "netns", "del", ATTACKER_NS, check=False)
        keys.remove()


def attack(kind, **spec):
    """Runs one attack from the attacker's namespace; returns its report."""
    return run_attack(ATTACKER_NS, kind, ip(66), **spec)



class TestSecurityAttack:
    def test_an_on_path_attacker_gets_nothing_from_a_secured_transfer(self, bed):
        """Steps: a secured sink (cookies demanded beyond 50 initiations a
        second) and a secured source sending 48 MiB at 2 MiB/s over taps on
        a flooding bridge; once data flows, from the attacker's namespace:
        50 sealed packets read off the wire and sent again, and 30 more
        sent again 5 s later (thousands of packets on, behind the replay
        window); 30 read off the
        wire with one bit flipped (ciphertext, tag or header) and numbered
        ahead; 40 CRC-valid plaintext packets (openers and packets of the
        live connection); 300 initiations with a right mac1 from spoofed
        addresses in one burst; 100 truncated, oversized, random-mac1
        initiations and responses nobody asked for.
        Verify: replays count `replayed`, tampered and plaintext packets
        `auth_failed`, the flood is answered by cookies only (hs_bad_mac2,
        cookies_sent, each reply 68 bytes, at most 3x what was sent) or
        costs a Diffie-Hellman and fails (hs_decrypt_failed), never a
        session; the garbage counts hs_bad_mac1, hs_too_short, hs_too_long
        and hs_unexpected; the sink holds one session throughout; the
        transfer completes, every byte verified, in order, no member left,
        no packet of it refused."""
        start, keys = bed
        sink = start("satksink", SINK_ID, SOURCE_ID, {"cookie_after_handshakes_per_s": 50},
                     extra={"limits": {"sessions": 32, "session_memory_mb": 32}},
                     test={"sink": {"enabled": True}})
        src = start("satksrc", SOURCE_ID, SINK_ID, {},
                    test={"source": {"enabled": True, "connection_id": CID, "members": [SINK_ID],
                                     "total_bytes": TOTAL, "message_bytes": 1024, "rate_bytes_per_s": RATE}})
        try:
            src.wait_for(lambda w, v: sum(x["source_bytes_stable"] for x in w.values()) > MIB, timeout=30,
                         what="the transfer under way")
            target = {"dst_mac": mac(SINK_ID), "dst_ip": ip(SINK_ID)}
            on_path = dict(target, src_ip=ip(SOURCE_ID))  # what the sniffer watches: source -> sink
            report = {}

            # 1. Replays of sealed packets.
            before = sink.counter("replayed")
            report["replay"] = attack("replay_sealed", count=50, **on_path)
            moved(sink, "replayed", before, at_least=45)
            # ... and again once they are far behind the 4096-packet window.
            before, opened = sink.counter("replayed"), sink.counter("packets_opened")
            report["replay_old"] = attack("replay_sealed", count=30, delay_s=5, **on_path)
            moved(sink, "replayed", before, at_least=27)
            assert sink.counter("packets_opened") - opened > 4096, "the window did not move past them"

            # 2. Sealed packets with one bit flipped.
            before = sink.counter("auth_failed")
            report["tamper"] = attack("tamper_sealed", count=30, **on_path)
            moved(sink, "auth_failed", before, at_least=27)

            # 3. Plaintext: openers and packets of the live connection.
            before, opened = sink.counter("auth_failed"), sink.counter("sessions_opened")
            report["plaintext"] = attack("plaintext_to_secured", count=40, sender=SOURCE_ID, cid=CID, **target)
            moved(sink, "auth_failed", before, at_least=36)
            assert sink.counter("sessions_opened") == opened

            # 4. An initiation flood from spoofed addresses, mac1 right.
            public_hex = base64.b64decode(keys.public[SINK_ID]).hex()
            cookies, mac2, failed = (sink.counter("cookies_sent"), sink.counter("hs_bad_mac2"),
                                     sink.counter("hs_decrypt_failed"))
            report["flood"] = r = attack("handshake_flood", count=300, sender=77,
                                         public_key_hex=public_hex, listen_s=3.0, **target)
            moved(sink, "hs_bad_mac2", mac2, at_least=100)
            grown_cookies = sink.counter("cookies_sent") - cookies
            grown_failed = sink.counter("hs_decrypt_failed") - failed
            assert grown_cookies == sink.counter("hs_bad_mac2") - mac2
            assert grown_cookies + grown_failed >= 285, (grown_cookies, grown_failed)  # a few frames may be lost
            assert r["replies"] <= grown_cookies and r["reply_bytes"] == 68 * r["replies"], r
            assert r["reply_bytes"] <= 3 * r["sent_bytes"], r
            assert sink.counter("sessions_opened") == opened, "the flood opened a session"
            assert sink.counter("sessions_live") == 1

            # 5. Garbage handshake packets.
            counters = ("hs_bad_mac1", "hs_too_short", "hs_too_long", "hs_unexpected")
            before = {c: sink.counter(c) for c in counters}
            report["garbage"] = attack("handshake_garbage", count=100, sender=SOURCE_ID, **target)
            for c in counters:
                moved(sink, c, before[c], at_least=20)
            assert sink.counter("sessions_opened") == opened

            assert src.counter("source_complete_us") == 0, "the transfer ended before the attacks did"
            deadline = time.monotonic() + 120
            while src.counter("source_complete_us") == 0 and time.monotonic() < deadline:
                time.sleep(0.2)
            stable = src.counter("source_bytes_stable")
        finally:
            src.stop()
            sink.stop()
        print(json.dumps(report))
        assert src.exit_code == 0 and sink.exit_code == 0
        assert stable == TOTAL, f"{stable} of {TOTAL} bytes stable"
        assert src.worker_total("members_left") == 0
        assert src.worker_total("connections_failed") == 0
        assert src.worker_total("auth_failed") == 0
        assert sink.worker_total("sink_bytes") == TOTAL
        assert sink.worker_total("sink_verify_errors") == 0
        assert sink.worker_total("sink_order_errors") == 0
        assert sink.worker_total("sessions_opened") == 1
        assert sink.worker_total("handshakes_completed") == 1
