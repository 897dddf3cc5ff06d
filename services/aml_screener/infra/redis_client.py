"""The Redis client of the screener and the watchlist tools, from settings."""

from __future__ import annotations

import redis

from aml_screener.infra.settings import Settings


def redis_client(settings: Settings) -> redis.Redis:
    """Redis client from settings; TLS via rediss:// (+ CA/cert/key), credentials from their own variables."""
    kwargs: dict[str, object] = {
        "decode_responses": True,
        "socket_timeout": settings.redis_timeout_seconds,
        "socket_connect_timeout": settings.redis_timeout_seconds,
        "health_check_interval": 30,
    }
    if settings.redis_username:
        kwargs["username"] = settings.redis_username
    if settings.redis_password:
        kwargs["password"] = settings.redis_password.get_secret_value()
    if settings.redis_url.startswith("rediss://"):
        if settings.redis_ssl_ca_certs:
            kwargs["ssl_ca_certs"] = settings.redis_ssl_ca_certs
        if settings.redis_ssl_certfile:
            kwargs["ssl_certfile"] = settings.redis_ssl_certfile
        if settings.redis_ssl_keyfile:
            kwargs["ssl_keyfile"] = settings.redis_ssl_keyfile
    return redis.Redis.from_url(settings.redis_url, **kwargs)
