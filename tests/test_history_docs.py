"""docs/history.md runs as written: its files are written, its transcripts are run.

Each ```python block whose first line is ``# FILE.py`` is written to that file (a later
one replaces it: the code is being fixed); each ```console block is a transcript whose
``$ `` lines are run in order in the same fresh directory (``python`` is this interpreter,
``evflow`` is ``python -m evflow``) and must print the lines that follow, up to times,
durations and the spacing of table columns.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parent.parent / "docs" / "history.md"
BLOCK = re.compile(r"^```(python|console)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
FILE_HEADER = re.compile(r"#\s*([\w./-]+\.py)\s*\n")
TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}")
DURATION = re.compile(r"\b\d+\.\d{3}s\b")


def normalized(text: str) -> list[str]:
    lines = []
    for line in text.splitlines():
        line = DURATION.sub("<duration>", TIME.sub("<time>", line))
        line = " ".join(line.split())
        if line:
            lines.append(line)
    return lines


def transcript(block: str) -> list[tuple[str, str]]:
    """``(command, expected output)`` pairs of a console block."""
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            assert steps, f"output before any command in {block!r}"
            steps[-1][1].append(line)
    return [(command, "\n".join(output)) for command, output in steps]


def run(command: str, cwd: Path) -> str:
    argv = shlex.split(command)
    if argv[0] == "python":
        argv[0] = sys.executable
    elif argv[0] == "evflow":
        argv[:1] = [sys.executable, "-m", "evflow"]
    env = {k: v for k, v in os.environ.items() if k not in ("EVFLOW_STORAGE", "PYTHONPATH")}
    proc = subprocess.run(
        argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120
    )
    assert "Traceback" not in proc.stderr, f"$ {command}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def test_the_debugging_story_runs_as_written(tmp_path: Path) -> None:
    blocks = BLOCK.findall(PAGE.read_text())
    commands = 0
    for kind, body in blocks:
        if kind == "python":
            header = FILE_HEADER.match(body)
            assert header, f"a python block of {PAGE.name} names no file: {body[:60]!r}"
            (tmp_path / header.group(1)).write_text(body)
            continue
        for command, expected in transcript(body):
            commands += 1
            got = run(command, tmp_path)
            assert normalized(got) == normalized(expected), f"$ {command}\n--- got:\n{got}"
    assert commands >= 10  # the story: run, events, check twice, fork, show, diff, api, prune


def test_the_story_uses_every_history_command() -> None:
    text = PAGE.read_text()
    for command in (
        "evflow fork",
        "evflow diff",
        "evflow check",
        "evflow prune",
        "evflow.fork(",
        "evflow.diff(",
        "evflow.prune(",
    ):
        assert command in text, command
