"""Render every failure as the SPEC's error body: ``{"error": {"code", "message", "details"?}}``.

Refusals are logged with the request id; unexpected failures are logged with a traceback and
shown to the client as 503 without internals.
"""

from __future__ import annotations

import re
import uuid

import orjson
from aiohttp import web

from shared.contracts.errors import HTTP_STATUS, ErrorCode, ServiceError
from shared.logging import bound_contextvars, get_logger

log = get_logger(__name__)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
REQUEST_ID = "request_id"


def error_response(exc: ServiceError) -> web.Response:
    headers = {}
    if exc.code in (ErrorCode.RATE_LIMITED, ErrorCode.UNAVAILABLE):
        headers["Retry-After"] = str(max(1, round(exc.retry_after or 1)))
    body = {"error": {k: v for k, v in exc.to_dict().items() if k != "retry_after"}}
    return web.Response(body=orjson.dumps(body), status=exc.status,
                        content_type="application/json", headers=headers)


_HTTP_CODES = {status: code for code, status in HTTP_STATUS.items()}


@web.middleware
async def errors_middleware(request: web.Request, handler):
    incoming = request.headers.get("X-Request-Id", "")
    request_id = incoming if _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    with bound_contextvars(request_id=request_id):
        try:
            response = await handler(request)
        except ServiceError as exc:
            log.info("request_refused", method=request.method, path=request.path,
                     status=exc.status, code=exc.code.value, reason=exc.message)
            response = error_response(exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = _HTTP_CODES.get(exc.status)
            if exc.status == 405:
                code = ErrorCode.NOT_FOUND
            if code is None:
                code = ErrorCode.BAD_REQUEST
            log.info("request_refused", method=request.method, path=request.path,
                     status=exc.status, reason=exc.reason)
            # Only the SPEC's status/code pairs go out: a wrong method is "not found".
            response = error_response(ServiceError(code, exc.reason or code.value))
        except Exception:
            log.exception("request_failed", method=request.method, path=request.path)
            response = error_response(ServiceError(ErrorCode.UNAVAILABLE,
                                                   "internal error, try again", retry_after=1))
        if not response.prepared:
            response.headers["X-Request-Id"] = request_id
        return response
