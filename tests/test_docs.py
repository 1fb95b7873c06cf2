"""The docs are executed and checked against the code, so they cannot drift.

- The ```python blocks of each page in ``EXECUTED`` are joined, in order, into one script
  per page, which runs in a fresh process in an empty directory (as a reader who pastes
  them into a file would run it). Blocks in other languages (```sh, ```text) are not run.
- docs/event-log.md documents every event type of ``_events.EVENT_TYPES`` and every field.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from evflow._events import EVENT_TYPES, ErrorInfo, Event, ForkOrigin, StepCopy, StepOptions, StepSpec

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXECUTED = [
    "README.md",
    "docs/tutorial.md",
    "docs/metadata.md",
    "docs/storage.md",
    "docs/otel.md",
    "docs/web.md",
    "docs/waiting.md",
    "docs/queues.md",
    "docs/scale-out.md",
]
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def python_blocks(page: Path) -> list[str]:
    return FENCE.findall(page.read_text())


def script_of(page: Path) -> str:
    """The page's python blocks as one script; each block is marked with its line."""
    text = page.read_text()
    parts = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start(1)) + 1
        parts.append(f"# --- {page.name}, line {line}\n{match.group(1)}")
    return "\n".join(parts)


@pytest.mark.parametrize("name", [pytest.param(name, id=name) for name in EXECUTED])
def test_the_python_blocks_of_the_page_run(name: str, tmp_path: Path) -> None:
    page = ROOT / name
    if not python_blocks(page):
        pytest.skip(f"{name} has no python blocks")
    script = tmp_path / f"{page.stem}_doc.py"
    script.write_text(script_of(page))
    env = {k: v for k, v in os.environ.items() if k != "EVFLOW_STORAGE"}
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"{name} failed (script {script}):\n{proc.stdout}\n{proc.stderr}"


def test_the_tutorial_has_code() -> None:
    assert len(python_blocks(DOCS / "tutorial.md")) >= 8


SH_FENCE = re.compile(r"^```sh[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def install_line(page: Path) -> str:
    """The page's one shell line that installs evflow from PyPI."""
    lines = [
        line
        for block in SH_FENCE.findall(page.read_text())
        for line in block.splitlines()
        if "pip install" in line
    ]
    assert len(lines) == 1, f"{page.name}: expected one install line, found {lines}"
    return lines[0]


@pytest.mark.slow  # a fresh virtual environment, and pip
@pytest.mark.timeout(900)
def test_the_tutorial_runs_as_a_newcomer_runs_it(tmp_path: Path) -> None:
    # The documented install line in a new venv (this checkout in place of the PyPI name),
    # then the tutorial's blocks pasted into one script, run twice from the same directory.
    page = DOCS / "tutorial.md"
    line = install_line(page)
    assert "'evflow[" in line, f"the install line should name the package on PyPI: {line}"
    line = line.replace("'evflow[", f"'{ROOT}[")
    env = {k: v for k, v in os.environ.items() if k not in ("EVFLOW_STORAGE", "PYTHONPATH", "VIRTUAL_ENV")}
    # The newcomer's python3 is this interpreter.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    installed = subprocess.run(
        ["bash", "-c", line],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert installed.returncode == 0, f"{line}\n{installed.stdout}\n{installed.stderr}"
    (tmp_path / "tutorial.py").write_text(script_of(page))
    for run in (1, 2):
        proc = subprocess.run(
            [str(tmp_path / ".venv" / "bin" / "python"), "tutorial.py"],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, f"run {run} of the tutorial failed:\n{proc.stdout}\n{proc.stderr}"
        assert "squares:" in proc.stdout


# -- the event-log format page ----------------------------------------------------------------------


def section(text: str, heading: str) -> str:
    """The text under a ``### heading`` (up to the next heading of level 2 or 3)."""
    match = re.search(
        rf"^###\s+`?{re.escape(heading)}`?\s*$(.*?)(?=^##)", text + "\n##", re.MULTILINE | re.DOTALL
    )
    assert match, f"docs/event-log.md has no '### {heading}' section"
    return match.group(1)


def own_fields(cls: type[msgspec.Struct]) -> list[str]:
    """The fields of ``cls``; an event's are documented apart from those of every event."""
    inherited = set() if cls is Event or not issubclass(cls, Event) else set(Event.__struct_fields__)
    return [f.name for f in msgspec.structs.fields(cls) if f.name not in inherited]


DOCUMENTED_STRUCTS: list[type[msgspec.Struct]] = [
    Event,
    *EVENT_TYPES.values(),
    StepSpec,
    StepOptions,
    ErrorInfo,
    ForkOrigin,
    StepCopy,
]


@pytest.mark.parametrize("cls", [pytest.param(cls, id=cls.__name__) for cls in DOCUMENTED_STRUCTS])
def test_event_log_page_documents_every_struct_and_field(cls: type[msgspec.Struct]) -> None:
    body = section((DOCS / "event-log.md").read_text(), cls.__name__)
    missing = [name for name in own_fields(cls) if not re.search(rf"^\|\s*`{name}`", body, re.MULTILINE)]
    assert not missing, f"docs/event-log.md, section {cls.__name__}: no table row for {missing}"


def test_event_log_page_documents_no_removed_event() -> None:
    text = (DOCS / "event-log.md").read_text()
    documented = set(re.findall(r"^###\s+`?(\w+)`?\s*$", text, re.MULTILINE))
    known = {cls.__name__ for cls in DOCUMENTED_STRUCTS}
    assert documented <= known, f"docs/event-log.md describes unknown types {sorted(documented - known)}"
