"""The audit service: an append-only, hash-chained log of every state change and admin access."""
