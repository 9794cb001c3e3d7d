# SPDX-License-Identifier: BSD-3-Clause
"""A stranger against a live transfer (docs/protocol.md 3.5, 3.6, 5.1):
a scapy attacker in its own namespace, on the bridge that joins a source
and a sink (net_tap), sends what it can without keys while the source
moves a verified byte pattern to the sink through 1% loss. Each attack
must move the counter that says it was stopped, the daemon must stay
within its memory budget, and the transfer must complete with every byte
verified."""
import json
import time

import pytest

from framework.bridge import bridged_taps
from framework.on_path import moved, run_attack
from framework.testbed import TESTBED, run

MIB = 1 << 20
NS = TESTBED["namespace_prefix"] + "atk"
ATTACKER_NS = TESTBED["namespace_prefix"] + "atkx"
CID = 0x5EED0001
SOURCE_ID, SINK_ID = 1, 2
TOTAL = 96 * MIB
RATE = 2 * MIB  # bytes/s: the transfer lasts about 48 s, through every attack


def mac(i):
    return f"02:00:00:00:0d:{i:02x}"


def ip(i):
    return f"10.96.0.{i}"


@pytest.fixture
def bed():
    """The source and the sink on taps joined by a flooding bridge (a hub:
    the attacker is on the path), and the attacker's namespace joined to
    the bridge by a veth pair."""
    run("ip", "netns", "add", ATTACKER_NS)
    try:
        with bridged_taps("atk", flood=True) as start_tap:
            run("ip", "-n", NS, "link", "add", "atkbr", "type", "veth", "peer", "name", "eth0", "netns", ATTACKER_NS)
            run("ip", "-n", NS, "link", "set", "atkbr", "master", "br0", "up")
            run("ip", "-n", ATTACKER_NS, "addr", "add", f"{ip(66)}/24", "dev", "eth0")
            run("ip", "-n", ATTACKER_NS, "link", "set", "eth0", "up")

            def start(name, i, limits=None, **kw):
                extra = {"limits": limits} if limits else {}
                return start_tap(name, i, {"addresses": [f"{ip(i)}/24"]}, {"size_mb": 512, "mbufs": 16383},
                                 extra=extra, **kw)

            yield start
    finally:
        run("ip", "netns", "del", ATTACKER_NS, check=False)


def attack(kind, **spec):
    """Runs one attack from the attacker's namespace; returns its report."""
    return run_attack(ATTACKER_NS, kind, ip(66), **spec)


