"""The example app in examples/fastapi_orders (its README says what it does), driven over
httpx's ASGI transport with its lifespan running, on the memory and the file store: an
order waits for its payment, ships once paid, is canceled, expires when no payment comes,
takes a payment through the mounted API's message route, and survives a restart."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import httpx
import pytest

import evflow

pytestmark = pytest.mark.anyio

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "fastapi_orders"


def load_example() -> ModuleType:
    """``orders.py`` as the module ``orders``, the name ``uvicorn orders:app`` gives it (its
    steps are recorded under it)."""
    spec = importlib.util.spec_from_file_location("orders", EXAMPLE / "orders.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["orders"] = module
    spec.loader.exec_module(module)
    return module


orders = load_example()

BOOK = {"item": "book", "quantity": 2, "total_cents": 3000}


@evflow.step
def not_an_order() -> str:
    return "plain"


@pytest.fixture(params=["memory", "file"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else str(tmp_path / "store")


@asynccontextmanager
async def running(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app's lifespan in a task of its own, as a server runs it (so its engine is the
    default engine, never the requests' enclosing block), and a client for the app."""
    started = anyio.Event()
    stop = anyio.Event()

    async def lifespan() -> None:
        async with app.router.lifespan_context(app):
            started.set()
            await stop.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(lifespan)
        await started.wait()
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
                yield client
        finally:
            stop.set()


