"""Ticket lookups for the bot: one ticket, and a customer's tickets (open first, then newest)."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel

from shopbotly.common.events import Ticket
from shopbotly.order_reader.domain import Kind
from shopbotly.order_reader.metrics import LookupKind
from shopbotly.order_reader.routes._pipeline import LookupRoutes, Route, add_lookup_routes
from shopbotly.order_reader.routes._shared import id_parameter

__all__ = ["TICKET_ROUTES", "add_ticket_routes"]


class TicketPage(BaseModel):
    items: list[Ticket]
    next_cursor: str | None


TICKET_ROUTES = LookupRoutes(
    kind=Kind.TICKET,
    scope="tickets",
    what="ticket",
    id_parameter=id_parameter("ticket_id", "CRM ticket", "T-1001"),
    model=Ticket,
    page=TicketPage,
    by_id=Route(
        "/api/v1/tickets/{ticket_id}",
        name="fetch_ticket",
        summary="Fetch Ticket",
        description="The latest known state of one support ticket of the API key's tenant.",
        metric=LookupKind.TICKET,
    ),
    history=Route(
        "/api/v1/customers/{email}/tickets",
        name="ticket_history",
        summary="Customer tickets",
        description="A customer's tickets: open ones first, then closed; newest first (created_at) in each.",
        metric=LookupKind.TICKET_HISTORY,
    ),
)


def add_ticket_routes(app: FastAPI) -> None:
    add_lookup_routes(app, TICKET_ROUTES)
