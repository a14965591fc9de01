"""Settings of the media service (environment variables ``CHAT_*``; S3 keys ``AWS_*``)."""

from pydantic import Field

from shared.s3 import S3Settings
from shared.settings import DEFAULT_PG, CommonSettings


class MediaSettings(S3Settings, CommonSettings):
    media_database_url: str = f"{DEFAULT_PG}/chat_media"
    media_ops_host: str = "127.0.0.1"
    media_ops_port: int = Field(default=8083, ge=0, le=65535)
    media_db_pool_size: int = Field(default=10, ge=2, le=200)
    # Largest upload (SPEC: 10 MiB); the gateway enforces the same limit while streaming.
    upload_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1)
    # Ingests handled at once by one replica (each decodes in its own thread).
    media_ingest_concurrency: int = Field(default=4, ge=1, le=64)
    media_max_audio_s: int = Field(default=600, ge=1)
    # Images (and video frames) with more pixels are refused as decompression bombs.
    media_max_image_pixels: int = Field(default=40_000_000, ge=1)
    media_thumbnail_px: int = Field(default=320, ge=16, le=2048)
    # Lifetime of signed download URLs (SPEC: 5 minutes).
    media_url_ttl_s: int = Field(default=300, ge=1, le=7 * 24 * 3600)
    # Unfinished uploads older than this are completed or cleaned up by the sweeper.
    media_sweep_interval_s: float = Field(default=30.0, gt=0)
    media_stale_after_s: float = Field(default=300.0, gt=0)
    # Quarantine objects no ingest took (a gateway or media that died) are deleted after this.
    media_quarantine_ttl_s: float = Field(default=3600.0, gt=0)
    # Where uploads are staged while they are inspected (default: the system temp dir).
    media_work_dir: str | None = None
