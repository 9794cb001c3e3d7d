# SPDX-License-Identifier: BSD-3-Clause
"""A bare application client in Python: the attach exchange of
shm-api/include/mtp/shm_attach.h done by hand, so dts can check what mtpd
does with applications independently of libmtp's own code.

Run as a script (python3 -m framework.app_client SOCKET), it attaches,
maps the region, checks its header, prints one line
"attached <app_id> <region_bytes> <channels>" and then waits to be killed.
"""
import fcntl
import mmap
import os
import re
import socket
import struct
import sys

ATTACH_MAGIC = 0x4154504D


def _layout_version():
    """shm::layout_version, read from the header both sides compile, so this
    client asks for what this tree's mtpd speaks (MTP_LAYOUT_VERSION when
    run as `python3 -c SOURCE`, which has no file to find the tree from)."""
    if "MTP_LAYOUT_VERSION" in os.environ:
        return int(os.environ["MTP_LAYOUT_VERSION"])
    header = os.path.join(os.path.dirname(__file__), "..", "..", "shm-api", "include", "mtp", "shm_layout.h")
    with open(header) as f:
        return int(re.search(r"inline constexpr uint32_t layout_version = (\d+);", f.read()).group(1))


LAYOUT_VERSION = _layout_version()
REGION_MAGIC = b"MTPSHM\x00\x01"
F_GET_SEALS, F_SEAL_SHRINK, F_SEAL_GROW = 1034, 0x2, 0x4
STATUS = {0: "ok", 1: "not_allowed", 2: "bad_request", 3: "layout_mismatch", 4: "no_resources", 5: "timeout"}


def request(channels=1, version=LAYOUT_VERSION, magic=ATTACH_MAGIC):
    return struct.pack("<IIII48x", magic, version, channels, 0)


def attach(path, req=None, timeout=5.0):
    """Returns (status name, reason, fds, app_id, greeting line)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    greeting = b""
    while not greeting.endswith(b"\n"):
        c = s.recv(1)
        if not c:
            raise RuntimeError("mtpd closed before its greeting ended")
        greeting += c
    s.sendall(req if req is not None else request())
    data, fds, _, _ = socket.recv_fds(s, 256, 3)
    while len(data) < 256:
        more = s.recv(256 - len(data))
        if not more:
            break
        data += more
    magic, status, _version, fd_count, app_id = struct.unpack_from("<IIIIQ", data)
    assert magic == ATTACH_MAGIC, data[:16]
    reason = data[24:].split(b"\x00")[0].decode()
    return STATUS.get(status, str(status)), reason, fds, app_id, greeting.decode(), s


def daemon_heartbeat(fd, channel=0):
    """mtpd's heartbeat word of a channel (channel_header, second cache line)."""
    h = region_header(fd)
    size = os.fstat(fd).st_size
    with mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ) as m:
        off = 256 + channel * h["channel_bytes"] + 64
        return struct.unpack_from("<Q", m, off)[0]


def region_header(fd):
    """The region's header fields as a dict, read through a fresh mapping."""
    size = os.fstat(fd).st_size
    with mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as m:
        head = m[:96]
    (magic, version, header_bytes, region_bytes, channels_offset, channel_count, channel_bytes,
     to_daemon, to_app, desc_bytes, buffer_count, buffers_offset, buffer_bytes, headroom,
     tx_buffers) = struct.unpack_from("<8sIIQQIIIIIIQIII", head)
    return {"magic": magic, "version": version, "region_bytes": region_bytes, "channel_count": channel_count,
            "channel_bytes": channel_bytes,
            "buffer_count": buffer_count, "buffer_bytes": buffer_bytes, "tx_buffers": tx_buffers,
            "mapped_bytes": size, "sealed": fcntl.fcntl(fd, F_GET_SEALS) & (F_SEAL_SHRINK | F_SEAL_GROW) == 6}


if __name__ == "__main__":
    status, reason, fds, app_id, _, sock = attach(sys.argv[1], request(int(sys.argv[2]) if len(sys.argv) > 2 else 1))
    if status != "ok":
        print(f"refused {status} {reason}", flush=True)
        sys.exit(1)
    h = region_header(fds[0])
    assert h["magic"] == REGION_MAGIC and h["sealed"], h
    print(f"attached {app_id} {h['region_bytes']} {h['channel_count']}", flush=True)
    sys.stdin.read()  # until killed, or stdin closes
