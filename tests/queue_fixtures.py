"""Pytest fixtures for tests that need Redis. Register with `pytest_plugins = ["queue_fixtures"]`.

`redis_url` gives each test an empty database on one session-wide server: the server named by
$REDIS_URL if set (its database is flushed before each test), else a redis-server started here.
Without redis-server a test is skipped locally, but fails in CI (CI=true): a missing server must
never turn the Redis tests into silent skips there.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
import redis
from redis_server import redis_server


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    if shutil.which("redis-server") is None:
        message = "redis-server is not installed (apt-get install redis-server) and REDIS_URL is unset"
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    with redis_server() as url:
        yield url


@pytest.fixture
def redis_url(redis_server_url: str) -> str:
    client = redis.Redis.from_url(redis_server_url)
    try:
        client.flushdb()
    finally:
        client.close()
    return redis_server_url
