"""Entry points of the audit service.

- ``append_events``: a batch from ``audit.events`` becomes entries in one transaction (each
  source event once, thanks to the unique key checked under the append lock).
- ``query_entries``: an admin's query; the query itself is appended as ``audit.queried`` in the
  same transaction that reads the page, so no query goes unrecorded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from shared.contracts.audit import QueryEntries
from shared.contracts.envelope import Envelope, failed, ok
from shared.contracts.errors import ErrorCode, ServiceError
from shared.contracts.registry import payload_of
from shared.logging import get_logger
from shared.metrics import ENVELOPES_HANDLED

from . import domain, store
from .metrics import ENTRIES_APPENDED, EVENTS_SKIPPED

log = get_logger(__name__)


@dataclass
class Deps:
    pool: asyncpg.Pool
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)


# ---- events ----------------------------------------------------------------------------------

async def append_events(envelopes: list[Envelope], deps: Deps) -> list[dict]:
    drafts = []
    for envelope in envelopes:
        try:
            draft = domain.draft_of(envelope)
        except ServiceError as exc:  # a malformed fact will never become valid: keep going
            log.error("audit_fact_refused", type=envelope.type, reason=exc.message,
                      message_id=str(envelope.message_id))
            EVENTS_SKIPPED.labels("malformed").inc()
            continue
        if draft is None:
            EVENTS_SKIPPED.labels("not_audited").inc()
            continue
        drafts.append(draft)
    if drafts:
        async with deps.pool.acquire() as conn, conn.transaction():
            written = await store.append(conn, drafts)
        ENTRIES_APPENDED.inc(len(written))
        if len(written) < len(drafts):
            EVENTS_SKIPPED.labels("duplicate").inc(len(drafts) - len(written))
    return [ok(None) for _ in envelopes]


# ---- commands --------------------------------------------------------------------------------

async def query_entries(queries: list[tuple[int, QueryEntries, Envelope]], results: list,
                        deps: Deps) -> None:
    now = deps.clock()
    async with deps.pool.acquire() as conn, conn.transaction():
        drafts = []
        for index, query, envelope in queries:
            if envelope.actor.role != "admin":
                results[index] = ServiceError(ErrorCode.FORBIDDEN, "only admins read the audit")
                drafts.append(domain.queried_draft(envelope, "denied", now))
                continue
            try:
                after = domain.decode_cursor(query.cursor) if query.cursor else 0
            except ServiceError as exc:
                results[index] = exc
                continue
            page = await store.query(conn, after_seq=after, limit=query.limit + 1,
                                     session_id=query.session_id, actor_id=query.actor_id,
                                     action=query.action, since=query.since)
            more = len(page) > query.limit
            page = page[:query.limit]
            results[index] = {
                "entries": [e.view() for e in page],
                "next_cursor": domain.encode_cursor(page[-1].seq) if more else None,
            }
            drafts.append(domain.queried_draft(envelope, "ok", now))
        written = await store.append(conn, drafts)
    ENTRIES_APPENDED.inc(len(written))


COMMAND_HANDLERS: dict[type, Callable[..., Awaitable[None]]] = {
    QueryEntries: query_entries,
}


async def handle_commands(envelopes: list[Envelope], deps: Deps) -> list[dict]:
    results: list[Any] = [None] * len(envelopes)
    groups: dict[type, list] = {}
    for index, envelope in enumerate(envelopes):
        try:
            if envelope.actor is None:
                raise ServiceError(ErrorCode.UNAUTHENTICATED, "command has no actor")
            command = payload_of(envelope)
            if type(command) not in COMMAND_HANDLERS:
                raise ServiceError(ErrorCode.INVALID, f"audit does not handle {envelope.type}")
        except ServiceError as exc:
            results[index] = exc
            continue
        groups.setdefault(type(command), []).append((index, command, envelope))
    for command_type, items in groups.items():
        await COMMAND_HANDLERS[command_type](items, results, deps)
    return [_reply(envelopes[i], r) for i, r in enumerate(results)]


def _reply(envelope: Envelope, result) -> dict:
    if isinstance(result, ServiceError):
        ENVELOPES_HANDLED.labels(envelope.type, result.code.value).inc()
        log.info("command_refused", type=envelope.type, code=result.code.value,
                 reason=result.message, correlation_id=envelope.correlation_id,
                 actor=envelope.actor.user_id if envelope.actor else None)
        return failed(result)
    ENVELOPES_HANDLED.labels(envelope.type, "ok").inc()
    return ok(result)
