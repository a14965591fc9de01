"""Settings of the presence service (environment variables ``CHAT_*``)."""

from pydantic import Field, model_validator

from shared.settings import CommonSettings

from .domain import Rules


class PresenceSettings(CommonSettings):
    redis_url: str = "redis://127.0.0.1:6379/0"
    presence_ops_host: str = "127.0.0.1"
    presence_ops_port: int = Field(default=8082, ge=0, le=65535)
    # Every key starts with this (several deployments, or test runs, may share one Redis).
    presence_key_prefix: str = Field(default="presence:", min_length=1, max_length=100)
    # A connection whose gateway stops renewing its lease is offline this long after the last
    # renewal (the gateway renews every CHAT_PRESENCE_HEARTBEAT_S, 10 s by default).
    presence_lease_ttl_s: float = Field(default=25.0, gt=0, le=3600)
    presence_away_after_s: float = Field(default=300.0, gt=0)
    # A user whose last connection closed is announced offline only after this (anti-flap).
    presence_offline_grace_s: float = Field(default=3.0, ge=0, le=60)
    presence_typing_ttl_s: float = Field(default=6.0, gt=0, le=60)
    # How often the scheduler looks for expiries.
    presence_tick_s: float = Field(default=1.0, gt=0, le=10)
    presence_prefetch: int = Field(default=256, ge=1, le=10000)

    @model_validator(mode="after")
    def _grace_shorter_than_lease(self):
        if self.presence_offline_grace_s >= self.presence_lease_ttl_s:
            raise ValueError("presence_offline_grace_s must be shorter than the lease TTL")
        return self

    @property
    def rules(self) -> Rules:
        return Rules(away_after_s=self.presence_away_after_s,
                     offline_grace_s=self.presence_offline_grace_s,
                     lease_ttl_s=self.presence_lease_ttl_s,
                     typing_ttl_s=self.presence_typing_ttl_s)
