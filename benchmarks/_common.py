"""Shared machinery of the benchmark scripts (not a pysciml module).

Every figure is a ratio against an anchor timed in the same process (hand-written raw
Diffrax or raw SciPy, no pysciml). One `compare` call times a set of configurations in
interleaved rounds: every round times each configuration once (one sample: one or more
calls), the order reversed every other round, so that load from other processes falls
on all of them alike. A figure is a set of *paired* ratios, one per round (this side's
sample over the anchor's sample of the same round), reported as their median and
interquartile range (25th and 75th percentiles, linear interpolation, as NumPy's
default `percentile`), with the number of rounds.

`Run` records one invocation of a script: the git commit and whether the tree is dirty,
the command line, the machine, every round of every comparison and every figure, and
writes them as JSON under `out/bench/` (git-ignored), which `RESULTS.md` cites. A
figure measured on a dirty tree, or with `pysciml` imported from another checkout, is
printed as NOT A FIGURE.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "out" / "bench"
# Untracked files here change what a benchmark runs, so they make the tree dirty.
_CODE_DIRS = ("pysciml/", "benchmarks/", "examples/", "julia/")
_PACKAGES = ("jax", "jaxlib", "diffrax", "equinox", "lineax", "optimistix", "optax",
             "numpy", "scipy", "numpyro")
_ENV = ("PYTHONPATH", "XLA_FLAGS", "JAX_PLATFORMS", "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


# ------------------------------------------------------------------ statistics


@dataclass(frozen=True)
class Summary:
    """Median and quartiles of a list of paired ratios (or of times)."""

    median: float
    q1: float
    q3: float
    n: int

    def fmt(self, digits: int = 3, unit: str = "") -> str:
        f = f"{{:.{digits}f}}{unit}"
        return (f"{f.format(self.median)} (IQR {f.format(self.q1)}–"
                f"{f.format(self.q3)}, {self.n} round{'' if self.n == 1 else 's'})")


def summarize(xs: Sequence[float]) -> Summary:
    xs = [x for x in xs if x is not None]
    if not xs:
        return Summary(float("nan"), float("nan"), float("nan"), 0)
    if len(xs) == 1:
        return Summary(xs[0], xs[0], xs[0], 1)
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return Summary(statistics.median(xs), q[0], q[2], len(xs))


# ------------------------------------------------------------------ timing


@dataclass
class Timing:
    """The samples of one `compare`: seconds per call, one entry per round (None in
    rounds where that configuration was not timed)."""

    names: list[str]
    samples: dict[str, list[float | None]]
    calls_per_sample: dict[str, int]
    rounds: int

    def times(self, name: str) -> Summary:
        return summarize(self.samples[name])

    def median(self, name: str) -> float:
        return self.times(name).median

    def ratios(self, num: str, den: str) -> list[float]:
        """Per round, `num`'s time over `den`'s (rounds where both were timed)."""
        return [a / b for a, b in zip(self.samples[num], self.samples[den])
                if a is not None and b is not None]

    def paired(self, num: str, den: str) -> Summary:
        return summarize(self.ratios(num, den))

    def fastest(self, names: Sequence[str]) -> str:
        """The name with the lowest median time: the anchor among raw configurations."""
        return min(names, key=self.median)

    def to_json(self) -> dict:
        return {"names": self.names, "rounds": self.rounds,
                "calls_per_sample": self.calls_per_sample,
                "seconds_per_call": self.samples}

    @classmethod
    def from_json(cls, d: dict) -> Timing:
        return cls(d["names"], d["seconds_per_call"], d["calls_per_sample"],
                   d["rounds"])


def _calibrate(fn: Callable[[], object], target_s: float) -> int:
    """How many calls of `fn` make one sample of about `target_s` seconds."""
    t = time.perf_counter()
    fn()
    dt = max(time.perf_counter() - t, 1e-7)
    return max(1, min(10_000, round(target_s / dt)))


def compare(
    fns: dict[str, Callable[[], object]],
    *,
    rounds: int,
    warmup: int = 3,
    target_s: float = 0.01,
    first_rounds: dict[str, int] | None = None,
) -> Timing:
    """Times each `fn` (which must block until its result is ready) in `rounds`
    interleaved rounds, alternating the order. A sample is `calls_per_sample` calls,
    calibrated to about `target_s` seconds (one call, uncalibrated, if `target_s` is
    0). `first_rounds[name] = k` times `name` in the first k rounds only (a slow side
    paired with the anchor of those rounds)."""
    first_rounds = first_rounds or {}
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    inner = {name: _calibrate(fn, target_s) if target_s > 0 else 1
             for name, fn in fns.items()}
    names = list(fns)
    samples: dict[str, list[float | None]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            if r >= first_rounds.get(name, rounds):
                samples[name].append(None)
                continue
            fn, n = fns[name], inner[name]
            t = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - t) / n)
    return Timing(names, samples, inner, rounds)


# ------------------------------------------------------------------ provenance


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def provenance() -> dict:
    """Commit, dirtiness, command, machine and package versions of this process."""
    commit = (_git("rev-parse", "HEAD") or "").strip() or None
    status = _git("status", "--porcelain", "--untracked-files=all")
    if status is None:
        changes = ["(git status failed)"]
    else:
        changes = [line for line in status.splitlines()
                   if not line.startswith("??") or line[3:].startswith(_CODE_DIRS)]
    spec = importlib.util.find_spec("pysciml")
    origin = Path(spec.origin).resolve() if spec and spec.origin else None
    foreign = origin is None or not origin.is_relative_to(REPO)
    reasons = []
    if commit is None:
        reasons.append("no git commit")
    if changes:
        reasons.append(f"uncommitted changes: {', '.join(c.strip() for c in changes)}")
    if foreign:
        reasons.append(f"pysciml imported from {origin}, not from {REPO} "
                       "(set PYTHONPATH to this checkout)")
    versions = {}
    for pkg in _PACKAGES:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    cpu_model = None
    try:
        with open("/proc/cpuinfo") as fh:
            cpu_model = next((line.split(":", 1)[1].strip() for line in fh
                              if line.startswith("model name")), None)
    except OSError:
        pass
    return {
        "commit": commit,
        "dirty": bool(changes),
        "changes": changes,
        "not_a_figure_because": reasons,
        "pysciml_origin": str(origin),
        "command": shlex.join([sys.executable, *sys.argv]),
        "cwd": os.getcwd(),
        "env": {k: os.environ[k] for k in _ENV if k in os.environ},
        "started_utc": datetime.datetime.now(datetime.UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity") else None,
            "cpu_model": cpu_model,
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_at_start": list(os.getloadavg())
            if hasattr(os, "getloadavg") else None,
        },
        "versions": versions,
    }


@dataclass
class Run:
    """One invocation of a benchmark script: its provenance, every comparison's rounds
    and every figure, saved as JSON under `out/bench/` after each addition."""

    script: str
    prov: dict = field(default_factory=provenance)
    groups: dict = field(default_factory=dict)
    figures: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    path: Path | None = None

    def __post_init__(self):
        p = self.prov
        stamp = p["started_utc"].replace("-", "").replace(":", "")
        tag = (p["commit"] or "nocommit")[:10] + ("-dirty" if p["dirty"] else "")
        self.path = OUT_DIR / f"{self.script}_{stamp}_{tag}.json"
        m = p["machine"]
        print(f"# {self.script}: commit {p['commit']}"
              f"{' (DIRTY TREE)' if p['dirty'] else ' (clean tree)'}\n"
              f"# command: {p['command']}\n"
              f"# machine: {m['cpu_count']} CPUs ({m['cpus_usable']} usable), "
              f"{m['cpu_model']}, {m['platform']}, Python {m['python']}; load average "
              f"{m['load_average_at_start']}\n"
              f"# versions: {', '.join(f'{k} {v}' for k, v in p['versions'].items())}\n"
              f"# rounds and figures: {self.rel_path}", flush=True)
        for reason in p["not_a_figure_because"]:
            print(f"# NOT A FIGURE: {reason}", flush=True)
        self.save()

    @property
    def is_figure(self) -> bool:
        return not self.prov["not_a_figure_because"]

    @property
    def rel_path(self) -> str:
        return os.path.relpath(self.path, REPO)

    def add(self, key: str, timing: Timing, **meta) -> Timing:
        self.groups[key] = {**meta, **timing.to_json()}
        self.save()
        return timing

    def figure(
        self,
        label: str,
        ratios: Sequence[float],
        *,
        anchor: str,
        what: str,
        goal: str | None = None,
        note: str | None = None,
        digits: int = 3,
    ) -> Summary:
        """Prints and records one figure: the paired ratios `ratios` (`what` says
        which way round, e.g. "pysciml / anchor"), against `anchor`; `goal` like
        "<= 1.05" or ">= 10" is judged on the median."""
        s = summarize(ratios)
        met = None
        if goal:
            op, value = goal.split()
            met = s.median <= float(value) if op == "<=" else s.median >= float(value)
        head = "FIGURE" if self.is_figure else "NOT A FIGURE"
        line = (f"{head} | {label} | {what} = {s.fmt(digits)} | anchor: {anchor}"
                + (f" | goal {goal}: {'met' if met else 'NOT met'}" if goal else "")
                + f" | commit {(self.prov['commit'] or '?')[:10]}"
                + ("" if self.is_figure else " (dirty or foreign; see header)")
                + (f" | {note}" if note else ""))
        print(line, flush=True)
        self.figures.append({"label": label, "what": what, "anchor": anchor,
                             "median": s.median, "q1": s.q1, "q3": s.q3, "rounds": s.n,
                             "ratios": list(ratios), "goal": goal, "goal_met": met,
                             "note": note, "is_figure": self.is_figure})
        self.save()
        return s

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        prov = {**self.prov, "machine": dict(self.prov["machine"])}
        if hasattr(os, "getloadavg"):
            prov["machine"]["load_average_at_save"] = list(os.getloadavg())
        prov["saved_utc"] = datetime.datetime.now(datetime.UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ")
        data = {"script": self.script, "provenance": prov, "figures": self.figures,
                "groups": self.groups, "extra": self.extra}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, default=_jsonable))
        tmp.replace(self.path)

    def footer(self) -> None:
        print(f"\n# {len(self.figures)} figures"
              f"{'' if self.is_figure else ' (NOT figures: see header)'}; every round "
              f"in {self.rel_path}", flush=True)


def _jsonable(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)


# ------------------------------------------------------------------ formatting


def ms(x: float) -> str:
    return f"{1e3 * x:.3f}"


def us(x: float) -> str:
    return f"{1e6 * x:.1f}"


def ratio_cell(s: Summary, digits: int = 3) -> str:
    """A table cell: median [q1, q3] of paired ratios."""
    f = f"{{:.{digits}f}}"
    return f"{f.format(s.median)} [{f.format(s.q1)}, {f.format(s.q3)}]"


def add_rounds_arguments(parser, *, default: int, quick: int) -> None:
    """`--rounds N` and `--quick` (= `--rounds quick`)."""
    parser.add_argument("--rounds", type=int, default=None,
                        help=f"interleaved rounds (default {default}; --quick: {quick})")
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke run: {quick} rounds")
    parser.set_defaults(_rounds_default=(default, quick))


def rounds_of(args) -> int:
    default, quick = args._rounds_default
    return args.rounds or (quick if args.quick else default)
