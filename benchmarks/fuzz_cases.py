"""Malformed and odd input for every sysplan sub-command and every file format it reads, as
hypothesis strategies, and one runner that classifies what sysplan did with a case.

Shared by the suite's fuzz test (tests/test_fuzz.py, a few thousand seeded cases) and the
long run (benchmarks/fuzz.py --cases 20000). A case is a command line plus the files it
names; it runs in-process through typer's runner under a SIGALRM guard, so a hang is a
failure, not a stuck run. The convention checked (README, house style 7):

- no traceback (no exception escapes sysplan), no Python warning or library log warning;
- the exit code is 0, 1 (a valid question with no answer) or 2 (bad input);
- a failed command prints exactly one ``error:`` line, the last line of stderr;
- a case holding a value known to be malformed exits 2 (exit 0 or 1 is a silent success).
"""

from __future__ import annotations

import copy
import json
import logging
import shlex
import signal
import tempfile
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]  # the sysplan package (the repository root)

#: What a case can end as; the first three are fine, the rest are failures.
OUTCOMES = ("ok", "exit1", "exit2", "traceback", "hang", "wrong-exit", "bad-message", "warning")
FAILURES = OUTCOMES[3:]


@dataclass(frozen=True)
class Case:
    """``sysplan ARGS`` where ``{dir}`` in an argument is the folder holding ``files``."""

    command: str
    args: tuple[str, ...]
    files: tuple[tuple[str, bytes], ...] = ()
    bad: bool = False  # holds a value known to be malformed: must exit 2

    def argv(self, folder: Path) -> list[str]:
        return [a.replace("{dir}", str(folder)) for a in self.args]

    def repro(self) -> str:
        """One shell line (file contents shown as printf'd literals, short ones in full)."""
        setup = []
        for name, content in self.files:
            shown = content if len(content) <= 300 else content[:300] + b"...(truncated)"
            setup.append(f"printf %s {shlex.quote(shown.decode('utf-8', 'backslashreplace'))}"
                         f" > {name}")
        line = "sysplan " + " ".join(shlex.quote(a.replace("{dir}/", "")) for a in self.args)
        return "; ".join([*setup, line])


@dataclass
class Outcome:
    kind: str
    exit_code: int | None = None
    signature: str = ""  # for a failure: what went wrong and where
    detail: str = ""


class _Hang(BaseException):
    """Raised by SIGALRM when a case runs past its time (BaseException: nothing catches it)."""


class _LogCatcher(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _where(tb) -> str:
    """file:function of the innermost frame inside sysplan (else the innermost of all)."""
    frames = traceback.extract_tb(tb)
    inside = [f for f in frames if f.filename.startswith(str(ROOT))] or frames
    frame = inside[-1] if inside else None
    if frame is None:
        return "?"
    try:
        name = str(Path(frame.filename).relative_to(ROOT))
    except ValueError:
        name = Path(frame.filename).name
    return f"{name}:{frame.name}"


def _runner():
    from typer.testing import CliRunner

    try:
        return CliRunner(mix_stderr=False)  # click < 8.2
    except TypeError:
        return CliRunner()


def run_case(case: Case, timeout_s: float = 40.0) -> Outcome:
    """Run ``case`` in-process and classify it (see the module docstring)."""
    from sysplan.cli.main import app

    with tempfile.TemporaryDirectory(prefix="sysplan-fuzz-") as tmp:
        folder = Path(tmp)
        for name, content in case.files:
            (folder / name).write_bytes(content)
        catcher = _LogCatcher()
        loggers = [logging.getLogger(), logging.getLogger("optuna")]
        for logger in loggers:
            logger.addHandler(catcher)
        previous = signal.signal(signal.SIGALRM, _raise_hang)
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning,
                                 ResourceWarning):  # what a plain `python` run hides too
                    warnings.simplefilter("ignore", category)
                result = _runner().invoke(app, case.argv(folder), catch_exceptions=True)
        except _Hang:
            return Outcome("hang", None, f"hang (> {timeout_s:g} s)")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            for logger in loggers:
                logger.removeHandler(catcher)
    return classify(case, result, list(caught), catcher.records)


def _raise_hang(signum, frame):
    raise _Hang


