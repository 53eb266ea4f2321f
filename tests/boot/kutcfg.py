"""kvm-unit-tests' unittests.cfg, read the way upstream's
scripts/common.bash reads it, and the cases upstream's run_tests.sh would
run for TARGET=kvmtool, each with the lkvm command line upstream's
arm/run and riscv/run would build.

Only the forms the arm and riscv files use are understood; anything else
(a `check =` line, a `disabled_if` that is not one [[ ]] comparison, an
`smp` that is not a number or $MAX_SMP arithmetic) raises CfgError, so a
newer tarball that needs more fails loudly instead of running the wrong
cases."""

import re
import shlex

# scripts/vmm.bash: KVMTOOL_DEFAULT_OPTS.
DEFAULT_OPTS = ["--nodefaults", "--network", "mode=none", "--loglevel=warning"]
# scripts/runtime.bash: a case without `timeout =` gets 90 s.
DEFAULT_TIMEOUT = 90
KEYS = ("file", "smp", "test_args", "kvmtool_params", "groups", "arch", "machine", "check",
        "accel", "timeout", "disabled_if")


class CfgError(Exception):
    pass


def parse(text):
    """The sections of a unittests.cfg, in order, as dicts of the keys
    common.bash reads (qemu_params and extra_params are QEMU's and left
    out). A `kvmtool_params = \"\"\"...\"\"\"` block spans lines."""
    cases, cur = [], None
    lines = iter(text.splitlines())
    for raw in lines:
        # `read -r line` drops leading and trailing blanks.
        line = raw.strip()
        m = re.fullmatch(r"\[(.*)\]", line)
        if m:
            cur = {"name": m.group(1)}
            cases.append(cur)
            continue
        m = re.fullmatch(r"(\w+) *= *(.*)", line)
        if not m or cur is None or m.group(1) not in KEYS:
            continue
        key, value = m.groups()
        if key == "kvmtool_params" and value.startswith('"""'):
            value = value[3:]
            parts = [value] if value else []
            for more in lines:
                end = re.fullmatch(r'(.*)"""[ \t]*', more)
                if end:
                    parts.append(end.group(1))
                    break
                parts.append(more)
            # A trailing backslash joins lines, as in a shell script.
            value = re.sub(r"\\\n", "", "\n".join(parts))
        cur[key] = value
    return cases


def arith(expr, env):
    """A shell arithmetic expression of integers and $VARs: ?:, ||, &&,
    comparisons, + - * / %, unary minus, parentheses."""
    expr = re.sub(r"\$\{?(\w+)\}?", lambda m: str(_var(env, m.group(1))), expr)
    tokens = re.findall(r"\d+|\|\||&&|==|!=|<=|>=|[-+*/%()<>?:!]|\S", expr)
    pos = 0

    def peek():
        return tokens[pos] if pos < len(tokens) else None

    def take(want=None):
        nonlocal pos
        tok = peek()
        if tok is None or (want is not None and tok != want):
            raise CfgError(f"cannot evaluate {expr!r}: expected {want or 'more'} at {tok!r}")
        pos += 1
        return tok

    binary = [("||",), ("&&",), ("==", "!="), ("<", ">", "<=", ">="), ("+", "-"),
              ("*", "/", "%")]

    def unary():
        tok = take()
        if tok == "(":
            v = ternary()
            take(")")
            return v
        if tok == "-":
            return -unary()
        if tok == "!":
            return int(not unary())
        if tok.isdigit():
            return int(tok)
        raise CfgError(f"cannot evaluate {expr!r}: unexpected {tok!r}")

    def level(i):
        if i == len(binary):
            return unary()
        v = level(i + 1)
        while peek() in binary[i]:
            op, rhs = take(), level(i + 1)
            if op in ("/", "%") and rhs == 0:
                raise CfgError(f"division by zero in {expr!r}")
            v = {"||": lambda: int(bool(v or rhs)), "&&": lambda: int(bool(v and rhs)),
                 "==": lambda: int(v == rhs), "!=": lambda: int(v != rhs),
                 "<": lambda: int(v < rhs), ">": lambda: int(v > rhs),
                 "<=": lambda: int(v <= rhs), ">=": lambda: int(v >= rhs),
                 "+": lambda: v + rhs, "-": lambda: v - rhs, "*": lambda: v * rhs,
                 # Shell division truncates toward zero.
                 "/": lambda: int(v / rhs), "%": lambda: v - rhs * int(v / rhs)}[op]()
        return v

    def ternary():
        cond = level(0)
        if peek() != "?":
            return cond
        take("?")
        yes = ternary()
        take(":")
        no = ternary()
        return yes if cond else no

    value = ternary()
    if peek() is not None:
        raise CfgError(f"cannot evaluate {expr!r}: trailing {peek()!r}")
    return value


def _var(env, name):
    if name not in env:
        raise CfgError(f"unknown variable ${name}")
    return env[name]


def smp(value, env):
    """`smp =`: a number, $MAX_SMP, or $((arithmetic))."""
    value = value.strip()
    m = re.fullmatch(r"\$\(\((.*)\)\)", value)
    if m:
        return arith(m.group(1), env)
    v = re.sub(r"\$\{?(\w+)\}?", lambda m: str(_var(env, m.group(1))), value)
    if not v.isdigit():
        raise CfgError(f"unsupported smp value {value!r}")
    return int(v)


def disabled(cond, env):
    """`disabled_if =`: one `[[ A op B ]]` string comparison (== = !=),
    evaluated as bash would with env's variables."""
    m = re.fullmatch(r"\[\[(.*)\]\]", cond.strip())
    words = shlex.split(m.group(1)) if m else []
    # shlex has dropped the quotes, so "$TARGET" is $TARGET here.
    if len(words) != 3 or words[1] not in ("==", "=", "!="):
        raise CfgError(f"unsupported disabled_if {cond!r}")
    a, op, b = [re.sub(r"\$\{?(\w+)\}?", lambda m: str(_var(env, m.group(1))), w)
                for w in words]
    return (a == b) != (op == "!=")


