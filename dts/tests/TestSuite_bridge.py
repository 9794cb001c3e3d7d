# SPDX-License-Identifier: BSD-3-Clause
"""Four mtpd daemons in four namespaces on one bridge, over net_af_packet."""
import time

import pytest

from framework.daemon import Daemon
from framework.testbed import Topology


@pytest.fixture
def four():
    topo = Topology("br", 4, bridge=True, subnet="10.91.0")
    yield topo
    topo.destroy()


class TestBridge:
    def test_four_nodes_hear_each_other(self, four):
        """Steps: one daemon per namespace on eth0 (af_packet), each
        broadcasting 300 frames/s; once all run, snapshot every daemon's
        sent and accepted counters, wait 3 s, snapshot again. Verify: in that
        window each daemon accepted what the other three sent (broadcast
        reaches all; the bridge is lossless at this rate) within 10% for
        snapshot skew; all exit 0."""
        daemons = []

        def snapshot():
            return [(d.telemetry("/mtp/workers")["lcore1"]["tx_pkts"], d.telemetry("/mtp/rx_verdicts")["accepted"])
                    for d in daemons]

        try:
            for i in range(1, 5):
                d = Daemon(f"br{i}", netns=four.ns(i),
                           ports=[{"name": "v0", "device": "net_af_packet0,iface=eth0",
                                   "addresses": [f"10.91.0.{i}/24"]}],
                           generator={"rate_pps": 300, "dst_ip": "10.91.0.255", "dst_mac": "ff:ff:ff:ff:ff:ff"})
                daemons.append(d.start())
            for d in daemons:
                d.wait_for(lambda w, v: v["accepted"] >= 100, what="frames from the others")
            before = snapshot()
            time.sleep(3)
            after = snapshot()
        finally:
            for d in daemons:
                d.stop()
        sent = [a[0] - b[0] for a, b in zip(after, before)]
        got = [a[1] - b[1] for a, b in zip(after, before)]
        assert min(sent) >= 600, sent
        for i, d in enumerate(daemons):
            assert d.exit_code == 0
            others = sum(sent) - sent[i]
            assert 0.9 * others <= got[i] <= 1.1 * others, (d.name, got[i], others)