def rss_kib(d):
    with open(f"/proc/{d.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0



class TestAttack:
    def test_a_stranger_gets_nothing_during_a_transfer(self, bed):
        """Steps: a sink (session table of 32, 32 MiB of session memory, the
        fault stage dropping 1% of what it receives) and a source sending
        96 MiB at 2 MiB/s over taps on one bridge; once data flows, from the
        attacker's namespace: 600 opening packets for fresh connection ids
        (a session flood); 40 openers claiming a victim's address;
        packets of the live connection claiming the source's address with
        packet numbers far ahead, and FORWARDs of 2^62-1 bytes numbered
        just ahead of a packet number read off the wire (the bridge floods:
        the attacker is on the path); optimistic
        ACKs to the source and 32 isolated packet numbers to the sink from
        the attacker's own address; 200 packets of other versions; 50
        frames for the sink's IP behind another MAC.
        Verify: the flood fills no more than the table (sessions evicted,
        the live one kept), session memory stays within its budget and the
        sink's RSS grows by under 32 MiB; the victim gets at most three
        times what was sent in its name; far-ahead numbers count
        drop_pn_out_of_window, the FORWARDs drop_flow_control, the stranger's
        ACKs and PINGs mtp_wrong_address, other versions mtp_other_version
        with replies no larger than 3x, the foreign MAC
        mtp_wrong_destination; the transfer completes, every byte verified,
        in order, one session at the sink for it, no member left."""
        sink = bed("atksink", SINK_ID, limits={"sessions": 32, "session_memory_mb": 32},
                   test={"sink": {"enabled": True}, "faults": {"seed": 5, "drop": 0.01}})
        src = bed("atksrc", SOURCE_ID,
                  peers=[{"id": SINK_ID, "ip": ip(SINK_ID), "mac": mac(SINK_ID)}],
                  test={"source": {"enabled": True, "connection_id": CID, "members": [SINK_ID],
                                   "total_bytes": TOTAL, "message_bytes": 1024, "rate_bytes_per_s": RATE}})
        try:
            src.wait_for(lambda w, v: sum(x["source_bytes_stable"] for x in w.values()) > MIB, timeout=30,
                         what="the transfer under way")
            rss_before = rss_kib(sink)
            target_sink = {"dst_mac": mac(SINK_ID), "dst_ip": ip(SINK_ID)}
            target_src = {"dst_mac": mac(SOURCE_ID), "dst_ip": ip(SOURCE_ID)}
            report = {}

            # 1. A session flood from the attacker's own address.
            opened, evicted = sink.counter("sessions_opened"), sink.counter("sessions_evicted")
            report["flood"] = attack("session_flood", count=600, rate_pps=300, **target_sink)
            moved(sink, "sessions_evicted", evicted, at_least=100)
            assert sink.counter("sessions_opened") - opened >= 500
            assert sink.counter("sessions_live") <= 32
            assert sink.counter("session_memory_peak") <= 32 * MIB

            # 2. Openers claiming a victim's address: at most 3x comes back.
            report["spoofed"] = r = attack("spoofed_opening", count=40, victim_ip=ip(77), listen_s=3.0, **target_sink)
            assert 0 < r["reply_bytes"] <= 3 * r["sent_bytes"], r

            # 3. The live connection, claiming the source's address.
            before = sink.counter("drop_pn_out_of_window")
            report["far_ahead"] = attack("far_ahead", count=50, sender=SOURCE_ID, cid=CID, src_ip=ip(SOURCE_ID),
                                         **target_sink)
            moved(sink, "drop_pn_out_of_window", before, at_least=45)
            before = sink.counter("drop_flow_control")
            report["forward_max"] = attack("forward_max", count=20, sender=SOURCE_ID, cid=CID,
                                           src_ip=ip(SOURCE_ID), **target_sink)
            moved(sink, "drop_flow_control", before, at_least=18)

            # 4. Optimistic ACKs and ACK-range crowding from a third address.
            before = src.counter("mtp_wrong_address")
            report["optimistic_ack"] = attack("optimistic_ack", count=50, sender=SINK_ID, cid=CID, **target_src)
            moved(src, "mtp_wrong_address", before, at_least=50)
            before = sink.counter("mtp_wrong_address")
            report["crowding"] = attack("ack_crowding", count=32, sender=SOURCE_ID, cid=CID, **target_sink)
            moved(sink, "mtp_wrong_address", before, at_least=28)

            # 5. Other versions: version negotiation, small and rate-limited.
            before = sink.counter("mtp_other_version")
            report["versions"] = r = attack("bad_version", count=200, sender=SOURCE_ID, cid=CID, **target_sink)
            moved(sink, "mtp_other_version", before, at_least=180)
            assert 0 < r["reply_bytes"] <= 3 * r["sent_bytes"], r
            assert sink.counter("vn_sent") > 0

            # 6. Frames for the sink's IP behind another MAC.
            before = sink.counter("mtp_wrong_destination")
            report["wrong_destination"] = attack("wrong_destination", count=50, **target_sink)
            moved(sink, "mtp_wrong_destination", before, at_least=45)

            assert src.counter("source_complete_us") == 0, "the transfer ended before the attacks did"
            rss_after = rss_kib(sink)
            report["sink_rss_kib"] = [rss_before, rss_after]
            report["sink_session_memory_peak"] = sink.counter("session_memory_peak")
            assert rss_after - rss_before < 32 * 1024, f"sink RSS grew from {rss_before} to {rss_after} KiB"

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
        assert src.worker_total("source_bytes_stable") == TOTAL
        assert src.worker_total("members_left") == 0
        assert src.worker_total("connections_failed") == 0
        assert sink.worker_total("sink_bytes") == TOTAL
        assert sink.worker_total("sink_verify_errors") == 0
        assert sink.worker_total("sink_order_errors") == 0
        assert sink.worker_total("fault_dropped") > 0
        assert sink.worker_total("session_memory_peak") <= 32 * MIB
