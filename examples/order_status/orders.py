"""The shop's orders: a few fake ones in a dict, and the two things a caller may ask."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Order:
    status: str
    detail: str


ORDERS: dict[str, Order] = {
    "A100": Order("shipped", "it left the warehouse on Monday and arrives Thursday"),
    "A101": Order("processing", "it is being packed and ships tomorrow"),
    "A102": Order("delivered", "it was delivered on Friday"),
}


class OrderError(Exception):
    """A question about an order that has no good answer; the message says why."""


def order_status(order_id: str) -> str:
    """One spoken-style line about an order."""
    order = _find(order_id)
    return f"Order {order_id.upper()} is {order.status}: {order.detail}."


def cancel_order(order_id: str) -> str:
    """Cancel an order that has not shipped yet."""
    order = _find(order_id)
    if order.status != "processing":
        raise OrderError(f"order {order_id.upper()} is already {order.status}, too late to cancel")
    order.status, order.detail = "cancelled", "it was cancelled at your request"
    return f"Order {order_id.upper()} is cancelled."


def _find(order_id: str) -> Order:
    order = ORDERS.get(order_id.strip().upper())
    if order is None:
        raise OrderError(f"there is no order {order_id!r}; order numbers look like A100")
    return order
