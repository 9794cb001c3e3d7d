# SPDX-License-Identifier: BSD-3-Clause
"""Daemons on net_tap ports joined by a kernel bridge in one namespace."""
import contextlib

from .daemon import Daemon
from .testbed import TESTBED, run


@contextlib.contextmanager
def bridged_taps(name, flood=False):
    """A namespace <prefix><name> with a kernel bridge br0; yields
    start(dname, i, port, memory, **daemon_kw), which starts a daemon on
    net_tap device dts<name><i> (addresses given by the caller in `port`)
    and puts the tap on the bridge. flood=True makes the bridge a hub
    (ageing time 0: it learns nothing and floods every frame), so anything
    else on it sees every frame. Every daemon is killed and the namespace
    removed at exit."""
    ns = TESTBED["namespace_prefix"] + name
    run("ip", "netns", "add", ns)
    daemons = []
    try:
        run("ip", "-n", ns, "link", "add", "br0", "type", "bridge", *(["ageing_time", "0"] if flood else []))
        run("ip", "-n", ns, "link", "set", "br0", "up")

        def start(dname, i, port, memory, **kw):
            iface = f"dts{name[:6]}{i}"
            port = dict({"name": "t0", "device": f"net_tap{i},iface={iface}", "mac": f"02:00:00:00:0d:{i:02x}"}, **port)
            extra = dict({"memory": memory}, **kw.pop("extra", {}))
            d = Daemon(dname, netns=ns, node_id=i, ports=[port], extra=extra, **kw).start()
            daemons.append(d)
            # The kernel side of a tap starts with the daemon's MAC; a
            # bridge would take that as its own address and keep frames
            # for it instead of forwarding them, so it gets another one.
            run("ip", "-n", ns, "link", "set", iface, "address", f"02:00:00:00:ee:{i:02x}")
            run("ip", "-n", ns, "link", "set", iface, "master", "br0", "up")
            return d

        yield start
    finally:
        for d in daemons:
            d.kill()
        run("ip", "netns", "del", ns)