async def until(
    client: httpx.AsyncClient, order_id: str, ok: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """``GET /orders/{id}`` until ``ok`` holds for its answer."""
    with anyio.fail_after(30):
        while True:
            answer = await client.get(f"/orders/{order_id}")
            assert answer.status_code == 200, answer.text
            if ok(answer.json()):
                return dict(answer.json())
            await anyio.sleep(0.01)


def awaiting_payment(view: dict[str, Any]) -> bool:
    return bool(view["progress"] == "awaiting payment")


def ended(view: dict[str, Any]) -> bool:
    return bool(view["status"] != "RUNNING")


async def place(client: httpx.AsyncClient, **fields: Any) -> str:
    answer = await client.post("/orders", json={**BOOK, **fields})
    assert answer.status_code == 201, answer.text
    assert answer.json()["order"]["item"] == "book"
    return str(answer.json()["order_id"])


async def test_an_order_awaits_its_payment_and_ships_once_paid(storage: str) -> None:
    async with running(orders.create_app(storage)) as client:
        order_id = await place(client)
        view = await until(client, order_id, awaiting_payment)
        assert view["status"] == "RUNNING" and "output" not in view
        assert view["dashboard"] == f"/evflow/#/wf/{order_id}"

        short = await client.post(f"/orders/{order_id}/pay", json={"payment_id": "p-1", "amount_cents": 10})
        assert short.status_code == 422 and "3000 cents" in short.json()["detail"]
        paid = await client.post(f"/orders/{order_id}/pay", json={"payment_id": "p-1", "amount_cents": 3000})
        assert paid.status_code == 202, paid.text
        assert paid.json() == {"order_id": order_id, "payment_id": "p-1", "accepted": True}

        view = await until(client, order_id, ended)
        assert view["status"] == "SUCCESSFUL"
        assert view["progress"] == "shipped"
        assert view["output"] == {
            "order_id": order_id,
            "state": "shipped",
            "paid": True,
            "payment_id": "p-1",
            "amount_cents": 3000,
            "item": "book",
            "quantity": 2,
            "tracking": f"TRACK-{order_id}",
        }
        # the same payment again (a retried webhook) is recorded once and is no error;
        # another one, or a cancel, comes too late
        again = await client.post(f"/orders/{order_id}/pay", json={"payment_id": "p-1", "amount_cents": 3000})
        assert again.status_code == 202, again.text
        other = await client.post(f"/orders/{order_id}/pay", json={"payment_id": "p-2", "amount_cents": 3000})
        assert other.status_code == 409 and "SUCCESSFUL" in other.json()["detail"]
        late = await client.post(f"/orders/{order_id}/cancel")
        assert late.status_code == 409 and "too late" in late.json()["detail"]

        # the dashboard and its API, mounted on the same engine, know the order's workflow
        workflow = await client.get(f"/evflow/api/workflows/{order_id}")
        assert workflow.status_code == 200, workflow.text
        assert workflow.json()["workflow_id"] == order_id
        assert workflow.json()["status"] == "SUCCESSFUL"
        assert workflow.json()["user_metadata"]["order"]["total_cents"] == 3000
        assert set(workflow.json()["published"]) == {"progress"}
        wait = (await client.get(f"/evflow/api/workflows/{order_id}/steps/payment")).json()
        assert wait["step_options"]["step_type"] == "EVENT" and "seq" in wait["stats"]
        listed = (await client.get("/evflow/api/workflows")).json()
        assert {"workflow_id": order_id, "status": "SUCCESSFUL"} in listed
        page = await client.get("/evflow/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert (await client.get("/orders")).json() == [{"order_id": order_id, "status": "SUCCESSFUL"}]


async def test_a_canceled_order_stays_canceled(storage: str) -> None:
    async with running(orders.create_app(storage)) as client:
        order_id = await place(client, order_id="order-7")
        assert order_id == "order-7"
        await until(client, order_id, awaiting_payment)

        canceled = await client.post(f"/orders/{order_id}/cancel")
        assert canceled.status_code == 200, canceled.text
        assert canceled.json()["status"] == "CANCELED"
        view = (await client.get(f"/orders/{order_id}")).json()
        assert view["status"] == "CANCELED" and "output" not in view
        assert view["progress"] == "awaiting payment"  # how far it got
        again = await client.post(f"/orders/{order_id}/cancel")
        assert again.status_code == 200 and again.json()["status"] == "CANCELED"

        paid = await client.post(f"/orders/{order_id}/pay", json={"payment_id": "p-1", "amount_cents": 3000})
        assert paid.status_code == 409 and "CANCELED" in paid.json()["detail"]
        # placing the same order again answers it as it is: it is never started again
        retried = await client.post("/orders", json={**BOOK, "order_id": order_id})
        assert retried.status_code == 200 and retried.json()["status"] == "CANCELED"
        taken = await client.post("/orders", json={**BOOK, "order_id": order_id, "total_cents": 1})
        assert taken.status_code == 409
        assert (await client.get(f"/evflow/api/workflows/{order_id}")).json()["status"] == "CANCELED"


async def test_an_order_whose_payment_never_comes_expires(storage: str) -> None:
    async with running(orders.create_app(storage)) as client:
        order_id = await place(client, payment_timeout=0.2)
        view = await until(client, order_id, ended)
        assert view["status"] == "SUCCESSFUL"
        assert view["progress"] == "payment timed out"
        assert view["output"] == {"order_id": order_id, "state": "expired", "paid": False}
        paid = await client.post(f"/orders/{order_id}/pay", json={"payment_id": "p-1", "amount_cents": 3000})
        assert paid.status_code == 409
        wait = (await client.get(f"/evflow/api/workflows/{order_id}/steps/payment")).json()
        assert wait["status"] == "SUCCESSFUL" and "seq" not in wait["stats"]  # it consumed none


async def test_a_payment_through_the_mounted_message_route(storage: str) -> None:
    async with running(orders.create_app(storage)) as client:
        order_id = await place(client)
        await until(client, order_id, awaiting_payment)
        route = f"/evflow/api/workflows/{order_id}/messages/payment"
        # that route takes any JSON: the workflow itself refuses what does not pay the order
        wrong = await client.post(route, json={"payment_id": "p-1", "amount_cents": 5})
        assert wrong.status_code == 202, wrong.text
        view = await until(client, order_id, lambda view: "payment_refused" in view)
        assert view["payment_refused"]["payment"] == {"payment_id": "p-1", "amount_cents": 5}
        assert view["status"] == "RUNNING" and view["progress"] == "awaiting payment"

        right = await client.post(
            route, json={"payment_id": "p-2", "amount_cents": 3000}, headers={"Idempotency-Key": "p-2"}
        )
        assert right.status_code == 202, right.text
        view = await until(client, order_id, ended)
        assert view["status"] == "SUCCESSFUL"
        assert view["output"]["payment_id"] == "p-2"


async def test_a_restarted_app_goes_on_waiting_for_the_payment(tmp_path: Path) -> None:
    storage = str(tmp_path / "store")
    async with running(orders.create_app(storage)) as client:
        order_id = await place(client)
        await until(client, order_id, awaiting_payment)
    # the lifespan closed the engine: the order was interrupted, and the next app resumes it
    async with running(orders.create_app(storage)) as client:
        view = (await client.get(f"/orders/{order_id}")).json()
        assert view["status"] == "RUNNING" and view["progress"] == "awaiting payment"
        paid = await client.post(f"/orders/{order_id}/pay", json={"payment_id": "p-1", "amount_cents": 3000})
        assert paid.status_code == 202, paid.text
        view = await until(client, order_id, ended)
        assert view["status"] == "SUCCESSFUL" and view["output"]["state"] == "shipped"


async def test_unknown_ids_and_workflows_that_are_no_orders_are_not_found(storage: str) -> None:
    async with running(orders.create_app(storage)) as client:
        assert (await client.get("/orders/nope")).status_code == 404
        assert (
            await client.post("/orders/nope/pay", json={"payment_id": "p", "amount_cents": 1})
        ).status_code == 404
        assert (await client.post("/orders/nope/cancel")).status_code == 404
        # a workflow of the same engine that is not an order (module-level calls from the
        # test use the lifespan's engine too: it is the default engine)
        assert await not_an_order.step().run("plain") == "plain"
        assert (await client.get("/orders/plain")).status_code == 404
        assert (await client.get("/orders")).json() == []
        bad = await client.post("/orders", json={"item": "", "total_cents": 0})
        assert bad.status_code == 422
