# SPDX-License-Identifier: BSD-3-Clause
"""Several workers per daemon: every session is processed by the one worker
that owns its connection id, whichever queue its frames arrive on.

memif takes no rte_flow rules, pairs queue q of one side with queue q of the
other, and the owner is salted with the node id, so a connection id is picked for which the source
owns the session on worker 1 and the sink on worker 0: every data frame
reaches the sink on the wrong worker and every ACK reaches the source on the
wrong worker. Both must hand them over, and the transfer must still be
exact."""
import re
import signal

import pytest

from TestSuite_transfer import MIB, SOCKETS, check_sink, wait_complete
from framework.daemon import Daemon
from framework.keys import Keyring

M64 = (1 << 64) - 1
TWO_WORKERS = {"control": 0, "workers": [1, 2], "cpus": {2: 0}}


def owner(cid, node_id, workers):
    """runtime::owner_of() in Python."""
    if workers & (workers - 1) == 0:
        x = (node_id * 0x9E3779B9) & 0xFFFFFFFF
        x ^= x >> 15
        salt = (x ^ (x >> 8) ^ (x >> 16) ^ (x >> 24)) & 0xFF
        return ((cid & 0xFF) ^ salt) & (workers - 1)
    x = (((cid ^ (node_id * 0x9E3779B97F4A7C15)) & M64) * 0xFF51AFD7ED558CCD) & M64
    x ^= x >> 33
    return x % workers


def crossing(src_id):
    """A sink node id and a connection id that the source owns on worker 1
    and the sink on worker 0 (their salts must differ in the low bit)."""
    for sink_id in range(2, 100):
        for cid in range(0x5000, 0x5100):
            if owner(cid, src_id, 2) == 1 and owner(cid, sink_id, 2) == 0:
                return sink_id, cid
    raise AssertionError("no connection id crosses workers")


def per_worker(d, name):
    return [w[name] for w in d.final["workers"]]


