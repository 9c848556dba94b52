"""Order lookups: Fetch Order (read through to the shop's order API on a miss) and a customer's order
history (newest first)."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel

from shopbotly.common.events import Order
from shopbotly.order_reader.domain import Kind
from shopbotly.order_reader.metrics import LookupKind
from shopbotly.order_reader.routes._pipeline import LookupRoutes, Route, add_lookup_routes
from shopbotly.order_reader.routes._shared import id_parameter

__all__ = ["ORDER_ROUTES", "add_order_routes"]


class OrderPage(BaseModel):
    items: list[Order]
    next_cursor: str | None


ORDER_ROUTES = LookupRoutes(
    kind=Kind.ORDER,
    scope="orders",
    what="order",
    id_parameter=id_parameter("order_id", "order", "1001"),
    model=Order,
    page=OrderPage,
    by_id=Route(
        "/api/v1/orders/{order_id}",
        name="fetch_order",
        summary="Fetch Order",
        description="The latest known state of one order of the API key's tenant.",
        metric=LookupKind.ORDER,
    ),
    history=Route(
        "/api/v1/customers/{email}/orders",
        name="order_history",
        summary="Order history",
        description="A customer's orders, newest first (by created_at), a page at a time.",
        metric=LookupKind.ORDER_HISTORY,
    ),
    readthrough=True,
)


def add_order_routes(app: FastAPI) -> None:
    add_lookup_routes(app, ORDER_ROUTES)
