"""``GET /api/admin/audit``: admins query the audit log (filters ``session_id``, ``actor_id``,
``action``, ``since``; ``limit`` 1..100, default 50; ``cursor`` from the previous page).

Entries come in ascending ``seq`` (chain order), from the oldest that matches; ``next_cursor``
continues after the last one and is null on the last page. Anyone but an admin gets 403, which
the audit records as ``access.denied``; every admin query is recorded as ``audit.queried`` by the
audit service in the same transaction that reads the page.
"""

from __future__ import annotations

from aiohttp import web

from shared.contracts.audit import AuditQuery, QueryEntries
from shared.contracts.errors import ErrorCode, ServiceError

from .api import call, json_response, principal_of, read_query


async def query_audit(request: web.Request) -> web.Response:
    principal = await principal_of(request)
    if principal.actor.role != "admin":
        raise ServiceError(ErrorCode.FORBIDDEN, "only admins read the audit log")
    query = read_query(request, AuditQuery)
    result = await call(request, principal, QueryEntries(**query.model_dump()))
    return json_response(result)


ROUTES = [
    ("GET", "/api/admin/audit", query_audit),
]
