"""Where changes go: the embedded local catalog, Port's API, or nowhere (dry-run).

`build_target` turns the config's `target:` mapping into a target:

    target: {type: local}                                   # <state_dir>/catalog.db
    target: {type: local, path: /var/lib/ocean-hook/catalog.db}
    target: {type: port, region: us, integration_name: my-hook}
    target: {type: dry-run, read_from: port, region: us}    # reads Port, writes nothing

Port credentials come from the environment (PORT_CLIENT_ID / PORT_CLIENT_SECRET unless
`client_id_env` / `client_secret_env` name other variables), never from the config text.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ocean_hook.fetch import is_http_url
from ocean_hook.paths import home_expanded
from ocean_hook.sqlitefiles import not_made_yet
from ocean_hook.targets.base import Target, TargetError, WriteOutcome
from ocean_hook.targets.dry_run import DryRunTarget
from ocean_hook.targets.local import LocalCatalog
from ocean_hook.targets.port import DEFAULT_BASE_URL, US_BASE_URL, PortTarget, integration_name_problem

__all__ = [
    "DryRunTarget",
    "LocalCatalog",
    "PortTarget",
    "Target",
    "TargetError",
    "WriteOutcome",
    "build_target",
    "catalog_path",
]

REGIONS = {"eu": DEFAULT_BASE_URL, "us": US_BASE_URL}
_LOCAL_KEYS = {"type", "path"}
_PORT_KEYS = {
    "type",
    "base_url",
    "region",
    "client_id_env",
    "client_secret_env",
    "integration_name",
    "max_in_flight",
    "retry_attempts",
    "retry_max_wait",
    "request_timeout",
}
_DRY_RUN_KEYS = {"type", "read_from"}
READERS = ("local", "port", "none")


def _check_keys(spec: Mapping[str, Any], allowed: set[str], what: str) -> None:
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ValueError(
            f"target: unknown key(s) {', '.join(map(repr, unknown))} for {what} (allowed: {', '.join(sorted(allowed))})"
        )


def _string(spec: Mapping[str, Any], key: str, default: str) -> str:
    value = spec.get(key, default)
    if not isinstance(value, str) or not value:
        raise ValueError(f"target.{key} must be a non-empty string, got {value!r}")
    return value


def _number(spec: Mapping[str, Any], key: str, default: float, kind: type = int) -> Any:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"target.{key} must be a positive number, got {value!r}")
    return kind(value)


def catalog_path(spec: Mapping[str, Any], state_dir: Path) -> Path:
    """The local catalog's file a `target:` names (`path`, else the state directory's), for
    `serve` and for every command that looks into it; ValueError for a path that is not one."""
    if spec.get("path") is None:
        return state_dir / "catalog.db"
    return home_expanded(_string(spec, "path", ""))


def reads_local_catalog(spec: Mapping[str, Any]) -> bool:
    """Whether a `target:` reads the local catalog: `local`, or `dry-run` reading from it."""
    kind = spec.get("type", "local")
    return kind == "local" or (kind == "dry-run" and spec.get("read_from", "local") == "local")


def _local(spec: Mapping[str, Any], state_dir: Path, *, looking: bool = False) -> LocalCatalog:
    return LocalCatalog(catalog_path(spec, state_dir), looking=looking)


def _secrets(spec: Mapping[str, Any], env: Mapping[str, str]) -> tuple[str, str]:
    """The client id and secret from their variables; both named when both are missing."""
    wanted = [(_string(spec, key, default), key) for key, default in
              (("client_id_env", "PORT_CLIENT_ID"), ("client_secret_env", "PORT_CLIENT_SECRET"))]
    unset = [f"{variable} (the Port {key.removesuffix('_env').replace('_', ' ')})"
             for variable, key in wanted if not env.get(variable)]
    if unset:
        said = "variable {} is" if len(unset) == 1 else "variables {} are"
        raise ValueError(f"environment {said.format(' and '.join(unset))} not set")
    return env[wanted[0][0]], env[wanted[1][0]]


def _port(spec: Mapping[str, Any], env: Mapping[str, str]) -> PortTarget:
    region = _string(spec, "region", "eu")
    if region not in REGIONS:
        raise ValueError(f"target.region must be 'eu' or 'us', got {region!r}")
    base_url = _string(spec, "base_url", REGIONS[region])
    if not is_http_url(base_url):
        raise ValueError(f"target.base_url must be an http(s) URL like {DEFAULT_BASE_URL}, got {base_url!r}")
    if "@" in urlsplit(base_url).netloc:  # its password would be in every error; aiohttp refused it besides
        raise ValueError("target.base_url must not hold a user or password (user@host): Port takes the client id "
                         "and secret from client_id_env and client_secret_env")
    _check_base_url(base_url)
    integration_name = _string(spec, "integration_name", "ocean-hook")
    if (problem := integration_name_problem(integration_name)) is not None:
        raise ValueError(f"target.integration_name {problem}, got {integration_name!r}")
    client_id, client_secret = _secrets(spec, env)
    return PortTarget(
        base_url,
        client_id=client_id,
        client_secret=client_secret,
        integration_name=integration_name,
        max_in_flight=_number(spec, "max_in_flight", 8),
        retry_attempts=_number(spec, "retry_attempts", 5),
        retry_max_wait=_number(spec, "retry_max_wait", 60.0, float),
        request_timeout=_number(spec, "request_timeout", 30.0, float),
    )


def _check_base_url(base_url: str) -> None:
    """What ocean-hook appends Port's paths to: a query or fragment would swallow them (every
    request went to `/`), and `/v1` doubled them (`/v1/v1/auth/access_token`, "Port answered 404")."""
    if not base_url.isprintable() or base_url != "".join(base_url.split()):
        raise ValueError(f"target.base_url must not hold spaces or control characters (write a space of a path "
                         f"as %20), got {base_url!r}")
    if "?" in base_url or "#" in base_url:
        raise ValueError(f"target.base_url must not hold a query or fragment ('?...', '#...'): ocean-hook appends "
                         f"Port's API paths to it, got {base_url!r}")
    if urlsplit(base_url).path.rstrip("/").lower().endswith("/v1"):
        raise ValueError(f"target.base_url is Port's address without /v1 (ocean-hook adds /v1/... itself), like "
                         f"{DEFAULT_BASE_URL}, got {base_url!r}")


def build_target(spec: Mapping[str, Any], state_dir: Path, *, env: Mapping[str, str]) -> Target:
    """The target a config's `target:` mapping describes (ValueError naming the bad key)."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"target must be a mapping with a 'type', got {spec!r}")
    kind = spec.get("type", "local")
    if kind == "local":
        _check_keys(spec, _LOCAL_KEYS, "type local")
        return _local(spec, state_dir)
    if kind == "port":
        _check_keys(spec, _PORT_KEYS, "type port")
        return _port(spec, env)
    if kind == "dry-run":
        reader = spec.get("read_from", "local")
        if reader not in READERS:
            raise ValueError(f"target.read_from must be one of {', '.join(READERS)}, got {reader!r}")
        extra = {"local": _LOCAL_KEYS, "port": _PORT_KEYS, "none": set()}[reader]
        _check_keys(spec, _DRY_RUN_KEYS | extra, f"type dry-run reading from {reader}")
        if reader == "none":
            return DryRunTarget(None)
        inner = {k: v for k, v in spec.items() if k != "read_from"} | {"type": reader}
        if reader == "local" and not_made_yet(catalog_path(inner, state_dir)):
            # nothing to read yet, and opening the catalog would make it: a dry run makes no file
            return DryRunTarget(None, resolves_search_queries=False)
        if reader == "local":
            return DryRunTarget(_local(inner, state_dir, looking=True))
        return DryRunTarget(build_target(inner, state_dir, env=env))
    raise ValueError(f"target.type must be local, port or dry-run, got {kind!r}")
