"""Loading and validating ocean-hook.yaml.

Every problem is collected and reported at once (for `ocean-hook check`), each naming the file,
line and key. `${VAR}` in any string is read from the environment. Secrets are only ever read
from the environment (`secret: ${VAR}`) or from a file (`secret_file:`), never written in the
config text, and a processor without a secret refuses to start unless `scheme: none` is
written out.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ocean_hook.auth import SCHEMES, build_verifier, options_for
from ocean_hook.errors import ConfigError, Problems
from ocean_hook.fetch import is_http_url, is_local_host, parse_allowed_host
from ocean_hook.mapping.engine import Mapping as CompiledMapping
from ocean_hook.mapping.jq import JqCompileError, JqQuery
from ocean_hook.paths import home_expanded
from ocean_hook.processors.base import (
    AWAITED_METHODS,
    CALLED_METHODS,
    ProcessorSettings,
    RetryPolicy,
    WebhookProcessor,
)
from ocean_hook.processors.declarative import (
    DeclarativeProcessor,
    DeclarativeSpec,
    DeliveryIdSource,
    FetchSpec,
)
from ocean_hook.processors.presets import PRESETS
from ocean_hook.targets.port import integration_name_problem
from ocean_hook.yamlfile import KeyPath, YamlDocument, dotted, load_yaml

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_OPTION = re.compile(r"option '([^']+)'")  # how auth/options.py names the option it refuses
_ONLY_VAR = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$")
#: `export NAME=...` or `NAME=value`, upper case as variables are (base64's and base32's `=` pad
#: the end of their text)
_SHELL_ASSIGNMENT = re.compile(r"^(?:export\s+[A-Za-z_]\w*=|[A-Z_][A-Z0-9_]*=[^=\s])")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}

#: the listener's own endpoints, on the same port as the webhook routes (server.create_app)
OPERATIONS_PATHS = ("/healthz", "/readyz", "/metrics")
#: a plain URL path: RFC 3986 path characters, no percent-escapes, no aiohttp {placeholders}
_ROUTE = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@/-]*$")


def written_password(queue: Any) -> str | None:
    """A warning when `queue.url` is written with its password in the config text, where
    secrets never go (the config is committed, shown in reviews, printed by `check`)."""
    url = queue.get("url") if isinstance(queue, dict) else None
    if not isinstance(url, str) or "${" in url:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:  # the URL's own problem, said of queue.url
        return None
    if parts.password is not None or "password=" in parts.query.lower():
        return "the Redis password is written in the config, where secrets never go: put the URL in an " \
               "environment variable (url: ${REDIS_URL})"
    return None


def unset_variables(value: Any, env: Mapping[str, str]) -> list[str]:
    """The `${VAR}` names in a config string that `env` does not set."""
    return [name for name in _VAR.findall(value) if name not in env] if isinstance(value, str) else []


TOP_KEYS = {"mapping", "state_dir", "target", "queue", "server", "jq", "processors", "integration", "fetch"}
FETCH_KEYS = {"timeout_seconds", "attempts", "allow_loopback"}
PROCESSOR_KEYS = {
    "name", "path", "preset", "class", "options", "auth", "match", "events", "kinds", "validate",
    "items", "delete_when", "delivery_id", "order_key", "fetch", "retry",
}
#: what a declarative processor's rules are made of; a Python processor's methods decide these
DECLARATIVE_ONLY = {"match", "events", "validate", "items", "delete_when", "delivery_id", "order_key", "fetch"}
RETRY_KEYS = {"max_retries", "initial_retry_delay_seconds", "max_retry_delay_seconds",
              "exponential_base_seconds"}


@dataclass
class ServerSettings:
    max_body_bytes: int = 10 * 1024 * 1024
    dedup_window_seconds: float = 7 * 86400
    shutdown_timeout_seconds: float = 30.0
    workers: int = 4
    #: a connection without a complete request this long is closed: idle keep-alive ones, and
    #: slow headers however slowly they trickle (aiohttp counts from the connection or the last
    #: answer). Slow bodies have their own 10 s.
    idle_timeout_seconds: float = 75.0
    #: an event loop this long without running (a jq program that never ends) has `serve`
    #: killed, to be restarted (watchdog.py); 0: never
    stall_timeout_seconds: float = 60.0


@dataclass
class Config:
    file: Path
    mapping_path: Path
    state_dir: Path
    target: dict[str, Any]
    queue: dict[str, Any]
    server: ServerSettings
    processors: list[WebhookProcessor]
    allow_env_in_jq: bool = False
    integration: str = "ocean-hook"
    warnings: list[str] = field(default_factory=list)
    #: what a Python processor's code looks like it gets wrong, said by `check` and `serve` alike
    code_warnings: list[str] = field(default_factory=list)
    #: fetch client settings: timeout_seconds, attempts, allow_loopback
    fetch: dict[str, Any] = field(default_factory=dict)
    #: the file as read, for the line of a key in messages about it
    source: YamlDocument | None = None

    def where(self, *path: str | int) -> str:
        """`file:line (key target)`: where a problem found after loading is to be fixed."""
        return self.source.where(path) if self.source is not None else f"{self.file} (key {dotted(path)})"

    def load_mapping(self) -> CompiledMapping:
        """The mapping, which must have every kind a processor feeds: `check` refuses one it
        lacks, and `serve` started and dead-lettered every delivery of it."""
        mapping = CompiledMapping.load(self.mapping_path, allow_env=self.allow_env_in_jq)
        problems = [
            f"{self.where('processors', i, 'kinds')}: processor '{p.name}' feeds kind '{kind}', which the mapping "
            f"{self.mapping_path.name} does not have (kinds: {', '.join(mapping.kinds) or 'none'})"
            for i, p in enumerate(self.processors) for kind in p.settings.kinds if kind not in mapping.kinds
        ]
        if problems:
            raise ConfigProblems(problems)
        return mapping

    def processors_for_path(self, path: str) -> list[WebhookProcessor]:
        return [p for p in self.processors if p.path == path]

    @property
    def paths(self) -> list[str]:
        return list(dict.fromkeys(p.path for p in self.processors))


class ConfigProblems(Problems):
    """All the problems found in a config, one per line."""


class _Reader:
    """Walks the YAML document, expanding `${VAR}` and collecting problems with their place."""

    def __init__(self, doc: YamlDocument, env: Mapping[str, str], *, inspection: bool = False,
                 needs: Collection[str] = (), secrets: bool = True,
                 overridden: Collection[KeyPath] = ()) -> None:
        self.doc = doc
        self.env = env
        #: inspection commands (catalog, deliveries) need no secrets: missing variables are fine,
        self.inspection = inspection
        #: but for these top-level keys: the places they look into (`state_dir`, `target`, `queue`)
        self.needs = frozenset(needs)
        #: False: the webhook secrets are not needed (a replay that does not verify signatures)
        self.secrets = secrets
        #: what the command line replaces (`serve --queue URL`: ("queue", "url")): its variables are not read
        self.overridden = [tuple(o) for o in overridden]
        #: an unset variable is one problem, at its first place: name -> (that problem's index,
        #: its text, the lines of its later uses)
        self._unset: dict[str, tuple[int, str, list[int]]] = {}
        self._unset_uses = 0
        #: the top-level `fetch: {allow_loopback}`, which decides whether a fetch host may be local
        self.allow_loopback = False
        self.problems: list[str] = []
        self.warnings: list[str] = []
        #: the places whose `${VAR}`s are read, and jq programs, read as written on purpose
        #: (see `unread_variables`)
        self._read: set[KeyPath] = set()

    def problem(self, path: KeyPath, message: str) -> None:
        self.problems.append(f"{self.doc.where(path)}: {message}")

    def said(self) -> tuple[int, int]:
        """How much has been said so far: problems, and uses of unset variables (said once)."""
        return len(self.problems), self._unset_uses

    def _unset_variable(self, path: KeyPath, name: str) -> None:
        """Said once, where it is first used, with the other lines that use it: one variable
        unset in a config of seven processors was seven problems."""
        self._unset_uses += 1
        if name not in self._unset:
            self.problem(path, f"environment variable {name} is not set")
            self._unset[name] = (len(self.problems) - 1, self.problems[-1], [])
            return
        index, first, more = self._unset[name]
        line = self.doc.line(path)
        if line is not None and line not in more:
            more.append(line)
            also = "line" if len(more) == 1 else "lines"
            self.problems[index] = f"{first} (also used at {also} {', '.join(map(str, more))})"

    def needed(self, path: KeyPath) -> bool:
        """Whether the value at `path` must be there: its variables set, its secret file read."""
        top = path[0] if path else ""
        if any(tuple(path[:len(o)]) == o for o in self.overridden):
            return False
        if self.inspection:
            return top in self.needs
        return self.secrets or not ("auth" in path and {"secret", "secrets", "secret_file"} & set(path))

    def expand(self, path: KeyPath, value: Any) -> Any:
        self.read_as_is(path)
        if isinstance(value, str):
            if "${" in _VAR.sub("", value):  # else `${A:-b}` or `${ A }` was used as written
                self._once(path, f"only ${{NAME}} is read from the environment (no default, spaces or nesting), "
                                 f"got {value!r}")

            def sub(match: re.Match[str]) -> str:
                name = match.group(1)
                if name not in self.env:
                    if self.needed(path):
                        self._unset_variable(path, name)
                    return ""
                return self.env[name]
            return _VAR.sub(sub, value)
        if isinstance(value, dict):
            return {k: self.expand((*path, str(k)), v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.expand((*path, i), v) for i, v in enumerate(value)]
        return value

    def read_as_is(self, path: KeyPath) -> None:
        """No `${VAR}` there is to be called unread (`unread_variables`): a block whose problem
        is said already, and which was not read further."""
        self._read.add(tuple(path))

    def _once(self, path: KeyPath, message: str) -> None:
        """A problem of a value read twice (a block, then one of its keys) said once."""
        said = f"{self.doc.where(path)}: {message}"
        if said not in self.problems:
            self.problems.append(said)

    def unread_variables(self, value: Any, path: KeyPath = ()) -> None:
        """`${VAR}` where none is read (a processor's name, kinds, server or retry numbers): it
        was taken as written, silently."""
        if any(path[:len(done)] == done for done in self._read):
            return
        if isinstance(value, str) and "${" in value:
            where = f"{self.doc.where(path)}: "
            said = next((i for i, p in enumerate(self.problems) if p.startswith(where)), None)
            if said is None:
                self.problem(path, f"is read as written: ${{VAR}} is not read from the environment here, got "
                                   f"{value!r}")
            else:  # `workers: '${W}'` "must be a positive whole number": say why
                self.problems[said] += f" (${{VAR}} is not read from the environment here, got {value!r})"
        elif isinstance(value, dict):
            for key, item in value.items():
                self.unread_variables(item, (*path, str(key)))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                self.unread_variables(item, (*path, i))

    def jq(self, path: KeyPath, value: Any, *, allow_env: bool = False) -> JqQuery | None:
        self.read_as_is(path)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            self.problem(path, f"must be a jq expression (a string), got {value!r}")
            return None
        try:
            return JqQuery(value, allow_env=allow_env)
        except JqCompileError as exc:
            self.problem(path, f"jq does not compile: {exc}")
            return None

    def unknown_keys(self, path: KeyPath, value: dict[str, Any], known: set[str]) -> None:
        for key in value:
            if key not in known:
                self.problem((*path, str(key)), f"unknown key '{key}' (known: {', '.join(sorted(known))})")

    def mapping(self, path: KeyPath, value: Any) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(path, f"must be a mapping, got {type(value).__name__}")
            return {}
        return value

    def string_list(self, path: KeyPath, value: Any) -> list[str]:
        if value is None:
            return []
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem(path, "must be a string or a list of strings")
            return []
        return value


#: past a century a duration is a mistake (and YAML's .inf, or select()'s limits, are near)
LONGEST_DURATION = 36500 * 86400.0


def parse_duration(text: Any) -> float | None:
    """`30d`, `12h`, `90m`, `45s` or a number of seconds, up to a century (YAML's .nan and .inf:
    None, as for text that is not a duration)."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    elif match := _DURATION.match(str(text)):
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        return None
    return seconds if abs(seconds) <= LONGEST_DURATION else None


def say_duration(seconds: float) -> str:
    """A duration as it is written in the config (`7d`, `12h`, `90m`, `1.5s`), in its largest
    whole unit."""
    for unit in ("d", "h", "m"):
        if seconds >= _UNITS[unit] and seconds % _UNITS[unit] == 0:
            return f"{seconds / _UNITS[unit]:g}{unit}"
    return f"{seconds:g}s"


def load_config(path: str | Path, *, env: Mapping[str, str] | None = None, inspection: bool = False,
                needs: Collection[str] = (), secrets: bool = True, overridden: Collection[KeyPath] = ()) -> Config:
    """Load, validate and build processors; raise `ConfigProblems` listing every problem.

    `inspection=True` is for commands that only look at the state directory: they must work
    without the webhook secrets in the environment. The top-level keys in `needs` must still
    have their variables set: a `state_dir: ${DIR}/x` read as `/x` would look into, or write
    to, the wrong place. `secrets=False`: the webhook secrets may be missing (nothing is
    verified). `overridden`: the key paths the command line replaces (`("queue", "url")`),
    whose variables may be unset.
    """
    env = os.environ if env is None else env
    file = Path(path)
    doc = load_yaml(file)
    reader = _Reader(doc, env, inspection=inspection, needs=needs, secrets=secrets, overridden=overridden)
    config = _build(doc, reader, file)
    reader.unread_variables(doc.data)
    if reader.problems:
        raise ConfigProblems(reader.problems)
    assert config is not None
    return config


def _build(doc: YamlDocument, r: _Reader, file: Path) -> Config | None:
    if not isinstance(doc.data, dict):
        r.problem((), "the config must be a YAML mapping (mapping:, processors:, ...)")
        return None
    raw: dict[str, Any] = doc.data
    r.unknown_keys((), raw, TOP_KEYS)
    base = file.parent
    mapping = r.expand(("mapping",), raw.get("mapping"))
    # a path made without a variable is not the path: the variable is the problem (or not looked for)
    unset = unset_variables(raw.get("mapping"), r.env)
    if not isinstance(mapping, str) or not mapping:
        if not unset:
            r.problem(("mapping",), "needs the path of a Port port-app-config mapping file")
        mapping = ""
    mapping_path = beside(base, mapping) if mapping else base
    if mapping and not mapping_path.is_file() and not unset:
        r.problem(("mapping",), f"mapping file {mapping_path} {_not_a_file(mapping_path)}")
    state_raw = raw.get("state_dir", ".ocean-hook")
    state_value = r.expand(("state_dir",), state_raw)
    if (not isinstance(state_value, str) or not state_value) and not unset_variables(state_raw, r.env):
        r.problem(("state_dir",), f"must be a directory path, got {state_value!r}")
        state_value = ".ocean-hook"
    state_dir = beside(base, state_value)
    if state_dir.exists() and not state_dir.is_dir():
        where: KeyPath = ("state_dir",) if "state_dir" in raw else ()  # else the default, on no line
        r.problem(where, f"state_dir {state_dir} (journal and local catalog) exists and is not a directory")
    jq_opts = r.mapping(("jq",), raw.get("jq"))
    r.unknown_keys(("jq",), jq_opts, {"allow_env"})
    allow_env = jq_opts.get("allow_env", False)
    if not isinstance(allow_env, bool):  # 'yes' read as false would hide why $ENV stays empty
        r.problem(("jq", "allow_env"), f"must be true or false, got {allow_env!r}")
        allow_env = False
    server = _server(r, r.mapping(("server",), raw.get("server")))
    target = _beside(base, r.expand(("target",), r.mapping(("target",), raw.get("target"))) or {"type": "local"})
    queue_raw = r.mapping(("queue",), raw.get("queue"))
    queue_spec = _beside(base, r.expand(("queue",), queue_raw) or {"type": "sqlite"})
    # made without a variable, it is not the queue: the variable is the problem (or not looked for)
    queue = queue_spec if any(unset_variables(v, r.env) for v in queue_raw.values()) else _queue(r, queue_spec)
    fetch = _fetch_client(r, r.mapping(("fetch",), raw.get("fetch")))
    r.allow_loopback = bool(fetch.get("allow_loopback"))  # before the processors: their fetch hosts are judged by it
    processors = _processors(r, raw.get("processors"), base)
    warnings = [f"processor '{p.name}' accepts unauthenticated deliveries (auth: none)"
                for p in processors if p.settings.verifier.scheme == "none"]
    if password := written_password(queue_raw):
        warnings.append(f"{doc.where(('queue', 'url'))}: {password}")
    return Config(
        file=file, mapping_path=mapping_path, state_dir=state_dir, target=target, queue=queue,
        server=server, processors=processors, allow_env_in_jq=allow_env,
        integration=_integration(r, raw), warnings=warnings, code_warnings=r.warnings, fetch=fetch, source=doc,
    )


def _server(r: _Reader, raw: dict[str, Any]) -> ServerSettings:
    s = ServerSettings()
    r.unknown_keys(("server",), raw, {"max_body_bytes", "dedup_window", "shutdown_timeout",
                                       "idle_timeout", "stall_timeout", "workers"})
    if "max_body_bytes" in raw:
        if _whole(raw["max_body_bytes"]) and raw["max_body_bytes"] > 0:
            s.max_body_bytes = raw["max_body_bytes"]
        else:
            r.problem(("server", "max_body_bytes"), "must be a positive number of bytes")
    durations = (("dedup_window", "dedup_window_seconds"), ("shutdown_timeout", "shutdown_timeout_seconds"),
                 ("idle_timeout", "idle_timeout_seconds"), ("stall_timeout", "stall_timeout_seconds"))
    may_be_zero = {"shutdown_timeout": "", "stall_timeout": " (0s: never)"}
    for key, attr in durations:
        if key in raw:
            seconds = parse_duration(raw[key])
            if seconds is None:
                r.problem(("server", key), f"must be a duration like 7d, 12h or 30s (at most 36500d), got {raw[key]!r}")
            elif key == "stall_timeout" and 0 < seconds < 1:  # the heartbeat itself takes a moment
                r.problem(("server", key), f"must be 0s (never) or 1s or longer, got {raw[key]!r}")
            elif seconds <= 0 and key not in may_be_zero:  # 0: no de-duplication, or slow clients kept forever
                r.problem(("server", key), f"must be longer than 0s, got {raw[key]!r}")
            elif seconds < 0:
                r.problem(("server", key), f"must be 0s or longer{may_be_zero[key]}, got {raw[key]!r}")
            else:
                setattr(s, attr, seconds)
    if "workers" in raw:
        if _whole(raw["workers"]) and raw["workers"] > 0:
            s.workers = raw["workers"]
        else:
            r.problem(("server", "workers"), "must be a positive whole number")
    return s


def _integration(r: _Reader, raw: dict[str, Any]) -> str:
    """The name Port's datasource carries: what this instance may delete is told by it."""
    value = r.expand(("integration",), raw.get("integration", "ocean-hook"))
    if not isinstance(value, str):
        r.problem(("integration",), f"must be a name, got {value!r}")
        return "ocean-hook"
    if (problem := integration_name_problem(value)) is not None:
        r.problem(("integration",), f"{problem}, got {value!r}")
        return "ocean-hook"
    return value


def _not_a_file(path: Path) -> str:
    """Why a path the config names is no file to read."""
    if path.is_dir():
        return "is a directory"
    if path.is_symlink():
        return "is a symbolic link to nothing (or a loop of links)"
    return "not found"


def beside(base: Path, path: str) -> Path:
    """A path the config names, read from the config's folder (not from wherever the command
    runs), `~` as the user's home: `state_dir: ~/state` made a folder named '~'. A `~name` of no
    user, or `~` with no home to be found, is read as written."""
    return base / home_expanded(path)


def _beside(base: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """A `path:` of the target or queue, read as every path of the config is (`beside`): it was
    read from wherever the command ran, so `serve` and `catalog` run from two folders used two
    catalogs."""
    path = spec.get("path")
    if isinstance(path, str) and path:
        return {**spec, "path": str(beside(base, path))}
    return spec


def _queue(r: _Reader, spec: dict[str, Any]) -> dict[str, Any]:
    """The `queue:` block, checked as `serve` will open it, so its mistake has a file and line."""
    from ocean_hook.runtime import check_queue  # runtime builds on this module

    try:
        check_queue(spec)
    except ConfigError as exc:
        r.problem(tuple((exc.where or "queue").split(".")), exc.message)
    return spec


def _fetch_client(r: _Reader, raw: dict[str, Any]) -> dict[str, Any]:
    """The top-level `fetch:` block, checked here: `serve` builds its Fetcher from it."""
    r.unknown_keys(("fetch",), raw, FETCH_KEYS)
    kept = dict(raw)
    checks = (("timeout_seconds", lambda v: _seconds_or_count(v) and v > 0,
               "must be a number of seconds, > 0"),
              ("attempts", lambda v: _whole(v) and v >= 1, "must be a whole number, 1 or more"),
              ("allow_loopback", lambda v: isinstance(v, bool), "must be true or false"))
    for key, valid, rule in checks:
        if key in raw and not valid(raw[key]):
            r.problem(("fetch", key), f"{rule}, got {raw[key]!r}")
            del kept[key]
    return kept


def _seconds_or_count(value: Any) -> bool:
    """A finite number from 0 to LONGEST_DURATION (`.inf` and `.nan` are numbers to YAML)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= LONGEST_DURATION


def _whole(value: Any) -> bool:
    """An int as YAML writes one: `true` and `yes` are bools, which Python counts as ints."""
    return isinstance(value, int) and not isinstance(value, bool)


def _processors(r: _Reader, raw: Any, base: Path) -> list[WebhookProcessor]:
    if not isinstance(raw, list) or not raw:
        r.problem(("processors",), "needs a non-empty list of processors")
        return []
    out: list[WebhookProcessor] = []
    names: set[str] = set()
    for i, item in enumerate(raw):
        path: KeyPath = ("processors", i)
        if not isinstance(item, dict):
            r.problem(path, "each processor must be a mapping")
            continue
        processor = _processor(r, path, item, base)
        if processor is None:
            continue
        if processor.name in names:
            r.problem((*path, "name"), f"duplicate processor name '{processor.name}'")
        names.add(processor.name)
        out.append(processor)
    return out


def _route_problem(route: str) -> str | None:
    if route in OPERATIONS_PATHS:
        return f"{route} is one of the listener's own endpoints ({', '.join(OPERATIONS_PATHS)}); choose another path"
    if not _ROUTE.match(route):
        return f"must be a plain URL path (letters, digits, / - _ . ~ and no {{ }} ? # % or spaces), got {route!r}"
    return None


def _processor(r: _Reader, path: KeyPath, raw: dict[str, Any], base: Path) -> WebhookProcessor | None:
    r.unknown_keys(path, raw, PROCESSOR_KEYS)
    preset_name = raw.get("preset")
    preset = PRESETS.get(preset_name) if isinstance(preset_name, str) else None
    if preset_name is not None and preset is None:
        r.problem((*path, "preset"), f"unknown preset {preset_name!r} (known: {', '.join(PRESETS)})")
    # a written value, however empty or false (`name: no` is YAML's false), is the value: the
    # preset's stands in only for one not written
    name = raw.get("name", preset.name if preset else None)
    if not isinstance(name, str) or not name:
        shown = "" if "name" not in raw else f", got {name!r}" + (" (quote it)" if isinstance(name, bool) else "")
        r.problem((*path, "name"), f"every processor needs a 'name'{shown}")
        name = f"processor-{path[-1]}"
    route = r.expand((*path, "path"), raw["path"]) if "path" in raw else (preset.path if preset else None)
    if not isinstance(route, str) or not route.startswith("/"):
        r.problem((*path, "path"), f"needs a URL path starting with '/', got {route!r}")
        route = "/"
    elif problem := _route_problem(route):
        r.problem((*path, "path"), problem)
        route = "/"
    kinds = r.string_list((*path, "kinds"), raw.get("kinds"))
    if not kinds:
        r.problem((*path, "kinds"), "needs the mapping kinds this processor feeds (kinds: [...])")
    settings = ProcessorSettings(
        name=name, path=route, kinds=kinds,
        verifier=_verifier(r, (*path, "auth"), raw.get("auth"), preset.scheme if preset else None, base),
        retry=_retry(r, (*path, "retry"), r.mapping((*path, "retry"), raw.get("retry"))),
        options=r.expand((*path, "options"), r.mapping((*path, "options"), raw.get("options"))),
    )
    if "class" in raw:
        for key in sorted(DECLARATIVE_ONLY & set(raw)):  # taken for a rule, and silently not one
            r.problem((*path, key), "is not used by a class: processor, whose own methods decide it "
                                    "(see mappings/custom/)")
        return _python_processor(r, (*path, "class"), raw["class"], settings, base)
    return DeclarativeProcessor(settings, _spec(r, path, raw, preset))


def _verifier(r: _Reader, path: KeyPath, raw: Any, preset_scheme: str | None, base: Path) -> Any:
    from ocean_hook.auth.none import build as build_none  # placeholder verifier when auth is broken

    raw = r.mapping(path, raw)
    scheme = raw.get("scheme", preset_scheme)
    if scheme is None or scheme not in SCHEMES:
        if scheme is None:
            r.problem(path, "needs an auth scheme (auth: {scheme: github, secret: ${VAR}}); "
                            "write 'scheme: none' to accept unauthenticated deliveries")
        else:
            r.problem((*path, "scheme"), f"unknown auth scheme {scheme!r} (known: {', '.join(SCHEMES)})")
        for key in ("secret", "secrets", "secret_file"):  # their variables are read once the scheme is known
            r.read_as_is((*path, key))
        return build_none("none", [], {})
    reported = r.said()
    secrets = _secrets(r, path, raw, base)
    options = r.expand(path, {k: v for k, v in raw.items() if k not in {"scheme", "secret", "secrets", "secret_file"}})
    unknown = set(options) - options_for(scheme)
    for key in sorted(unknown):
        r.problem((*path, key), f"unknown option '{key}' for auth scheme '{scheme}'")
    if scheme != "none" and not secrets:
        # not needed (looking, or a replay that verifies nothing) and written as a variable, or
        # that variable already reported; a processor with no secret written at all never
        # starts, whatever the environment (`check --no-env` says so too, as for an empty one)
        written = any(key in raw for key in ("secret", "secrets", "secret_file"))
        if r.said() != reported or (written and not r.needed((*path, "secret"))):
            return build_none("none", [], {})
        r.problem(path, f"auth scheme '{scheme}' needs a secret (secret: ${{VAR}} or secret_file:); "
                        "a processor without a secret does not start")
        return build_none("none", [], {})
    return _built_verifier(r, path, scheme, secrets, {k: v for k, v in options.items() if k not in unknown})


def _built_verifier(r: _Reader, path: KeyPath, scheme: str, secrets: list[str], options: dict[str, Any]) -> Any:
    """The scheme's verifier; each option it refuses is said at its own line, all of them at once
    (the verifier names the first it meets: built again without it, it names the next)."""
    from ocean_hook.auth.none import build as build_none

    refused: set[str] = set()
    while True:
        try:
            return build_verifier(scheme, secrets, options)
        except ValueError as exc:
            named = _OPTION.search(str(exc))
            key = named.group(1) if named else None
            if key in refused:  # "is required", once taken out: said already, and what follows is unknown
                return build_none("none", [], {})
            r.problem((*path, key) if key in options else path, str(exc))
            if key is None or key not in options:
                return build_none("none", [], {})
            refused.add(key)
            options = {k: v for k, v in options.items() if k != key}


def _secrets(r: _Reader, path: KeyPath, raw: dict[str, Any], base: Path) -> list[str]:
    values: list[tuple[KeyPath, Any]] = []
    if "secret" in raw:
        values.append(((*path, "secret"), raw["secret"]))
    listed = raw.get("secrets") or []
    if not isinstance(listed, list):  # a string would be read one character at a time
        r.problem((*path, "secrets"), "must be a list: secrets: ['${OLD_SECRET}', '${NEW_SECRET}']")
        listed = []
    for i, v in enumerate(listed):
        values.append(((*path, "secrets", i), v))
    secrets: list[str] = []
    for where, value in values:
        if not isinstance(value, str) or not _ONLY_VAR.match(value.strip()):
            r.problem(where, "secrets are read from the environment: write secret: ${VAR_NAME} "
                             "(or secret_file: PATH), never the secret itself")
            continue
        expanded = r.expand(where, value.strip())
        if expanded:
            secrets.append(expanded)
        elif _VAR.match(value.strip()) and value.strip()[2:-1] in r.env and (r.inspection or r.needed(where)):
            r.problem(where, f"environment variable {value.strip()[2:-1]} is empty")
    if "secret_file" in raw and r.needed((*path, "secret_file")):
        file = beside(base, str(r.expand((*path, "secret_file"), raw["secret_file"])))
        try:
            content = file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            r.problem((*path, "secret_file"), f"cannot read secret file {file}: {exc.strerror}")
        except UnicodeDecodeError:
            r.problem((*path, "secret_file"), f"secret file {file} is not UTF-8 text")
        else:
            if _SHELL_ASSIGNMENT.match(content):  # the README's webhook-secret.sh, say: every delivery a 401
                r.problem((*path, "secret_file"), f"secret file {file} holds a shell assignment "
                                                  f"({content.split('=')[0]}=...), not the secret alone")
            elif content:
                secrets.append(content)
            else:
                r.problem((*path, "secret_file"), f"secret file {file} is empty")
    return secrets


def _retry(r: _Reader, path: KeyPath, raw: dict[str, Any]) -> RetryPolicy:
    r.unknown_keys(path, raw, RETRY_KEYS)
    values: dict[str, Any] = {}
    for key in RETRY_KEYS & set(raw):
        value = raw[key]
        if not _seconds_or_count(value):  # .inf: never retried, its order key blocked; .nan: at once
            r.problem((*path, key), f"must be a non-negative number (at most {LONGEST_DURATION:.0f}), "
                                    f"got {value!r}")
        elif key == "max_retries" and not _whole(value):  # 2.5 read as 2 would hide the typo
            r.problem((*path, key), f"must be a whole number, got {value!r}")
        else:
            values[key] = int(value) if key == "max_retries" else float(value)
    policy = RetryPolicy(**values)
    if policy.max_retry_delay_seconds < policy.initial_retry_delay_seconds:
        r.problem((*path, "max_retry_delay_seconds"), f"must be at least initial_retry_delay_seconds "
                                                      f"({policy.initial_retry_delay_seconds:g})")
    return policy


def _python_processor(
    r: _Reader, path: KeyPath, ref: Any, settings: ProcessorSettings, base: Path
) -> WebhookProcessor | None:
    if not isinstance(ref, str) or ":" not in ref:
        r.problem(path, f"must be 'package.module:ClassName', got {ref!r}")
        return None
    module_name, _, class_name = ref.partition(":")
    try:
        cls = getattr(_import_beside(module_name, base), class_name)
    except (ImportError, AttributeError) as exc:
        r.problem(path, f"cannot import {ref}: {exc} (modules are looked up in {base} first, then sys.path)")
        return None
    except (Exception, SystemExit) as exc:  # a user's module failing (or exiting) at import: report it
        r.problem(path, f"importing {module_name} failed: {type(exc).__name__}: {exc}")
        return None
    if not (isinstance(cls, type) and issubclass(cls, WebhookProcessor)):
        r.problem(path, f"{ref} is not a subclass of ocean_hook.processors.base.WebhookProcessor")
        return None
    if problems := _sync_or_async_problems(cls, ref):
        for problem in problems:
            r.problem(path, problem)
        return None
    r.warnings += [f"{r.doc.where(path)}: {said}" for said in _plain_awaited_hooks(cls, ref)]
    try:
        return cls(settings)
    except (Exception, SystemExit) as exc:  # a user's constructor: report, don't crash
        r.problem(path, f"{ref}({settings.name!r}) failed: {exc}")
        return None


def _sync_or_async_problems(cls: type, ref: str) -> list[str]:
    """The class's own methods `async def` where the pipeline uses the answer at once (a
    coroutine, not the answer: a 500 at the door). A plain `def` where the pipeline awaits may
    return an awaitable (one delegating to an `async def`): that is told at run time, if it does
    not (`pipeline._awaited`), and warned of here (`_plain_awaited_hooks`)."""
    return [f"{ref}.{name}{place} is defined with async def, but the pipeline uses its answer without awaiting it: "
            "define it with def" for name, method, _, place in _own_methods(cls, CALLED_METHODS)
            if inspect.iscoroutinefunction(method)]


def _plain_awaited_hooks(cls: type, ref: str) -> list[str]:
    """The class's own hooks the pipeline awaits that are a plain `def`: fine when they return an
    awaitable, a failed delivery at each call when they do not."""
    return [f"{ref}.{name}{place} is defined with def: the pipeline awaits what it returns, so unless it returns "
            "an awaitable, define it with async def" for name, _, function, place in _own_methods(cls, AWAITED_METHODS)
            if inspect.isfunction(function) and not inspect.iscoroutinefunction(function)]


def _own_methods(cls: type, names: tuple[str, ...]) -> Iterator[tuple[str, Any, Any, str]]:
    """(name, method, function, " (file:line)") of each of `names` the class or its user bases
    define, not WebhookProcessor's own; the function is the one under a decorator that wraps it
    (`functools.wraps`)."""
    for name in names:
        owner = next((k for k in cls.__mro__ if name in k.__dict__), WebhookProcessor)
        method = getattr(cls, name, None)
        if owner in WebhookProcessor.__mro__ or method is None:
            continue
        function = inspect.unwrap(getattr(method, "__func__", method))
        code = getattr(function, "__code__", None)
        yield name, method, function, f" ({code.co_filename}:{code.co_firstlineno})" if code is not None else ""


def _import_beside(module_name: str, folder: Path) -> Any:
    """Import `module_name` with the config file's folder first on sys.path, for this import only.

    A processor class lives next to the ocean-hook.yaml that names it (`class: my_processor:X`
    finds `my_processor.py` beside the config) without installing a package. The folder is put
    back off sys.path afterwards, and not added twice when it is already there.
    """
    entry = str(folder.resolve())
    added = entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        module = importlib.import_module(module_name)
    finally:
        if added and entry in sys.path:
            sys.path.remove(entry)
    top = module_name.partition(".")[0]
    shadowed = folder / f"{top}.py"
    if top in sys.stdlib_module_names and shadowed.is_file():  # `queue.py` beside the config: Python's wins
        raise ImportError(f"'{top}' is a module of Python's own, loaded before {shadowed}: rename "
                          f"{shadowed.name}")
    return module


def _spec(r: _Reader, path: KeyPath, raw: dict[str, Any], preset: Any) -> DeclarativeSpec:
    match = r.mapping((*path, "match"), raw.get("match"))
    r.unknown_keys((*path, "match"), match, {"headers", "query"})
    headers = {
        str(k).lower(): r.string_list((*path, "match", "headers", str(k)), r.expand((*path, "match"), v))
        for k, v in r.mapping((*path, "match", "headers"), match.get("headers")).items()
    }
    spec = DeclarativeSpec(
        headers=headers,
        query=r.jq((*path, "match", "query"), match.get("query")),
        event_header=preset.event_header if preset else None,
        event_query=r.jq((*path, "preset"), preset.event_query) if preset and preset.event_query else None,
        events=r.string_list((*path, "events"), r.expand((*path, "events"), raw.get("events"))),
        validate=[q for i, v in enumerate(r.string_list((*path, "validate"), raw.get("validate")))
                  if (q := r.jq((*path, "validate", i), v)) is not None],
        items=r.jq((*path, "items"), raw.get("items")),
        delete_when=r.jq((*path, "delete_when"), raw.get("delete_when")),
        order_key=r.jq((*path, "order_key"), raw.get("order_key")),
        delivery_id=_delivery_id(r, (*path, "delivery_id"), raw.get("delivery_id"), preset),
        challenge=r.jq((*path, "preset"), preset.challenge) if preset and preset.challenge else None,
        fetch=_fetch(r, (*path, "fetch"), raw.get("fetch")),
    )
    if spec.events and not (spec.event_header or spec.event_query):
        r.problem((*path, "events"), "'events' needs a preset that says where the event name is")
    if raw.get("events") == []:  # would take every event, as if it were not written: say which is meant
        r.problem((*path, "events"), "is empty: leave 'events' out to take every event, or list the ones to take")
    return spec


def _delivery_id(r: _Reader, path: KeyPath, raw: Any, preset: Any) -> list[DeliveryIdSource]:
    sources = [raw] if isinstance(raw, dict) else (raw or list(preset.delivery_id if preset else []))
    if not isinstance(sources, list):
        r.problem(path, "must be {header: NAME}, {headers: [A, B]} or {query: JQ}")
        return []
    out = []
    for i, source in enumerate(sources):
        where = path if isinstance(raw, dict) else (*path, i)
        if not isinstance(source, dict) or not ({"header", "headers", "query"} & set(source)):
            r.problem(where, "must be {header: NAME}, {headers: [A, B]} or {query: JQ}")
            continue
        r.unknown_keys(where, source, {"header", "headers", "query"})
        names = r.string_list(where, source.get("headers", source.get("header")))
        out.append(DeliveryIdSource(headers=names, query=r.jq(where, source.get("query"))))
    return out


def _fetch(r: _Reader, path: KeyPath, raw: Any) -> FetchSpec | None:
    if raw is None:
        return None
    raw = r.mapping(path, raw)
    r.unknown_keys(path, raw, {"url", "headers", "allowed_hosts", "base_url", "items"})
    url = r.jq((*path, "url"), raw.get("url"))
    if url is None:
        r.problem((*path, "url"), "fetch needs 'url': a jq expression giving the URL to fetch")
    raw_hosts = raw.get("allowed_hosts")
    hosts = r.string_list((*path, "allowed_hosts"), r.expand((*path, "allowed_hosts"), raw_hosts))
    written = raw_hosts if isinstance(raw_hosts, list) else [raw_hosts]  # one host may be written alone
    for i, host in enumerate(hosts):
        if unset_variables(written[i], r.env):
            continue  # the variable is the problem (or, in `check --no-env`, not looked for)
        try:
            allowed = parse_allowed_host(host)
        except ValueError as exc:
            r.problem((*path, "allowed_hosts", i), str(exc))
            continue
        if not r.allow_loopback and is_local_host(allowed.host):  # else refused at every fetch, not at check
            r.problem((*path, "allowed_hosts", i), f"{host} is a loopback or private address: every fetch there "
                                                   "is refused unless `fetch: {allow_loopback: true}` is set at the "
                                                   "top of the config")
    base_url = r.expand((*path, "base_url"), raw.get("base_url"))
    if base_url is not None and not is_http_url(base_url):
        r.problem((*path, "base_url"), f"must be an http(s) URL, got {base_url!r}")
        base_url = None
    if not hosts and not base_url:
        r.problem((*path, "allowed_hosts"), "fetch needs allowed_hosts (or base_url): "
                                            "a payload must never choose which host is called")
    raw_headers = r.mapping((*path, "headers"), raw.get("headers"))
    headers = {}
    for name, value in r.expand((*path, "headers"), raw_headers).items():
        if isinstance(value, str | int) and not isinstance(value, bool):
            headers[str(name)] = str(value)
        else:  # `Authorization:` left empty would be sent as the text "None"
            r.problem((*path, "headers", str(name)), f"must be the header's value (a string), got {value!r}")
    for name, value in raw_headers.items():
        # `Bearer ${TOKEN}` with TOKEN set empty: the API answers 404 for a private resource
        # without a token, and a 404 deletes the entity (a resource gone)
        where = (*path, "headers", str(name))
        for empty in [v for v in unset_variables(value, {}) if v in r.env and not r.env[v].strip()]:
            if r.needed(where):
                r.problem(where, f"environment variable {empty} is empty")
    items = r.jq((*path, "items"), raw.get("items", "."))
    if url is None or items is None:
        return None
    return FetchSpec(url=url, headers=headers, allowed_hosts=hosts, items=items, base_url=base_url)
