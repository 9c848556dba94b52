"""HTTP routes of the lookup API (`/api/v1/...`)."""

from shopbotly.order_reader.routes.orders import add_order_routes
from shopbotly.order_reader.routes.tickets import add_ticket_routes

__all__ = ["add_order_routes", "add_ticket_routes"]
