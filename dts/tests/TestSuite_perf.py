# SPDX-License-Identifier: BSD-3-Clause
"""mtp-perf as documented: tx against rx and pingpong against echo over
memif, each ending with one MTP_PERF_SUMMARY line that tests can read."""
import json
import os
import subprocess
import tempfile
import time

import yaml

from framework.testbed import ROOT

PERF = os.path.join(ROOT, "build", "tools", "mtp-perf", "mtp-perf")
SOCK = "/run/mtpd-dts/perf.sock"


def config(name, node_id, role, cpu_of_worker, peer=None):
    c = {"node": {"name": name, "id": node_id},
         "ports": [{"name": "m0", "device": f"net_memif0,role={role},id=0,socket={SOCK},socket-abstract=no",
                    "mac": f"02:00:00:00:0c:0{node_id}", "addresses": [f"10.95.0.{node_id}/24"]}],
         "lcores": {"control": 0, "workers": [1], "cpus": {0: cpu_of_worker ^ 1, 1: cpu_of_worker}},
         "memory": {"hugepages": False, "size_mb": 512, "mbufs": 32767},
         "eal": {"file_prefix": f"dts-{name}"},
         "app": {"socket": f"/run/mtpd-dts/{name}.sock"},
         "security": {"mode": "plaintext"}}
    if peer:
        c["peers"] = [{"id": peer, "ip": f"10.95.0.{peer}", "mac": f"02:00:00:00:0c:0{peer}"}]
    fd, path = tempfile.mkstemp(suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(c, f)
    return path


def summary(out):
    lines = [l for l in out.splitlines() if l.startswith("MTP_PERF_SUMMARY ")]
    assert len(lines) == 1, out[-2000:]
    return json.loads(lines[0][len("MTP_PERF_SUMMARY "):])


def run_pair(server_args, client_args):
    """Starts the receiving side, then the sending side to completion."""
    os.makedirs(os.path.dirname(SOCK), exist_ok=True)  # memif makes the socket, not its directory
    srv_cfg = config("perfs", 2, "server", 0)
    cli_cfg = config("perfc", 1, "client", 1, peer=2)
    server = subprocess.Popen([PERF, "--config", srv_cfg] + server_args, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(2)
        client = subprocess.run([PERF, "--config", cli_cfg] + client_args, capture_output=True, text=True,
                                timeout=120)
        assert client.returncode == 0, client.stdout[-2000:] + client.stderr[-2000:]
        server_out, _ = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        os.unlink(srv_cfg)
        os.unlink(cli_cfg)
    assert server.returncode == 0, server_out[-2000:]
    return summary(client.stdout), summary(server_out), client.stdout


class TestPerf:
    def test_tx_against_rx(self):
        """Steps: mtp-perf --mode rx for 8 s, and mtp-perf --mode tx of 256 MiB
        in 1400 B messages. Verify: the tx summary counts every message
        stable at a positive rate, the rx summary counts every byte with no
        verification error, and tx printed per-second statistics blocks."""
        total = 256 << 20
        tx, rx, out = run_pair(["--mode", "rx", "--seconds", "8"],
                               ["--mode", "tx", "--members", "2", "--size", "1400", "--bytes", str(total),
                                "--seconds", "0"])
        assert tx["mode"] == "tx" and tx["bytes"] == total
        assert tx["msgs"] == (total + 1399) // 1400
        assert tx["gbit_per_s"] > 0.1
        assert rx["bytes"] == total and rx["verify_errors"] == 0
        assert "MTP statistics, second" in out and "TX stable:" in out

    def test_pingpong_against_echo(self):
        """Steps: mtp-perf --mode echo and --mode pingpong of 64 B for 3 s, busy
        workers on separate CPUs. Verify: thousands of round trips with
        ordered percentiles (p50 <= p99 <= p99.9) and a p50 under 1 ms."""
        pp, _, out = run_pair(["--mode", "echo", "--idle", "busy", "--seconds", "7"],
                              ["--mode", "pingpong", "--members", "2", "--size", "64", "--seconds", "3",
                               "--idle", "busy"])
        assert pp["round_trips"] > 1000
        assert 0 < pp["rtt_p50_us"] <= pp["rtt_p99_us"] <= pp["rtt_p999_us"]
        assert pp["rtt_p50_us"] < 1000
        assert "RTT p50" in out