def timeout_s(value):
    """`timeout =` in timeout(1)'s form (10s, 5, 2m), as whole seconds."""
    if not value:
        return DEFAULT_TIMEOUT
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", value.strip())
    if not m:
        raise CfgError(f"unsupported timeout {value!r}")
    secs = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    return max(1, int(-(-secs // 1)))


class Case:
    """One case to run: its name, .flat file, vCPUs, lkvm arguments after
    `lkvm run` and timeout in seconds."""

    def __init__(self, name, flat, cpus, args, timeout, groups):
        self.name, self.flat, self.cpus = name, flat, cpus
        self.args, self.timeout, self.groups = args, timeout, groups

    def __repr__(self):
        return f"Case({self.name!r}, {self.args!r}, timeout={self.timeout})"


def select(entries, arch, max_smp, flat_dir, want_nodefault=()):
    """(cases to run, {name: why not}) under runtime.bash's rules for
    TARGET=kvmtool and ACCEL=kvm: `nodefault` groups are left out (unless
    named in want_nodefault, as `make bench` names micro-bench),
    `migration` ones too (kvmtool cannot migrate), `arch` must match,
    `accel` must allow kvm, `disabled_if` must be false. Each command
    line is the one arm/run or riscv/run builds: --kernel, --cpus,
    --params TEST_ARGS, the default options, then kvmtool_params."""
    env = {"TARGET": "kvmtool", "ARCH": arch, "MAX_SMP": max_smp, "ACCEL": "kvm"}
    run, skipped = [], {}
    for e in entries:
        name = e["name"]
        groups = e.get("groups", "").split()
        why = None
        if "file" not in e:
            why = "no file"
        elif "nodefault" in groups and name not in want_nodefault:
            why = "nodefault group (manual runs only)"
        elif "migration" in groups:
            why = "migration group (kvmtool cannot migrate)"
        elif e.get("arch") and e["arch"] != arch:
            why = f"{e['arch']} only"
        elif e.get("accel") and e["accel"].split(",")[0] != "kvm":
            why = f"accel {e['accel']} only"
        elif e.get("disabled_if") and disabled(e["disabled_if"], env):
            why = f"disabled_if {e['disabled_if']}"
        elif e.get("check"):
            raise CfgError(f"{name}: `check =` is not supported by the lab")
        if why:
            skipped[name] = why
            continue
        try:
            cpus = smp(e.get("smp", "1"), env)
            timeout = timeout_s(e.get("timeout"))
        except CfgError as err:
            raise CfgError(f"{name}: {err}") from err
        flat = e["file"]
        args = ["--kernel", f"{flat_dir}/{flat}", "--cpus", str(cpus)]
        if e.get("test_args"):
            # common.bash evals "--params $test_args": shell quoting applies.
            args += ["--params", *shlex.split(e["test_args"])]
        args += DEFAULT_OPTS + shlex.split(e.get("kvmtool_params", ""))
        run.append(Case(name, flat, cpus, args, timeout, groups))
    return run, skipped


def _version(s):
    """A version field as scripts/arch-run.bash reads it: leading digits,
    or None (unset) when there are none."""
    m = re.match(r"\d+", s or "")
    return int(m.group()) if m else None


def kernel_version(uname_r):
    """(VERSION, PATCHLEVEL, SUBLEVEL, EXTRAVERSION) of `uname -r` as
    env_params splits it; the last two may be None."""
    v, p, rest = (uname_r.split(".", 2) + ["", ""])[:3]
    s, _, x = rest.partition("-")
    return _version(v), _version(p), _version(s), _version(x)


def _has_fix(kernel, minver):
    """env_generate_errata: does a kernel at least `minver` carry the fix?"""
    kv, kp, ks, kx = kernel
    v, p, rest = (minver.split(".", 2) + ["", ""])[:3]
    s, _, x = rest.partition("-")
    v, p, s, x = _version(v), _version(p), _version(s), _version(x)
    if v is None or p is None:
        raise CfgError(f"bad minimum kernel version {minver!r} in errata.txt")
    if kv > v or (kv == v and kp > p):
        return True
    if (kv, kp) != (v, p):
        return False
    if ks is not None and s is not None:
        if ks != s:
            return ks > s
        if kx is not None and x is not None:
            return kx >= x
        return not x
    return not s


def environ(errata_txt, uname_r):
    """The environ upstream's run scripts hand every test as its initrd
    (scripts/arch-run.bash, ENVIRON_DEFAULT=yes, the configure default):
    TARGET, the host kernel's version (here L1's) and ERRATA_<commit>=y|n
    from errata.txt for the fixes that kernel has."""
    kernel = kernel_version(uname_r)
    lines = ["TARGET=kvmtool", f"KERNEL_VERSION_STRING={uname_r}"]
    for name, value in zip(("KERNEL_VERSION", "KERNEL_PATCHLEVEL", "KERNEL_SUBLEVEL",
                            "KERNEL_EXTRAVERSION"), kernel):
        lines.append(f"{name}={'' if value is None else value}")
    for raw in errata_txt.splitlines():
        if raw.startswith("#"):
            continue
        fields = re.sub(r"[ \t]", "", raw).split(":")
        if len(fields) < 2 or not fields[0]:
            continue
        lines.append(f"ERRATA_{fields[0]}={'y' if _has_fix(kernel, fields[1]) else 'n'}")
    return "\n".join(lines) + "\n"
