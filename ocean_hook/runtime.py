"""Builds what a run needs from a config: mapping, queue, target, fetcher. Passed, never global."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ocean_hook.config import Config
from ocean_hook.errors import ConfigError
from ocean_hook.fetch import Fetcher
from ocean_hook.mapping.engine import Mapping as CompiledMapping
from ocean_hook.queue.base import Queue
from ocean_hook.targets import build_target, catalog_path, reads_local_catalog
from ocean_hook.targets.base import Target
from ocean_hook.yamlfile import KeyPath


def journal_path(spec: Mapping[str, Any], state_dir: Path) -> Path | None:
    """The SQLite journal's file, or None for a queue that is not one."""
    return Path(spec.get("path") or state_dir / "journal.db") if spec.get("type", "sqlite") == "sqlite" else None


def files_clash(queue: Mapping[str, Any], target: Mapping[str, Any], state_dir: Path) -> str | None:
    """Why the journal and the local catalog cannot be opened: one file for both (`serve` would
    make it a catalog, then refuse it as a journal), or one of them named as the state directory
    itself (`serve` made the catalog there, then could not make the directory the journal goes in)."""
    journal = journal_path(queue, state_dir)
    catalog = None
    if reads_local_catalog(target):
        with contextlib.suppress(ValueError):  # a bad path: the target names it
            catalog = catalog_path(target, state_dir)
    for path, key in ((journal, "queue.path"), (catalog, "target.path")):
        if path is not None and os.path.realpath(path) == os.path.realpath(state_dir):
            return f"{key} is the state directory, {state_dir}: name a file (in it, or elsewhere)"
    if journal is None or catalog is None or os.path.realpath(journal) != os.path.realpath(catalog):
        return None
    return (f"the journal (queue.path) and the local catalog (target.path) are one file, {journal}: each needs "
            "its own")


#: what a Redis URL starts with (redis-py's schemes; in any case, as URL schemes are)
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def is_redis_url(text: str) -> bool:
    return text.lower().startswith(REDIS_SCHEMES)


def not_a_redis_url(text: str) -> str:
    """Text that should have been a Redis URL, quoted up to its first ':' only: a mistyped URL
    (`redis:/:pw@host`, `valkey://:pw@host`) still holds its password."""
    head, colon, _ = text.partition(":")
    return repr(text) if not colon else f"'{head}:...' (the rest not shown: it may hold a password)"


async def open_queue(
    spec: Mapping[str, Any], state_dir: Path, *, dedup_window_seconds: float, create: bool = True,
    looking: bool = False,
) -> Queue:
    """`queue: {type: sqlite}` (default, a file in the state dir) or `{type: redis, url: ...}`;
    `create=False` opens only a Redis stream that exists (the journal's file is looked for first);
    `looking`: only reads will follow, which a journal this user may not write allows."""
    options = check_queue(spec)
    path = journal_path(spec, state_dir)
    if path is not None:
        from ocean_hook.queue.sqlite import SqliteJournal

        return await SqliteJournal.open(path, dedup_window_seconds=dedup_window_seconds, looking=looking)
    from ocean_hook.queue.redis import RedisQueue

    return await RedisQueue.open(str(spec["url"]), create=create, dedup_window_seconds=dedup_window_seconds, **options)


