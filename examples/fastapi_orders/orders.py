"""An order shop on FastAPI whose orders are evflow workflows (README.md beside this file).

An order waits for a ``payment`` message (``evflow.send``: ``POST /orders/{id}/pay``, or the
mounted API's ``POST /evflow/api/workflows/{id}/messages/payment``) until its payment is
due, then ships, or expires when no good payment came in time. It reports how far it got
with ``evflow.set_event("progress", ...)``, which ``GET /orders/{id}`` reads back with
``evflow.get_event``. ``POST /orders/{id}/cancel`` cancels it. The dashboard and the JSON
API of the same engine are mounted at ``/evflow``.

Run it from this directory, so that the steps are recorded as ``orders:...`` and a
restarted app finds them again: ``uvicorn orders:app``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Response
from pydantic import BaseModel, Field

import evflow
import evflow.web

#: The published keys: how far the order got, and the last payment it refused.
PROGRESS = "progress"
REFUSED = "payment_refused"
#: The message topic a payment arrives on.
PAYMENT = "payment"

AWAITING_PAYMENT = "awaiting payment"
PAID = "paid"
SHIPPED = "shipped"
TIMED_OUT = "payment timed out"


# -- the workflow ----------------------------------------------------------------------------


def _await_payment(order: dict[str, Any]) -> evflow.Node:
    """The next payment, until the order's payment is due; ``settle`` takes it (or None).

    The time left is worked out in the step that returns this continuation, and the
    continuation is recorded with that step's end, so a resume keeps the same deadline.
    """
    left = max(0.0, order["payment_due"] - time.time())
    return settle.step(order, evflow.wait_for_event(PAYMENT, timeout=left, name="payment"))


@evflow.step(name="place_order")
def place_order(order: dict[str, Any]) -> evflow.Node:
    evflow.set_event(PROGRESS, AWAITING_PAYMENT)
    return _await_payment(order)


@evflow.step(name="settle")
def settle(order: dict[str, Any], payment: dict[str, Any] | None) -> Any:
    """The order's outcome once a payment came (or its wait timed out)."""
    if payment is None:
        evflow.set_event(PROGRESS, TIMED_OUT)
        return {"order_id": evflow.get_current_workflow_id(), "state": "expired", "paid": False}
    if not isinstance(payment, dict) or payment.get("amount_cents") != order["total_cents"]:
        # A message that does not pay the order (the mounted API's message route takes any
        # JSON): say so and wait for the next one, until the same deadline.
        evflow.set_event(
            REFUSED, {"payment": payment, "reason": f"the order costs {order['total_cents']} cents"}
        )
        return _await_payment(order)
    evflow.set_event(PROGRESS, PAID)
    return ship.step(order, payment)


@evflow.step(name="ship")
async def ship(order: dict[str, Any], payment: dict[str, Any]) -> dict[str, Any]:
    order_id = evflow.get_current_workflow_id()
    # A real carrier API would get f"{order_id}/{evflow.get_current_step_name()}" as its
    # idempotency key: the same for every retry and resume of this step, so it ships once.
    evflow.set_event(PROGRESS, SHIPPED)
    return {
        "order_id": order_id,
        "state": "shipped",
        "paid": True,
        "payment_id": payment["payment_id"],
        "amount_cents": payment["amount_cents"],
        "item": order["item"],
        "quantity": order["quantity"],
        "tracking": f"TRACK-{order_id}",
    }


# -- the web app -----------------------------------------------------------------------------


