"""Settings of the gateway (environment variables ``CHAT_*``)."""

from __future__ import annotations

from pydantic import Field, field_validator

from shared.settings import CommonSettings

from .media_settings import UploadSettings

DEV_SECRET = "dev-only-secret-change-me-before-production"


class GatewaySettings(UploadSettings, CommonSettings):
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=8080, ge=0, le=65535)

    # Development: HS256 with this secret. Production: set the JWKS URL (RS256/ES256).
    jwt_secret: str = DEV_SECRET
    jwt_audience: str = "chat"
    jwt_issuer: str | None = None
    jwt_jwks_url: str | None = None
    jwt_algorithms: list[str] = Field(default=["RS256", "ES256"])
    jwt_leeway_s: int = Field(default=30, ge=0, le=300)

    # Browser origins allowed to open the WebSocket (a missing Origin is allowed).
    allowed_origins: list[str] = Field(
        default=["http://localhost:8080", "http://127.0.0.1:8080"])

    # Rate limits (per user, per gateway instance).
    rate_messages_per_s: float = Field(default=10.0, gt=0)
    rate_messages_burst: int = Field(default=20, ge=1)
    rate_typing_interval_s: float = Field(default=2.0, ge=0)
    # Frames of any kind per connection; far past this the connection is closed (1008).
    rate_frames_per_s: float = Field(default=50.0, gt=0)
    rate_frames_burst: int = Field(default=200, ge=1)

    ws_heartbeat_s: float = Field(default=30.0, gt=0)
    ws_max_frame_bytes: int = Field(default=64 * 1024, ge=1024)
    # Bytes the socket of one slow client may hold unsent before it is disconnected (it
    # resumes by after_seq).
    ws_send_buffer_bytes: int = Field(default=2 * 1024 * 1024, ge=64 * 1024)
    # Requests to a service leave at once while fewer than ``coalesce_max_in_flight`` batches
    # of their kind await a reply (0: never at once); otherwise they wait for a reply to come
    # back, at most ``coalesce_window_ms`` (see shared.broker).
    coalesce_window_ms: float = Field(default=10.0, ge=0, le=50)
    coalesce_max_in_flight: int = Field(default=2, ge=0, le=64)

    # Presence: every heartbeat renews the leases of this gateway's connections (presence lets
    # a lease lapse after CHAT_PRESENCE_LEASE_TTL_S, 25 s by default: keep this well below).
    presence_heartbeat_s: float = Field(default=10.0, gt=0, le=600)
    # How long join_session waits for presence (online users, typing) before answering with
    # what it knows: presence being slow or down never holds up a join.
    presence_join_timeout_ms: float = Field(default=300.0, gt=0, le=10_000)
    # How long typing_start / typing_stop / set_presence wait for presence.
    presence_timeout_s: float = Field(default=2.0, gt=0, le=60)

    @field_validator("jwt_algorithms", "allowed_origins", mode="before")
    @classmethod
    def _split_csv(cls, value):
        if isinstance(value, str) and not value.startswith("["):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("jwt_algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        allowed = {"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "EdDSA"}
        bad = [a for a in value if a not in allowed]
        if bad:
            raise ValueError(f"not an asymmetric algorithm for JWKS: {bad}")
        return value
