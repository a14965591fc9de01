"""Typed application keys of the gateway, declared in one place."""

from aiohttp import web

from shared.audit_facts import FactPublisher
from shared.broker import Broker

from .auth import Authenticator
from .hub import Hub
from .ratelimit import PerKeyBuckets
from .settings import GatewaySettings

SETTINGS = web.AppKey("settings", GatewaySettings)
BROKER = web.AppKey("broker", Broker)
AUTH = web.AppKey("auth", Authenticator)
HUB = web.AppKey("hub", Hub)
RATE_MESSAGES = web.AppKey("rate_messages", PerKeyBuckets)
AUDIT_FACTS = web.AppKey("audit_facts", FactPublisher)
