"""Upload settings of the gateway (a mixin of ``GatewaySettings``): S3 for the quarantine
prefix, the size limit enforced while streaming, and how long an ingest may take."""

from pydantic import Field

from shared.s3 import S3Settings


class UploadSettings(S3Settings):
    # Largest upload (SPEC: 10 MiB = 10,485,760 bytes); one byte more is 413 while streaming.
    upload_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1)
    # A client that sends nothing for this long is cut off (400) and its upload dropped.
    upload_idle_timeout_s: float = Field(default=30.0, gt=0, le=600)
    # Uploads streamed at once by one gateway (more wait their turn).
    upload_concurrency: int = Field(default=16, ge=1, le=256)
    # Time the media service gets to validate and store an upload before the client gets 503.
    media_ingest_timeout_s: float = Field(default=60.0, gt=0, le=600)
