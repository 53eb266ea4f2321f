"""Unit tests of the kvm-unit-tests suite's parsing: which upstream cases
run with which lkvm command line, and how a case's console output becomes
its result. A mistake here would run the wrong cases or pass a failing one.

Run: python3 -m unittest discover -s tests/boot -p 'test_*.py'"""

import shlex
import tarfile
import unittest
from unittest import mock

import kut
import kutcfg

CFG = '''
# A comment, and a case commented out upstream:
#[pmu-tcg-icount-1]
#accel = tcg

[selftest-setup]
file = selftest.flat
smp = 2
test_args = 'setup smp=2 mem=256'
qemu_params = -m 256
kvmtool_params = --mem 256
groups = selftest

[gicv2-mmio-3p]
file = gic.flat
smp = $((($MAX_SMP < 3)?$MAX_SMP:3))
test_args = mmio
kvmtool_params = --irqchip=gicv2
groups = gic

[pci-test]
file = pci-test.flat
groups = pci
disabled_if = [[ "$TARGET" != qemu ]]

[its-migration]
file = gic.flat
groups = its migration
arch = arm64

[micro-bench]
file = micro-bench.flat
smp = 2
groups = nodefault micro-bench
accel = kvm
arch = arm64

[arm32-only]
file = selftest.flat
arch = arm

[tcg-only]
file = selftest.flat
accel = tcg

[timer]
file = timer.flat
groups = timer
timeout = 10s
arch = arm64

[multi]
file = selftest.flat
kvmtool_params = """--pmu \\
  --irqchip=gicv3"""
test_args = "a b"
'''


class CfgParsing(unittest.TestCase):
    def test_sections_keys_and_comments(self):
        cases = kutcfg.parse(CFG)
        self.assertEqual([c["name"] for c in cases],
                         ["selftest-setup", "gicv2-mmio-3p", "pci-test", "its-migration",
                          "micro-bench", "arm32-only", "tcg-only", "timer", "multi"])
        first = cases[0]
        self.assertEqual(first["test_args"], "'setup smp=2 mem=256'")
        self.assertEqual(first["kvmtool_params"], "--mem 256")
        self.assertNotIn("qemu_params", first)

    def test_multiline_params_join_backslash_lines(self):
        multi = kutcfg.parse(CFG)[-1]
        self.assertEqual(shlex.split(multi["kvmtool_params"]), ["--pmu", "--irqchip=gicv3"])

    def test_arith_is_shell_arithmetic(self):
        expr = "($MAX_SMP < 8)?$MAX_SMP:8"
        self.assertEqual(kutcfg.arith(expr, {"MAX_SMP": 2}), 2)
        self.assertEqual(kutcfg.arith(expr, {"MAX_SMP": 16}), 8)
        self.assertEqual(kutcfg.arith("1 + 2 * 3 - -1", {}), 8)
        self.assertEqual(kutcfg.arith("7 / 2 == 3 && 1 || 0", {}), 1)
        self.assertEqual(kutcfg.arith("0 ? 1 : 2 ? 3 : 4", {}), 3)
        for bad in ("1 +", "$NOPE", "2 ** 3", "(1", "1 / 0"):
            with self.assertRaises(kutcfg.CfgError, msg=bad):
                kutcfg.arith(bad, {"MAX_SMP": 2})

    def test_smp_forms(self):
        env = {"MAX_SMP": 2}
        self.assertEqual(kutcfg.smp("4", env), 4)
        self.assertEqual(kutcfg.smp("$MAX_SMP", env), 2)
        self.assertEqual(kutcfg.smp("$((($MAX_SMP < 3)?$MAX_SMP:3))", {"MAX_SMP": 4}), 3)
        with self.assertRaises(kutcfg.CfgError):
            kutcfg.smp("8,threads=4", env)

    def test_disabled_if(self):
        env = {"TARGET": "kvmtool"}
        self.assertTrue(kutcfg.disabled('[[ "$TARGET" != qemu ]]', env))
        self.assertFalse(kutcfg.disabled('[[ "$TARGET" != kvmtool ]]', env))
        self.assertTrue(kutcfg.disabled('[[ $TARGET == kvmtool ]]', env))
        for bad in ('[[ -f /x ]]', '[ "$TARGET" != qemu ]', '[[ a != b ]] && [[ c == d ]]'):
            with self.assertRaises(kutcfg.CfgError, msg=bad):
                kutcfg.disabled(bad, env)

    def test_timeouts(self):
        self.assertEqual(kutcfg.timeout_s(None), 90)
        self.assertEqual(kutcfg.timeout_s("10s"), 10)
        self.assertEqual(kutcfg.timeout_s("5"), 5)
        self.assertEqual(kutcfg.timeout_s("2m"), 120)
        self.assertEqual(kutcfg.timeout_s("1.5"), 2)
        with self.assertRaises(kutcfg.CfgError):
            kutcfg.timeout_s("soon")


