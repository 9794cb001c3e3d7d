# SPDX-License-Identifier: BSD-3-Clause
"""A real mtpd process: config written from a dict, started (optionally in a
network namespace), queried over DPDK telemetry, stopped with a signal."""
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import zlib

import yaml

from .testbed import TESTBED


class DaemonError(AssertionError):
    pass


class Daemon:
    def __init__(self, name, ports=None, netns=None, extra=None, generator=None, hugepages=False, node_id=None,
                 peers=None, test=None, security=None):
        """ports=None runs the embedded default config (no --config).
        security: the config's security section; None says plaintext
        explicitly (the suites of other features), as the issue allows for
        tests; TestSuite_security passes keys (framework.keys)."""
        self.name = name
        self.netns = netns
        self.file_prefix = TESTBED["file_prefix"] + name
        self.socket = os.path.join(TESTBED["socket_dir"], name + ".sock")
        self.config = None if ports is None else {
            "node": {"name": name, "id": zlib.crc32(name.encode()) % 1000000 + 1},
            "ports": ports,
            "lcores": {"control": 0, "workers": [1]},
            "memory": {"hugepages": hugepages, "size_mb": 256, "mbufs": 8191},
            "eal": {"file_prefix": self.file_prefix},
            "idle": {"policy": "adaptive"},
            "app": {"socket": self.socket},
            "security": security or {"mode": "plaintext"},
        }
        if self.config is None:
            self.file_prefix, self.socket = "mtpd-mtpd", "/run/mtpd/mtpd.sock"
        else:
            if node_id is not None:
                self.config["node"]["id"] = node_id
            if peers:
                self.config["peers"] = peers
            if generator:
                self.config["test"] = {"generator": dict(enabled=True, **generator)}
            if test:
                self.config.setdefault("test", {}).update(test)
        for key, value in (extra or {}).items() if self.config else ():
            if isinstance(value, dict):
                self.config.setdefault(key, {}).update(value)
            else:  # a list section, e.g. groups
                self.config[key] = value
        self.proc = None
        self.log = ""
        self.final = None
        self.exit_code = None
        self.stop_seconds = None

    # -- life cycle -------------------------------------------------------

    def start(self):
        fd, self.config_path = tempfile.mkstemp(prefix=f"mtpd-{self.name}-", suffix=".yaml")
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(self.config or {}, f)
        cmd = [TESTBED["mtpd"]] + (["--config", self.config_path] if self.config else [])
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns] + cmd
        self.out_path = self.config_path + ".log"
        self.out = open(self.out_path, "w+")
        self.proc = subprocess.Popen(cmd, stdout=self.out, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + TESTBED["start_timeout_s"]
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DaemonError(f"mtpd {self.name} exited with {self.proc.returncode} at start:\n{self.read_log()}")
            if "mtpd: running:" in self.read_log():
                return self
            time.sleep(0.05)
        self.kill()
        raise DaemonError(f"mtpd {self.name} did not report running within {TESTBED['start_timeout_s']} s:\n"
                          f"{self.read_log()}")

    def read_log(self):
        with open(self.out_path) as f:
            self.log = f.read()
        return self.log

    def stop(self, sig=signal.SIGTERM):
        """Signals the daemon, waits for it, parses its final counters."""
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        try:
            self.exit_code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
            raise DaemonError(f"mtpd {self.name} ignored signal {sig} for 30 s")
        self.stop_seconds = time.monotonic() - t0
        self.out.close()
        self.read_log()
        for line in self.log.splitlines():
            if line.startswith("MTPD_FINAL "):
                self.final = json.loads(line[len("MTPD_FINAL "):])
        os.unlink(self.config_path)
        os.unlink(self.out_path)
        return self

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    # -- observation ------------------------------------------------------

    def telemetry(self, command):
        """Sends one command on the DPDK telemetry socket and returns its value."""
        path = f"/var/run/dpdk/{self.file_prefix}/dpdk_telemetry.v2"
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
            s.settimeout(5)
            s.connect(path)
            s.recv(4096)  # greeting: version, pid, max_output_len
            s.send(command.encode())
            reply = json.loads(s.recv(1 << 16).decode())
        return reply[command]

    def wait_for(self, predicate, timeout=20, what="condition"):
        """Polls telemetry until predicate(workers, verdicts) holds."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = (self.telemetry("/mtp/workers"), self.telemetry("/mtp/rx_verdicts"))
            if predicate(*last):
                return last
            time.sleep(0.1)
        raise DaemonError(f"mtpd {self.name}: {what} not reached in {timeout} s; last counters {last}")

    def worker_total(self, name):
        return sum(w[name] for w in self.final["workers"])

    def counter(self, name):
        """A worker counter summed over workers, read live over telemetry."""
        return sum(w[name] for w in self.telemetry("/mtp/workers").values())

    def forget(self):
        """After SIGKILL: remove what a killed daemon could not clean up."""
        import shutil
        shutil.rmtree(f"/var/run/dpdk/{self.file_prefix}", ignore_errors=True)
        for path in [self.socket] + [p.split("socket=")[1].split(",")[0] for p in
                                     (port["device"] for port in (self.config or {}).get("ports", []))
                                     if "socket=" in p]:
            if os.path.exists(path):
                os.unlink(path)


def leftovers():
    """What dts daemons might leave behind: processes, files, sockets."""
    found = []
    out = subprocess.run(["pgrep", "-a", "-f", TESTBED["mtpd"]], capture_output=True, text=True).stdout
    found += [f"process: {l}" for l in out.splitlines() if l.strip()]
    for d in ("/dev/hugepages",):
        if os.path.isdir(d):
            found += [f"hugepage file: {d}/{f}" for f in os.listdir(d) if f.startswith(TESTBED["file_prefix"])]
    if os.path.isdir("/var/run/dpdk"):
        found += [f"runtime dir: {f}" for f in os.listdir("/var/run/dpdk") if f.startswith(TESTBED["file_prefix"])]
    if os.path.isdir(TESTBED["socket_dir"]):
        found += [f"socket: {f}" for f in os.listdir(TESTBED["socket_dir"])]
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [f"namespace: {l.split()[0]}" for l in ns.splitlines() if l.startswith(TESTBED["namespace_prefix"])]
    return found
