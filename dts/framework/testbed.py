# SPDX-License-Identifier: BSD-3-Clause
"""Testbed settings (dts/conf/testbed.yaml) and namespace topologies."""
import os
import subprocess

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load():
    with open(os.path.join(ROOT, "dts", "conf", "testbed.yaml"), encoding="utf-8") as f:
        conf = yaml.safe_load(f)
    conf["mtpd"] = os.path.join(ROOT, conf["mtpd"])
    conf["netns_tool"] = os.path.join(ROOT, conf["netns_tool"])
    return conf


TESTBED = load()


def run(*args, check=True, **kw):
    """Runs a command, returning CompletedProcess with text output."""
    return subprocess.run(list(args), check=check, capture_output=True, text=True, **kw)


class Topology:
    """N namespaces <prefix><i> with eth0 = <subnet>.<i>, by veth pair or bridge."""

    def __init__(self, name, nodes, bridge, subnet, addresses=True):
        self.prefix = TESTBED["namespace_prefix"] + name
        self.nodes = nodes
        args = [TESTBED["netns_tool"], "create", "--nodes", str(nodes),
                "--bridge" if bridge else "--pairs", "--prefix", self.prefix, "--subnet", subnet]
        if not addresses:
            args.append("--no-addresses")
        run(*args)
        self.subnet = subnet

    def ns(self, i):
        return f"{self.prefix}{i}"

    def ip(self, i):
        return f"{self.subnet}.{i}"

    def mac(self, i, ifname="eth0"):
        out = run("ip", "-n", self.ns(i), "-j", "link", "show", ifname).stdout
        return yaml.safe_load(out)[0]["address"]

    def iface_stat(self, i, ifname, stat):
        out = run("ip", "netns", "exec", self.ns(i), "cat", f"/sys/class/net/{ifname}/statistics/{stat}").stdout
        return int(out)

    def destroy(self):
        run(TESTBED["netns_tool"], "destroy", "--prefix", self.prefix)
