# SPDX-License-Identifier: BSD-3-Clause
"""Driving the scapy attacker (attacker.py) from a test: one attack run in
the attacker's namespace, and waiting for the counter that says it was
stopped."""
import json
import os
import time

from .testbed import ROOT, run

ATTACKER = os.path.join(ROOT, "dts", "framework", "attacker.py")


def attacker_mac(ns):
    out = run("ip", "-n", ns, "-j", "link", "show", "eth0").stdout
    return json.loads(out)[0]["address"]


def run_attack(ns, kind, own_ip, **spec):
    """Runs one attack from namespace ns (its eth0, address own_ip unless
    the spec claims another src_ip); returns the attacker's report."""
    spec = dict({"kind": kind, "src_mac": attacker_mac(ns), "src_ip": own_ip}, **spec)
    out = run("ip", "netns", "exec", ns, "/usr/bin/python3", ATTACKER, "eth0", json.dumps(spec), timeout=120).stdout
    return json.loads(out.strip().splitlines()[-1])


def moved(d, counter, before, at_least=1, timeout=10):
    """Waits until a worker counter of daemon d grew by at_least from
    before; returns the growth (asserts it within timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        grown = d.counter(counter) - before
        if grown >= at_least or time.monotonic() > deadline:
            assert grown >= at_least, f"{d.name}: {counter} moved by {grown}, expected at least {at_least}"
            return grown
        time.sleep(0.1)
