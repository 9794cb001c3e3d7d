# SPDX-License-Identifier: BSD-3-Clause
"""mtpd with its embedded default config on net_tap, fed by scapy from the
kernel side of the tap, in a namespace of its own."""
import os
import signal

import pytest

from framework.daemon import Daemon
from framework.testbed import TESTBED, run
from framework.traffic import send_frames

NS = TESTBED["namespace_prefix"] + "tap1"
DAEMON_MAC = "02:00:00:00:00:01"  # config/default.yaml


@pytest.fixture
def tap_daemon():
    run("ip", "netns", "add", NS)
    d = Daemon("default", ports=None, netns=NS)
    try:
        d.start()
        run("ip", "-n", NS, "link", "set", "mtp0", "up")
        yield d
    finally:
        d.kill()
        run("ip", "netns", "del", NS)


class TestTap:
    def test_default_config_counts_every_frame_by_verdict(self, tap_daemon):
        """Steps: start mtpd with no --config (embedded default, net_tap mtp0) in
        a namespace; from the kernel side send 20 good MTP datagrams, 5 to
        another UDP port, 7 with a bad UDP checksum, 3 with a bad IPv4 header
        checksum, 2 truncated, 4 ARP. Verify: the daemon's verdict counters
        hold exactly those numbers (ARP at least 4: the kernel may add its own)."""
        d = tap_daemon
        sent = {}
        for kind, n in (("good", 20), ("other_port", 5), ("bad_udp_csum", 7), ("bad_ip_csum", 3),
                        ("truncated", 2), ("arp", 4)):
            sent[kind] = send_frames(NS, "mtp0", DAEMON_MAC, "10.77.0.1", kind, n)
            assert sent[kind] == n
        workers, verdicts = d.wait_for(lambda w, v: v["accepted"] >= 20 and v["not_ip"] >= 4,
                                       what="20 accepted frames")
        assert verdicts["accepted"] == 20
        assert verdicts["other_udp_port"] == 5
        assert verdicts["bad_udp_checksum"] == 7
        assert verdicts["bad_ip_checksum"] == 3
        assert verdicts["bad_ip_total_length"] == 2
        assert verdicts["not_ip"] >= 4
        assert workers["lcore1"]["rx_pkts"] == sum(verdicts.values())
        info = d.telemetry("/mtp/info")
        assert info["node"] == "mtpd" and info["config"] == "<embedded default>"

        d.stop()
        assert d.exit_code == 0
        assert d.final["rx_verdicts"]["accepted"] == 20
        assert d.final["ports"]["tap0"]["ipackets"] == d.worker_total("rx_pkts")

    def test_sigterm_stops_within_two_seconds(self, tap_daemon):
        """Steps: SIGTERM a running daemon. Verify: exit code 0 within 2 s, the
        final counters printed, its socket and EAL runtime dir removed."""
        d = tap_daemon
        assert os.path.exists(d.socket)
        d.stop(signal.SIGTERM)
        assert d.exit_code == 0
        assert d.stop_seconds < TESTBED["stop_timeout_s"], d.stop_seconds
        assert d.final is not None and d.final["node"] == "mtpd"
        assert "mtpd: final counters of node mtpd" in d.log
        assert not os.path.exists(d.socket)
        assert not os.path.exists("/var/run/dpdk/mtpd-mtpd")

    def test_sigint_stops_too(self, tap_daemon):
        """Steps: SIGINT (Ctrl-C) a running daemon. Verify: exit 0 within 2 s."""
        d = tap_daemon
        d.stop(signal.SIGINT)
        assert d.exit_code == 0
        assert d.stop_seconds < TESTBED["stop_timeout_s"]

    def test_kernel_peer_resolves_mtpd_by_arp(self, tap_daemon):
        """Steps: give the kernel side of mtp0 an address, no static
        neighbour, and send 10 UDP datagrams to the daemon's 10.77.0.1:7400
        with an ordinary socket. Verify: the kernel's ARP request was
        answered and all 10 datagrams arrived as accepted MTP frames."""
        d = tap_daemon
        run("ip", "-n", NS, "addr", "add", "10.77.0.2/24", "dev", "mtp0")
        code = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                "for i in range(10): s.sendto(b'datagram %d' % i, ('10.77.0.1', 7400))\n")
        run("ip", "netns", "exec", NS, "/usr/bin/python3", "-c", code)
        workers, verdicts = d.wait_for(lambda w, v: v["accepted"] >= 10, what="10 datagrams after ARP")
        assert verdicts["accepted"] == 10
        assert workers["lcore1"]["arp_replies"] >= 1
        neigh = run("ip", "-n", NS, "neigh", "show", "10.77.0.1").stdout
        assert DAEMON_MAC in neigh.lower(), neigh
        d.stop()
        assert d.exit_code == 0


