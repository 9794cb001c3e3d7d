# SPDX-License-Identifier: BSD-3-Clause
"""mtpd on a veth pair between two namespaces, through net_af_xdp and
net_af_packet: frames from the kernel peer are counted by the daemon, and
the daemon's test generator reaches the kernel peer."""
import pytest

from framework.daemon import Daemon
from framework.testbed import Topology
from framework.traffic import send_frames


@pytest.fixture
def pair():
    topo = Topology("veth", 2, bridge=False, subnet="10.89.0")
    yield topo
    topo.destroy()


@pytest.mark.parametrize("driver", ["net_af_xdp", "net_af_packet"])
class TestVeth:
    def test_frames_both_ways(self, pair, driver):
        """Steps: mtpd in node 1 owns eth0 through DRIVER and generates 500
        frames/s to node 2; node 2's kernel side sends 50 good MTP frames
        and 10 with a bad UDP checksum to the daemon. Verify: the daemon
        accepts exactly 50, drops exactly 10 as bad_udp_checksum, and node
        2's eth0 received at least every frame the daemon reports sent."""
        mac1, mac2 = pair.mac(1), pair.mac(2)
        device = f"{driver}0,iface=eth0" + (",start_queue=0,queue_count=1" if driver == "net_af_xdp" else "")
        d = Daemon(f"veth-{driver[4:]}", netns=pair.ns(1),
                   ports=[{"name": "v0", "device": device, "addresses": ["10.89.0.1/24"]}],
                   generator={"rate_pps": 500, "dst_ip": "10.89.0.2", "dst_mac": mac2})
        rx_before = pair.iface_stat(2, "eth0", "rx_packets")
        d.start()
        try:
            assert send_frames(pair.ns(2), "eth0", mac1, "10.89.0.1", "good", 50) == 50
            assert send_frames(pair.ns(2), "eth0", mac1, "10.89.0.1", "bad_udp_csum", 10) == 10
            d.wait_for(lambda w, v: v["accepted"] >= 50 and v["bad_udp_checksum"] >= 10 and
                       w["lcore1"]["tx_pkts"] >= 200, what="50 accepted, 10 bad, 200 sent")
        finally:
            d.stop()
        assert d.exit_code == 0
        assert d.final["rx_verdicts"]["accepted"] == 50
        assert d.final["rx_verdicts"]["bad_udp_checksum"] == 10
        sent = d.worker_total("tx_pkts")
        assert sent >= 200
        assert pair.iface_stat(2, "eth0", "rx_packets") - rx_before >= sent