class TestSteering:
    @pytest.mark.parametrize("faults", [None, {"seed": 5, "drop": 0.02, "duplicate": 0.01, "reorder": 0.02,
                                               "corrupt": 0.001, "delay_us": 1000}], ids=["clean", "impaired"])
    def test_sessions_stay_on_their_owner(self, faults):
        """Steps: a sink and a source, two workers each, over a two-queue
        memif link; a connection id whose owner is worker 1 at the source and
        worker 0 at the sink; 64 MiB (clean) or 16 MiB through the seeded
        fault stage. Verify: the session opened on the owning worker only;
        the other worker handed every MTP frame it received to the owner
        (counts match on both sides) and processed none itself; nothing
        dropped at hand-off; every byte stable, received, verified, in order."""
        total = (64 if faults is None else 16) * MIB
        sink_id, cid = crossing(1)
        sock = f"{SOCKETS}/steer.sock"
        test = {"sink": {"enabled": True}}
        if faults:
            test["faults"] = faults
        memory = {"memory": {"size_mb": 512, "mbufs": 32767}, "lcores": TWO_WORKERS}
        s = Daemon("st-sink", node_id=sink_id, test=test, extra=memory,
                   ports=[{"name": "m0", "mac": "02:00:00:00:0c:02", "addresses": ["10.93.0.2/24"],
                           "device": f"net_memif0,role=server,id=0,socket={sock},socket-abstract=no"}]).start()
        try:
            src = Daemon("st-src", node_id=1, extra=memory,
                         ports=[{"name": "m0", "mac": "02:00:00:00:0c:01", "addresses": ["10.93.0.1/24"],
                                 "device": f"net_memif0,role=client,id=0,socket={sock},socket-abstract=no"}],
                         peers=[{"id": sink_id, "ip": "10.93.0.2", "mac": "02:00:00:00:0c:02", "port": "m0"}],
                         test={"source": {"enabled": True, "connection_id": cid, "members": [sink_id],
                                          "total_bytes": total}}).start()
            try:
                wait_complete(src, 120)
            finally:
                src.stop()
        finally:
            s.stop()
        assert src.exit_code == 0 and src.worker_total("source_bytes_stable") == total
        check_sink(s, total)
        # memif takes no rte_flow rules: the hand-off ring does the steering.
        for d in (s, src):
            assert "rte_flow cannot steer by connection id" in d.log, d.name
        # The sessions live on their owners only.
        assert per_worker(src, "sessions_opened") == [0, 1]
        assert per_worker(s, "sessions_opened") == [1, 0]
        # Data arrived at the sink on queue 1 and went to worker 0; ACKs
        # arrived at the source on queue 0 and went to worker 1.
        for d, wrong, right in ((s, 1, 0), (src, 0, 1)):
            out, inn = per_worker(d, "handoff_out"), per_worker(d, "handoff_in")
            assert out[wrong] > 1000 and out[right] == 0, (d.name, out)
            assert inn[right] == out[wrong] and inn[wrong] == 0, (d.name, inn, out)
            assert d.worker_total("handoff_dropped") == 0
            assert per_worker(d, "mtp_packets_in")[wrong] == 0
        assert per_worker(s, "mtp_packets_in")[0] >= total // 1500

    @pytest.mark.parametrize("security", ["plaintext", "sealed"])
    def test_a_listener_on_one_worker_gets_every_connection(self, security):
        """Steps: daemon b (node 2) with two workers, no built-in sink, and
        one application listening (mtp-app echo), which one worker serves;
        daemon a (node 1), two workers, joined to b by a two-queue memif
        link; 12 ping applications on a open a connection each (ids mtpd
        picks: about half are owned by b's other worker) and make 40 round
        trips each.
        Verify: every ping got all 40 echoes; the listener heard 12
        ConnectionReceived; every session was created on the listener's
        worker; b's other worker redirected exactly the openings whose ids
        it owns (the accepted ids in b's log), processed none of their
        packets itself, lost and refused nothing; once the connections
        ended, every redirect was forgotten and no session is left. A
        second application listening on b (served by the other worker) is
        refused with LISTENER_EXISTS. Sealed: the same with security
        required, where the initiation is what the owner redirects (each
        a handshake on the listener's worker)."""
        from TestSuite_libmtp import App
        sock = f"{SOCKETS}/listen-steer.sock"
        extra = {"memory": {"size_mb": 256, "mbufs": 16383}, "lcores": TWO_WORKERS}
        keys = Keyring()
        peer_a = {"id": 1, "ip": "10.94.0.1", "mac": "02:00:00:00:0d:01", "port": "m0"}
        peer_b = {"id": 2, "ip": "10.94.0.2", "mac": "02:00:00:00:0d:02", "port": "m0"}
        sealed = security == "sealed"
        b = Daemon("ls-b", node_id=2, extra=extra, security=keys.security(2) if sealed else None,
                   peers=[keys.peer(peer_a, 1)] if sealed else None,
                   ports=[{"name": "m0", "mac": "02:00:00:00:0d:02", "addresses": ["10.94.0.2/24"],
                           "device": f"net_memif0,role=server,id=0,socket={sock},socket-abstract=no"}]).start()
        a = None
        try:
            a = Daemon("ls-a", node_id=1, extra=extra, security=keys.security(1) if sealed else None,
                       ports=[{"name": "m0", "mac": "02:00:00:00:0d:01", "addresses": ["10.94.0.1/24"],
                               "device": f"net_memif0,role=client,id=0,socket={sock},socket-abstract=no"}],
                       peers=[keys.peer(peer_b, 2) if sealed else peer_b]).start()
            echo = App(b, "echo", "--seconds", 90)
            echo.wait_line("LISTENING")
            # A second listener, served by the other worker, is refused:
            # one per daemon, whichever worker serves it.
            second = App(b, "rx", "--seconds", 10)
            assert second.finish(timeout=15) != 0
            assert any("listen refused: another application listens already" in line
                       for line in second.lines), "\n".join(second.lines)
            pings = [App(a, "ping", "--members", 2, "--count", 40, "--seconds", 60) for _ in range(12)]
            for p in pings:
                assert p.finish(timeout=90) == 0, "\n".join(p.lines)
                assert p.summary()["msgs"] == 40, "\n".join(p.lines)
            b.wait_for(lambda w, _: sum(x["sessions_live"] for x in w.values()) == 0, timeout=30,
                       what="every session removed")
            b.wait_for(lambda w, _: sum(x["redirects_ended"] for x in w.values()) ==
                       sum(x["sessions_redirected"] for x in w.values()), timeout=10, what="every redirect forgotten")
            echo.proc.send_signal(signal.SIGTERM)
            echo.finish(timeout=20)
        finally:
            if a is not None:
                a.stop()
            b.stop()
            keys.remove()
        assert sum(line.startswith("CONNECTION_RECEIVED") for line in echo.lines) == 12, "\n".join(echo.lines)
        if sealed:
            assert per_worker(b, "handshakes_completed")[per_worker(b, "sessions_opened").index(12)] == 12
            assert b.worker_total("auth_failed") == 0 and a.worker_total("auth_failed") == 0
        opened = per_worker(b, "sessions_opened")
        listener = opened.index(12)
        other = 1 - listener
        assert opened[other] == 0, opened
        cids = [int(m, 16) for m in re.findall(r"accepted connection ([0-9a-f]+) from member 1", b.log)]
        assert len(cids) == 12, b.log
        elsewhere = sum(owner(c, 2, 2) == other for c in cids)
        assert per_worker(b, "sessions_redirected") == [elsewhere if w == other else 0 for w in range(2)]
        assert per_worker(b, "redirects_ended")[other] == elsewhere
        assert per_worker(b, "mtp_packets_in")[other] == 0
        for name in ("redirects_refused", "redirect_ends_lost", "handoff_dropped", "sessions_no_listener"):
            assert b.worker_total(name) == 0, name