def classify(case: Case, result, caught, records) -> Outcome:
    code = result.exit_code
    try:
        stderr = result.stderr
    except ValueError:  # click < 8.2 without mix_stderr=False
        stderr = ""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        exc = result.exception
        where = _where(result.exc_info[2]) if result.exc_info else "?"
        return Outcome("traceback", code, f"{type(exc).__name__} {where}",
                       f"{type(exc).__name__}: {str(exc)[:200]}")
    if "Traceback (most recent call last)" in stderr + result.stdout:
        return Outcome("traceback", code, "traceback printed", stderr[-300:])
    if caught:
        w = caught[0]
        return Outcome("warning", code, f"{w.category.__name__} {Path(w.filename).name}",
                       str(w.message)[:200])
    if records:
        r = records[0]
        return Outcome("warning", code, f"log {r.name} {r.levelname}", r.getMessage()[:200])
    if code not in (0, 1, 2):
        return Outcome("wrong-exit", code, f"exit {code}", stderr[-200:])
    if case.bad and code != 2:
        return Outcome("wrong-exit", code, f"{case.command}: malformed input exits {code}",
                       stderr[-200:])
    if code != 0:
        lines = [line for line in stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error:")]
        if len(errors) != 1 or lines[-1] != errors[0]:
            return Outcome("bad-message", code, f"{case.command}: exit {code} without one "
                           "error line", stderr[-300:])
        if "Warning" in stderr:
            return Outcome("warning", code, "warning text in stderr", stderr[-300:])
        return Outcome(f"exit{code}", code)
    if "Warning" in stderr or "error:" in stderr:
        return Outcome("warning", code, "warning or error text on success", stderr[-300:])
    return Outcome("ok", 0)


# --- values -----------------------------------------------------------------------------------

#: Strings no numeric or choice option accepts.
NOT_NUMBERS = ["", " ", "abc", "-1", "0x10", "1e400", "nan", "-inf", "\u00b2", "\u0663",
               "\uff11", "1\u00a0000", "1.5.2", "--", "1e", "\u202e1", "NaN", "0" * 80 + "x",
               "1" * 200]
HUGE_INTS = ["99999999999999999999", "9223372036854775808", "18446744073709551616"]
#: Whole-number options: every entry is refused (1,048,577 only where a GPU count is meant).
BAD_COUNTS = [*NOT_NUMBERS, *HUGE_INTS, "0", "1.5", "inf", "1e3", "-0", "+-1", "1048577"]
_BAD_WHOLE = BAD_COUNTS[:-1]
BAD_FLOATS = [*NOT_NUMBERS, "0", "-0.0", "1e300", "1e13", "inf", "Infinity", "1e-400x"]

#: Random text for any option (no NUL: a real command line cannot hold one).
_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                max_size=24)
#: Numbers written oddly: some valid, some not.
_numberish = st.one_of(
    st.integers(-10, 10**25).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["1e300", "1e-300", "1_000", "1,024", "0.0", "4M", "1T", "1e400GiB",
                     "3GiB", "-2GiB", "1P", "1.5k", " 8 ", "٣", "²", "8\n"]),
)


def _value(valid: list[str], bad: list[str]):
    """(value, known-bad) for one option: a valid value, a known-bad one, or random text."""
    return st.one_of(
        st.sampled_from(valid).map(lambda v: (v, False)),
        st.sampled_from(bad).map(lambda v: (v, True)),
        st.one_of(_text, _numberish).map(lambda v: (v, False)),
    )


@st.composite
def _options(draw, table: dict[str, tuple[list[str], list[str]]], *, must_be_bad: bool,
             flags: tuple[str, ...] = (), most: int = 4):
    """Some options of ``table`` (name -> (valid values, bad values)) and flags; with
    ``must_be_bad`` at least one value comes from a bad list."""
    names = draw(st.lists(st.sampled_from(sorted(table)), max_size=most, unique=True))
    args: list[str] = []
    bad = False
    for name in names:
        value, is_bad = draw(_value(*table[name]))
        args += [name, value]
        bad |= is_bad
    if must_be_bad and not bad:
        name = draw(st.sampled_from(sorted(table)))
        args += [name, draw(st.sampled_from(table[name][1]))]
        bad = True
    args += draw(st.lists(st.sampled_from(flags), max_size=2, unique=True)) if flags else []
    return args, bad


# --- sub-commands -----------------------------------------------------------------------------

