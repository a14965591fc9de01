"""``GET /api/openapi.json``: the OpenAPI 3.1 document, built from the same pydantic contracts
the gateway validates with, so the document cannot drift from the code."""

from __future__ import annotations

from typing import Any

from shared.contracts.audit import AuditEntry, AuditQuery
from shared.contracts.http import (
    AddParticipantBody,
    CreateSessionBody,
    EventsQuery,
    ListSessionsQuery,
    MessagesQuery,
    SendMessageBody,
)
from shared.contracts.wire import Message, Session

REF = "#/components/schemas/{model}"
ERROR_STATUSES = {
    "400": "bad_request: unparseable JSON or not an object",
    "401": "unauthenticated",
    "403": "forbidden",
    "404": "not_found (also for sessions the caller is not in)",
    "409": "conflict",
    "413": "too_large: the upload is over 10 MiB",
    "415": "unsupported_media_type: a file type that is not allowed",
    "422": "invalid: schema violation",
    "429": "rate_limited (Retry-After)",
    "503": "unavailable (Retry-After)",
}


def _schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in (CreateSessionBody, SendMessageBody, AddParticipantBody, Session, Message):
        schema = model.model_json_schema(ref_template=REF, mode="serialization")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    schemas["Error"] = {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["code", "message"],
                                 "properties": {"code": {"type": "string"},
                                                "message": {"type": "string"},
                                                "details": {"type": "object"}}}}}
    schemas["SessionList"] = {
        "type": "object", "required": ["sessions", "next_cursor"],
        "properties": {"sessions": {"type": "array", "items": {"$ref": REF.format(
            model="Session")}}, "next_cursor": {"type": ["string", "null"]}}}
    schemas["MessagePage"] = {
        "type": "object", "required": ["messages", "has_more"],
        "properties": {"messages": {"type": "array", "items": {"$ref": REF.format(
            model="Message")}}, "has_more": {"type": "boolean"}}}
    schemas["AuditEntry"] = AuditEntry.model_json_schema(ref_template=REF, mode="serialization")
    schemas["AuditPage"] = {
        "type": "object", "required": ["entries", "next_cursor"],
        "properties": {"entries": {"type": "array", "items": {"$ref": REF.format(
            model="AuditEntry")}}, "next_cursor": {"type": ["string", "null"]}}}
    schemas["ReadMarker"] = {
        "type": "object", "required": ["session_id", "user_id", "read_seq"],
        "properties": {"session_id": {"type": "string", "format": "uuid"},
                       "user_id": {"type": "string"}, "read_seq": {"type": "integer"}}}
    schemas["EventPage"] = {
        "type": "object", "required": ["events", "has_more"],
        "properties": {"events": {"type": "array", "items": {"type": "object"}},
                       "has_more": {"type": "boolean"}}}
    return schemas


def _query_params(model) -> list[dict]:
    schema = model.model_json_schema()
    return [{"name": name, "in": "query", "required": False, "schema": prop}
            for name, prop in schema["properties"].items()]


def _json(model_name: str, description: str) -> dict:
    return {"description": description, "content": {"application/json": {
        "schema": {"$ref": REF.format(model=model_name)}}}}


def _errors(*statuses: str) -> dict:
    return {s: {**_json("Error", ERROR_STATUSES[s])} for s in statuses}


SESSION_ID = {"name": "session_id", "in": "path", "required": True,
              "schema": {"type": "string", "format": "uuid"}}
MESSAGE_ID = {"name": "message_id", "in": "path", "required": True,
              "schema": {"type": "string", "format": "uuid"}}


