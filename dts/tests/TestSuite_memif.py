# SPDX-License-Identifier: BSD-3-Clause
"""Two mtpd daemons joined by net_memif exchange frames and both count."""
from framework.daemon import Daemon

SOCK = "/run/mtpd-dts/memif-ab.sock"


def memif_daemon(name, role, ip, peer_ip, mac, peer_mac):
    device = f"net_memif0,role={role},id=0,socket={SOCK},socket-abstract=no"
    return Daemon(name, ports=[{"name": "m0", "device": device, "mac": mac, "addresses": [f"{ip}/24"]}],
                  generator={"rate_pps": 2000, "dst_ip": peer_ip, "dst_mac": peer_mac})


class TestMemif:
    def test_two_daemons_exchange_frames(self):
        """Steps: start a memif server daemon and a client daemon, each sending
        2000 frames/s to the other; let at least 2000 frames arrive each
        way; stop the client, then the server. Verify: both exit 0; each
        accepted only well-formed MTP frames (no other verdict); the server,
        which outlived the client, accepted every frame the client sent
        (memif is lossless) less at most one ring of frames in flight."""
        a = memif_daemon("memif-a", "server", "10.90.0.1", "10.90.0.2", "02:00:00:00:09:01", "02:00:00:00:09:02")
        b = memif_daemon("memif-b", "client", "10.90.0.2", "10.90.0.1", "02:00:00:00:09:02", "02:00:00:00:09:01")
        a.start()
        try:
            b.start()
            try:
                for d in (a, b):
                    d.wait_for(lambda w, v: v["accepted"] >= 2000, what="2000 frames from the peer")
            finally:
                b.stop()
        finally:
            a.stop()
        assert a.exit_code == 0 and b.exit_code == 0
        for d in (a, b):
            v = d.final["rx_verdicts"]
            assert v["accepted"] >= 2000
            assert sum(v.values()) == v["accepted"], v
        assert a.final["rx_verdicts"]["accepted"] <= b.worker_total("tx_pkts")
        assert a.final["rx_verdicts"]["accepted"] >= b.worker_total("tx_pkts") - 1024
        assert b.final["rx_verdicts"]["accepted"] <= a.worker_total("tx_pkts")