TRAIN_BASE = ("train", "--model", "8b", "--cluster", "dgx-h100", "--gpus", "8", "--top", "1")
TRAIN_OPTIONS = {
    "--gpus": (["1", "2", "4", "8", "16"], BAD_COUNTS),
    "--seq-len": (["1024", "4096", "8192"], [*_BAD_WHOLE, "1073741825"]),
    "--global-batch": (["64", "512", "4M", "1M", "1,024"], [*NOT_NUMBERS, *HUGE_INTS, "0",
                                                            "1P", "9e30T", "-4M"]),
    "--precision": (["bf16", "fp8"], ["fp4", "BF16", "", "bf16,fp8"]),
    "--objective": (["throughput", "time-to-train", "cost"], ["speed", "", "Throughput"]),
    "--train-tokens": (["1T", "15T", "1e12"], [*NOT_NUMBERS, "0", "1e400", "1e31"]),
    "--gpu-hour-cost": (["2.5", "1"], BAD_FLOATS),
    "--top": (["1", "2"], [*_BAD_WHOLE, "1001"]),
    "--memory-headroom": (["4GiB", "0B", "10GB"], ["abc", "1e400GiB", "-1GiB", "1e31B",
                                                   "\u0663GiB", "4 parsecs", "1" * 5000]),
    "--stages": (["uniform", "dp"], ["dpp", ""]),
    "--tp": (["1", "2", "8"], BAD_COUNTS), "--pp": (["1", "2"], BAD_COUNTS),
    "--vpp": (["1", "2"], BAD_COUNTS), "--dp": (["1", "4", "8"], BAD_COUNTS),
    "--cp": (["1", "2"], BAD_COUNTS), "--ep": (["1"], BAD_COUNTS),
    "--micro-batch": (["1", "2"], BAD_COUNTS),
    "--recompute": (["none", "selective", "full"], ["all", "", "None"]),
    "--recompute-layers": (["1", "4"], BAD_COUNTS),
    "--zero": (["0", "1", "2", "3"], ["4", "-1", "", "one", "\u0661"]),
    "--moe-capacity-factor": (["1.25"], BAD_FLOATS),
    "--moe-dispatcher": (["auto"], ["foo", "all-to-all", ""]),
    "--cuda-graphs": (["none", "scoped", "full"], ["all", "", "None", "on"]),
    "--pp-layout": (["Et*16|t*16|t*16|t*16L", "Et*8|(t*8|)*6t*8L"],
                    ["", "E|L", "Et*0|L", "(t*4|)*", "Et*99999999999|L", "((t)*2", "Et|tL",
                     "EEt|tL", "t|Et*63L", "\u0661"]),
    "--runtime": (["megatron", "deepspeed", "torchtitan"], ["nemo", ""]),
    "--export": (["json", "megatron", "json,megatron"], [",", "", "nope", "json,nope", " , "]),
    "--torchtitan-format": (["python", "toml"], ["yaml", ""]),
    "--profile": (["none", "h100-sxm"], ["no-such-profile", "", "a" * 5000]),
    "--lengths": (["8192", "lognormal:8192,0.5,max=8192", "uniform:4096,8192"],
                  ["normal:1e18,1", "uniform:1,1", "lognormal:8192,50", "40", "abc", "",
                   "normal:200000,1", "uniform:1,1e30", "lognormal:1e300,1", "normal:-1,1"]),
    "--model": (["8b", "llama2-7b", "gpt3-xl"], ["no-such-model", "", "a" * 5000, "/"]),
    "--cluster": (["dgx-h100", "dgx-a100", "frontier"], ["no-such-cluster", "", "a" * 5000,
                                                       "/dev/null"]),
}
TRAIN_FLAGS = ("--json", "--explain", "--sequence-parallel", "--no-overlap-grad-reduce",
               "--tp-comm-overlap")

SERVE_PINS = ("--gpus", "1", "--tp", "1", "--pp", "1", "--replicas", "1", "--no-disagg",
              "--max-num-seqs", "64", "--max-num-batched-tokens", "2048",
              "--weights-precision", "bf16", "--kv-precision", "bf16")
SERVE_BASE = ("serve", "--model", "8b", "--cluster", "dgx-h100", "--num-requests", "20",
              "--trials", "0", "--isl", "512", "--osl", "32")
