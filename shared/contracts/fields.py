"""Field types shared by the edge and by the services that own the data.

Both validate: the gateway so a client gets the error at once, the owning service because it
trusts nobody (SPEC: "validated at the edge, and again by the service that owns the data").
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, StringConstraints

USER_ID_PATTERN = r"^[A-Za-z0-9_.:@-]{1,128}$"
MAX_BODY_CODE_POINTS = 4000
MAX_PARTICIPANTS = 50

Role = Literal["client", "reader", "admin"]
ParticipantRole = Literal["owner", "member"]
MessageKind = Literal["text", "voice", "image", "file"]

_DIGITS = re.compile(r"[0-9]{1,10}")


def _digits_if_text(value):
    """A number that comes as text (a query string) is plain decimal digits: not " 5", "+1",
    "1_0" or "5.0", which a lax integer parse would take. JSON numbers pass through."""
    if isinstance(value, str) and not _DIGITS.fullmatch(value):
        raise ValueError("must be a whole number written in decimal digits")
    return value


UserId = Annotated[str, StringConstraints(pattern=USER_ID_PATTERN)]
Seq = Annotated[int, BeforeValidator(_digits_if_text), Field(ge=0, le=2**31 - 1)]
Count = Annotated[int, BeforeValidator(_digits_if_text)]  # limits; bounds set per field

# C0 controls, DEL and C1 controls, except newline and tab.
_FORBIDDEN_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def normalise_body(text: str) -> str:
    """Trim surrounding white space, turn CRLF into LF; refuse control characters and lengths
    outside 1..4000 code points. Bidirectional marks (category Cf) are allowed."""
    text = text.replace("\r\n", "\n").strip()
    if _FORBIDDEN_CONTROL.search(text):
        raise ValueError("control characters other than newline and tab are not allowed")
    if not text:
        raise ValueError("message body is empty")
    if len(text) > MAX_BODY_CODE_POINTS:
        raise ValueError(f"message body is longer than {MAX_BODY_CODE_POINTS} characters")
    return text


def _client_msg_id(value: str) -> str:
    if _FORBIDDEN_CONTROL.search(value) or value != value.strip():
        raise ValueError("client_msg_id must be printable and not padded with white space")
    return value


def _title(value: str) -> str | None:
    """One line, trimmed; a title of nothing but white space is no title (null)."""
    value = unicodedata.normalize("NFC", value).strip()
    if _FORBIDDEN_CONTROL.search(value) or "\n" in value or "\t" in value:
        raise ValueError("title must be a single line without control characters")
    return value or None


MessageBody = Annotated[str, AfterValidator(normalise_body)]
ClientMsgId = Annotated[str, StringConstraints(min_length=1, max_length=128),
                        AfterValidator(_client_msg_id)]
Title = Annotated[str, StringConstraints(max_length=200), AfterValidator(_title)]


@lru_cache(maxsize=256)  # a batch's rows and events share their moment: formatted once
def rfc3339(moment: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, microseconds kept (what Postgres stores)."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def one_direction(before_seq: int | None, after_seq: int | None) -> None:
    """Paging goes one way: ``before_seq`` or ``after_seq``, never both."""
    if before_seq is not None and after_seq is not None:
        raise ValueError("give before_seq or after_seq, not both")
