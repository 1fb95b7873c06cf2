"""The ``evflow`` command line, driven through real subprocesses on file stores that a
real engine populated (SPEC section 7; docs/cli.md)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

import cli_workflows
import evflow
from evflow._events import AnyEvent, StepStarted, WorkflowStarted
from evflow.cli._format import Progress
from evflow.cli._transfer import parse_export
from evflow.stores import FileStore
from evflow.stores.file._scan import scan_log as _scan_log

TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parent


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "EVFLOW_STORAGE"}
    paths = [str(TESTS_DIR), str(REPO)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(extra)
    return env


@dataclass
class Result:
    code: int
    stdout: bytes
    stderr: bytes

    @property
    def out(self) -> str:
        return self.stdout.decode()

    @property
    def err(self) -> str:
        return self.stderr.decode()

    def json(self) -> Any:
        return json.loads(self.stdout)

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines()]


def evflow_cli(
    storage: Path | None, *args: str, cwd: Path | None = None, stdin: bytes | None = None
) -> Result:
    """``python -m evflow [--storage STORAGE] ARGS`` in a subprocess."""
    cmd = [sys.executable, "-m", "evflow"]
    if storage is not None:
        cmd += ["--storage", str(storage)]
    proc = subprocess.run(
        [*cmd, *args], capture_output=True, env=_env(), cwd=cwd, input=stdin, check=False, timeout=120
    )
    result = Result(proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in result.err, result.err
    return result


@dataclass
class Populated:
    """A file store holding: ``ok`` (SUCCESSFUL, continuations), ``bad`` (FAILED), and
    ``paused`` / ``doomed`` (interrupted mid-run by closing the engine: RESUMABLE)."""

    path: Path
    gates: dict[str, str]
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    step_metadata: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)


async def _populate(path: Path, gates: dict[str, str], into: Populated) -> None:
    async with evflow.Engine(path) as engine:
        assert await cli_workflows.ok_dag().run("ok", metadata={"owner": "cli-test"}) == 1
        with pytest.raises(evflow.WorkflowExecutionError):
            await cli_workflows.failing_dag().run("bad")
        for wid, gate in gates.items():
            await cli_workflows.gated_dag(gate).run_async(wid)
            await cli_workflows.wait_started(gate)
        for wid in ("ok", "bad"):
            into.metadata[wid] = await engine.get_metadata(wid)
            names = [name for name in engine._state(wid).steps]
            into.step_metadata[wid] = {name: await engine.get_metadata(wid, name) for name in names}
    # Leaving the engine interrupted the gated workflows.


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Populated:
    root = tmp_path_factory.mktemp("populated")
    gates = {"paused": str(root / "gate-paused"), "doomed": str(root / "gate-doomed")}
    result = Populated(root / "store", gates)
    anyio.run(_populate, result.path, gates, result)
    return result


@pytest.fixture
def store(populated: Populated, tmp_path: Path) -> Path:
    """A private copy of the populated store, for commands that write."""
    copy = tmp_path / "store"
    shutil.copytree(populated.path, copy)
    return copy


# -- list / status ------------------------------------------------------------------------------


def test_list_json(populated: Populated) -> None:
    result = evflow_cli(populated.path, "list", "--json")
    assert result.code == 0
    assert sorted(result.json(), key=lambda d: d["workflow_id"]) == [
        {"workflow_id": "bad", "status": "FAILED"},
        {"workflow_id": "doomed", "status": "RESUMABLE"},
        {"workflow_id": "ok", "status": "SUCCESSFUL"},
        {"workflow_id": "paused", "status": "RESUMABLE"},
    ]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        pytest.param(["--status", "FAILED"], {"bad"}, id="one-status"),
        pytest.param(["--status", "resumable"], {"paused", "doomed"}, id="lower-case"),
        pytest.param(["--status", "SUCCESSFUL", "--status", "FAILED"], {"ok", "bad"}, id="repeated"),
        pytest.param(["--status", "CANCELED"], set(), id="none-match"),
    ],
)
def test_list_status_filter(populated: Populated, filters: list[str], expected: set[str]) -> None:
    result = evflow_cli(populated.path, "--json", "list", *filters)
    assert result.code == 0
    assert {entry["workflow_id"] for entry in result.json()} == expected


def test_list_table(populated: Populated) -> None:
    result = evflow_cli(populated.path, "list")
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0].split() == ["WORKFLOW", "STATUS", "STARTED", "ENDED"]
    rows = {line.split()[0]: line.split()[1] for line in lines[1:]}
    assert rows == {"bad": "FAILED", "doomed": "RESUMABLE", "ok": "SUCCESSFUL", "paused": "RESUMABLE"}


@pytest.mark.parametrize(
    ("wid", "status"),
    [
        pytest.param("ok", "SUCCESSFUL", id="successful"),
        pytest.param("bad", "FAILED", id="failed"),
        pytest.param("paused", "RESUMABLE", id="resumable"),
    ],
)
def test_status(populated: Populated, wid: str, status: str) -> None:
    result = evflow_cli(populated.path, "status", wid)
    assert (result.code, result.out) == (0, status + "\n")


# -- show ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("wid", ["ok", "bad"])
def test_show_json_equals_get_metadata(populated: Populated, wid: str) -> None:
    result = evflow_cli(populated.path, "show", wid, "--json")
    assert result.code == 0
    assert result.json() == populated.metadata[wid]


def test_show_step_json_equals_get_metadata(populated: Populated) -> None:
    for wid, steps in populated.step_metadata.items():
        for name, metadata in steps.items():
            result = evflow_cli(populated.path, "--json", "show", wid, "--step", name)
            assert result.code == 0, result.err
            assert result.json() == metadata


def test_show_table(populated: Populated) -> None:
    result = evflow_cli(populated.path, "show", "ok")
    assert result.code == 0
    assert "SUCCESSFUL" in result.out
    assert '"owner": "cli-test"' in result.out
    for name in ("add", "add_1", "halve", "halve_1", "halve_2"):
        assert any(line.split()[:1] == [name] for line in result.out.splitlines()), name


def test_show_failed_names_the_error(populated: Populated) -> None:
    result = evflow_cli(populated.path, "show", "bad")
    assert result.code == 0
    assert "ValueError: boom 4" in result.out


def test_show_as_of_event_before_workflow_finished(populated: Populated) -> None:
    events = evflow_cli(populated.path, "events", "ok", "--json").json_lines()
    assert events[-1]["type"] == "WorkflowFinished"
    before = events[-2]["seq"]
    result = evflow_cli(populated.path, "show", "ok", "--as-of", str(before), "--json")
    assert result.code == 0
    metadata = result.json()
    # A past prefix shows what get_metadata showed then: the run was live and RUNNING.
    assert metadata["status"] == "RUNNING"
    assert "end_time" not in metadata["stats"]
    assert metadata["stats"]["start_time"] == populated.metadata["ok"]["stats"]["start_time"]
    # At (or past) the end of the log it is the present.
    now = evflow_cli(populated.path, "show", "ok", "--as-of", str(events[-1]["seq"] + 5), "--json")
    assert now.json() == populated.metadata["ok"]


def test_show_as_of_step(populated: Populated) -> None:
    events = evflow_cli(populated.path, "events", "ok", "--json").json_lines()
    started = next(e["seq"] for e in events if e["type"] == "StepStarted" and e["name"] == "add")
    result = evflow_cli(populated.path, "show", "ok", "--step", "add", "--as-of", str(started), "--json")
    assert result.json()["status"] == "RUNNING"
    assert "end_time" not in result.json()["stats"]
    before = evflow_cli(populated.path, "show", "ok", "--step", "add", "--as-of", str(started - 1), "--json")
    assert before.json()["status"] == "PENDING"
    assert before.json()["stats"] == {}


# -- events -------------------------------------------------------------------------------------


def test_events_json(populated: Populated) -> None:
    result = evflow_cli(populated.path, "events", "ok", "--json")
    assert result.code == 0
    events = result.json_lines()
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert all(isinstance(e["time"], float) for e in events)
    assert events[0]["type"] == "WorkflowStarted"
    assert events[-1]["type"] == "WorkflowFinished"
    assert {e["type"] for e in events} >= {"StepStarted", "StepFinished", "MetadataAttached"}
    assert [e["time"] for e in events] == sorted(e["time"] for e in events)


def test_events_failed_workflow(populated: Populated) -> None:
    events = evflow_cli(populated.path, "--json", "events", "bad").json_lines()
    types = [e["type"] for e in events]
    assert types[-2:] == ["StepFailed", "WorkflowFailed"]
    assert events[-2]["will_retry"] is False


def test_events_from(populated: Populated) -> None:
    events = evflow_cli(populated.path, "events", "ok", "--from", "3", "--json").json_lines()
    assert events[0]["seq"] == 3


def test_events_table(populated: Populated) -> None:
    result = evflow_cli(populated.path, "events", "ok")
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0].split() == ["SEQ", "TIME", "TYPE", "DETAILS"]
    assert [int(line.split()[0]) for line in lines[1:]] == list(range(1, len(lines)))
    assert lines[1].split()[3] == "WorkflowStarted"
    assert lines[-1].split()[3] == "WorkflowFinished"


def test_events_follow_of_an_ended_run_returns(populated: Populated) -> None:
    result = evflow_cli(populated.path, "events", "ok", "--follow", "--json")
    assert result.code == 0
    assert result.json_lines()[-1]["type"] == "WorkflowFinished"
    tail = evflow_cli(populated.path, "events", "ok", "--follow", "--from", "4", "--json").json_lines()
    assert tail == result.json_lines()[3:]


def test_events_follow_of_a_resumable_run_returns(populated: Populated) -> None:
    # Nothing writes the store, so nothing would ever come: the stream ends.
    result = evflow_cli(populated.path, "events", "paused", "--follow", "--json")
    assert result.code == 0
    assert result.json_lines()[-1]["type"] == "StepStarted"


# -- output -------------------------------------------------------------------------------------


def test_output(populated: Populated) -> None:
    assert evflow_cli(populated.path, "output", "ok").out == "1\n"
    assert evflow_cli(populated.path, "output", "ok", "--step", "add", "--json").out == "6\n"
    # A step that continued: its value is its continuation's.
    assert evflow_cli(populated.path, "output", "ok", "--step", "halve", "--json").json() == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["bad"], "failed: bad at step fail: ValueError: boom 4", id="failed"),
        pytest.param(["bad", "--step", "fail"], "ValueError: boom 4", id="failed-step"),
        pytest.param(["paused"], "no output yet: paused is RESUMABLE", id="resumable"),
    ],
)
def test_output_without_a_value(populated: Populated, args: list[str], message: str) -> None:
    result = evflow_cli(populated.path, "output", *args)
    assert result.code == 1
    assert message in result.err
    assert result.out == ""


# -- errors and exit codes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["status", "nope"], id="status"),
        pytest.param(["show", "nope"], id="show"),
        pytest.param(["show", "nope", "--json"], id="show-json"),
        pytest.param(["events", "nope"], id="events"),
        pytest.param(["output", "nope"], id="output"),
        pytest.param(["export", "nope"], id="export"),
        pytest.param(["verify", "nope"], id="verify"),
    ],
)
def test_not_found(populated: Populated, args: list[str]) -> None:
    result = evflow_cli(populated.path, *args)
    assert result.code == 1
    assert result.err == "not found: nope\n"


def test_step_not_found(populated: Populated) -> None:
    result = evflow_cli(populated.path, "show", "ok", "--step", "nope")
    assert result.code == 1
    assert result.err.startswith("not found: step 'nope'")


@pytest.mark.parametrize(
    "args",
    [
        pytest.param([], id="no-command"),
        pytest.param(["frobnicate"], id="unknown-command"),
        pytest.param(["show"], id="missing-wid"),
        pytest.param(["show", "ok", "--as-of", "0"], id="bad-seq"),
        pytest.param(["show", "ok", "--as-of", "x"], id="non-int-seq"),
        pytest.param(["list", "--status", "DONE"], id="bad-status"),
        pytest.param(["status", ""], id="empty-id"),
        pytest.param(["export"], id="export-nothing"),
        pytest.param(["resume", "ok", "--all"], id="resume-ids-and-all"),
        pytest.param(["--storage", "ftp://x", "list"], id="bad-scheme"),
    ],
)
def test_usage_error(populated: Populated, args: list[str]) -> None:
    result = evflow_cli(populated.path if "--storage" not in args else None, *args)
    assert result.code == 2
    assert result.out == ""
    assert "error" in result.err


def test_console_script() -> None:
    script = Path(sys.executable).with_name("evflow")
    if not script.exists():
        pytest.skip("the evflow console script is not installed in this environment")
    proc = subprocess.run([str(script), "--help"], capture_output=True, env=_env(), check=False)
    assert proc.returncode == 0
    assert b"usage: evflow" in proc.stdout


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal() -> None:
    terminal = _Terminal()
    progress = Progress("importing", 3, terminal)
    for wid in ("a", "b", "c"):
        progress.advance(wid)
    progress.close()
    assert "\rimporting 1/3 a" in terminal.getvalue()
    assert "\rimporting 3/3 c" in terminal.getvalue()
    assert terminal.getvalue().endswith("\r")  # the line is cleared at the end
    pipe = io.StringIO()
    progress = Progress("importing", 3, pipe)
    for wid in ("a", "b", "c"):
        progress.advance(wid)
    progress.close()
    assert pipe.getvalue() == ""
    single = _Terminal()
    Progress("resuming", 1, single).advance("a")
    assert single.getvalue() == ""


def test_help() -> None:
    result = evflow_cli(None, "--help")
    assert result.code == 0
    for command in ("list", "status", "show", "events", "output", "resume", "cancel", "delete"):
        assert command in result.out
    for command in ("verify", "export", "import", "demo"):
        assert command in result.out


# -- verify -------------------------------------------------------------------------------------


def test_verify_sound(populated: Populated) -> None:
    result = evflow_cli(populated.path, "verify")
    assert result.code == 0, result.out
    assert result.out.startswith("sound: 4 workflow(s)")
    assert evflow_cli(populated.path, "verify", "ok").code == 0
    assert evflow_cli(populated.path, "verify", "--json").json() == []


def _flip_middle_byte(store: Path, workflow_id: str) -> int:
    log = store / "workflows" / f"{workflow_id}.log"
    data = bytearray(log.read_bytes())
    middle = len(data) // 2
    data[middle] ^= 0xFF
    log.write_bytes(bytes(data))
    return middle


def test_verify_flipped_byte(store: Path) -> None:
    flipped = _flip_middle_byte(store, "ok")
    result = evflow_cli(store, "verify")
    assert result.code == 1
    lines = result.out.splitlines()
    assert len(lines) == 1, result.out
    wid, position, what = lines[0].split(" ", 2)
    assert wid == "ok"
    kind, _, offset = position.partition("=")
    assert kind == "byte"
    assert 0 < int(offset) <= flipped
    assert what
    assert "Traceback" not in result.out
    # Only that workflow: verifying another one is sound, and it still reads.
    assert evflow_cli(store, "verify", "bad").code == 0
    assert evflow_cli(store, "status", "bad").out == "FAILED\n"
    # Reading the damaged one fails loudly, with the position, without a traceback.
    shown = evflow_cli(store, "show", "ok")
    assert shown.code == 1
    assert shown.err.startswith("error: ") and "ok" in shown.err and offset in shown.err
    listed = evflow_cli(store, "list", "--json")
    assert listed.code == 0
    assert "ok" not in {entry["workflow_id"] for entry in listed.json()}
    assert "damaged: ok" in listed.err


def test_verify_flipped_byte_json(store: Path) -> None:
    _flip_middle_byte(store, "bad")
    result = evflow_cli(store, "--json", "verify", "bad")
    assert result.code == 1
    [problem] = result.json()
    assert problem["workflow_id"] == "bad"
    assert isinstance(problem["byte"], int)
    assert problem["what"]


def test_verify_flipped_byte_in_the_last_record(store: Path) -> None:
    """The last record of a finished workflow was acknowledged: damage there is reported
    like damage anywhere, and no writer cuts it (the workflow never goes back to RESUMABLE)."""
    log = store / "workflows" / "ok.log"
    last = _scan_log(log.read_bytes()).events.starts[-1]
    data = bytearray(log.read_bytes())
    data[last + 12] ^= 0x01
    log.write_bytes(bytes(data))
    result = evflow_cli(store, "verify")
    assert result.code == 1
    assert result.out.splitlines() == [
        f"ok byte={last} checksum mismatch in the last record, which is complete (damage, not a torn write)"
    ]
    status = evflow_cli(store, "status", "ok")
    assert status.code == 1
    assert f"byte {last}" in status.err
    assert evflow_cli(store, "cancel", "ok").code == 1  # a writer opened the store
    assert log.read_bytes() == bytes(data)
    assert evflow_cli(store, "verify").code == 1


@pytest.mark.parametrize(
    "content",
    [pytest.param(b"", id="zero-bytes"), pytest.param(b"EVFLOG1\n", id="magic-only")],
)
def test_verify_notes_a_log_that_holds_no_event(store: Path, content: bytes) -> None:
    """A crash between creating a log and writing its first event leaves a log with no
    event: verify notes it and says sound, list does not show it, a writer removes it."""
    empty = store / "workflows" / "empty.log"
    empty.write_bytes(content)
    result = evflow_cli(store, "verify")
    assert result.code == 0, result.out
    assert result.out.startswith("sound: 4 workflow(s)")
    assert result.err.startswith("note: empty byte=0 the log holds no event")
    assert evflow_cli(store, "--json", "verify").json() == []
    listed = evflow_cli(store, "list", "--json")
    assert (listed.code, listed.err) == (0, "")
    assert "empty" not in {entry["workflow_id"] for entry in listed.json()}
    assert evflow_cli(store, "status", "empty").code == 1  # not found
    assert evflow_cli(store, "cancel", "ok").code == 0  # a writer opens the store
    assert not empty.exists()
    assert evflow_cli(store, "verify").err == ""


def _write_unfoldable_log(path: Path) -> None:
    """A log whose records are intact but whose second event names no recorded step."""

    async def write() -> None:
        async with FileStore(path) as store:
            started = WorkflowStarted(seq=1, time=1.0, workflow_id="odd", output="a", steps=[])
            await store.append("odd", [started, StepStarted(seq=2, time=2.0, name="ghost")])

    anyio.run(write)


def test_verify_a_log_that_does_not_fold(store: Path) -> None:
    _write_unfoldable_log(store)
    result = evflow_cli(store, "verify")
    assert result.code == 1
    assert result.out.splitlines() == [
        "odd seq=2 StepStarted does not fold: StepNotFoundError: workflow 'odd' has no step named 'ghost'"
    ]
    shown = evflow_cli(store, "show", "odd")
    assert shown.code == 1
    assert shown.err == (
        "error: workflow 'odd': the log does not fold at seq 2: "
        "StepStarted: workflow 'odd' has no step named 'ghost'\n"
    )
    listed = evflow_cli(store, "list")
    assert "odd" not in listed.out
    assert listed.err.startswith("damaged: odd at seq 2: ")


# -- export / import ----------------------------------------------------------------------------


def test_export_import_round_trip_is_byte_identical(populated: Populated, tmp_path: Path) -> None:
    exported = evflow_cli(populated.path, "export", "ok")
    assert exported.code == 0
    lines = exported.stdout.splitlines()
    assert [json.loads(line)["seq"] for line in lines] == list(range(1, len(lines) + 1))
    dump = tmp_path / "ok.jsonl"
    dump.write_bytes(exported.stdout)
    other = tmp_path / "other"
    imported = evflow_cli(other, "import", str(dump))
    assert imported.code == 0, imported.err
    assert evflow_cli(other, "export", "ok").stdout == exported.stdout
    assert evflow_cli(other, "show", "ok", "--json").json() == populated.metadata["ok"]
    assert evflow_cli(other, "output", "ok").out == "1\n"
    assert evflow_cli(other, "verify").code == 0


def test_import_many_from_stdin(populated: Populated, tmp_path: Path) -> None:
    exported = evflow_cli(populated.path, "export", "--all")
    assert exported.code == 0
    other = tmp_path / "other"
    result = evflow_cli(other, "import", "-", stdin=exported.stdout)
    assert result.code == 0, result.err
    assert len(result.out.splitlines()) == 4
    assert "\r" not in result.err  # no progress line: stderr is not a terminal
    assert evflow_cli(other, "export", "--all").stdout == exported.stdout
    statuses = {e["workflow_id"]: e["status"] for e in evflow_cli(other, "list", "--json").json()}
    assert statuses == {"ok": "SUCCESSFUL", "bad": "FAILED", "paused": "RESUMABLE", "doomed": "RESUMABLE"}


def test_import_refuses_an_existing_workflow(store: Path, tmp_path: Path) -> None:
    dump = tmp_path / "ok.jsonl"
    dump.write_bytes(evflow_cli(store, "export", "ok").stdout)
    before = evflow_cli(store, "export", "--all").stdout
    result = evflow_cli(store, "import", str(dump))
    assert result.code == 1
    assert "exists: ok" in result.err
    assert evflow_cli(store, "export", "--all").stdout == before


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(b"not json\n", "dump.jsonl:1: not an evflow event", id="not-json"),
        pytest.param(b'{"type":"Nope","seq":1,"time":1.0}\n', "dump.jsonl:1", id="unknown-type"),
        pytest.param(b'{"type":"StepStarted","name":"a","seq":2,"time":1.0}\n', "before any", id="no-start"),
    ],
)
def test_import_bad_input(tmp_path: Path, content: bytes, message: str) -> None:
    dump = tmp_path / "dump.jsonl"
    dump.write_bytes(content)
    result = evflow_cli(tmp_path / "other", "import", str(dump))
    assert result.code == 1
    assert message in result.err


def test_import_refuses_a_log_that_does_not_fold(populated: Populated, tmp_path: Path) -> None:
    lines = evflow_cli(populated.path, "export", "ok").stdout.splitlines()
    dump = tmp_path / "dump.jsonl"
    dump.write_bytes(b"\n".join([lines[0], *lines[2:]]) + b"\n")  # seq 2 is missing
    result = evflow_cli(tmp_path / "other", "import", str(dump))
    assert result.code == 1
    assert "does not follow" in result.err
    assert evflow_cli(tmp_path / "other", "list", "--json").json() == []


def test_import_skip_existing(store: Path, tmp_path: Path) -> None:
    before = evflow_cli(store, "export", "--all").stdout
    ok = evflow_cli(store, "export", "ok").stdout
    assert _split(before)["ok"] == ok
    dump = tmp_path / "dump.jsonl"
    dump.write_bytes(ok + _renamed(ok, "ok", "new"))
    result = evflow_cli(store, "import", "--skip-existing", str(dump), "--json")
    assert result.code == 0, result.err
    n = len(ok.splitlines())
    assert result.json() == [
        {"workflow_id": "ok", "events": n, "skipped": True},
        {"workflow_id": "new", "events": n, "skipped": False},
    ]
    assert evflow_cli(store, "export", "ok").stdout == ok
    assert evflow_cli(store, "export", "new").stdout == _renamed(ok, "ok", "new")
    again = evflow_cli(store, "import", "--skip-existing", str(dump))
    assert again.code == 0, again.err
    assert again.out.splitlines() == [
        f"skipped ok ({n} events, already in the store)",
        f"skipped new ({n} events, already in the store)",
    ]
    after = _split(evflow_cli(store, "export", "--all").stdout)
    assert after == {**_split(before), "new": _renamed(ok, "ok", "new")}


def test_import_skip_existing_refuses_a_differing_log(store: Path, tmp_path: Path) -> None:
    before = evflow_cli(store, "export", "--all").stdout
    ok = evflow_cli(store, "export", "ok").stdout
    dump = tmp_path / "dump.jsonl"
    dump.write_bytes(_retimed(ok, "ok") + _renamed(ok, "ok", "new"))
    result = evflow_cli(store, "import", "--skip-existing", str(dump))
    assert result.code == 1
    assert result.err.splitlines() == [
        "differs: ok (the store holds another log under this id; delete it first, or import into "
        "another store)"
    ]
    assert evflow_cli(store, "export", "--all").stdout == before  # "new" was not imported either


_decoder = msgspec.json.Decoder(AnyEvent)
_encoder = msgspec.json.Encoder()


def _renamed(export: bytes, old: str, new: str) -> bytes:
    """The workflow ``old`` of an export, as workflow ``new``."""
    [(_, events)] = [(wid, events) for wid, events in parse_export(export, "export") if wid == old]
    return _encoded_as(events, new)


def _split(export: bytes) -> dict[str, bytes]:
    """Each workflow's lines of an export."""
    return {wid: _encoded_as(events, wid) for wid, events in parse_export(export, "export")}