_LENGTH_SPECS = ["512", "normal:512,100", "lognormal:512,0.5", "uniform:100,1000"]
_BAD_LENGTHS = ["abc", "", "0", "-5", "normal:1,100000000", "uniform:1,1e30", "lognormal:1e300,1",
                "lognormal:4000,1e200", "uniform:5,1", "normal:", "200000", "\u00b2",
                "uniform:1,2,3", "1e400"]
SERVE_OPTIONS = {
    "--isl": (_LENGTH_SPECS, _BAD_LENGTHS), "--osl": (_LENGTH_SPECS, _BAD_LENGTHS),
    "--rate": (["4", "0.5", "inf"], [*NOT_NUMBERS, "0", "1e400", "1e10", "\u00b2", "\u0663"]),
    "--arrival": (["poisson", "constant", "gamma:cv=2"],
                  ["gamma:cv=1e-300", "gamma:cv=1e300", "gamma", "burst", "", "gamma:cv=abc"]),
    "--concurrency": (["4"], _BAD_WHOLE),
    "--num-requests": (["10", "30"], [*_BAD_WHOLE, "1000001"]),
    "--slo": (["ttft=300ms", "tpot:p99=50ms", "itl=100ms"],
              ["ttft", "ttft=abc", "foo=1s", "ttft:p200=1s", "ttft=-1ms", "=", ""]),
    "--engine": (["vllm", "sglang", "trtllm"], ["tgi", "", "VLLM"]),
    "--top": (["1", "3"], [*_BAD_WHOLE, "1001"]),
    "--trials": (["0", "1"], [*NOT_NUMBERS, *HUGE_INTS, "1.5", "1000001"]),
    "--timeout": (["5"], BAD_FLOATS),
    "--routing": (["least-loaded", "round-robin"], ["random", ""]),
    "--gpu-cost": (["2.5"], BAD_FLOATS),
    "--profile": (["none", "h100-sxm"], ["no-such-profile", ""]),
    "--max-num-seqs": (["8", "256"], [*_BAD_WHOLE, "16777217"]),
    "--max-num-batched-tokens": (["2048", "8192"], [*_BAD_WHOLE, "16777217"]),
    "--prefix-cache-hit-rate": (["0", "0.5"], ["1", "-0.1", "abc", "nan", "\u00b2", ""]),
    "--capacity-policy": (["max-utilization"], ["evict", ""]),
    "--export": (["vllm", "vllm,sglang"], [",", "", "nope", "vllm,nope"]),
    "--storage": ([], ["foo://x", "postgresql://nobody@127.0.0.1:1/x", "sqlite:///{dir}/no/x.db",
                       "", "sqlite://"]),
    "--gpus": (["1"], BAD_COUNTS), "--tp": (["1"], BAD_COUNTS), "--pp": (["1"], BAD_COUNTS),
    "--replicas": (["1"], BAD_COUNTS),
    "--weights-precision": (["bf16", "fp8"], ["fp4", ""]),
    "--kv-precision": (["bf16", "fp8"], ["fp4", ""]),
}
SERVE_OPTIONS["--storage"] = (["sqlite:///{dir}/s.db"], SERVE_OPTIONS["--storage"][1])

PROFILE_OPTIONS = {  # every profile case holds a bad value: a valid one would measure the node
    "--device": (["cpu"], ["gpu", "", "tpu", "CPU"]),
    "--tp": (["1", "1,2"], ["", ",", "0", "1,,2", "\u00b2", "1,99999999999999999999", "a"]),
    "--world": (["2"], BAD_COUNTS),
}
RUN_OPTIONS = {
    "--nproc": (["1", "2"], BAD_COUNTS), "--steps": (["1"], [*_BAD_WHOLE, "1000001"]),
    "--warmup": (["0"], [*NOT_NUMBERS, *HUGE_INTS, "1000001"]),
    "--backend": (["gloo"], ["mpi", ""]),
}
EXPORT_OPTIONS = {
    "--to": (["megatron", "json", "deepspeed,torchtitan"], [",", "", "nope", "megatron,nope"]),
    "--rank": (["1", "2"], [*_BAD_WHOLE, "3", "999"]),
    "--torchtitan-format": (["python", "toml"], ["yaml", ""]),
}


