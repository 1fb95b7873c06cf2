"""The web app's JSON API (SPEC section 12), through httpx's ASGI transport, on the memory
and the file store: routes, error shapes, as-of, the event stream, read-only, the token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import httpx
import pytest

import evflow
import evflow.web
from evflow.engine import Engine

pytestmark = pytest.mark.anyio

GATES: dict[str, anyio.Event] = {}


@evflow.step
def add(left: int, right: int) -> int:
    return left + right


@evflow.step(max_retries=0)
def boom() -> None:
    raise ValueError("boom")


@evflow.step
async def gate(name: str) -> str:
    await GATES[name].wait()
    return name


def url(workflow_id: str, *rest: str) -> str:
    """The API path of a workflow (each segment percent-encoded, ``/`` included)."""
    return "/".join(["/api/workflows", *(quote(part, safe="") for part in (workflow_id, *rest))])


@pytest.fixture(params=["memory", "file"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else str(tmp_path / "store")


@asynccontextmanager
async def client(app: Any, **headers: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers) as c:
        yield c


async def wait_status(engine: Engine, workflow_id: str, status: str) -> None:
    with anyio.fail_after(30):
        while await engine.get_status(workflow_id) != status:
            await anyio.sleep(0.01)


async def test_list_with_status_filters(storage: str) -> None:
    async with Engine(storage) as engine:
        await engine.run(add.step(1, 2), "ok")
        with pytest.raises(evflow.WorkflowExecutionError):
            await engine.run(boom.step(), "bad")
        async with client(evflow.web.app(engine)) as c:
            everything = (await c.get("/api/workflows")).json()
            assert everything == [
                {"workflow_id": "bad", "status": "FAILED"},
                {"workflow_id": "ok", "status": "SUCCESSFUL"},
            ]
            assert (await c.get("/api/workflows?status=failed")).json() == [
                {"workflow_id": "bad", "status": "FAILED"}
            ]
            both = await c.get("/api/workflows", params=[("status", "FAILED"), ("status", "SUCCESSFUL")])
            assert both.json() == everything
            bad = await c.get("/api/workflows?status=DONE")
            assert bad.status_code == 422
            assert bad.json()["error"] == "invalid" and "DONE" in bad.json()["detail"]


async def test_metadata_now_and_as_of_any_event(storage: str) -> None:
    async with Engine(storage) as engine:
        await engine.run(add.step(add.step(1, 2), 3), "wf", metadata={"team": "ml"})
        async with client(evflow.web.app(engine)) as c:
            now = await c.get(url("wf"))
            assert now.status_code == 200
            assert now.json() == await engine.get_metadata("wf")
            events = (await c.get(url("wf", "events"))).json()
            assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
            first = (await c.get(url("wf"), params={"as_of": 1})).json()
            assert first["status"] == "RUNNING" and "end_time" not in first["stats"]
            assert first["user_metadata"] == {"team": "ml"}
            last = (await c.get(url("wf"), params={"as_of": len(events)})).json()
            assert last == now.json()
            name = add.name
            step = await c.get(url("wf", "steps", name))
            assert step.json() == await engine.get_metadata("wf", name)
            assert (await c.get(url("wf", "steps", name), params={"as_of": 1})).json()["status"] == "PENDING"
            view = (await c.get(url("wf", "state"), params={"as_of": 2})).json()
            assert view["seq"] == 2 and view["last_seq"] == len(events)
            assert {s["name"]: s["deps"] for s in view["steps"]} == {name: [f"{name}_1"], f"{name}_1": []}
            for bad in ("0", "-1", "x", "1.5"):
                answer = await c.get(url("wf"), params={"as_of": bad})
                assert answer.status_code == 422, bad
                assert answer.json()["error"] == "invalid"


async def test_events_from_a_seq_have_seq_type_and_time(storage: str) -> None:
    async with Engine(storage) as engine:
        await engine.run(add.step(1, 2), "wf")
        async with client(evflow.web.app(engine)) as c:
            events = (await c.get(url("wf", "events"))).json()
            assert [e["type"] for e in events] == [
                "WorkflowStarted",
                "StepStarted",
                "StepFinished",
                "WorkflowFinished",
            ]
            assert all(isinstance(e["time"], float) for e in events)
            assert events[2]["output_preview"] == "3"
            tail = (await c.get(url("wf", "events"), params={"from": 3})).json()
            assert tail == events[2:]
            assert (await c.get(url("wf", "events"), params={"from": 99})).json() == []


async def test_unknown_ids_and_steps_are_404_with_the_error_shape(storage: str) -> None:
    async with Engine(storage) as engine:
        await engine.run(add.step(1, 2), "wf")
        async with client(evflow.web.app(engine)) as c:
            for path in (
                url("nope"),
                url("nope", "events"),
                url("nope", "events", "stream"),
                url("nope", "state"),
                url("wf", "steps", "nope"),
            ):
                answer = await c.get(path)
                assert answer.status_code == 404, path
                body = answer.json()
                assert set(body) == {"error", "detail"} and body["error"] == "not_found"
            assert "nope" in (await c.get(url("wf", "steps", "nope"))).json()["detail"]
            for path in ("/api/nothing", url("wf", "elsewhere"), "/api/workflows/wf/"):
                assert (await c.get(path)).status_code == 404, path
            assert (await c.post(url("nope", "cancel"))).status_code == 404
            too_long = await c.get(url("x" * 300))
            assert too_long.status_code == 422 and too_long.json()["error"] == "invalid"
            wrong_method = await c.get(url("wf", "cancel"))
            assert wrong_method.status_code == 405 and wrong_method.json()["error"] == "method_not_allowed"


@pytest.mark.parametrize(
    "workflow_id",
    [
        pytest.param("a/b", id="slash"),
        pytest.param("<script>alert(1)</script>", id="script"),
        pytest.param("50% ?x=1#y", id="reserved"),
        pytest.param("ünï cödé", id="unicode"),
    ],
)
async def test_any_id_round_trips_through_the_path(workflow_id: str) -> None:
    async with Engine("memory://") as engine:
        await engine.run(add.step(1, 2), workflow_id)
        async with client(evflow.web.app(engine)) as c:
            assert (await c.get(url(workflow_id))).json()["workflow_id"] == workflow_id
            assert (await c.get("/api/workflows")).json() == [
                {"workflow_id": workflow_id, "status": "SUCCESSFUL"}
            ]
            assert len((await c.get(url(workflow_id, "events"))).json()) == 4


def sse_events(text: str) -> list[tuple[str, str, str]]:
    """``(event name, id, data)`` of each message of a text/event-stream body."""
    out = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        out.append((fields.get("event", "message"), fields.get("id", ""), fields.get("data", "")))
    return out


async def test_the_event_stream_of_a_finished_workflow_ends(storage: str) -> None:
    async with Engine(storage) as engine:
        await engine.run(add.step(1, 2), "wf")
        async with client(evflow.web.app(engine)) as c:
            answer = await c.get(url("wf", "events", "stream"))
            assert answer.headers["content-type"].startswith("text/event-stream")
            messages = sse_events(answer.text)
            assert [m[1] for m in messages[:-1]] == ["1", "2", "3", "4"]
            assert messages[-1][0] == "end" and '"SUCCESSFUL"' in messages[-1][2]
            tail = sse_events((await c.get(url("wf", "events", "stream"), params={"from": 3})).text)
            assert [m[1] for m in tail] == ["3", "4", ""]
            again = await c.get(url("wf", "events", "stream"), headers={"Last-Event-ID": "3"})
            assert [m[1] for m in sse_events(again.text)] == ["4", ""]


async def test_cancel_and_resume(storage: str) -> None:
    GATES["cancel"] = anyio.Event()
    async with Engine(storage) as engine:
        await engine.run_async(gate.step("cancel"), "wf")
        await engine.run(add.step(1, 2), "done")
        async with client(evflow.web.app(engine)) as c:
            canceled = await c.post(url("wf", "cancel"))
            assert canceled.json() == {"workflow_id": "wf", "status": "CANCELED"}
            assert await engine.get_status("wf") == "CANCELED"
            GATES["cancel"].set()
            resumed = await c.post(url("wf", "resume"))
            assert resumed.status_code == 200 and resumed.json()["workflow_id"] == "wf"
            assert await engine.get_output("wf") == "cancel"
            # SUCCESSFUL stays as it is, as the API's cancel leaves it
            assert (await c.post(url("done", "cancel"))).json()["status"] == "SUCCESSFUL"
            assert (await c.post(url("done", "resume"))).json()["status"] == "SUCCESSFUL"


async def test_messages_need_section_8(storage: str) -> None:
    async with Engine(storage) as engine:
        await engine.run(add.step(1, 2), "wf")
        async with client(evflow.web.app(engine)) as c:
            answer = await c.post(url("wf", "messages", "approval"), json={"ok": True})
            if hasattr(engine, "send"):
                pytest.skip("Engine.send exists: tests/test_web_messages.py covers the route")
            assert answer.status_code == 501
            assert answer.json()["error"] == "not_implemented"


async def test_read_only_refuses_every_change(storage: str) -> None:
    GATES["ro"] = anyio.Event()
    async with Engine(storage) as engine:
        await engine.run_async(gate.step("ro"), "wf")
        async with client(evflow.web.app(engine, read_only=True)) as c:
            assert (await c.get("/api/info")).json()["read_only"] is True
            for path in (url("wf", "cancel"), url("wf", "resume"), url("wf", "messages", "t")):
                answer = await c.post(path)
                assert answer.status_code == 403, path
                assert answer.json()["error"] == "read_only"
            assert (await c.get(url("wf"))).json()["status"] == "RUNNING"
        assert await engine.get_status("wf") == "RUNNING"
        GATES["ro"].set()
        assert await engine.get_output("wf") == "ro"


async def test_a_token_guards_every_request() -> None:
    async with Engine("memory://") as engine:
        await engine.run(add.step(1, 2), "wf")
        app = evflow.web.app(engine, token="s3cret")
        async with client(app) as c:
            for path in ("/api/workflows", url("wf"), "/static/app.js", url("wf", "events", "stream")):
                answer = await c.get(path)
                assert answer.status_code == 401, path
            assert (await c.get("/api/workflows")).json()["error"] == "unauthorized"
            assert (await c.post(url("wf", "cancel"))).status_code == 401
            wrong = await c.get("/api/workflows", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            page = await c.get("/")
            assert page.status_code == 401 and "text/html" in page.headers["content-type"]
            assert "s3cret" not in page.text
        async with client(app, Authorization="Bearer s3cret") as c:
            assert (await c.get("/api/workflows")).status_code == 200
            assert (await c.get("/")).status_code == 200
        async with client(app) as c:
            # the dashboard: opened once with ?token=, then a cookie stands for the header
            entry = await c.get("/?token=s3cret")
            assert entry.status_code == 303 and entry.headers["location"] == "/"
            cookie = entry.headers["set-cookie"]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
            assert (await c.get("/")).status_code == 200
            assert (await c.get("/api/workflows")).status_code == 200
            assert (await c.get("/?token=wrong")).status_code == 200  # the cookie is still good
        async with client(app) as c:
            assert (await c.get("/?token=wrong")).status_code == 401


async def test_a_post_from_another_origin_is_refused() -> None:
    GATES["origin"] = anyio.Event()
    async with Engine("memory://") as engine:
        await engine.run_async(gate.step("origin"), "wf")
        async with client(evflow.web.app(engine)) as c:
            evil = await c.post(url("wf", "cancel"), headers={"Origin": "http://evil.example"})
            assert evil.status_code == 403 and evil.json()["error"] == "forbidden"
            assert await engine.get_status("wf") == "RUNNING"
            same = await c.post(url("wf", "cancel"), headers={"Origin": "http://test"})
            assert same.json()["status"] == "CANCELED"


async def test_the_dashboard_and_its_assets_are_served() -> None:
    async with Engine("memory://") as engine, client(evflow.web.app(engine)) as c:
        page = await c.get("/")
        assert page.status_code == 200 and "static/app.js" in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        for asset in ("/static/app.js", "/static/app.css"):
            assert (await c.get(asset)).status_code == 200, asset
        assert "innerHTML" not in (await c.get("/static/app.js")).text


async def test_mounted_under_a_prefix() -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    async with Engine("memory://") as engine:
        await engine.run(add.step(1, 2), "a/b")
        outer = Starlette(routes=[Mount("/evflow", evflow.web.app(engine))])
        async with client(outer) as c:
            assert (await c.get("/evflow/api/workflows")).json() == [
                {"workflow_id": "a/b", "status": "SUCCESSFUL"}
            ]
            assert (await c.get("/evflow" + url("a/b"))).json()["workflow_id"] == "a/b"
            assert (await c.get("/evflow/")).status_code == 200


async def test_read_only_reader_of_a_store_another_engine_writes(tmp_path: Path) -> None:
    store = tmp_path / "store"
    GATES["reader"] = anyio.Event()
    async with Engine(store) as engine:
        await engine.run(add.step(1, 2), "done")
        await engine.run_async(gate.step("reader"), "running")
        app = evflow.web.app(storage=store, read_only=True)
        async with app.router.lifespan_context(app), client(app) as c:
            assert (await c.get("/api/info")).json()["read_only"] is True
            assert (await c.get("/api/workflows")).json() == [
                {"workflow_id": "done", "status": "SUCCESSFUL"},
                {"workflow_id": "running", "status": "RUNNING"},
            ]
            assert (await c.get(url("done"))).json() == await engine.get_metadata("done")
            assert (await c.get(url("done"), params={"as_of": 1})).json()["status"] == "RUNNING"
            assert (await c.post(url("running", "cancel"))).status_code == 403
            assert (await c.get(url("nope"))).status_code == 404
        GATES["reader"].set()
        await engine.get_output("running")
    app = evflow.web.app(storage=store, read_only=True)
    async with app.router.lifespan_context(app), client(app) as c:
        assert (await c.get(url("running"))).json()["status"] == "SUCCESSFUL"


async def test_an_app_with_a_storage_needs_its_lifespan(tmp_path: Path) -> None:
    app = evflow.web.app(storage=tmp_path / "store")
    async with client(app) as c:
        answer = await c.get("/api/workflows")
        assert answer.status_code == 503 and answer.json()["error"] == "not_started"
    async with app.router.lifespan_context(app), client(app) as c:
        assert (await c.get("/api/workflows")).json() == []
        assert (await c.get("/api/info")).json()["read_only"] is False
