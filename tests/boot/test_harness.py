"""Unit tests of the boot lab's own parsing: what it reads from QEMU's
monitor and L1's console decides what a failed boot reports, so a
regression here would hide the reason of the next CI failure.

Run: python3 -m unittest discover -s tests/boot -p 'test_*.py'"""

import base64
import gzip
import hashlib
import os
import socket
import tempfile
import threading
import unittest
from pathlib import Path

import monitor
from inputs import DumpError, read_back

# Shortened `info registers -a` of a 2-CPU x86_64 L1, as QEMU 10 prints it.
X86_REGISTERS = """
CPU#0
RAX=ffffffffafe4e760 RBX=0000000000000000 RCX=0000000000000000 RDX=4000000000000000
RIP=ffffffffafe4e8cb RFL=00000202 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=1
CR0=80050033 CR2=ff1fbb8ecde00000 CR3=0000000002246000 CR4=00751ef0

CPU#1
RAX=0000000000000001 RBX=ff1100000f61fb80 RCX=0000000000000000 RDX=0000000000000000
RIP=ffffffffc04841af RFL=00000046 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=0
CR0=80050033 CR2=0000000000000000 CR3=0000000002246000 CR4=00751ef0
"""
TEXT_LINE = ("  18.831 | LKVM-L1-TEXT vmlinux=0xffffffffaf400000-0xffffffffb0201d32 "
             "kvm_amd=0xffffffffc0588000+163840 kvm=0xffffffffc0451000+1146880 ")


class MonitorParsing(unittest.TestCase):
    def test_text_ranges_read_the_kernel_and_module_forms(self):
        ranges = monitor.text_ranges(TEXT_LINE)
        self.assertEqual(ranges, [
            ("vmlinux", 0xffffffffaf400000, 0xffffffffb0201d32),
            ("kvm_amd", 0xffffffffc0588000, 0xffffffffc0588000 + 163840),
            ("kvm", 0xffffffffc0451000, 0xffffffffc0451000 + 1146880),
        ])

    def test_locate_names_the_range_and_misses_outside_all(self):
        ranges = monitor.text_ranges(TEXT_LINE)
        self.assertEqual(monitor.locate(0xffffffffc04841af, ranges), "kvm+0x331af")
        self.assertIsNone(monitor.locate(0xffffffffb0201d32, ranges))

    def test_summary_gives_each_cpu_its_pc_place_and_halt(self):
        summary = monitor.cpu_summary(X86_REGISTERS, monitor.text_ranges(TEXT_LINE))
        self.assertEqual(summary, [
            "#0 RIP=ffffffffafe4e8cb (vmlinux+0xa4e8cb) halted",
            "#1 RIP=ffffffffc04841af (kvm+0x331af)",
        ])

    def test_summary_of_other_architectures_finds_their_pc(self):
        for dump, want in (("CPU#0\n PC=ffff800008012345 SP=ffff80000a003f00\n", "PC"),
                           ("CPU#0\n pc       ffffffff80001234\n mhartid  0\n", "pc"),
                           ("CPU#0\nNIP c000000000012345   LR c000000000012000\n", "NIP")):
            with self.subTest(want=want):
                (entry,) = monitor.cpu_summary(dump)
                self.assertTrue(entry.startswith(f"#0 {want}="), entry)

    def test_ask_strips_the_echo_and_escapes(self):
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "monitor"
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.bind(str(path))
            server.listen(1)

            def serve():
                conn, _ = server.accept()
                with conn:
                    conn.sendall(b"QEMU 10.0.0 monitor - type 'help'\r\n(qemu) ")
                    asked = conn.recv(4096)
                    conn.sendall(b"\x1b[K" + asked.rstrip(b"\n") + b"\r\nCPU#0\r\nRIP=1\r\n(qemu) ")

            t = threading.Thread(target=serve)
            t.start()
            try:
                out = monitor.ask(path, ["info registers -a"])
            finally:
                t.join()
                server.close()
        self.assertEqual(out, {"info registers -a": "CPU#0\nRIP=1\n"})

    def test_ask_of_a_missing_socket_is_a_monitor_error(self):
        with tempfile.TemporaryDirectory() as d:
            with self.assertRaises(monitor.MonitorError):
                monitor.ask(os.path.join(d, "absent"), ["info registers -a"])


class DiskDump(unittest.TestCase):
    def dump(self, data):
        return base64.b64encode(gzip.compress(data)).decode(), hashlib.sha256(data).hexdigest()

    def test_each_broken_dump_says_how(self):
        b64, sha = self.dump(b"an image")
        cut = base64.b64encode(gzip.compress(b"an image")[:12]).decode()
        for args, said in (((None, "/f", sha), "no dump"),
                           ((b64, "/f", None), "no checksum"),
                           ((cut, "/f", sha), "does not decode"),
                           ((b64, "/f", "0" * 64), "damaged on the way")):
            with self.subTest(said=said):
                with self.assertRaisesRegex(DumpError, said):
                    read_back(*args)



class UserNetChecks(unittest.TestCase):
    """What a virtio boot's user-mode networking line must say."""

    def test_every_check_counts(self):
        import checks
        from inputs import KNOWN_BIN
        line = ("LKVM-L2-USERNET dhcp=192.168.33.15 http="
                + hashlib.sha256(KNOWN_BIN).hexdigest() + " udp=ok dns=ok fwd=ok")
        m = checks.USERNET_LINE.search(line)
        rec = dict(zip(("l2_user_dhcp", "l2_user_http", "l2_user_udp", "l2_user_dns",
                        "l2_user_fwd"), m.groups()), l1_hostfwd="tok")
        self.assertEqual(checks.usernet_problems(rec, "tok"), [])
        bad = dict(rec, l2_user_dhcp="none", l2_user_dns="fail", l1_hostfwd=None)
        problems = checks.usernet_problems(bad, "tok")
        self.assertEqual(len(problems), 3, problems)
        self.assertIn("got none by DHCP", problems[0])
        self.assertIn("DNS", problems[1])
        self.assertEqual(checks.usernet_problems({}, "tok"),
                         ["L2 printed no LKVM-L2-USERNET line"])
        m = checks.NETBENCH_LINE.search(
            "LKVM-L2-NETBENCH via=tap bytes=8388608 seconds=2.500 sink=got 8388608")
        self.assertEqual(m.groups(), ("tap", "8388608", "2.500"))


if __name__ == "__main__":
    unittest.main()
