"""Settings of the audit service (environment variables ``CHAT_*``)."""

from pydantic import Field

from shared.settings import DEFAULT_PG, CommonSettings


class AuditSettings(CommonSettings):
    audit_database_url: str = f"{DEFAULT_PG}/chat_audit"
    # The role every pooled connection works as: INSERT and SELECT on the log only (created by
    # the migration). Empty: work as the login user (which then needs no more than that).
    audit_db_role: str = Field(default="chat_audit_writer", pattern=r"^[a-z_][a-z0-9_]{0,62}$|^$")
    audit_ops_host: str = "127.0.0.1"
    audit_ops_port: int = Field(default=8084, ge=0, le=65535)
    audit_db_pool_size: int = Field(default=5, ge=2, le=100)
    # Events prefetched (and so at most appended in one transaction).
    audit_prefetch: int = Field(default=512, ge=1, le=10000)
