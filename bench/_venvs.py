"""Virtual environments for the peers and the profiler, created on demand under
``bench/.venvs/`` (git-ignored) and reused: never project dependencies.

Each venv is (re)built when its marker file is missing or records other packages, so a
changed pin rebuilds it and an unchanged one costs nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["PEERS", "VENV_ROOT", "ensure_venv", "venv_python"]

VENV_ROOT = Path(os.environ.get("EVFLOW_BENCH_VENVS", Path(__file__).resolve().parent / ".venvs"))

#: name -> pip requirements. Pins keep runs comparable over time.
PEERS: dict[str, list[str]] = {
    "dbos": ["dbos==3.4.0"],
    # 2.47.1 is the last release that ships ray.workflow.
    "ray": ["ray==2.47.1", "pyarrow"],  # ray.init(storage=...) needs pyarrow.fs
    "tools": ["py-spy", "pyinstrument", "psutil"],
}


def venv_python(name: str) -> Path:
    return VENV_ROOT / name / "bin" / "python"


def ensure_venv(name: str, *, log=print, timeout: float = 1200) -> Path:
    """Create (once) the venv ``name`` with ``PEERS[name]`` installed; return its python.

    Raises ``RuntimeError`` with pip's output tail when the install fails.
    """
    reqs = PEERS[name]
    root = VENV_ROOT / name
    marker = root / ".bench-installed.json"
    python = venv_python(name)
    if marker.exists() and python.exists():
        try:
            if json.loads(marker.read_text()) == reqs:
                return python
        except ValueError:
            pass
    log(f"[venv] creating {root} with {' '.join(reqs)} (cached for later runs)")
    t0 = time.monotonic()
    root.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(root)], check=True)
    # The project venv may be made by a python without ensurepip's latest pip; upgrade quietly.
    cmds = [
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-U", "pip"],
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *reqs],
    ]
    for cmd in cmds:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
            raise RuntimeError(f"pip failed for {name}: " + "\n".join(tail))
    marker.write_text(json.dumps(reqs))
    log(f"[venv] {name} ready in {time.monotonic() - t0:.0f} s")
    return python


if __name__ == "__main__":
    for n in sys.argv[1:] or list(PEERS):
        print(ensure_venv(n))