def check_queue(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The `queue:` block's mistakes as a ConfigError, found without opening anything (`load_config`
    runs it, so `check`, `serve` and `deliveries` name the line); else the RedisQueue options it
    sets (none for the journal)."""
    kind = spec.get("type", "sqlite")
    if kind == "sqlite":
        unknown = sorted(set(spec) - {"type", "path"})
        if unknown:
            raise ConfigError(f"unknown key(s) {', '.join(map(repr, unknown))} (allowed: path, type)", where="queue")
        if "path" in spec and (not isinstance(spec["path"], str) or not spec["path"]):
            raise ConfigError(f"must be the journal's file path, got {spec['path']!r}", where="queue.path")
        return {}
    if kind == "redis":
        url = spec.get("url")
        from ocean_hook.queue.redis import url_problem  # the redis library only for Redis

        if not isinstance(url, str) or not is_redis_url(url):
            shown = repr(url) if not isinstance(url, str) else not_a_redis_url(url)
            raise ConfigError(f"queue type redis needs 'url' (redis://host:6379/0), got {shown}", where="queue")
        if (problem := url_problem(url)) is not None:
            raise ConfigError(f"the Redis URL {problem}", where="queue.url")
        return redis_options(spec)
    raise ConfigError(f"queue.type must be sqlite or redis, got {kind!r}", where="queue")


#: `queue:` keys of the redis type beyond `type` and `url`, each with its check and the hint shown
#: when the check fails. Several instances share one queue only if they agree on stream and group.
REDIS_OPTIONS: dict[str, tuple[type, str]] = {
    "stream": (str, "a stream name"),
    "group": (str, "a consumer group name"),
    "consumer": (str, "a consumer name, unique among running instances"),
    "claim_idle_seconds": (float, "seconds, > 0"),
    "maxlen": (int, "a whole number of finished deliveries kept, > 0"),
    "max_connections": (int, "a whole number of Redis connections, > 0"),
}


def redis_options(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The RedisQueue options of a `queue:` block; a wrong key or value is one clear error."""
    unknown = sorted(set(spec) - {"type", "url", *REDIS_OPTIONS})
    if unknown:
        allowed = ", ".join(sorted({"type", "url", *REDIS_OPTIONS}))
        raise ConfigError(f"unknown key(s) {', '.join(map(repr, unknown))} (allowed: {allowed})", where="queue")
    options: dict[str, Any] = {}
    for key, (kind, hint) in REDIS_OPTIONS.items():
        if key not in spec:
            continue
        value = spec[key]
        if kind is str:
            ok = isinstance(value, str) and value != ""
        else:
            ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
            ok = ok and (kind is float or float(value).is_integer())
        if not ok:
            raise ConfigError(f"must be {hint}, got {value!r}", where=f"queue.{key}")
        options[key] = kind(value)
    return options


def queue_option_replaces(option: str | None) -> list[KeyPath]:
    """What `--queue` replaces of the config's `queue:` (its variables need not be set): all of
    it for sqlite; for a Redis URL the url alone, the config's stream, group... still apply."""
    if not option:
        return []
    return [("queue",)] if option == "sqlite" else [("queue", "type"), ("queue", "url")]


def queue_spec_from_option(option: str | None, configured: Mapping[str, Any]) -> Mapping[str, Any]:
    """`--queue redis://...` or `--queue sqlite` overrides the config's `queue:`."""
    if not option:
        return configured
    if is_redis_url(option):
        from ocean_hook.queue.redis import url_problem  # the redis library only for Redis

        if (problem := url_problem(option)) is not None:  # said of --queue, not of the config's queue.url
            raise ConfigError(f"--queue: the Redis URL {problem}")
        # the config's stream, group, claim_idle_seconds... still apply; a sqlite `path` does not
        kept = configured if configured.get("type") == "redis" else {}
        return {**kept, "type": "redis", "url": option}
    if option == "sqlite":
        return {"type": "sqlite"}
    raise ConfigError(f"--queue must be 'sqlite' or a redis:// URL, got {not_a_redis_url(option)}")


def target_spec(config: Config, override: str | None = None) -> dict[str, Any]:
    """The config's `target:`, or what `--target` makes of it."""
    spec = dict(config.target)
    if override == "dry-run" and spec.get("type") != "dry-run":
        spec = {"type": "dry-run", "read_from": spec.get("type", "local"),
                **{k: v for k, v in spec.items() if k != "type"}}
    elif override:
        spec = {"type": override}
    if spec.get("type") == "port":
        spec.setdefault("integration_name", config.integration)
    return spec


def make_target(config: Config, override: str | None = None) -> Target:
    spec = target_spec(config, override)
    try:
        return build_target(spec, config.state_dir, env=os.environ)
    except ValueError as exc:
        # `--target port` is not the config's `target:` (whose line would be blamed)
        raise ConfigError(str(exc), where=config.where("target") if override in (None, "dry-run")
                          else f"--target {override}") from None


def make_fetcher(config: Config) -> Fetcher:
    spec = config.fetch
    return Fetcher(
        timeout_seconds=float(spec.get("timeout_seconds", 10.0)),
        attempts=int(spec.get("attempts", 4)),
        allow_loopback=bool(spec.get("allow_loopback", False)),
    )


@dataclass
class Runtime:
    config: Config
    mapping: CompiledMapping
    target: Target
    fetcher: Fetcher

    @classmethod
    def build(cls, config: Config, *, target: str | None = None) -> Runtime:
        return cls(config, config.load_mapping(), make_target(config, target), make_fetcher(config))

    async def close(self) -> None:
        await self.fetcher.close()
        await self.target.close()
