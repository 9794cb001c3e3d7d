# SPDX-License-Identifier: BSD-3-Clause
"""Sends crafted frames with scapy from inside a namespace. Run as a script
under `ip netns exec` (scapy binds to the namespace it starts in):

  python3 frames.py IFACE DST_MAC DST_IP KIND COUNT [PORT]

KIND: good, bad_udp_csum, bad_ip_csum, arp, truncated, other_port,
ipv6_good. Prints the number of frames sent."""
import sys

from scapy.all import ARP, IP, UDP, Ether, IPv6, Raw, sendp  # noqa: E402


def build(kind, dst_mac, dst_ip, port, i):
    payload = Raw(b"DTS" + i.to_bytes(4, "big") + bytes(57))
    eth = Ether(dst=dst_mac)
    if kind == "good":
        return eth / IP(dst=dst_ip) / UDP(sport=40000, dport=port) / payload
    if kind == "other_port":
        return eth / IP(dst=dst_ip) / UDP(sport=40000, dport=port + 1) / payload
    if kind == "bad_udp_csum":
        return eth / IP(dst=dst_ip) / UDP(sport=40000, dport=port, chksum=0x1234) / payload
    if kind == "bad_ip_csum":
        return eth / IP(dst=dst_ip, chksum=0x1234) / UDP(sport=40000, dport=port) / payload
    if kind == "arp":
        return Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(pdst=dst_ip)
    if kind == "truncated":
        # An IPv4 header that claims 200 bytes in a 60-byte frame.
        return eth / IP(dst=dst_ip, len=200) / UDP(sport=40000, dport=port) / Raw(b"x" * 10)
    if kind == "ipv6_good":
        return eth / IPv6(dst=dst_ip) / UDP(sport=40000, dport=port) / payload
    raise SystemExit(f"unknown kind {kind}")


def main():
    iface, dst_mac, dst_ip, kind, count = sys.argv[1:6]
    port = int(sys.argv[6]) if len(sys.argv) > 6 else 7400
    frames = [build(kind, dst_mac, dst_ip, port, i) for i in range(int(count))]
    sendp(frames, iface=iface, verbose=False)
    print(len(frames))


if __name__ == "__main__":
    main()
