"""Error bodies as each CRM writes them, so clients parse the emulator exactly as they parse the real thing.

HubSpot: one JSON object (`status`, `message`, `correlationId`, `category`; 429 adds `errorType`,
`policyName`, `groupName`). Salesforce REST: a JSON array of `{message, errorCode[, fields]}`; per-item
results of collections use `{statusCode, message, fields}`. Generic REST: `{"error": {code, message}}`.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from shopbotly.crm_emulator.domain import System

__all__ = [
    "HUBSPOT_AUTH_MESSAGE",
    "correlation_id",
    "generic_error",
    "hubspot_error",
    "hubspot_rate_limited",
    "injected_error",
    "outage_error",
    "salesforce_error",
    "salesforce_item_error",
    "unauthorized_error",
]

HUBSPOT_AUTH_MESSAGE = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find "
    "more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)


def correlation_id() -> str:
    return str(uuid.uuid4())


def hubspot_error(message: str, category: str, cid: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "status": "error",
        "message": message,
        "correlationId": cid or correlation_id(),
        "category": category,
        **extra,
    }


def hubspot_rate_limited(
    policy: Literal["TEN_SECONDLY_ROLLING", "DAILY"], portal_id: int, cid: str | None = None
) -> dict[str, Any]:
    group = "ten-secondly" if policy == "TEN_SECONDLY_ROLLING" else "daily"
    return {
        "status": "error",
        "message": f"You have reached your {policy.lower()} limit.",
        "errorType": "RATE_LIMIT",
        "correlationId": cid or correlation_id(),
        "policyName": policy,
        "groupName": f"publicapi:private-app-api-calls-{group}:{portal_id}",
    }


def salesforce_error(code: str, message: str, fields: list[str] | None = None) -> list[dict[str, Any]]:
    item: dict[str, Any] = {"message": message, "errorCode": code}
    if fields is not None:
        item["fields"] = fields
    return [item]


def salesforce_item_error(code: str, message: str, fields: list[str] | None = None) -> dict[str, Any]:
    return {"statusCode": code, "message": message, "fields": fields or []}


def generic_error(code: str, message: str, **details: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **details}}


def unauthorized_error(system: System, presented: bool) -> Any:
    if system is System.HUBSPOT:
        return hubspot_error(HUBSPOT_AUTH_MESSAGE, "INVALID_AUTHENTICATION")
    if system is System.SALESFORCE:
        return salesforce_error("INVALID_SESSION_ID", "Session expired or invalid")
    if presented:
        return generic_error("invalid_token", "The access token or API key is invalid, expired or revoked.")
    return generic_error("unauthorized", "Send 'Authorization: Bearer <token>' or an 'X-API-Key' header.")


def outage_error(system: System) -> Any:
    if system is System.HUBSPOT:
        return hubspot_error("Service Unavailable", "SERVICE_UNAVAILABLE")
    if system is System.SALESFORCE:
        return salesforce_error("SERVER_UNAVAILABLE", "Server is unavailable. Please try again later.")
    return generic_error("service_unavailable", "The CRM is unavailable. Please try again later.")


_HUBSPOT_CATEGORIES = {
    400: ("Invalid input", "VALIDATION_ERROR"),
    401: (HUBSPOT_AUTH_MESSAGE, "INVALID_AUTHENTICATION"),
    403: ("This app hasn't been granted all required scopes to make this call.", "MISSING_SCOPES"),
    404: ("resource not found", "OBJECT_NOT_FOUND"),
    409: ("Conflict: the record is being modified by another request", "CONFLICT"),
    423: ("The record is locked", "LOCKED"),
}
_SALESFORCE_CODES = {
    400: ("INVALID_INPUT", "Invalid input"),
    401: ("INVALID_SESSION_ID", "Session expired or invalid"),
    403: ("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."),
    404: ("NOT_FOUND", "The requested resource does not exist"),
    409: ("UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record or 1 records"),
    429: ("REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded."),
}


def injected_error(system: System, status: int, portal_id: int) -> Any:
    """The body a real CRM would send with `status`, for errors the fault injector adds."""
    if system is System.HUBSPOT:
        if status == 429:
            return hubspot_rate_limited("TEN_SECONDLY_ROLLING", portal_id)
        if status >= 500:
            return hubspot_error(
                "internal error" if status == 500 else "Service Unavailable", "INTERNAL_ERROR"
            )
        message, category = _HUBSPOT_CATEGORIES.get(status, ("Request failed", "VALIDATION_ERROR"))
        return hubspot_error(message, category)
    if system is System.SALESFORCE:
        if status >= 500:
            code = "SERVER_UNAVAILABLE" if status == 503 else "UNKNOWN_EXCEPTION"
            return salesforce_error(
                code,
                "An unexpected error occurred. Please include this ErrorId if you contact support: "
                "1234567890-12345 (-1234567890)",
            )
        code, message = _SALESFORCE_CODES.get(status, ("INVALID_INPUT", "Invalid input"))
        return salesforce_error(code, message)
    if status == 429:
        return generic_error("rate_limited", "Too many requests.")
    if status >= 500:
        return generic_error("server_error", "The CRM failed to process the request.")
    return generic_error("request_failed", f"The CRM refused the request with status {status}.")
