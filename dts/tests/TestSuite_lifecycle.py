# SPDX-License-Identifier: BSD-3-Clause
"""Start-up failures and cleanup: hugepages, a taken socket, a bad device."""
import os
import subprocess

from framework.daemon import Daemon, DaemonError
from framework.testbed import TESTBED


def run_config(tmp_path, name, body):
    """Runs mtpd on a config of `body` plus dts's prefix and socket for `name`."""
    f = tmp_path / f"{name}.yaml"
    f.write_text(f"node: {{name: {name}}}\n{body}eal: {{file_prefix: dts-{name}}}\n"
                 f"app: {{socket: /run/mtpd-dts/{name}.sock}}\nsecurity: {{mode: plaintext}}\n")
    return subprocess.run([TESTBED["mtpd"], "--config", str(f)], capture_output=True, text=True, timeout=60)


def null_daemon(name, **kw):
    return Daemon(name, ports=[{"name": "n0", "device": "net_null0"}], **kw)


class TestLifecycle:
    def test_hugepage_mode_leaves_no_files(self):
        """Steps: run a daemon with memory.hugepages true on net_null; look at
        /dev/hugepages while it runs; stop it. Verify: its map files exist
        while it runs and are all gone after a clean exit 0."""
        d = null_daemon("huge", hugepages=True).start()
        mine = [f for f in os.listdir("/dev/hugepages") if f.startswith(d.file_prefix + "map_")]
        assert mine, "a hugepage daemon should map hugepage files"
        d.stop()
        assert d.exit_code == 0
        assert d.worker_total("rx_pkts") > 0, "net_null delivers frames without end"
        assert not [f for f in os.listdir("/dev/hugepages") if f.startswith(d.file_prefix)]

    def test_second_daemon_on_same_socket_is_refused(self):
        """Steps: start a daemon; start a second with another file prefix but
        the same app socket. Verify: the second exits 1 with a message naming
        the socket; the first keeps running and stops with 0."""
        first = null_daemon("sock1").start()
        try:
            second = null_daemon("sock2")
            second.config["app"]["socket"] = first.socket
            try:
                second.start()
                raise AssertionError("the second daemon started")
            except DaemonError as e:
                assert "exited with 1" in str(e)
                assert f"mtpd: application socket '{first.socket}': another mtpd is listening there" in str(e)
            assert first.proc.poll() is None
        finally:
            first.stop()
        assert first.exit_code == 0

    def test_missing_driver_is_one_clear_message(self, tmp_path):
        """Steps: a config with a vdev whose driver does not exist. Verify:
        exit 1, a message naming the port and the missing driver, and no
        EAL runtime directory left behind."""
        r = run_config(tmp_path, "nodrv", "ports:\n  - {name: x0, device: net_nosuch0}\nmemory: {hugepages: false}\n")
        assert r.returncode == 1
        assert ("mtpd: port 'x0' (net_nosuch0): no DPDK driver named 'net_nosuch' is installed" in r.stderr), r.stderr
        assert not os.path.exists("/var/run/dpdk/dts-nodrv")

    def test_no_free_hugepages_is_one_clear_message(self, tmp_path):
        """Steps: ask for more hugepage memory than is free. Verify: exit 1
        with a message that says how much is needed and how to fix it."""
        r = run_config(tmp_path, "big", "ports:\n  - {name: n0, device: net_null0}\n"
                       "memory: {hugepages: true, mbufs: 16000000}\n")
        assert r.returncode == 1
        assert "MB of hugepages needed for 16000000 mbufs" in r.stderr, r.stderr
        assert "EAL" not in r.stderr
