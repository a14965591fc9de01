"""JWT authentication at the edge.

Development: HS256 with ``CHAT_JWT_SECRET``. Production: RS256/ES256 verified against the
identity provider's JWKS (``CHAT_JWT_JWKS_URL``). Algorithms are pinned (``alg: none`` and
algorithm confusion are refused), ``exp`` and ``sub`` are required, ``aud`` is always checked.
``sub`` is the user id and the ``role`` claim one of client, reader, admin.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field

import jwt
from aiohttp import web

from shared.contracts.envelope import Actor
from shared.contracts.errors import ErrorCode, ServiceError
from shared.contracts.fields import USER_ID_PATTERN
from shared.logging import get_logger

from .settings import GatewaySettings

log = get_logger(__name__)
ROLES = ("client", "reader", "admin")
_USER_ID = re.compile(USER_ID_PATTERN)


@dataclass(frozen=True)
class Principal:
    actor: Actor
    expires_at: float
    # The actor as every envelope of this principal carries it (built once per connection).
    actor_json: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "actor_json",
                           {"user_id": self.actor.user_id, "role": self.actor.role})

    @property
    def user_id(self) -> str:
        return self.actor.user_id


class Authenticator:
    def __init__(self, settings: GatewaySettings):
        self.settings = settings
        self._jwks = (jwt.PyJWKClient(settings.jwt_jwks_url, cache_keys=True, lifespan=300)
                      if settings.jwt_jwks_url else None)

    async def verify(self, token: str) -> Principal:
        try:
            if self._jwks is not None:
                # The JWKS client fetches over blocking HTTP on a cache miss.
                key = (await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)).key
                algorithms = self.settings.jwt_algorithms
            else:
                key, algorithms = self.settings.jwt_secret, ["HS256"]
            claims = jwt.decode(
                token, key, algorithms=algorithms, audience=self.settings.jwt_audience,
                issuer=self.settings.jwt_issuer, leeway=self.settings.jwt_leeway_s,
                options={"require": ["exp", "sub", "aud"]})
        except (jwt.PyJWTError, ValueError) as exc:
            raise ServiceError(ErrorCode.UNAUTHENTICATED, f"invalid token: {exc}") from None
        sub, role = claims.get("sub"), claims.get("role")
        if not isinstance(sub, str) or not _USER_ID.fullmatch(sub):
            raise ServiceError(ErrorCode.UNAUTHENTICATED, "invalid token: bad sub")
        if role not in ROLES:
            raise ServiceError(ErrorCode.UNAUTHENTICATED, "invalid token: unknown role")
        return Principal(Actor(user_id=sub, role=role), float(claims["exp"]))

    async def from_request(self, request: web.Request, *, allow_query: bool = False
                           ) -> Principal:
        header = request.headers.get("Authorization", "")
        token = None
        if header.lower().startswith("bearer "):
            token = header[7:].strip()
        elif allow_query:
            token = request.query.get("token")
        if not token:
            raise ServiceError(ErrorCode.UNAUTHENTICATED, "missing bearer token")
        return await self.verify(token)


def mint_token(secret: str, user_id: str, role: str, *, audience: str = "chat",
               ttl_s: int = 3600, now: float | None = None) -> str:
    """A development token (HS256). Production tokens come from the identity provider."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    if not _USER_ID.fullmatch(user_id):
        raise ValueError("user id must be 1..128 characters of [A-Za-z0-9_.:@-]")
    issued = int(now if now is not None else time.time())
    return jwt.encode({"sub": user_id, "role": role, "aud": audience, "iat": issued,
                       "exp": issued + ttl_s}, secret, algorithm="HS256")
