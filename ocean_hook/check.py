"""`ocean-hook check`: every problem of a config and its mapping, found without starting anything.

A user fixing a config wants the whole list in one run, so nothing here stops at the first
problem: the config's own validation (which already collects everything, with file:line), the
mapping's schema and jq, the processors' kinds against the mapping's, and the target's settings.
The mapping and the processors' kinds are read from the YAML as written, so they are checked
even when the config has problems of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ocean_hook.config import Config, ConfigProblems, beside, load_config, unset_variables, written_password
from ocean_hook.errors import ConfigError
from ocean_hook.mapping.problems import collect_problems, mapping_kinds, mapping_warnings
from ocean_hook.runtime import files_clash, journal_path
from ocean_hook.sqlitefiles import foreign_file_problem
from ocean_hook.targets import build_target, catalog_path, reads_local_catalog
from ocean_hook.targets.port import integration_name_problem
from ocean_hook.yamlfile import YamlDocument, load_yaml


@dataclass
class CheckReport:
    config: Path
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    processors: int = 0
    kinds: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.problems:
            return _count(len(self.problems), "problem")
        return f"ok: {_count(self.processors, 'processor')}, {_count(len(self.kinds), 'kind')}"

    def to_json(self) -> dict[str, Any]:
        return {
            "config": str(self.config), "ok": self.ok, "problems": self.problems,
            "warnings": self.warnings, "processors": self.processors, "kinds": self.kinds,
        }


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def check(path: str | Path, *, env: Mapping[str, str] | None = None, require_env: bool = True) -> CheckReport:
    """Validate `path` and its mapping. `require_env=False` skips environment variables and
    secrets (for CI, where the listener's secrets are deliberately absent). Synchronous, for
    the command line: not to be called from a running event loop."""
    env = os.environ if env is None else env
    report = CheckReport(Path(path))
    config = _load(report, env, require_env)
    try:
        raw = _RawConfig(load_yaml(report.config))
    except ConfigError:  # unreadable or invalid YAML: already reported, nothing more to look at
        return report
    report.processors = len(config.processors) if config else len(raw.processors)
    report.warnings += raw.unauthenticated() + (config.code_warnings if config else [])
    if password := written_password(raw.data.get("queue")):
        report.warnings.append(f"{raw.doc.where(('queue', 'url'))}: {password}")
    mapping = config.mapping_path if config else raw.mapping_path()
    unset = unset_variables(raw.data.get("mapping"), env)  # without --no-env, a problem already
    if unset and not require_env:
        report.warnings.append(f"the mapping path uses {', '.join('$' + n for n in unset)}, not set here: "
                               "the mapping is not checked")
    elif not unset and mapping is not None and mapping.is_file():
        allow_env = config.allow_env_in_jq if config else raw.allow_env
        report.problems += collect_problems(mapping, allow_env=allow_env)
        report.warnings += mapping_warnings(mapping)
        kinds = mapping_kinds(mapping)
        if kinds is not None:  # else its YAML problem is reported: which kinds it lacks is unknown
            report.kinds = kinds
            report.problems += raw.unfed_kinds(mapping, kinds)
            report.warnings += raw.idle_kinds(mapping, kinds)
    if config is not None:
        report.problems += _target_problems(config.target, config.state_dir, config.integration,
                                            config.where("target"), env, require_env)
        report.problems += _file_problems(config)
    elif (target := raw.target()) is not None:  # the config did not load: its target is looked at all the same
        report.problems += _target_problems(target, raw.state_dir(), raw.integration(), raw.doc.where(("target",)),
                                            env, require_env)
    return report


def _load(report: CheckReport, env: Mapping[str, str], require_env: bool) -> Config | None:
    """The config; when it has problems, read again without the environment (its target can
    still be checked); None when even that fails. Every problem goes into the report."""
    try:
        return load_config(report.config, env=env, inspection=not require_env)
    except ConfigProblems as exc:
        report.problems += exc.problems
    except ConfigError as exc:  # unreadable file or invalid YAML
        report.problems.append(str(exc))
        return None
    try:
        return load_config(report.config, env=env, inspection=True)
    except ConfigError:
        return None


class _RawConfig:
    """The config as written: enough to check the mapping and kinds even when it does not load."""

    def __init__(self, doc: YamlDocument) -> None:
        self.doc = doc
        self.data: dict[str, Any] = doc.data if isinstance(doc.data, dict) else {}
        items = self.data.get("processors")
        items = items if isinstance(items, list) else []
        #: (index in the file, the item) for every processor that is a mapping
        self.processors = [(i, p) for i, p in enumerate(items) if isinstance(p, dict)]
        jq = self.data.get("jq")
        self.allow_env = isinstance(jq, dict) and jq.get("allow_env") is True

    def target(self) -> dict[str, Any] | None:
        """The `target:` block as written, unless a variable makes it (read by the config only)."""
        target = self.data.get("target", {"type": "local"})
        if not isinstance(target, dict) or "${" in json.dumps(target, default=str):
            return None
        return target

    def state_dir(self) -> Path:
        value = self.data.get("state_dir")
        return beside(Path(self.doc.file).parent, value if isinstance(value, str) and "${" not in value
                      else ".ocean-hook")

    def integration(self) -> str:
        """As written, when it can be one (else the config's own problem names it, once)."""
        value = self.data.get("integration")
        return value if isinstance(value, str) and integration_name_problem(value) is None else "ocean-hook"

    def mapping_path(self) -> Path | None:
        value = self.data.get("mapping")
        if not isinstance(value, str) or not value or "${" in value:
            return None
        return beside(Path(self.doc.file).parent, value)

    @staticmethod
    def name(item: dict[str, Any], index: int) -> str:
        return str(item.get("name") or item.get("preset") or f"processor-{index}")

    def unauthenticated(self) -> list[str]:
        """From the YAML, not the built verifiers: a config read without secrets has placeholders."""
        return [
            f"{self.doc.where(('processors', i, 'auth'))}: processor '{self.name(p, i)}' accepts "
            "unauthenticated deliveries (auth: none)"
            for i, p in self.processors
            if isinstance(p.get("auth"), dict) and p["auth"].get("scheme") == "none"
        ]

    def fed_kinds(self) -> list[tuple[int, dict[str, Any], str]]:
        out = []
        for i, p in self.processors:
            kinds = p.get("kinds")
            for kind in [kinds] if isinstance(kinds, str) else kinds if isinstance(kinds, list) else []:
                if isinstance(kind, str):
                    out.append((i, p, kind))
        return out

    def unfed_kinds(self, mapping: Path, kinds: list[str]) -> list[str]:
        """Processors that feed kinds the mapping does not have: their deliveries map nothing."""
        return [
            f"{self.doc.where(('processors', i, 'kinds'))}: processor '{self.name(p, i)}' feeds kind "
            f"'{kind}', which the mapping {mapping.name} does not have (kinds: {', '.join(kinds) or 'none'})"
            for i, p, kind in self.fed_kinds()
            if kind not in kinds
        ]

    def idle_kinds(self, mapping: Path, kinds: list[str]) -> list[str]:
        fed = {kind for _, _, kind in self.fed_kinds()}
        return [f"{mapping}: kind '{kind}' has no processor feeding it" for kind in kinds if kind not in fed]


def _target_problems(target: Mapping[str, Any], state_dir: Path, integration: str, where: str,
                     env: Mapping[str, str], require_env: bool) -> list[str]:
    """Build the target once, as `serve` would, but never touch a catalog file or the network."""
    spec = dict(target)
    if spec.get("type") == "port":
        spec.setdefault("integration_name", integration)
    if not require_env:
        env = {name: "set" for name in ("PORT_CLIENT_ID", "PORT_CLIENT_SECRET",
                                        spec.get("client_id_env"), spec.get("client_secret_env"))
               if isinstance(name, str)}
    try:
        if reads_local_catalog(spec):
            catalog_path(spec, state_dir)  # the path as serve reads it, then none:
            spec["path"] = ":memory:"  # the settings are checked without creating the catalog file
        built = build_target(spec, state_dir, env=env)
    except ValueError as exc:
        return [f"{where}: {exc}"]
    asyncio.run(built.close())
    return []


SQLITE_HEADER = b"SQLite format 3\x00"


def _file_problems(config: Config) -> list[str]:
    """What `serve` would be refused, looked at without creating anything: the state directory,
    the journal and the local catalog where they go (a file in the way of a directory, a
    directory where a file goes, a file that is not SQLite, a folder it cannot write)."""
    journal = journal_path(config.queue, config.state_dir)
    catalog = None
    if reads_local_catalog(config.target):
        with contextlib.suppress(ValueError):  # a bad path is _target_problems' to report
            catalog = catalog_path(config.target, config.state_dir)
    problems = []
    if shared := files_clash(config.queue, config.target, config.state_dir):
        problems.append(f"{config.file}: {shared}")
    for path, own_table, what in ((journal, "deliveries", "a journal"), (catalog, "entities", "a local catalog")):
        if path is None:
            continue
        problem = _sqlite_file_problem(path)
        if problem is None and path.is_file() and path.stat().st_size:
            problem = foreign_file_problem(path, own_table, what)
        if problem:
            problems.append(f"{config.file}: {path}: {problem}")
    return list(dict.fromkeys(problems))


def _sqlite_file_problem(path: Path) -> str | None:
    if path.is_dir():
        return "is a directory, where a database file goes"
    if path.exists():
        try:
            with path.open("rb") as handle:
                head = handle.read(len(SQLITE_HEADER))
        except OSError as exc:
            return f"cannot be read: {exc.strerror or exc}"
        return None if head in (b"", SQLITE_HEADER) else "is not an SQLite database"
    folder = next((p for p in path.parents if p.exists()), None)
    if folder is not None and not folder.is_dir():
        return f"cannot be created: {folder} is not a directory"
    if folder is not None and not os.access(folder, os.W_OK | os.X_OK):
        return f"cannot be created: {folder} is not writable"
    return None