@st.composite
def train_options(draw, must_be_bad: bool = True) -> Case:
    args, bad = draw(_options(TRAIN_OPTIONS, must_be_bad=must_be_bad, flags=TRAIN_FLAGS))
    if "--export" in args:
        args += ["-o", "{dir}/out"]
    return Case("train", (*TRAIN_BASE, *args), bad=bad)


@st.composite
def serve_options(draw, must_be_bad: bool = True) -> Case:
    args, bad = draw(_options(SERVE_OPTIONS, must_be_bad=must_be_bad, most=3,
                              flags=("--json",)))
    if "--export" in args:
        args += ["-o", "{dir}/out"]
    return Case("serve", (*SERVE_BASE, *SERVE_PINS, *args), bad=bad)


@st.composite
def profile_options(draw) -> Case:
    args, _ = draw(_options(PROFILE_OPTIONS, must_be_bad=True, flags=("--quick",)))
    return Case("profile", ("profile", *args, "-o", "{dir}/p.yaml"), bad=True)


@st.composite
def run_options(draw) -> Case:
    args, _ = draw(_options(RUN_OPTIONS, must_be_bad=True, flags=("--compare", "--json")))
    ref = draw(st.sampled_from(["plan.json#\u00b2", "plan.json#0", "plan.json#x", "plan.json#1",
                                "missing.json", "plan.json#99999999999999999999", ""]))
    return Case("run", ("run", f"{{dir}}/{ref}", *args), ((("plan.json", plan_bytes()),)),
                bad=True)


@st.composite
def export_options(draw) -> Case:
    args, bad = draw(_options(EXPORT_OPTIONS, must_be_bad=False))
    if "--to" not in args:
        args += ["--to", "json"]
    return Case("export", ("export", "{dir}/plan.json", *args, "-o", "{dir}/out"),
                (("plan.json", plan_bytes()),), bad=bad)


@st.composite
def stray_arguments(draw) -> Case:
    """Unknown verbs, stray options and arguments (always exit 2)."""
    verb = draw(st.sampled_from(["models", "clusters", "nope", "train", "serve", "--bogus",
                                 "TRAIN", ""]))
    extra = draw(st.lists(st.sampled_from(["--bogus", "x", "--top", "-q", "--gpus=abc",
                                           "--json=1"]), min_size=1, max_size=2))
    if verb in ("train", "serve"):
        extra = ["--model", "8b", "--cluster", "dgx-h100", "--nope", *extra]
    return Case("stray", (verb, *extra), bad=True)


# --- files ------------------------------------------------------------------------------------

CLUSTER = {"gpu": "H100-SXM", "gpus_per_node": 8, "default_nodes": 2,
           "tiers": [{"name": "NVLink", "domain": "node", "bandwidth": "450GB/s",
                      "latency": "1us"},
                     {"name": "IB", "domain": "cluster", "bandwidth": "50GB/s",
                      "latency": "5us", "oversubscription": 1}]}
CONFIG = {"model_type": "llama", "hidden_size": 1024, "num_attention_heads": 16,
          "num_key_value_heads": 8, "num_hidden_layers": 8, "intermediate_size": 2816,
          "vocab_size": 32000, "max_position_embeddings": 4096}
PROFILE = {"schema_version": "1.0", "name": "fuzz", "base": "h100-sxm",
           "device": {"name": "NVIDIA H100 80GB HBM3", "kind": "gpu", "gpu": "H100-SXM",
                      "count": 1, "date": "2026-01-01T00:00:00Z"},
           "gemm": {"dtype": "bf16", "columns": ["m", "n", "k", "time_s"],
                    "rows": [[512, 512, 4096, 1.8e-05], [4096, 4096, 4096, 2.0e-4]]},
           "attention": {"columns": ["backend", "batch_heads", "seq", "head_dim", "causal",
                                     "fwd_s", "bwd_s"],
                         "rows": [["flash", 8, 1024, 128, True, 5.8e-05, 2.1e-4]]},
           "memory": {"columns": ["op", "bytes", "time_s"], "rows": [["copy", 8589934592,
                                                                     0.00285]]},
           "overhead": {"forward_s": 1e-5, "backward_s": 2e-5}}
TRACE_ROWS = [[0, 300, 20], [0.1, 800, 10], [0.5, 120, 40]]
RUNS_HEADER = ["label", "model", "gpus", "tp", "pp", "cp", "sequence_parallel", "zero",
               "micro_batch", "global_batch", "seq_len", "recompute", "step_time_s"]