ERRATA = """#---------------:-------------------------------:------
# commit        : minimum kernel                : summary
9e3f7a296940    : 4.9                           : arm64: KVM: pmu: ...
6c7a5dce22b3    : 4.12                          : KVM: arm/arm64: ...
8c58be34494b    : 5.6                           : KVM: arm/arm64: ...
"""


class Environ(unittest.TestCase):
    """Compared with upstream's env_params/env_errata run with a faked
    `uname -r` (same output for these releases)."""

    def env(self, release):
        return dict(l.split("=", 1) for l in kutcfg.environ(ERRATA, release).splitlines())

    def test_l1_kernel(self):
        env = self.env("6.1.0-50-arm64")
        self.assertEqual(env["TARGET"], "kvmtool")
        self.assertEqual((env["KERNEL_VERSION"], env["KERNEL_PATCHLEVEL"],
                          env["KERNEL_SUBLEVEL"], env["KERNEL_EXTRAVERSION"]),
                         ("6", "1", "0", "50"))
        self.assertEqual([env[f"ERRATA_{c}"] for c in ("9e3f7a296940", "6c7a5dce22b3",
                                                        "8c58be34494b")], ["y", "y", "y"])

    def test_version_edges(self):
        def errata(release):
            env = self.env(release)
            return "".join(env[f"ERRATA_{c}"] for c in ("9e3f7a296940", "6c7a5dce22b3",
                                                         "8c58be34494b"))
        self.assertEqual(errata("4.12"), "yyn")
        self.assertEqual(errata("4.11.99-3"), "ynn")
        self.assertEqual(errata("5.6.0-rc1"), "yyy")
        self.assertEqual(errata("5.5.19"), "yyn")
        self.assertEqual(self.env("6.12.107+deb13-riscv64")["KERNEL_SUBLEVEL"], "107")
        self.assertEqual(self.env("6.12.107+deb13-riscv64")["KERNEL_EXTRAVERSION"], "")

    def test_uname_from_the_kernel_file(self):
        self.assertEqual(kut.uname_r("/c/boot/vmlinuz-6.1.0-50-arm64"), "6.1.0-50-arm64")


class Selection(unittest.TestCase):
    def select(self, **kw):
        return kutcfg.select(kutcfg.parse(CFG), "arm64", 2, "/kut", **kw)

    def test_upstream_rules_for_kvmtool(self):
        run, skipped = self.select()
        self.assertEqual([c.name for c in run],
                         ["selftest-setup", "gicv2-mmio-3p", "timer", "multi"])
        self.assertIn("disabled_if", skipped["pci-test"])
        self.assertIn("migration", skipped["its-migration"])
        self.assertIn("nodefault", skipped["micro-bench"])
        self.assertEqual(skipped["arm32-only"], "arm only")
        self.assertIn("tcg", skipped["tcg-only"])

    def test_command_line_is_upstreams(self):
        run, _ = self.select()
        by = {c.name: c for c in run}
        self.assertEqual(by["selftest-setup"].args,
                         ["--kernel", "/kut/selftest.flat", "--cpus", "2",
                          "--params", "setup smp=2 mem=256", "--nodefaults", "--network",
                          "mode=none", "--loglevel=warning", "--mem", "256"])
        self.assertEqual(by["gicv2-mmio-3p"].cpus, 2)
        self.assertEqual(by["timer"].args[:4], ["--kernel", "/kut/timer.flat", "--cpus", "1"])
        self.assertNotIn("--params", by["timer"].args)
        self.assertEqual(by["timer"].timeout, 10)
        self.assertEqual(by["multi"].args[-2:], ["--pmu", "--irqchip=gicv3"])
        self.assertEqual(by["multi"].args[5], "a b")

    def test_nodefault_case_runs_when_asked(self):
        run, _ = self.select(want_nodefault=("micro-bench",))
        self.assertIn("micro-bench", [c.name for c in run])

    def test_check_lines_are_refused(self):
        with self.assertRaises(kutcfg.CfgError):
            kutcfg.select(kutcfg.parse("[x]\nfile = x.flat\ncheck = /a=1\n"), "arm64", 2, "/k")