NS6 = TESTBED["namespace_prefix"] + "tap6"


@pytest.fixture
def dual_stack_ns():
    run("ip", "netns", "add", NS6)
    daemons = []
    try:
        yield daemons
    finally:
        for d in daemons:
            d.kill()
        run("ip", "netns", "del", NS6)


def dual_stack_daemon(daemons, **kw):
    """mtpd on tap mtp6 with 10.78.0.1/24 and fd00:78::1/64; the kernel side
    gets .2 / ::2 (no duplicate address detection, so it is usable at once)."""
    d = Daemon("tap6", netns=NS6, ports=[{"name": "t0", "device": "net_tap0,iface=mtp6", "mac": DAEMON_MAC,
                                          "addresses": ["10.78.0.1/24", "fd00:78::1/64"]}], **kw)
    daemons.append(d)
    d.start()
    # The kernel side gets its own MAC (it starts with the daemon's).
    run("ip", "-n", NS6, "link", "set", "mtp6", "address", "02:00:00:00:ee:02")
    run("ip", "-n", NS6, "link", "set", "mtp6", "up")
    run("ip", "-n", NS6, "addr", "add", "10.78.0.2/24", "dev", "mtp6")
    run("ip", "-n", NS6, "addr", "add", "fd00:78::2/64", "dev", "mtp6", "nodad")
    return d


class TestNeighbourDiscovery:
    def test_kernel_peer_resolves_mtpd_by_nd(self, dual_stack_ns):
        """Steps: mtpd with an IPv6 address on a tap; the kernel side sends 10
        UDP datagrams to [fd00:78::1]:7400 with an ordinary socket and no
        static neighbour. Verify: the kernel's neighbour solicitation was
        answered (nd_replies), the kernel's neighbour table has mtpd's MAC,
        and all 10 datagrams arrived as accepted frames."""
        d = dual_stack_daemon(dual_stack_ns)
        code = ("import socket; s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n"
                "for i in range(10): s.sendto(b'datagram %d' % i, ('fd00:78::1', 7400))\n")
        run("ip", "netns", "exec", NS6, "/usr/bin/python3", "-c", code)
        workers, verdicts = d.wait_for(lambda w, v: v["accepted"] >= 10, what="10 datagrams after ND")
        assert verdicts["accepted"] == 10
        assert workers["lcore1"]["nd_replies"] >= 1
        neigh = run("ip", "-n", NS6, "-6", "neigh", "show", "fd00:78::1").stdout
        assert DAEMON_MAC in neigh.lower(), neigh
        d.stop()
        assert d.exit_code == 0

    @pytest.mark.parametrize("family", [4, 6])
    def test_mtpd_resolves_a_kernel_peer(self, dual_stack_ns, family):
        """Steps: mtpd's source has the kernel side as its member, by IP
        only. Verify: mtpd asked (ARP / solicitation), Linux, which checks
        hop limit, checksum and options of a solicitation, answered, and
        mtpd learnt the kernel side's MAC."""
        ip = "10.78.0.2" if family == 4 else "fd00:78::2"
        d = dual_stack_daemon(dual_stack_ns, node_id=1, peers=[{"id": 2, "ip": ip}],
                              test={"source": {"enabled": True, "members": [2], "total_bytes": 1 << 20}})
        d.wait_for(lambda w, v: w["lcore1"]["neighbours_learned"] >= 1, what="the kernel peer learnt")
        d.stop()
        assert d.worker_total("neighbour_requests") >= 1
        assert d.worker_total("neighbours_learned") == 1
        assert f"peer 2 ({ip}) is at 02:00:00:00:ee:02 on port t0" in d.log
