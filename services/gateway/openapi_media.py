"""The upload, voice and attachment paths of the OpenAPI document (see ``openapi.py``)."""

from __future__ import annotations

from typing import Any

from shared.contracts.media import AttachmentQuery

from .openapi import SESSION_ID, _errors, _json, _query_params

_MULTIPART = {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {
        "file": {"type": "string", "format": "binary",
                 "description": "at most 10 MiB; the type is decided from the bytes"},
        "client_msg_id": {"type": "string", "minLength": 1, "maxLength": 128,
                          "description": "idempotency key: the same id and bytes return the "
                                         "same message (200), other bytes are 409"}}}}}}


def media_paths() -> dict[str, Any]:
    common = ("401", "422", "429", "503")
    upload_errors = _errors("400", "403", "404", "409", "413", "415", *common)
    return {
        "/api/chat/sessions/{session_id}/upload": {
            "post": {"summary": "Upload an attachment (image, video, PDF, text, audio)",
                     "parameters": [SESSION_ID], "requestBody": _MULTIPART,
                     "responses": {"201": _json("Message", "the message with its attachment"),
                                   "200": _json("Message", "a retry: the same message"),
                                   **upload_errors}}},
        "/api/chat/sessions/{session_id}/voice": {
            "post": {"summary": "Send a voice message (webm/opus, ogg/opus, mp3, wav, m4a/aac; "
                                "at most 10 minutes): duration_ms and a 64-peak waveform",
                     "parameters": [SESSION_ID], "requestBody": _MULTIPART,
                     "responses": {"201": _json("Message", "the voice message"),
                                   "200": _json("Message", "a retry: the same message"),
                                   **upload_errors}}},
        "/api/chat/attachments/{attachment_id}": {
            "get": {"summary": "Download: a signed URL valid 5 minutes (byte ranges work)",
                    "parameters": [{"name": "attachment_id", "in": "path", "required": True,
                                    "schema": {"type": "string", "format": "uuid"}},
                                   *_query_params(AttachmentQuery)],
                    "responses": {
                        "302": {"description": "redirect to the signed URL"},
                        "200": {"description": "with redirect=0", "content": {
                            "application/json": {"schema": {
                                "type": "object", "required": ["url", "expires_at"],
                                "properties": {"url": {"type": "string", "format": "uri"},
                                               "expires_at": {"type": "string",
                                                              "format": "date-time"}}}}}},
                        **_errors("404", *common)}}},
    }
