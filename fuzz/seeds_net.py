"""Seeds of the `usernet` target (fuzz/fuzz_targets/usernet.rs): frames a
guest's network stack sends, built by hand. Imported by seeds.py."""

import struct

GUEST_MAC = bytes([2, 0x15, 0x15, 0x15, 0x15, 0x15])
GW_MAC = bytes([2, 1, 1, 1, 1, 1])
GUEST = bytes([192, 168, 33, 15])
GW = bytes([192, 168, 33, 1])
SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f">{len(data) // 2}H", data))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def ipv4(proto, payload, src=GUEST, dst=GW, ident=1, flags_frag=0x4000):
    h = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, flags_frag, 64, proto, 0, src, dst)
    h = h[:10] + struct.pack(">H", csum(h)) + h[12:]
    return h + payload


def eth(payload, ethertype=0x0800, dst=GW_MAC):
    return dst + GUEST_MAC + struct.pack(">H", ethertype) + payload


def udp(sport, dport, data, src=GUEST, dst=GW):
    u = struct.pack(">HHHH", sport, dport, 8 + len(data), 0) + data
    pseudo = src + dst + struct.pack(">BBH", 0, 17, len(u))
    return ipv4(17, u[:6] + struct.pack(">H", csum(pseudo + u) or 0xFFFF) + u[8:], src, dst)


def icmp_echo(data=b"ping"):
    m = struct.pack(">BBHHH", 8, 0, 0, 7, 1) + data
    return ipv4(1, m[:2] + struct.pack(">H", csum(m)) + m[4:])


def arp_request(target=GW):
    return struct.pack(">HHBBH", 1, 0x0800, 6, 4, 1) + GUEST_MAC + GUEST + bytes(6) + target


def dhcp_discover():
    msg = bytes([1, 1, 6, 0]) + struct.pack(">I", 0x1234) + bytes(20) + GUEST_MAC + bytes(10 + 192)
    msg += bytes([99, 130, 83, 99, 53, 1, 1, 255])
    return udp(68, 67, msg, src=bytes(4), dst=bytes([255] * 4))


def raw(frame):
    return struct.pack("<BH", 0, len(frame)) + frame


def tcp(port, flags, seq, ack, data_len=0, fill=0x61):
    return struct.pack("<BBBIIBB", 1, port, flags, seq, ack, data_len, fill)


def udp_op(port, n, fill=0x62):
    return struct.pack("<BBBB", 2, port, n, fill)


HOST, LATER, TAKE = b"\x03", b"\x04", b"\x05"


def seeds_usernet():
    return {
        "arp-icmp": raw(eth(arp_request(), 0x0806, dst=b"\xff" * 6)) + raw(eth(icmp_echo())) + TAKE,
        "dhcp": raw(eth(dhcp_discover(), dst=b"\xff" * 6)) + TAKE,
        "udp-echo": udp_op(0, 16) + HOST + HOST + TAKE + udp_op(0x10, 3) + HOST + TAKE,
        "udp-closed-dns": udp_op(1, 8) + HOST + udp_op(2, 30) + HOST + TAKE,
        "udp-raw": raw(eth(udp(40000, 9, b"raw datagram"))) + HOST + HOST + TAKE,
        "tcp-open-close": tcp(0, SYN, 1000, 0) + HOST + HOST + TAKE + tcp(0, ACK, 1001, 1)
        + tcp(0, ACK | PSH, 1001, 1, 20) + HOST + HOST + TAKE + tcp(0, FIN | ACK, 1021, 1) + HOST + TAKE,
        "tcp-refused": tcp(1, SYN, 5, 0) + HOST + HOST + TAKE,
        "tcp-timeouts": tcp(0, SYN, 1, 0) + tcp(0x10, SYN, 1, 0) + HOST + LATER + b"\x05" + LATER + b"\xff"
        + HOST + TAKE,
        "flow-cap": b"".join(udp_op(p << 4, 4) + udp_op((p << 4) | 1, 4) for p in range(8)) + HOST + TAKE,
        "malformed": raw(eth(b"\x45\x00\x00")) + raw(eth(ipv4(6, b"\x00" * 10))) + raw(b"\x00" * 8)
        + raw(eth(ipv4(17, b"\x00" * 8, flags_frag=0x2000))) + TAKE,
    }
