# SPDX-License-Identifier: BSD-3-Clause
"""Traffic sources that run inside a namespace."""
import os

from .testbed import run

FRAMES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "frames.py")


def send_frames(netns, iface, dst_mac, dst_ip, kind, count, port=7400):
    """Sends `count` crafted frames of `kind`; returns how many scapy sent."""
    out = run("ip", "netns", "exec", netns, "/usr/bin/python3", FRAMES, iface, dst_mac, dst_ip, kind,
              str(count), str(port)).stdout
    return int(out.strip().splitlines()[-1])
