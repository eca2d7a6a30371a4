"""Shared fixtures: a real redis-server on a loopback port (queue_fixtures)."""

pytest_plugins = ["queue_fixtures"]