def _encoded_as(events: list[AnyEvent], workflow_id: str) -> bytes:
    renamed = [
        msgspec.structs.replace(e, workflow_id=workflow_id) if isinstance(e, WorkflowStarted) else e
        for e in events
    ]
    return b"".join(_encoder.encode(e) + b"\n" for e in renamed)


def _retimed(export: bytes, workflow_id: str) -> bytes:
    """The workflow of an export with its last event a second later: the same id, another log."""
    [(_, events)] = [(wid, events) for wid, events in parse_export(export, "export") if wid == workflow_id]
    events[-1] = msgspec.structs.replace(events[-1], time=events[-1].time + 1)
    return _encoded_as(events, workflow_id)


async def _stored_ids(storage: Path) -> set[str]:
    if not await anyio.Path(storage).exists():
        return set()
    async with FileStore(storage, read_only=True) as reader:
        return set(await reader.list_workflows())


def _import_killed_mid_way(storage: Path, dump: Path, total: int) -> set[str] | None:
    """Start ``evflow import DUMP``, SIGKILL it once some workflows are in the store; the
    ids in the store after the kill, or None if it ended before (nothing to check)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "evflow", "--storage", str(storage), "import", str(dump)],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while proc.poll() is None and len(anyio.run(_stored_ids, storage)) < 10:
            time.sleep(0.001)  # polling the store for progress; not a wait for a given time
        proc.kill()
    finally:
        code = proc.wait(timeout=120)
    if code != -9:
        return None
    imported = anyio.run(_stored_ids, storage)
    return imported if len(imported) < total else None


@pytest.mark.slow  # a real subprocess, killed
def test_an_import_killed_mid_way_is_finished_by_skip_existing(populated: Populated, tmp_path: Path) -> None:
    logs = parse_export(evflow_cli(populated.path, "export", "--all").stdout, "export")
    total = 300
    blocks = {f"w{i:04d}": _encoded_as(logs[i % len(logs)][1], f"w{i:04d}") for i in range(total)}
    dump = tmp_path / "many.jsonl"
    dump.write_bytes(b"".join(blocks.values()))
    for attempt in range(3):  # an import may finish before the kill lands: then try again
        storage = tmp_path / f"store-{attempt}"
        imported = _import_killed_mid_way(storage, dump, total)
        if imported is not None:
            break
    else:
        pytest.fail("the import ended before it could be killed, three times")
    assert imported  # it was killed after some were in, before all were
    # Each workflow is wholly imported or absent: what is there is exactly the file's.
    shown = evflow_cli(storage, "export", *sorted(imported))
    assert shown.code == 0, shown.err
    assert shown.stdout == b"".join(blocks[wid] for wid in sorted(imported))

    # Without --skip-existing the import is refused, and writes nothing.
    refused = evflow_cli(storage, "import", str(dump))
    assert refused.code == 1
    assert {line.split()[1] for line in refused.err.splitlines()} == imported
    assert anyio.run(_stored_ids, storage) == imported

    finished = evflow_cli(storage, "import", "--skip-existing", str(dump), "--json")
    assert finished.code == 0, finished.err
    assert {e["workflow_id"] for e in finished.json() if e["skipped"]} == imported
    assert evflow_cli(storage, "export", "--all").stdout == dump.read_bytes()
    assert evflow_cli(storage, "verify").code == 0

    # A workflow whose log differs from the file's is refused, by id, and nothing is written.
    assert evflow_cli(storage, "delete", "w0002").code == 0
    other = tmp_path / "other.jsonl"
    other.write_bytes(b"".join(_retimed(b, w) if w == "w0001" else b for w, b in blocks.items()))
    differs = evflow_cli(storage, "import", "--skip-existing", str(other))
    assert differs.code == 1
    assert [line.split()[:2] for line in differs.err.splitlines()] == [["differs:", "w0001"]]
    assert "w0002" not in anyio.run(_stored_ids, storage)


# -- through an engine: cancel / delete / resume ------------------------------------------------


def test_cancel(store: Path) -> None:
    result = evflow_cli(store, "cancel", "doomed")
    assert (result.code, result.out) == (0, "doomed  CANCELED\n")
    assert evflow_cli(store, "status", "doomed").out == "CANCELED\n"
    assert evflow_cli(store, "events", "doomed", "--json").json_lines()[-1]["type"] == "WorkflowCanceled"
    # SUCCESSFUL is left as it is.
    assert evflow_cli(store, "cancel", "ok").out == "ok  SUCCESSFUL\n"


def test_delete(store: Path) -> None:
    result = evflow_cli(store, "delete", "bad")
    assert (result.code, result.out) == (0, "deleted bad\n")
    assert evflow_cli(store, "status", "bad").err == "not found: bad\n"
    again = evflow_cli(store, "delete", "bad")
    assert (again.code, again.err) == (1, "not found: bad\n")


def test_resume(populated: Populated, store: Path) -> None:
    Path(populated.gates["paused"]).touch()
    result = evflow_cli(store, "resume", "paused")
    assert (result.code, result.out) == (0, "paused  SUCCESSFUL\n"), result.err
    assert evflow_cli(store, "output", "paused").out == "2\n"
    types = [e["type"] for e in evflow_cli(store, "events", "paused", "--json").json_lines()]
    assert types.count("WorkflowStarted") == 2
    # A failed workflow fails again: exit 1 with the error.
    failed = evflow_cli(store, "--json", "resume", "bad")
    assert failed.code == 1
    [entry] = failed.json()
    assert entry["status"] == "FAILED" and "boom" in entry["error"]


def test_resume_all(populated: Populated, store: Path) -> None:
    for gate in populated.gates.values():
        Path(gate).touch()
    result = evflow_cli(store, "resume", "--all", "--json")
    assert result.code == 0, result.err
    assert sorted(result.json(), key=lambda e: e["workflow_id"]) == [
        {"workflow_id": "doomed", "status": "SUCCESSFUL"},
        {"workflow_id": "paused", "status": "SUCCESSFUL"},
    ]


def test_commands_that_write_refuse_a_locked_store(store: Path) -> None:
    async def hold_and_call() -> tuple[Result, list[Result]]:
        async with evflow.Engine(store):
            # A live writer that does not run `paused` (its engine is gone): still RESUMABLE.
            status = await anyio.to_thread.run_sync(evflow_cli, store, "status", "paused")
            results = []
            for args in (["cancel", "doomed"], ["delete", "bad"], ["resume", "paused"], ["demo"]):
                results.append(await anyio.to_thread.run_sync(evflow_cli, store, *args))
            return status, results

    status, results = anyio.run(hold_and_call)
    assert status.out == "RESUMABLE\n"
    for result in results:
        assert result.code == 1
        assert result.err.startswith("error: ") and "locked by process" in result.err
        assert len(result.err.splitlines()) == 1


# -- demo ---------------------------------------------------------------------------------------


def test_demo_on_the_default_store(tmp_path: Path) -> None:
    result = evflow_cli(None, "demo", cwd=tmp_path)
    assert result.code == 0, result.err
    assert (tmp_path / ".evflow").is_dir()
    assert "SUCCESSFUL" in result.out
    for name in ("load_orders", "subtotal", "tax", "countdown", "countdown_1", "countdown_2", "report"):
        assert name in result.out
    assert '"purpose": "evflow demo"' in result.out
    [entry] = evflow_cli(None, "list", "--json", cwd=tmp_path).json()
    assert entry["status"] == "SUCCESSFUL" and entry["workflow_id"].startswith("demo-")


def test_demo_json(tmp_path: Path) -> None:
    result = evflow_cli(tmp_path / "store", "demo", "--json")
    assert result.code == 0, result.err
    data = result.json()
    wid = data["workflow"]["workflow_id"]
    assert data["workflow"]["user_metadata"] == {"purpose": "evflow demo"}
    assert data["steps"]["countdown_2"]["user_metadata"] == {"stage": "continuation", "remaining": 0}
    assert evflow_cli(tmp_path / "store", "show", wid, "--json").json() == data["workflow"]


# -- while an engine in another process writes the store -----------------------------------------


@pytest.fixture
def live_engine(tmp_path: Path) -> Iterator[tuple[Path, Path, subprocess.Popen[bytes]]]:
    """An engine subprocess running workflow ``live``, blocked on a gate file."""
    storage = tmp_path / "store"
    gate = tmp_path / "gate"
    code = f"import cli_workflows; cli_workflows.serve({str(storage)!r}, {str(gate)!r}, 'live')"
    proc = subprocess.Popen([sys.executable, "-c", code], env=_env(), stdout=subprocess.PIPE)
    try:
        anyio.run(cli_workflows.wait_started, str(gate))
        yield storage, gate, proc
    finally:
        gate.touch()
        proc.wait(timeout=120)
        assert proc.stdout is not None
        proc.stdout.close()


def test_tools_read_while_an_engine_runs(live_engine: tuple[Path, Path, subprocess.Popen[bytes]]) -> None:
    storage, _gate, proc = live_engine
    assert evflow_cli(storage, "list", "--json").json() == [{"workflow_id": "live", "status": "RUNNING"}]
    assert evflow_cli(storage, "status", "live").out == "RUNNING\n"
    metadata = evflow_cli(storage, "show", "live", "--json").json()
    assert metadata["status"] == "RUNNING" and "end_time" not in metadata["stats"]
    assert metadata["user_metadata"] == {"served": True}
    waiting = evflow_cli(storage, "show", "live", "--step", "wait_file", "--json").json()
    assert waiting["status"] == "RUNNING"
    events = evflow_cli(storage, "events", "live", "--json").json_lines()
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1] == {**events[-1], "type": "StepStarted", "name": "wait_file"}
    assert evflow_cli(storage, "verify").code == 0
    # A command that writes cannot: the engine holds the lock.
    locked = evflow_cli(storage, "cancel", "live")
    assert locked.code == 1 and "locked by process" in locked.err
    assert proc.poll() is None


def test_events_follow_streams_until_the_run_ends(
    live_engine: tuple[Path, Path, subprocess.Popen[bytes]],
) -> None:
    storage, gate, proc = live_engine
    follower = subprocess.Popen(
        [sys.executable, "-m", "evflow", "--storage", str(storage), "events", "live", "--follow", "--json"],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert follower.stdout is not None and follower.stderr is not None
    first = json.loads(follower.stdout.readline())  # the follower is reading the live log
    assert first["seq"] == 1
    gate.touch()  # let the run finish; the follower must see the rest and stop by itself
    rest = [json.loads(line) for line in follower.stdout.read().splitlines()]
    assert follower.wait(timeout=120) == 0
    assert b"Traceback" not in follower.stderr.read()
    follower.stdout.close()
    follower.stderr.close()
    events = [first, *rest]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "WorkflowFinished"
    assert proc.wait(timeout=120) == 0
    assert evflow_cli(storage, "status", "live").out == "SUCCESSFUL\n"
