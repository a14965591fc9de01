"""Media: voice messages and attachments (claim check, S3 bucket + Postgres metadata)."""
