"""Run the whole benchmark suite of issue 5 and print a table plus JSON lines.

    .venv/bin/python bench/run.py                      # evflow, floor and DBOS, 5 runs per figure
    .venv/bin/python bench/run.py --peers dbos,ray     # also Ray Workflows (adds ~9 minutes)
    .venv/bin/python bench/run.py --skip-peers         # evflow and the fsync floor only
    .venv/bin/python bench/run.py --only a,b --runs 7  # some workloads
    .venv/bin/python bench/run.py --compare 720da2a --only a,b   # REF vs the working tree, A B A B

Every figure is the median and min-max of ``--runs`` rounds; a round runs the fsync floor,
then evflow, then each peer, one run apiece (each after its own untimed warm-up), so that
every ratio compares the same minutes of the shared disk (A B A B ...). The peers run in
their own virtual environments under ``bench/.venvs/`` (created on first use, then
reused) with the same workloads where they have them, one system at a time so that they
never share the 2 cores. Ratios compare medians measured in this same run and are
oriented so that > 1 means evflow is better; the bracket after a ratio is the range of
the per-round ratios. Results also go to
``bench/results/run-<time>.jsonl`` and ``.txt``. See docs/performance.md.

The temp stores of all scripts are deleted only when the suite ends (see _common.discard:
on this file system, deleting thousands of files slows down the next file creations).
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import DISCARD_ENV, parse_results, tmp_root  # noqa: E402
from _venvs import ensure_venv  # noqa: E402

ALL = "a,b,c,d,e,f,g"
PEER_WORKLOADS = {"a", "b", "c", "e"}  # the peers have no (d), (f), (g)
PEER_NAMES = {"dbos": "DBOS", "ray": "Ray"}

# evflow figure -> the peer figure it is compared with.
PEER_FIGURE = {
    "dbos": {
        "a.chain.sync": "a.seq.sync",
        "a.chain.async": "a.seq.async",
        "a.dag.sync": "a.seq.sync",
        "a.dag.async": "a.seq.async",
        "b.200": "b.200",
        "b.2000": "b.2000",
        "b.200.serial": "b.200.serial",
        "b.2000.serial": "b.2000.serial",
        "c.metadata": "c.status",
        "c.status": "c.status",
        "e.recovery": "e.recovery",
    },
    "ray": {
        "a.chain.sync": "a.chain",
        "a.chain.async": "a.chain",
        "a.dag.sync": "a.dag",
        "a.dag.async": "a.dag",
        "b.200": "b.200",
        "b.2000": "b.2000",
        "c.metadata": "c.metadata",
        "c.status": "c.status",
        "e.recovery": "e.recovery",
    },
}

LABELS = {
    "floor.fsync": "floor: append + fsync (at start)",
    "floor.fsync.during_a": "floor: the same, before each (a) run",
    "floor.via_thread": "floor: the same via a thread hop from asyncio",
    "a.chain.sync": "(a) 500-step chain of continuations, sync steps",
    "a.chain.async": "(a) 500-step chain of continuations, async steps",
    "a.dag.sync": "(a) 500-deep static DAG, sync steps",
    "a.dag.async": "(a) 500-deep static DAG, async steps",
    "b.200": "(b) 200 workflows x 3 steps, concurrent",
    "b.2000": "(b) 2,000 workflows x 3 steps, concurrent",
    "b.200.serial": "(b) 200 workflows, each start awaited in turn",
    "b.2000.serial": "(b) 2,000 workflows, each start awaited in turn",
    "c.metadata": "(c) get_metadata(wf), finished wf",
    "c.status": "(c) get_status(wf), finished wf",
    "c.step_metadata": "(c) get_metadata(wf, step)",
    "d.metadata.5000": "(d) get_metadata, 5,000 others",
    "d.status.5000": "(d) get_status, 5,000 others",
    "d.metadata.ratio": "(d) get_metadata: 5,000 others / 10",
    "d.status.ratio": "(d) get_status: 5,000 others / 10",
    "d.metadata.nogc.ratio": "(d) the same, no gc.collect first: get_metadata",
    "d.status.nogc.ratio": "(d) the same, no gc.collect first: get_status",
    "d.step_metadata.nogc.ratio": "(d) the same, no gc.collect first: get_metadata(wf, step)",
    "e.recovery": "(e) recovery after SIGKILL in step 250 of 500",
    "f.open": "(f) cold open of 10k wfs -> first list_all",
    "f.rss": "(f) peak RSS of that process",
    "g.rss_above_idle": "(g) 10k in flight: peak RSS above idle",
}


@dataclass
class Target:
    text: str
    max_value: float | None = None  # evflow median <= this
    min_vs: dict[str, float] | None = None  # "better-than" ratio vs peer >= this
    min_floor: float | None = None  # evflow median / thread-hop floor median >= this


TARGETS = {
    **{
        k: Target(">= 10x DBOS, >= 60% of hop floor", min_vs={"dbos": 10}, min_floor=0.6)
        for k in ("a.chain.sync", "a.chain.async", "a.dag.sync", "a.dag.async")
    },
    "b.200": Target(">= 40x DBOS", min_vs={"dbos": 40}),
    "b.2000": Target(">= 40x DBOS", min_vs={"dbos": 40}),
    "b.200.serial": Target(">= 40x DBOS", min_vs={"dbos": 40}),
    "b.2000.serial": Target(">= 40x DBOS", min_vs={"dbos": 40}),
    "c.metadata": Target("<= 5 us, >= 100x DBOS status", max_value=5, min_vs={"dbos": 100}),
    "c.status": Target("<= 5 us, >= 100x DBOS status", max_value=5, min_vs={"dbos": 100}),
    "d.metadata.ratio": Target("<= 1.5x", max_value=1.5),
    "d.status.ratio": Target("<= 1.5x", max_value=1.5),
    **{
        f"d.{k}.nogc.ratio": Target("<= 1.5x", max_value=1.5) for k in ("metadata", "status", "step_metadata")
    },
    "e.recovery": Target("<= 1/5 of DBOS", min_vs={"dbos": 5}),
    "f.open": Target("<= 1 s", max_value=1.0),
    # The figures are MiB (2**20 bytes); the targets are MB (10**6), the stricter reading.
    "f.rss": Target("<= 200 MB (190.7 MiB)", max_value=200e6 / 2**20),
    "g.rss_above_idle": Target("<= 150 MB (143.1 MiB)", max_value=150e6 / 2**20),
}


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def fmt(x: float) -> str:
    ax = abs(x)
    if ax >= 1000:
        return f"{x:,.0f}"
    if ax >= 100:
        return f"{x:.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    if ax >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def fmt_fig(rec: dict[str, Any] | None) -> str:
    if rec is None:
        return "-"
    s = rec["stats"]
    return f"{fmt(s['median'])} [{fmt(s['min'])}-{fmt(s['max'])}]"


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(  # from the repository root: "src" is not under bench/
            ["git", "status", "--porcelain", "--", "src"], cwd=HERE.parent, capture_output=True, text=True
        ).stdout.strip()
        rev += "+uncommitted src changes" if dirty else ""
    except OSError:
        rev = "?"
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "evflow_rev": rev,
        "loadavg_start": os.getloadavg(),
        "tmp": tmp_root(),
    }


class Suite:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.records: dict[tuple[str, str], dict[str, Any]] = {}
        self.notes: list[str] = []
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.out_dir = HERE / "results"
        self.log_dir = self.out_dir / "logs" / stamp
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.stamp = stamp
        # The scripts append the temp dirs they discard here; they go when the suite ends.
        self.discarded = self.log_dir / "discarded.txt"
        atexit.register(self.delete_discarded)

    def delete_discarded(self) -> None:
        if self.discarded.exists():
            for path in dict.fromkeys(self.discarded.read_text().splitlines()):
                if path:
                    shutil.rmtree(path, ignore_errors=True)
            self.discarded.unlink()

    def log(self, msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    def run_script(self, name: str, cmd: list[str], timeout: float) -> bool:
        """Run one workload script; keep its RESULT lines, log the rest. False on failure."""
        self.log(f"[run] {name}: {' '.join(str(c) for c in cmd[1:])}")
        t0 = time.monotonic()
        log_path = self.log_dir / f"{name}.log"
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "EVFLOW_BENCH_TMP": tmp_root(),
            DISCARD_ENV: str(self.discarded),
        }
        # Start-up matters in (e) and (f): measure what users get, with cached bytecode
        # (this workplace sets PYTHONDONTWRITEBYTECODE, which recompiles every import).
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        try:
            with open(log_path, "w") as log:
                proc = subprocess.run(
                    cmd, stdout=subprocess.PIPE, stderr=log, text=True, timeout=timeout, cwd=HERE, env=env
                )
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            self.collect(out)
            self.note(
                f"{name}: stopped after {timeout:.0f} s (timeout); figures measured before that are kept"
            )
            return False
        self.collect(proc.stdout)
        stderr_tail = log_path.read_text().strip().splitlines()[-3:]
        with open(log_path, "a") as log:
            log.write("\n--- stdout ---\n" + proc.stdout)
        self.log(f"[run] {name}: {time.monotonic() - t0:.0f} s, exit {proc.returncode}")
        if proc.returncode != 0:
            self.note(f"{name}: exited {proc.returncode} (see {log_path}): " + " | ".join(stderr_tail)[-500:])
            return False
        return True

    def note(self, msg: str) -> None:
        self.notes.append(msg)
        self.log(f"[note] {msg}")

    def collect(self, stdout: str) -> None:
        """Keep a script's RESULT lines; a figure seen in an earlier round gets this round's
        values appended (in round order, so that round i of evflow pairs with round i of a
        peer)."""
        for rec in parse_results(stdout):
            key = (rec["system"], rec["key"])
            if key in self.records:
                self.records[key]["values"] += rec["values"]
                rec = self.records[key]
            else:
                self.records[key] = rec
            rec["stats"] = summary(rec["values"])

    def get(self, system: str, key: str) -> dict[str, Any] | None:
        return self.records.get((system, key))

    # -- the runs ----------------------------------------------------------------------------

    def run(self) -> None:
        """``--runs`` rounds, each: the floor, evflow, then every peer, one run apiece, so
        that the ratios compare the same minutes of the shared disk (A B A B ...)."""
        a = self.args
        only = set(a.only.split(","))
        py = sys.executable
        peers = self.peer_commands(only)
        for rnd in range(1, a.runs + 1):
            self.log(f"[round] {rnd} of {a.runs}")
            self.run_script(f"floor-{rnd}", [py, str(HERE / "floor.py"), "--runs", "1"], timeout=120)
            cmd = [py, str(HERE / "evflow_work.py"), "bench", "--runs", "1", "--only", ",".join(sorted(only))]
            if a.no_info:
                cmd.append("--no-info")
            self.run_script(f"evflow-{rnd}", cmd, timeout=3600)
            for peer, peer_cmd in peers:
                self.run_script(f"{peer}-{rnd}", peer_cmd, timeout=a.peer_timeout)

    def peer_commands(self, only: set[str]) -> list[tuple[str, list[str]]]:
        """(name, command of one run) for every peer to run, its venv built if need be."""
        a = self.args
        out: list[tuple[str, list[str]]] = []
        if a.skip_peers:
            self.note("peers skipped (--skip-peers)")
            return out
        peer_only = only & PEER_WORKLOADS
        if not peer_only:
            return out
        chosen = [p for p in a.peers.split(",") if p]
        if "ray" not in chosen:
            self.note(
                "Ray Workflows not run: it is optional and slow here (a local Ray instance takes ~5 s to "
                "start, ~30 steps/s, ~10 workflows/s), which adds ~9 minutes; --peers dbos,ray runs it"
            )
        for peer in chosen:
            if peer not in PEER_NAMES:
                self.note(f"unknown peer {peer!r}; known: {', '.join(PEER_NAMES)}")
                continue
            try:
                python = ensure_venv(peer, log=self.log)
            except Exception as exc:  # no network, no wheel for this platform, ...
                self.note(f"{PEER_NAMES[peer]} skipped: its venv could not be built: {exc}")
                continue
            script = HERE / f"peer_{peer}.py"
            cmd = [str(python), str(script), "bench", "--runs", "1", "--only", ",".join(sorted(peer_only))]
            if peer == "ray":
                cmd += ["--b-sizes", a.ray_b_sizes]
                if "b" in peer_only and "2000" not in a.ray_b_sizes.split(","):
                    self.note(
                        "Ray (b) 2,000 workflows skipped: Ray Workflows starts about 10 workflows/s "
                        "here (one driver round-trip each), so 5 runs would take about 17 minutes; "
                        "add --ray-b-sizes 200,2000 to measure it"
                    )
            out.append((peer, cmd))
        return out

    # -- the report --------------------------------------------------------------------------

    def _both(self, key: str, peer: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """evflow's record of ``key`` and the peer's record it is compared with."""
        theirs_key = PEER_FIGURE.get(peer, {}).get(key)
        return self.get("evflow", key), self.get(peer, theirs_key) if theirs_key else None

    def vs(self, key: str, peer: str) -> float | None:
        """How many times better evflow is than ``peer`` on ``key`` (medians), or None."""
        ours, theirs = self._both(key, peer)
        if ours is None or theirs is None:
            return None
        m, p = ours["stats"]["median"], theirs["stats"]["median"]
        if ours["higher_is_better"]:
            return m / p if p else None
        return p / m if m else None

    def pairs(self, key: str, peer: str) -> tuple[float, float] | None:
        """The range of the per-round ratios evflow/peer (round i with round i)."""
        ours, theirs = self._both(key, peer)
        if ours is None or theirs is None or len(ours["values"]) != len(theirs["values"]):
            return None
        ratios = [
            (m / p if ours["higher_is_better"] else p / m)
            for m, p in zip(ours["values"], theirs["values"], strict=True)
            if m and p
        ]
        return (min(ratios), max(ratios)) if ratios else None

    def check(self, key: str) -> tuple[str, bool | None]:
        """(what was compared, True/False, or None when a needed peer or floor is missing)."""
        target = TARGETS.get(key)
        ours = self.get("evflow", key)
        if target is None or ours is None:
            return "", None
        med = ours["stats"]["median"]
        parts: list[str] = []
        verdicts: list[bool | None] = []
        if target.max_value is not None:
            good = med <= target.max_value
            verdicts.append(good)
            parts.append(f"{fmt(med)} {'<=' if good else '>'} {fmt(target.max_value)}")
        for peer, need in (target.min_vs or {}).items():
            r = self.vs(key, peer)
            verdicts.append(None if r is None else r >= need)
            parts.append(f"vs {PEER_NAMES[peer]} n/a" if r is None else f"{fmt(r)}x {PEER_NAMES[peer]}")
        if target.min_floor is not None:
            # Issue 16: the thread-hop floor (an fdatasync handed to a thread and awaited),
            # the best any engine that keeps blocking I/O off the event loop can do.
            floor = self.get("floor", "floor.via_thread")
            if floor is None:
                verdicts.append(None)
                parts.append("hop floor n/a")
            else:
                share = med / floor["stats"]["median"]
                verdicts.append(share >= target.min_floor)
                parts.append(f"{100 * share:.0f}% of hop floor")
        if False in verdicts:
            return ", ".join(parts), False
        return ", ".join(parts), None if None in verdicts else True

    def report(self, elapsed: float, info: dict[str, Any]) -> str:
        peers = [p for p in PEER_NAMES if any(s == p for s, _ in self.records)]
        lines = []
        head = ["figure", "unit", "evflow median [min-max]"]
        head += [f"{PEER_NAMES[p]} median [min-max]" for p in peers]
        head += [f"vs {PEER_NAMES[p]}" for p in peers]
        head += ["target", "result"]
        rows = [head]
        for fkey in ("floor.fsync", "floor.fsync.during_a", "floor.via_thread"):
            floor = self.get("floor", fkey)
            if floor:
                rows.append(
                    [LABELS[fkey], floor["unit"], fmt_fig(floor)] + [""] * (2 * len(peers)) + ["", ""]
                )
        keys = [k for (s, k), r in self.records.items() if s == "evflow" and not r.get("info")]
        for key in keys:
            rec = self.get("evflow", key)
            assert rec is not None
            row = [LABELS.get(key, key), rec["unit"], fmt_fig(rec)]
            for p in peers:
                pk = PEER_FIGURE[p].get(key)
                row.append(fmt_fig(self.get(p, pk)) if pk else "")
            for p in peers:
                r = self.vs(key, p)
                rng = self.pairs(key, p)
                pair_text = f" [{fmt(rng[0])}-{fmt(rng[1])}]" if rng and len(rec["values"]) > 1 else ""
                row.append(f"{fmt(r)}x{pair_text}" if r is not None else "")
            text, ok = self.check(key)
            target = TARGETS.get(key)
            row.append(target.text if target else "")
            row.append(
                ""
                if target is None
                else ("PASS" if ok else ("FAIL" if ok is False else "n/a")) + (f" ({text})" if text else "")
            )
            rows.append(row)
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        for i, r in enumerate(rows):
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        extra = [
            (s, k, r)
            for (s, k), r in self.records.items()
            if r.get("info")
            or (
                s != "evflow"
                and s != "floor"
                and k not in {v for m in PEER_FIGURE.values() for v in m.values()}
            )
        ]
        if extra:
            lines.append("")
            lines.append("info (no target):")
            for s, k, r in extra:
                lines.append(f"  {s:7} {k:26} {fmt_fig(r):28} {r['unit']}")
        lines.append("")
        ratio_note = (
            "ratios: medians of this run [range of the per-round ratios], > 1 = evflow better "
            "(throughput: evflow/peer; time: peer/evflow); rounds interleaved: floor, evflow, peers"
        )
        lines.append(ratio_note)
        lines.append(
            f"machine: {info['nproc']} cores, {info['cpu']}, {info['mem_gib']} GiB, Python {info['python']}, "
            f"kernel {info['kernel']}; evflow {info['evflow_rev']}"
        )
        lines.append(
            f"load average at start {tuple(round(x, 2) for x in info['loadavg_start'])}, at end "
            f"{tuple(round(x, 2) for x in os.getloadavg())}; suite took {elapsed / 60:.1f} min"
        )
        if info["loadavg_start"][0] > 1.0:
            lines.append("WARNING: the machine was busy when the suite started; figures are noisy")
        for n in self.notes:
            lines.append(f"note: {n}")
        return "\n".join(lines)

    def json_lines(self, info: dict[str, Any]) -> list[str]:
        out = [json.dumps({"type": "machine", **info})]
        for (system, key), rec in self.records.items():
            out.append(
                json.dumps(
                    {
                        "type": "figure",
                        "system": system,
                        "key": key,
                        "unit": rec["unit"],
                        **{k: rec["stats"][k] for k in ("median", "min", "max", "n")},
                        "values": rec["values"],
                        "info": bool(rec.get("info")),
                    }
                )
            )
        for key in [k for (s, k) in self.records if s == "evflow"]:
            for peer in PEER_NAMES:
                r = self.vs(key, peer)
                if r is not None:
                    out.append(
                        json.dumps(
                            {
                                "type": "ratio",
                                "key": key,
                                "peer": peer,
                                "peer_key": PEER_FIGURE[peer][key],
                                "evflow_better_by": r,
                            }
                        )
                    )
            if key in TARGETS:
                text, ok = self.check(key)
                out.append(
                    json.dumps(
                        {
                            "type": "target",
                            "key": key,
                            "target": TARGETS[key].text,
                            "pass": ok,
                            "detail": text,
                        }
                    )
                )
        for n in self.notes:
            out.append(json.dumps({"type": "note", "text": n}))
        return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5, help="measured runs per figure (default 5)")
    parser.add_argument("--only", default=ALL, help=f"workloads to run, comma-separated (default {ALL})")
    parser.add_argument("--skip-peers", action="store_true", help="evflow and the floor only")
    parser.add_argument(
        "--peers",
        default="dbos",
        help="peers to run, comma-separated: dbos, ray (default dbos; Ray adds ~9 minutes)",
    )
    parser.add_argument(
        "--ray-b-sizes", default="200", help="(b) sizes for Ray (default 200; 2000 takes ~17 min)"
    )
    parser.add_argument("--peer-timeout", type=float, default=1800, help="seconds per peer (default 1800)")
    parser.add_argument(
        "--no-info", action="store_true", help="skip the info figures (memory store, relaxed durability)"
    )
    parser.add_argument(
        "--compare",
        metavar="REF",
        help="run evflow's workloads at git REF and at the working tree in turns (A B A B ..., "
        "--runs rounds) and print both medians and their ratios; no peers, no floor",
    )
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    unknown = set(args.only.split(",")) - set(ALL.split(","))
    if unknown:
        parser.error(f"unknown workloads {sorted(unknown)}; known: {ALL}")
    os.makedirs(tmp_root(), exist_ok=True)
    if args.compare:
        from _compare import compare

        suite = Suite(args)
        only = ",".join(sorted(set(args.only.split(","))))
        text = compare(args.compare, only, args.runs, suite.log_dir, suite.discarded, suite.log)
        print(text)
        (suite.out_dir / f"compare-{suite.stamp}.txt").write_text(text + "\n")
        print(f"\nwritten: {suite.out_dir / f'compare-{suite.stamp}.txt'}", file=sys.stderr)
        return
    info = machine()
    suite = Suite(args)
    t0 = time.monotonic()
    suite.run()
    elapsed = time.monotonic() - t0
    table = suite.report(elapsed, info)
    jl = suite.json_lines(info)
    print(table)
    print()
    print("\n".join(jl))
    (suite.out_dir / f"run-{suite.stamp}.txt").write_text(table + "\n")
    (suite.out_dir / f"run-{suite.stamp}.jsonl").write_text("\n".join(jl) + "\n")
    print(f"\nwritten: {suite.out_dir / f'run-{suite.stamp}.txt'} and .jsonl", file=sys.stderr)


if __name__ == "__main__":
    main()