@unittest.skipUnless(kut.tarball(), "the kvm-unit-tests tarball is absent")
class UpstreamFiles(unittest.TestCase):
    """The pinned tarball's own unittests.cfg files parse, and the
    expected cases come out."""

    def cfg(self, test_dir):
        with tarfile.open(kut.tarball()) as t:
            return t.extractfile(f"kvm-unit-tests/{test_dir}/unittests.cfg").read().decode()

    def test_arm64(self):
        run, skipped = kutcfg.select(kutcfg.parse(self.cfg("arm")), "arm64", 2, "/kut")
        names = [c.name for c in run]
        self.assertEqual(len(names), 33)
        for name in ("selftest-smp", "gicv2-ipi", "gicv3-active", "its-trigger", "timer",
                     "psci", "mte-asymm"):
            self.assertIn(name, names)
        for name in ("micro-bench", "fpu-context", "pci-test", "its-migration"):
            self.assertIn(name, skipped)

    def test_riscv64(self):
        run, _ = kutcfg.select(kutcfg.parse(self.cfg("riscv")), "riscv64", 2, "/kut")
        self.assertEqual([(c.name, c.cpus) for c in run],
                         [("selftest", 2), ("sbi", 2), ("dbltrp", 1)])
        self.assertEqual(run[0].args[4:6], ["--params", "foo bar baz"])


def case(name="c1", timeout=90):
    return kutcfg.Case(name, "x.flat", 1, ["--kernel", "/kut/x.flat", "--params", "a b"],
                       timeout, [])


CONSOLE = [
    (1.0, "LKVM-L1-READY"),
    (2.0, "LKVM-KUT-BEGIN c1"),
    (2.5, "PASS: selftest: setup: smp: number of CPUs matches expectation"),
    (2.6, "SUMMARY: 1 tests"),
    (2.7, "EXIT: STATUS=1\r"),
    (3.0, ""),
    (3.0, "LKVM-KUT-END c1 rc=0"),
    (3.1, "LKVM-KUT-BEGIN c2"),
    (3.2, "  Info: something"),
    (3.3, ""),
    (3.3, "LKVM-KUT-END c2 rc=1"),
    (4.0, "LKVM-KUT-BEGIN c3"),
    (4.1, "EXIT: STATUS=3"),
]