RUNS_ROWS = [[f"run{i}", "8b", 8 * (1 + i % 2), 1 + i % 2, 1, 1, i % 2, 1, 1, 64, 8192, "none",
              6.5 + i / 3] for i in range(8)]
SERVING_HEADER = ["label", "model", "engine", "tp", "input_len", "output_len", "num_requests",
                  "request_rate", "output_throughput", "mean_ttft_ms", "mean_itl_ms"]
SERVING_ROWS = [[f"s{i}", "llama-3.1-8b", "vllm", 1, 128 * (i + 1), 64, 40, "inf",
                 2000.0 + 300 * i, 80.0 + i, 12.0 + i] for i in range(4)]
LENGTHS = [[8192], [4096], [6000], [2048]]

#: Values a fuzzed field takes: wrong types, out of range, non-finite, huge, deep.
_NASTY = [None, True, False, 0, -1, 1, 2**63, 10**20, 1.5, -0.5, 1e300, -1e300,
          float("inf"), float("-inf"), float("nan"), "", "abc", "1e400", "\u00b2", "inf", [],
          {}, [1, 2], {"a": 1}, "8", "H100-SXM", "node", "cluster", "bf16", "fp8", "yes",
          "4096", "1e30"]
#: (copied: a later mutation may add to a drawn {} or [], which must not change _NASTY)
_leaf = st.one_of(st.sampled_from(_NASTY).map(copy.deepcopy), st.integers(), st.floats(), _text)


def _deep(depth: int):
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def _paths(value, here=()):
    yield here
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*here, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*here, index))