class NewOrder(BaseModel):
    item: str = Field(min_length=1, max_length=100)
    quantity: int = Field(default=1, ge=1, le=1000)
    total_cents: int = Field(gt=0)
    #: How long the order waits for its payment (seconds), from when it is placed.
    payment_timeout: float = Field(default=900.0, gt=0, le=7 * 86400)
    #: Your own id makes a retried POST safe; by default one is made up.
    order_id: str | None = Field(default=None, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class Payment(BaseModel):
    payment_id: str = Field(min_length=1, max_length=100)
    amount_cents: int = Field(gt=0)


router = APIRouter()


async def _metadata(order_id: str) -> dict[str, Any]:
    """The order's workflow metadata; 404 for an unknown id or a workflow that is no order."""
    try:
        metadata = await evflow.get_metadata(order_id)
    except (evflow.WorkflowNotFoundError, ValueError):
        raise HTTPException(404, f"no order {order_id!r}") from None
    if "order" not in metadata["user_metadata"]:
        raise HTTPException(404, f"no order {order_id!r} (that workflow is not an order)")
    return metadata


async def _view(order_id: str, metadata: dict[str, Any]) -> dict[str, Any]:
    """What ``GET /orders/{id}`` answers: the workflow's status, the order's last published
    progress (None until the workflow set one) and, once it ended, its output or error."""
    order = metadata["user_metadata"]["order"]
    status = evflow.WorkflowStatus(metadata["status"])
    published = metadata.get("published", {})
    view: dict[str, Any] = {
        "order_id": order_id,
        "status": status.value,
        "progress": None,
        "order": order,
        "dashboard": f"/evflow/#/wf/{order_id}",
    }
    # A key listed in the metadata's "published" is set, so get_event answers at once.
    if PROGRESS in published:
        view["progress"] = await evflow.get_event(order_id, PROGRESS)
        view["progress_time"] = published[PROGRESS]["time"]
    if REFUSED in published:
        view[REFUSED] = await evflow.get_event(order_id, REFUSED)
    if status is evflow.WorkflowStatus.SUCCESSFUL:
        view["output"] = await evflow.get_output(order_id)
    elif status is evflow.WorkflowStatus.FAILED:
        try:
            await evflow.get_output(order_id)
        except evflow.WorkflowExecutionError as exc:
            view["error"] = str(exc.__cause__ or exc)
    return view


@router.post("/orders", status_code=201)
async def place(new: NewOrder, response: Response) -> dict[str, Any]:
    """Start the order's workflow; answers the order as ``GET /orders/{id}`` does.

    An ``order_id`` that is taken answers that order (200) when it is the same order, else
    409: an existing workflow is never started again (not even a canceled one).
    """
    order_id = new.order_id or f"order-{uuid.uuid4().hex[:12]}"
    wanted = {"item": new.item, "quantity": new.quantity, "total_cents": new.total_cents}
    try:
        existing = await evflow.get_metadata(order_id)
    except evflow.WorkflowNotFoundError:
        existing = None
    if existing is not None:
        order = existing["user_metadata"].get("order")
        if order is None or {key: order.get(key) for key in wanted} != wanted:
            raise HTTPException(409, f"order id {order_id!r} is taken by another order")
        response.status_code = 200
        return await _view(order_id, existing)
    placed = time.time()
    order = {**wanted, "placed_at": placed, "payment_due": placed + new.payment_timeout}
    await place_order.step(order).run_async(order_id, metadata={"order": order})
    return await _view(order_id, await evflow.get_metadata(order_id))


@router.get("/orders")
async def list_orders() -> list[dict[str, Any]]:
    """Every order's id and status, by id."""
    out = []
    for workflow_id, status in await evflow.list_all():
        metadata = await evflow.get_metadata(workflow_id)
        if "order" in metadata["user_metadata"]:
            out.append({"order_id": workflow_id, "status": status.value})
    return sorted(out, key=lambda row: row["order_id"])


@router.get("/orders/{order_id}")
async def get_order(order_id: str) -> dict[str, Any]:
    return await _view(order_id, await _metadata(order_id))


@router.post("/orders/{order_id}/pay", status_code=202)
async def pay(order_id: str, payment: Payment) -> dict[str, Any]:
    """Send the order its payment (``evflow.send``), once per ``payment_id``.

    422 when the amount is not the order's total; 409 when the order has ended (a payment
    already recorded is not an error: a retried webhook gets 202 again).
    """
    order = (await _metadata(order_id))["user_metadata"]["order"]
    if payment.amount_cents != order["total_cents"]:
        raise HTTPException(422, f"order {order_id!r} costs {order['total_cents']} cents")
    try:
        await evflow.send(
            order_id, PAYMENT, payment.model_dump(), idempotency_key=f"payment:{payment.payment_id}"
        )
    except evflow.WorkflowNotRunningError:
        status = await evflow.get_status(order_id)
        raise HTTPException(409, f"order {order_id!r} is {status.value}: it takes no payment") from None
    return {"order_id": order_id, "payment_id": payment.payment_id, "accepted": True}


@router.post("/orders/{order_id}/cancel")
async def cancel(order_id: str) -> dict[str, Any]:
    """Cancel the order (``evflow.cancel``); 409 once it has shipped or expired.

    Canceling a canceled order again answers it as it is.
    """
    await _metadata(order_id)
    await evflow.cancel(order_id)
    metadata = await _metadata(order_id)
    status = evflow.WorkflowStatus(metadata["status"])
    if status is not evflow.WorkflowStatus.CANCELED:
        raise HTTPException(409, f"order {order_id!r} has ended ({status.value}): too late to cancel")
    return await _view(order_id, metadata)


def create_app(storage: str | None = None, **engine_options: Any) -> FastAPI:
    """The shop: its routes, and evflow's dashboard and API at ``/evflow``, on one engine
    that the lifespan opens at startup (``storage`` None: ``$EVFLOW_STORAGE``, else
    ``./.evflow``) and closes at shutdown. ``engine_options`` go to ``evflow.Engine``."""
    api = FastAPI(title="evflow orders", lifespan=evflow.web.lifespan(storage, **engine_options))
    api.include_router(router)
    api.mount("/evflow", evflow.web.app())
    return api


app = create_app()
