"""Metrics of the audit service."""

from prometheus_client import Counter

ENTRIES_APPENDED = Counter("chat_audit_entries_appended_total", "Entries appended to the log")
EVENTS_SKIPPED = Counter(
    "chat_audit_events_skipped_total",
    "Events not appended: already recorded, not audited, or malformed", ["why"])
