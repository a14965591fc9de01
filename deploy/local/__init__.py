"""Run the whole stack on one machine without Docker.

``python -m deploy.local.up`` (what ``make up`` runs) makes sure Postgres, Redis and RabbitMQ are
up, then supervises SeaweedFS (the local S3 server) and every service with honcho.
``python -m deploy.local.deps`` only makes sure the backing servers are up (tests, CI).
"""
