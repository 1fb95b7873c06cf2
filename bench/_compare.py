"""``run.py --compare REF``: evflow at REF against the working tree, in one sitting.

Each side runs its own ``bench/evflow_work.py`` with its own code: REF is exported with
``git archive`` into ``bench/.venvs/compare/<sha>/`` and installed into a venv there
(both made once, then reused). The sides take turns, one measured run each, A B A B ...,
so that both see the same minutes of a shared disk and CPU; the report gives each side's
median and the ratio of each round's pair, whose median is the figure to quote.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tarfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import DISCARD_ENV, parse_results, tmp_root
from _venvs import VENV_ROOT

__all__ = ["compare"]

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, check=True, capture_output=True, text=True).stdout.strip()


def checkout(ref: str, log: Callable[[str], None]) -> tuple[str, Path, Path]:
    """(sha, source tree, python) of REF, exported and installed once."""
    sha = _git("rev-parse", "--verify", f"{ref}^{{commit}}")
    root = VENV_ROOT / "compare" / sha[:12]
    tree, python = root / "tree", root / "venv" / "bin" / "python"
    marker = root / ".ready"
    if marker.exists() and python.exists():
        return sha, tree, python
    log(f"[compare] exporting {ref} ({sha[:12]}) to {tree} and installing it (cached for later runs)")
    tree.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", sha], cwd=REPO, check=True, capture_output=True).stdout
    archive_path = root / "tree.tar"
    archive_path.write_bytes(archive)
    with tarfile.open(archive_path) as tar:
        tar.extractall(tree, filter="data")
    archive_path.unlink()
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(root / "venv")], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-e", str(tree)],
        check=True,
    )
    marker.write_text(sha + "\n")
    return sha, tree, python


def _run_side(python: Path, tree: Path, only: str, discarded: Path, log_path: Path) -> list[dict[str, Any]]:
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "EVFLOW_BENCH_TMP": tmp_root(),
        DISCARD_ENV: str(discarded),
    }
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    cmd = [str(python), str(tree / "bench" / "evflow_work.py"), "bench", "--runs", "1", "--only", only]
    with open(log_path, "a") as log:
        proc = subprocess.run(
            cmd, stdout=subprocess.PIPE, stderr=log, text=True, cwd=tree / "bench", env=env, timeout=3600
        )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}; see {log_path}")
    return parse_results(proc.stdout)


def compare(
    ref: str, only: str, rounds: int, log_dir: Path, discarded: Path, log: Callable[[str], None]
) -> str:
    """Run the evflow workloads ``only`` at REF and at the working tree, ``rounds`` times
    each in turn; return the report."""
    sha, ref_tree, ref_python = checkout(ref, log)
    sides = {"ref": (ref_python, ref_tree), "head": (Path(sys.executable), REPO)}
    values: dict[tuple[str, str], list[float]] = defaultdict(list)
    meta: dict[str, dict[str, Any]] = {}
    t0 = time.monotonic()
    for i in range(rounds):
        for side, (python, tree) in sides.items():
            log(f"[compare] round {i + 1}/{rounds}: {side}")
            for rec in _run_side(python, tree, only, discarded, log_dir / f"compare-{side}.log"):
                if rec.get("system") != "evflow":
                    continue
                values[(side, rec["key"])].append(statistics.median(rec["values"]))
                meta[rec["key"]] = rec
    head_rev = _git("rev-parse", "--short=12", "HEAD")
    dirty = " (with uncommitted changes)" if _git("status", "--porcelain", "--", "src") else ""
    lines = [
        f"evflow at {ref} ({sha[:12]}) vs the working tree at {head_rev}{dirty}: {rounds} rounds, "
        f"taking turns (ref, head, ref, head, ...), {time.monotonic() - t0:.0f} s",
        "ratio > 1: the working tree is better; 'pairs' is the median of the per-round ratios",
        "",
        f"{'figure':<34} {'unit':<10} {'ref median':>12} {'head median':>12} {'ratio':>7} {'pairs':>7}",
    ]
    for key in sorted(meta):
        ref_vals, head_vals = values.get(("ref", key), []), values.get(("head", key), [])
        if not ref_vals or not head_vals:
            continue
        better_high = meta[key].get("higher_is_better", True)

        def ratio(r: float, h: float, high: bool = better_high) -> float:
            if high:
                return h / r if r else float("nan")
            return r / h if h else float("nan")

        pairs = [ratio(r, h) for r, h in zip(ref_vals, head_vals, strict=False)]
        rm, hm = statistics.median(ref_vals), statistics.median(head_vals)
        lines.append(
            f"{key:<34} {meta[key].get('unit', ''):<10} {rm:>12.4g} {hm:>12.4g} "
            f"{ratio(rm, hm):>7.3f} {statistics.median(pairs):>7.3f}"
        )
    return "\n".join(lines)