def build_openapi() -> dict[str, Any]:
    from .openapi_media import media_paths  # it imports this module's helpers

    common = ("401", "422", "429", "503")
    return {
        "openapi": "3.1.0",
        "info": {"title": "Chat gateway API", "version": "1.0.0",
                 "description": "Sessions and messages over HTTP; live events over the "
                                "WebSocket at /ws (see the README for its frames)."},
        "components": {"schemas": _schemas(), "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
        "security": [{"bearer": []}],
        "paths": {
            **media_paths(),
            "/api/chat/sessions": {
                "post": {"summary": "Create a session (the caller is its owner)",
                         "requestBody": {"required": True, "content": {"application/json": {
                             "schema": {"$ref": REF.format(model="CreateSessionBody")}}}},
                         "responses": {"201": _json("Session", "the new session"),
                                       **_errors("400", *common)}},
                "get": {"summary": "List my sessions, newest activity first",
                        "parameters": _query_params(ListSessionsQuery),
                        "responses": {"200": _json("SessionList", "a page"),
                                      **_errors(*common)}},
            },
            "/api/chat/sessions/{session_id}": {
                "get": {"summary": "Get a session", "parameters": [SESSION_ID],
                        "responses": {"200": _json("Session", "the session"),
                                      **_errors("404", *common)}},
            },
            "/api/chat/sessions/{session_id}/messages": {
                "get": {"summary": "Message history, paged by seq",
                        "parameters": [SESSION_ID, *_query_params(MessagesQuery)],
                        "responses": {"200": _json("MessagePage", "ascending seq"),
                                      **_errors("404", *common)}},
                "post": {"summary": "Send a text message (idempotent by client_msg_id)",
                         "parameters": [SESSION_ID],
                         "requestBody": {"required": True, "content": {"application/json": {
                             "schema": {"$ref": REF.format(model="SendMessageBody")}}}},
                         "responses": {"201": _json("Message", "stored"),
                                       "200": _json("Message", "a retry: the same message"),
                                       **_errors("400", "404", "409", *common)}},
            },
            "/api/chat/sessions/{session_id}/events": {
                "get": {"summary": "The session's stream events, as on the WebSocket",
                        "parameters": [SESSION_ID, *_query_params(EventsQuery)],
                        "responses": {"200": _json("EventPage", "ascending seq"),
                                      **_errors("404", *common)}},
            },
            "/api/admin/audit": {
                "get": {"summary": "Query the audit log (admins only), ascending seq; "
                                   "the query is itself audited",
                        "parameters": _query_params(AuditQuery),
                        "responses": {"200": _json("AuditPage", "a page of entries"),
                                      **_errors("403", *common)}},
            },
            "/api/chat/sessions/{session_id}/participants": {
                "post": {"summary": "Add a participant (owner or admin)",
                         "parameters": [SESSION_ID],
                         "requestBody": {"required": True, "content": {"application/json": {
                             "schema": {"$ref": REF.format(model="AddParticipantBody")}}}},
                         "responses": {"200": _json("Session", "the session"),
                                       **_errors("400", "403", "404", "409", *common)}},
            },
            "/api/chat/sessions/{session_id}/participants/{user_id}": {
                "delete": {"summary": "Remove a participant (owner or admin), or leave",
                           "parameters": [SESSION_ID, {"name": "user_id", "in": "path",
                                                       "required": True,
                                                       "schema": {"type": "string"}}],
                           "responses": {"204": {"description": "removed"},
                                         **_errors("403", "404", "409", *common)}},
            },
            "/api/chat/messages/{message_id}/read": {
                "put": {"summary": "Mark read up to this message", "parameters": [MESSAGE_ID],
                        "responses": {"200": _json("ReadMarker", "the stored read marker"),
                                      **_errors("404", *common)}},
            },
            "/api/chat/messages/{message_id}": {
                "delete": {"summary": "Delete (redact) a message: the sender or an admin",
                           "parameters": [MESSAGE_ID],
                           "responses": {"204": {"description": "deleted (or already)"},
                                         **_errors("403", "404", *common)}},
            },
            "/api/openapi.json": {"get": {"summary": "This document", "security": [],
                                          "responses": {"200": {"description": "OpenAPI"}}}},
            "/healthz": {"get": {"summary": "Liveness", "security": [],
                                 "responses": {"200": {"description": "alive"}}}},
            "/readyz": {"get": {"summary": "Readiness (broker reachable)", "security": [],
                                "responses": {"200": {"description": "ready"},
                                              "503": {"description": "not ready"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "security": [],
                                 "responses": {"200": {"description": "text format"}}}},
            "/ws": {"get": {"summary": "WebSocket (token in Authorization or ?token=)",
                            "responses": {"101": {"description": "switching protocols"},
                                          **_errors("401", "403")}}},
        },
    }
