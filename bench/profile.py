"""Profile evflow where the benchmark shows it is slow, and summarise where the time goes.

    .venv/bin/python bench/profile.py                  # a.chain.async a.chain.sync a.dag.async b.2000
    .venv/bin/python bench/profile.py a.dag.sync b.200 f.open g.mem --repeat 8
    .venv/bin/python bench/profile.py b.2000 --durability memory

Targets: ``a.<chain|dag>.<sync|async>`` and ``b.<n>`` (the workloads, ``--repeat`` times
in one process), ``f.open`` (one cold open of 10,000 finished workflows) and ``g.mem``
(tracemalloc: what the 10,000 in-flight workflows of (g) allocate, by line).

py-spy is installed in ``bench/.venvs/tools`` (never a project dependency). For each
py-spy target two profiles are taken of two runs: "gil" (``--gil``: only the thread
holding the GIL, i.e. where the interpreter spends CPU) and "wall" (``--idle --threads``:
every thread, also while blocked in fsync or waiting, summarised per thread). Samples
taken while importing or while the harness deletes a store are left out of the summary.
Raw collapsed stacks go to ``bench/results/profile-<target>-<durability>-<kind>.txt``
(open them with speedscope or flamegraph.pl), summaries next to them and to stdout.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import tmp_root  # noqa: E402
from _flame import summarise  # noqa: E402
from _venvs import ensure_venv  # noqa: E402

DEFAULT = ["a.chain.async", "a.chain.sync", "a.dag.async", "b.2000"]
# Not the engine's work: module imports, and the harness removing a finished store.
EXCLUDE = ("importlib._bootstrap", "_rmtree_safe_fd", "rmtree (shutil")
WORK = str(HERE / "evflow_work.py")


def py_spy_profiles(py_spy: Path, name: str, argv: list[str], args: argparse.Namespace) -> None:
    out_dir = HERE / "results"
    for kind in ("gil", "wall"):
        raw = out_dir / f"profile-{name}-{kind}.txt"
        cmd = [str(py_spy), "record", "--format", "raw", "--rate", str(args.rate), "--output", str(raw)]
        cmd += ["--gil"] if kind == "gil" else ["--idle", "--threads"]
        cmd += ["--", sys.executable, *argv]
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"py-spy failed for {name}: {proc.stderr[-2000:]}")
        text = summarise(str(raw), args.top, by_thread=kind == "wall", exclude=EXCLUDE)
        raw.with_suffix(".summary.txt").write_text(text + "\n")
        print(f"\n===== {name}, {kind} profile: {raw.name} =====")
        print(text, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("targets", nargs="*", default=DEFAULT, help=f"default: {' '.join(DEFAULT)}")
    parser.add_argument("--repeat", type=int, default=8, help="workload runs per profile (default 8)")
    parser.add_argument("--rate", type=int, default=400, help="samples per second (default 400)")
    parser.add_argument("--durability", default="strict", choices=["strict", "relaxed", "memory"])
    parser.add_argument("--top", type=int, default=22)
    args = parser.parse_args()
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # children: cached bytecode, as users have
    tools = ensure_venv("tools", log=lambda m: print(m, file=sys.stderr))
    py_spy = tools.parent / "py-spy"
    (HERE / "results").mkdir(exist_ok=True)
    for target in args.targets:
        if target == "g.mem":
            directory = tempfile.mkdtemp(prefix="evflow-g-", dir=tmp_root())
            try:
                out = subprocess.run(
                    [sys.executable, WORK, "g-inflight", directory, "10000", "100", "trace"],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            finally:
                shutil.rmtree(directory, ignore_errors=True)
            text = "\n".join(line for line in out.splitlines() if not line.startswith("INFLIGHT "))
            (HERE / "results" / "profile-g.mem.txt").write_text(text + "\n")
            print("\n===== g.mem: tracemalloc, peak minus idle, top lines =====")
            print(text, flush=True)
        elif target == "f.open":
            directory = tempfile.mkdtemp(prefix="evflow-f-", dir=tmp_root())
            try:
                subprocess.run([sys.executable, WORK, "f-fill", directory, "10000"], check=True)
                py_spy_profiles(py_spy, "f.open", [WORK, "f-open", directory, "10000"], args)
            finally:
                shutil.rmtree(directory, ignore_errors=True)
        else:
            argv = [WORK, "profile", target, str(args.repeat), args.durability]
            py_spy_profiles(py_spy, f"{target}-{args.durability}", argv, args)


if __name__ == "__main__":
    main()