class Results(unittest.TestCase):
    def test_outputs_are_split_by_case(self):
        out = kut.case_outputs(CONSOLE)
        self.assertEqual(out["c1"][1:], (0, 1.0))
        self.assertIn("EXIT: STATUS=1\r", out["c1"][0])
        # c2 never printed an EXIT line; c1's must not count for it.
        self.assertFalse(any("EXIT" in l for l in out["c2"][0]))
        self.assertEqual(out["c3"], (["EXIT: STATUS=3"], None, None))

    def test_judge(self):
        out = kut.case_outputs(CONSOLE)
        r1 = kut.judge(case("c1"), out["c1"], "aarch64", "default")
        self.assertEqual((r1["result"], r1["status"], r1["lkvm_exit"]), ("pass", 1, 0))
        self.assertEqual(r1["summary"], "SUMMARY: 1 tests")
        self.assertIn("--params 'a b'", r1["cmdline"])
        r2 = kut.judge(case("c2"), out["c2"], "aarch64", "default")
        self.assertEqual((r2["result"], r2["status"]), ("fail", None))
        self.assertIn("no EXIT", r2["error"])
        r3 = kut.judge(case("c3"), out["c3"], "aarch64", "default")
        self.assertEqual(r3["result"], "fail")
        self.assertIn("L1 stopped", r3["error"])
        r4 = kut.judge(case("c4"), None, "aarch64", "default")
        self.assertEqual(r4["result"], "fail")

    def test_statuses(self):
        def result(lines, rc):
            return kut.judge(case(), (lines, rc, 1.0), "riscv64", "aia")
        self.assertEqual(result(["EXIT: STATUS=77"], 0)["result"], "skip")
        self.assertEqual(result(["EXIT: STATUS=1"], 1)["result"], "pass")
        bad = result(["EXIT: STATUS=3"], 0)
        self.assertEqual((bad["result"], bad["error"]), ("fail", "EXIT: STATUS=3"))
        # The first EXIT line counts, as upstream's `head -n1`.
        self.assertEqual(result(["EXIT: STATUS=3", "EXIT: STATUS=1"], 0)["result"], "fail")
        # An EXIT line inside other text is not the test's own.
        self.assertEqual(result(["echo EXIT: STATUS=1"], 0)["result"], "fail")
        timed_out = result(["EXIT: STATUS=1"], 143)
        self.assertEqual(timed_out["result"], "fail")
        self.assertIn("timeout", timed_out["error"])
        self.assertIn("exited 2", result(["EXIT: STATUS=1"], 2)["error"])

    def test_xfail_needs_an_entry_and_keeps_the_error(self):
        key = ("riscv64", "aia", "c1")
        entry = kut.Expected("L1 lacks it: widgets", "no widget here",
                             fails=r"FAIL: widget( again)?")
        with mock.patch.dict(kut.XFAIL, {key: entry}):
            def judge(*lines):
                return kut.judge(case(), (list(lines), 0, 1.0), "riscv64", "aia")
            r = judge("INFO: no widget here", "FAIL: widget", "FAIL: widget again",
                      "EXIT: STATUS=3")
            self.assertEqual((r["result"], r["xfail_reason"]), ("xfail", "L1 lacks it: widgets"))
            self.assertEqual(r["error"], "EXIT: STATUS=3")
            # Failing some other way is a failure, also next to the listed way.
            other = judge("FAIL: wrong", "EXIT: STATUS=3")
            self.assertEqual(other["result"], "fail")
            self.assertIn("never showed", other["xfail_unmatched"])
            both = judge("no widget here", "FAIL: widget", "FAIL: gadget", "EXIT: STATUS=3")
            self.assertEqual(both["result"], "fail")
            self.assertIn("FAIL: gadget", both["error"])
            ok = kut.judge(case(), (["EXIT: STATUS=1"], 0, 1.0), "riscv64", "aia")
            self.assertEqual(ok["result"], "pass")
            self.assertTrue(ok["xfail_stale"])
        # A flaky case passing is no news.
        entry.flaky = True
        with mock.patch.dict(kut.XFAIL, {key: entry}):
            ok = kut.judge(case(), (["EXIT: STATUS=1"], 0, 1.0), "riscv64", "aia")
            self.assertNotIn("xfail_stale", ok)
        r = kut.judge(case(), (["EXIT: STATUS=3"], 0, 1.0), "riscv64", "default")
        self.assertEqual(r["result"], "fail")

    def test_every_xfail_entry_says_why(self):
        for key, entry in kut.XFAIL.items():
            self.assertEqual(len(key), 3)
            self.assertIn(key[0], kut.ARCHES)
            self.assertTrue(entry.why.startswith(
                ("L1 lacks it: ", "L1 flaw: ", "lkvm gap: ", "lkvm bug: ")), key)
            self.assertGreater(len(entry.shows), 10, key)

    def test_sbi_timer_entry_takes_only_the_timer_checks(self):
        body = ["PASS: sbi: time: set_timer: timer interrupt received",
                "FAIL: sbi: time: set_timer: timer delay honored for mask irq test",
                "EXIT: STATUS=3"]
        r = kut.judge(case("sbi"), (body, 0, 4.0), "riscv64", "default")
        self.assertEqual(r["result"], "xfail")
        body.insert(2, "FAIL: sbi: hsm: hart_stop: all secondary harts stopped")
        r = kut.judge(case("sbi"), (body, 0, 4.0), "riscv64", "default")
        self.assertEqual(r["result"], "fail")

    def test_cases_script_quotes_arguments(self):
        script = kut.cases_script([case("selftest-setup", 10)])
        line = script.splitlines()[-1]
        self.assertEqual(shlex.split(line),
                         ["run_case", "selftest-setup", "10", "/lkvm", "run", "--kernel",
                          "/kut/x.flat", "--params", "a b"])

    def test_bench_figures(self):
        body = ["Timer Frequency 62500000 Hz (Output in microseconds)", "",
                "name                                total ns                         avg ns",
                "-" * 92,
                "hyp_call                           1234567.8              18.8           ",
                "ipi test skipped",
                "timer_10ms                        2560000.0           10000.0           "]
        self.assertEqual(kut.bench_figures(body),
                         [("hyp_call", 1234567.8, 18.8), ("timer_10ms", 2560000.0, 10000.0)])


if __name__ == "__main__":
    unittest.main()
