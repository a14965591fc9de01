"""The error model of the SPEC: exactly these pairs of HTTP status and code.

Over HTTP an error is ``{"error": {"code", "message", "details"?}}``; over the WebSocket it is
``{"type": "error", "ref", "code", "message"}``; between services it travels in a reply as
``{"ok": false, "error": {...}}`` and becomes the same ``ServiceError`` again on the caller's side.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    BAD_REQUEST = "bad_request"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    TOO_LARGE = "too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    INVALID = "invalid"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.INVALID: 422,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.UNAVAILABLE: 503,
}


class ServiceError(Exception):
    """A refusal with a SPEC error code. Raised anywhere; rendered at the edge."""

    def __init__(self, code: ErrorCode | str, message: str,
                 details: dict[str, Any] | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message
        self.details = details
        self.retry_after = retry_after

    @property
    def status(self) -> int:
        return HTTP_STATUS[self.code]

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code.value, "message": self.message}
        if self.details:
            body["details"] = self.details
        if self.retry_after is not None:
            body["retry_after"] = self.retry_after
        return body

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServiceError:
        return cls(data["code"], data.get("message", ""), data.get("details"),
                   data.get("retry_after"))

    def __repr__(self) -> str:
        return f"ServiceError({self.code.value!r}, {self.message!r})"


def not_found(what: str = "session") -> ServiceError:
    return ServiceError(ErrorCode.NOT_FOUND, f"{what} not found")


def unavailable(message: str = "service temporarily unavailable",
                retry_after: float = 1.0) -> ServiceError:
    return ServiceError(ErrorCode.UNAVAILABLE, message, retry_after=retry_after)