@st.composite
def mutated(draw, base):
    """``base`` with up to three fields replaced, dropped or added."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "replace", "replace", "drop", "add", "deep"]))
        if action == "drop":
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(_text)] = draw(_leaf)
        elif action == "deep":
            parent[path[-1]] = _deep(draw(st.sampled_from([5, 150])))
        else:
            parent[path[-1]] = draw(_leaf)
    return doc


def _dump_json(doc) -> bytes:
    return json.dumps(doc).encode()


def _dump_yaml(doc) -> bytes:
    return yaml.safe_dump(doc, allow_unicode=True).encode()


def _dump_csv(rows) -> bytes:
    if not isinstance(rows, list):
        return f"{rows}\n".encode()
    return "\n".join(",".join(str(c) for c in row) if isinstance(row, list) else str(row)
                     for row in rows).encode() + b"\n"


@st.composite
def document(draw, base, dump: Callable[[object], bytes]) -> bytes:
    """A file from ``base``: as is, mutated, truncated, with stray bytes, or garbage."""
    kind = draw(st.sampled_from(["mutated"] * 6 + ["truncated", "bytes", "garbage", "valid",
                                                   "empty", "deep"]))
    if kind == "deep":  # nested past any parser's recursion limit
        depth = draw(st.sampled_from([1000, 5000, 100_000]))
        return draw(st.sampled_from([b"[" * depth + b"]" * depth, b"- " * depth + b"x\n",
                                     b'{"a": ' * depth + b"1" + b"}" * depth]))
    if kind == "valid":
        return dump(base)
    if kind == "empty":
        return draw(st.sampled_from([b"", b"\n", b"null", b"[]", b"{}", b"- 1\n", b"a,b\n"]))
    if kind == "garbage":
        return draw(st.binary(max_size=120))
    text = dump(base) if kind != "mutated" else dump(draw(mutated(base)))
    if kind == "truncated":
        return text[:draw(st.integers(0, max(0, len(text) - 1)))]
    if kind == "bytes":
        at = draw(st.integers(0, len(text)))
        return text[:at] + draw(st.sampled_from([b"\xff\xfe", b"\x00", b"\r", b"\t", b'"',
                                                 b"\xe2\x80\xae", b"#"])) + text[at:]
    return text


def _table(header, rows):
    """A CSV as a document: a list of rows with the header first."""
    return [list(header), *[list(r) for r in rows]]


@st.composite
def cluster_file(draw) -> Case:
    content = draw(document(CLUSTER, _dump_yaml))
    return Case("cluster-yaml", ("train", "--model", "8b", "--cluster", "{dir}/c.yaml",
                                 "--gpus", "8", "--top", "1"), (("c.yaml", content),))


@st.composite
def config_file(draw) -> Case:
    content = draw(document(CONFIG, _dump_json))
    verb = draw(st.sampled_from(["train", "serve"]))
    args = (("train", "--model", "{dir}/config.json", "--cluster", "dgx-h100", "--gpus", "8",
             "--top", "1") if verb == "train" else
            ("serve", "--model", "{dir}/config.json", *SERVE_BASE[3:], *SERVE_PINS))
    return Case("config-json", args, (("config.json", content),))


@st.composite
def profile_file(draw) -> Case:
    as_json = draw(st.booleans())
    name = "p.json" if as_json else "p.yaml"
    content = draw(document(PROFILE, _dump_json if as_json else _dump_yaml))
    return Case("profile-file", (*TRAIN_BASE, "--profile", f"{{dir}}/{name}"),
                ((name, content),))


@st.composite
def trace_file(draw) -> Case:
    if draw(st.booleans()):
        name = "t.csv"
        content = draw(document(_table(["arrival_s", "input_tokens", "output_tokens"],
                                       TRACE_ROWS), _dump_csv))
    else:
        name = "t.jsonl"
        rows = draw(mutated([{"arrival_s": a, "input_tokens": i, "output_tokens": o}
                             for a, i, o in TRACE_ROWS]))
        content = b"\n".join(json.dumps(r).encode() for r in rows) if isinstance(rows, list) \
            else json.dumps(rows).encode()
    return Case("trace", (*SERVE_BASE[:-4], *SERVE_PINS, "--trace", f"{{dir}}/{name}"),
                ((name, content),))


@st.composite
def plan_file(draw) -> Case:
    doc = json.loads(plan_bytes())
    content = draw(document(doc, _dump_json))
    if draw(st.booleans()):
        return Case("plan-json", ("export", "{dir}/plan.json", "--to",
                                  draw(st.sampled_from(["megatron", "json", "torchtitan",
                                                        "deepspeed"])), "-o", "{dir}/out"),
                    (("plan.json", content),))
    # run would execute a plan that loads: ask for a rank the file does not hold
    return Case("plan-json", ("run", "{dir}/plan.json#999"), (("plan.json", content),))


@st.composite
def runs_file(draw) -> Case:
    serving = draw(st.booleans())
    table = _table(SERVING_HEADER, SERVING_ROWS) if serving else _table(RUNS_HEADER, RUNS_ROWS)
    content = draw(document(table, _dump_csv))
    flag = ("--serving",) if serving else ()
    return Case("runs-csv", ("calibrate", *flag, "{dir}/runs.csv", "--cluster", "dgx-h100",
                             "-o", "{dir}/o.yaml"), (("runs.csv", content),))


@st.composite
def lengths_file(draw) -> Case:
    content = draw(document(LENGTHS, _dump_csv))
    return Case("lengths-file", ("train", "--model", "8b", "--cluster", "frontier", "--gpus",
                                 "16", "--top", "1", "--lengths", "{dir}/l.txt"),
                (("l.txt", content),))


@cache
def plan_bytes() -> bytes:
    """A real `sysplan train --json` document (two plans), made once."""
    result = _runner().invoke(_app(), [*TRAIN_BASE[:-1], "2", "--json"])
    assert result.exit_code == 0, result.stderr
    return result.stdout.encode()


def _app():
    from sysplan.cli.main import app

    return app


@dataclass(frozen=True)
class Family:
    """A kind of case and its share of a run (expensive kinds get fewer cases)."""

    name: str
    strategy: st.SearchStrategy
    weight: float
    tags: tuple[str, ...] = field(default=())


FAMILIES = (
    Family("train-bad", train_options(), 20),
    Family("train", train_options(must_be_bad=False), 2),
    Family("serve-bad", serve_options(), 20),
    Family("serve", serve_options(must_be_bad=False), 0.5),
    Family("profile", profile_options(), 6),
    Family("run", run_options(), 6),
    Family("export", export_options(), 4),
    Family("stray", stray_arguments(), 3),
    Family("cluster-yaml", cluster_file(), 5),
    Family("config-json", config_file(), 4),
    Family("profile-file", profile_file(), 4),
    Family("trace", trace_file(), 1.5),
    Family("plan-json", plan_file(), 4),
    Family("runs-csv", runs_file(), 0.4),  # a calibration fit: seconds a case
    Family("lengths-file", lengths_file(), 1),
)
