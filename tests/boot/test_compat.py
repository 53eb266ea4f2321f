"""The compat suite's parsing: stages split from the console, and each
way a stage can fail named."""

import unittest

import compat

TOKENS = {"rootdisk": "aa", "defaultrootfs": "bb", "sandbox-prog": "cc"}


def console(**over):
    stages = {
        "rootdisk": ["LKVM-ROOTDISK root=/dev/vda mounted=/dev/vda:ext4:rw token=aa arch=x86_64",
                     "rc=0"],
        "defaultrootfs": [
            "lkvm: info: kernel 6.1.0-50-amd64 has its 9p root support as modules: loading ...",
            "lkvm guest default: type 'exit' to end it",
            "/ # " + compat.typed_line("bb").rstrip("\r"),
            "LKVM-HOSTPROG arch=x86_64 token=bb cwd=/ root=/dev/root",
            "LKVM-HOSTFS=ro", "rc=0"],
        "sandbox-prog": ["LKVM-HOSTPROG arch=x86_64 token=cc cwd=/host/work root=/dev/root",
                         "rc=7"],
        "sandbox-dashes": ["x86_64", "rc=3"],
    }
    stages.update(over)
    lines = ["L1 noise"]
    for name, body in stages.items():
        lines.append(f"LKVM-COMPAT-BEGIN {name}")
        lines += body[:-1]
        lines.append(f"LKVM-COMPAT-END {name} {body[-1]}")
    return lines


class CompatTest(unittest.TestCase):
    def test_a_good_run_has_no_problems(self):
        stages = compat.split(console())
        self.assertEqual(set(stages), set(compat.STAGES))
        self.assertEqual(stages["sandbox-prog"]["rc"], 7)
        self.assertEqual(compat.problems(stages, "x86_64", TOKENS), [])

    def test_each_failure_is_named(self):
        cases = {
            "rootdisk": (["LKVM-ROOTDISK root=/dev/vdb mounted=/dev/vdb:ext4:ro token=aa "
                          "arch=x86_64", "rc=0"], "root='/dev/vdb'"),
            "defaultrootfs": (["LKVM-HOSTPROG arch=x86_64 token=bb cwd=/ root=/dev/root",
                               "LKVM-HOSTFS=rw", "rc=0"], "not read-only"),
            "sandbox-prog": (["LKVM-HOSTPROG arch=x86_64 token=cc cwd=/ root=/dev/root",
                              "rc=0"], "expected ./prog's 7"),
            "sandbox-dashes": (["aarch64", "rc=3"], "never printed 'x86_64'"),
        }
        for stage, (body, says) in cases.items():
            found = compat.problems(compat.split(console(**{stage: body})), "x86_64", TOKENS)
            self.assertTrue(any(says in p for p in found), (stage, found))
        found = compat.problems(compat.split(console()[:5]), "x86_64", TOKENS)
        self.assertIn("never finished", found[0])

    def test_the_typed_line_runs_the_program_and_ends_the_shell(self):
        line = compat.typed_line("tok")
        self.assertTrue(line.startswith("/host/hostprog tok 0;"))
        self.assertTrue(line.endswith("exit\r"))


if __name__ == "__main__":
    unittest.main()
