"""Settings of the messaging service (environment variables ``CHAT_*``)."""

from pydantic import Field

from shared.settings import DEFAULT_PG, CommonSettings


class MessagingSettings(CommonSettings):
    messaging_database_url: str = f"{DEFAULT_PG}/chat_messaging"
    messaging_ops_host: str = "127.0.0.1"
    messaging_ops_port: int = Field(default=8081, ge=0, le=65535)
    messaging_db_pool_size: int = Field(default=10, ge=2, le=200)
    # Commands prefetched (and so at most handled in one transaction).
    messaging_prefetch: int = Field(default=256, ge=1, le=10000)
    # Batches in hand at once: the next batch of messages is decided while one is written.
    messaging_concurrency: int = Field(default=2, ge=1, le=16)
    # Sessions remembered to decide messages without reading the session (see sessions.py);
    # at least the sessions of the batches in hand, or they would be read again and refused.
    messaging_session_cache: int = Field(default=100_000, ge=1000, le=10_000_000)
