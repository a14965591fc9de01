"""``GET /api/openapi.json``: the OpenAPI 3.1 document, built from the same pydantic contracts
the gateway validates with, so the document cannot drift from the code."""

from __future__ import annotations

from typing import Any

from shared.contracts.http import (
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
    "422": "invalid: schema violation",
    "429": "rate_limited (Retry-After)",
    "503": "unavailable (Retry-After)",
}


def _schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in (CreateSessionBody, SendMessageBody, Session, Message):
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


def build_openapi() -> dict[str, Any]:
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
