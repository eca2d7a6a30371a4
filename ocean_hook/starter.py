"""`ocean-hook init`: a working starter config and mapping for one source, and what to do next.

The templates are package data (`ocean_hook/templates/<source>/`), each a config that passes
`ocean-hook check` once its secret variable is set. What the files cannot say (which variable
holds the secret, where the sender's webhook settings are, which events to tick) lives here.
"""

from __future__ import annotations

import contextlib
import secrets
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ocean_hook.errors import OceanHookError
from ocean_hook.processors.presets import PRESETS

CONFIG_FILE = "ocean-hook.yaml"
MAPPING_FILE = "port-app-config.yml"
#: the blueprints the mapping writes, to create in Port before pointing the target at it (the
#: same as mappings/<source>/blueprints.json, which a pip install does not have)
BLUEPRINTS_FILE = "blueprints.json"
FILES = (CONFIG_FILE, MAPPING_FILE, BLUEPRINTS_FILE)
DEFAULT_PORT = 8000


@dataclass(frozen=True)
class Starter:
    source: str
    #: the environment variable the template's `auth.secret` reads
    secret_env: str
    #: where the webhook is created in the sender's UI
    sender_setup: str
    #: what to tick there
    events: str
    #: None: we make a random secret for the user to paste into the sender; otherwise the
    #: sender makes the secret, and this says where to copy it from
    secret_from_sender: str | None = None

    @property
    def path(self) -> str:
        return PRESETS[self.source].path


STARTERS: dict[str, Starter] = {
    s.source: s
    for s in (
        Starter("github", "GITHUB_WEBHOOK_SECRET",
                "GitHub: the repository's (or organization's) Settings → Webhooks → Add webhook; "
                "Content type: application/json",
                "Let me select individual events: Repositories, Pull requests, Issues"),
        Starter("gitlab", "GITLAB_WEBHOOK_SECRET",
                "GitLab: the project's Settings → Webhooks → Add new webhook (the secret goes in "
                "'Secret token')",
                "Trigger: Merge request events, Issues events"),
        Starter("jira", "JIRA_WEBHOOK_SECRET",
                "Jira: Settings → System → WebHooks → Create a WebHook",
                "Issue: created, updated, deleted; Project: created, updated, deleted"),
        Starter("pagerduty", "PAGERDUTY_WEBHOOK_SECRET",
                "PagerDuty: Integrations → Generic Webhooks (v3) → New Webhook",
                "Event subscription: incident.* and service.* events",
                secret_from_sender="the signing secret PagerDuty shows once the webhook is created"),
        Starter("stripe", "STRIPE_WEBHOOK_SECRET",
                "Stripe Dashboard: Developers → Webhooks → Add endpoint",
                "customer.created, customer.updated, customer.deleted, customer.subscription.*",
                secret_from_sender="the signing secret of the endpoint (whsec_...), shown by Reveal"),
    )
}


class StarterExists(OceanHookError):
    """A file `init` would write is already there; --force overwrites."""

    exit_code = 1


def template(source: str, name: str) -> str:
    return resources.files("ocean_hook").joinpath("templates", source, name).read_text(encoding="utf-8")


def write_starter(source: str, directory: Path, *, force: bool = False) -> list[Path]:
    """Write the config, mapping and blueprints into `directory`: the files written. Nothing is
    written if the config or mapping would be lost, or if one cannot be written (all are written
    aside first, then moved into place). A blueprints.json there already is kept, unless `force`
    and it is one `init` wrote: the user's own, `--force` or not."""
    targets = [directory / name for name in FILES]
    existing = [str(p) for p in targets if p.exists() or p.is_symlink()]  # a dangling link is someone's too
    blueprints = directory / BLUEPRINTS_FILE
    if str(blueprints) in existing and not (force and _ours(blueprints)):  # the user's: kept, and no reason to stop
        existing.remove(str(blueprints))
        targets.remove(blueprints)
    if existing and not force:
        verb = "exists" if len(existing) == 1 else "exist"
        raise StarterExists(f"{' and '.join(existing)} already {verb}; use --force to overwrite")
    if blocked := [str(p) for p in targets if p.is_dir()]:
        raise OceanHookError(f"{' and '.join(blocked)}: a directory is in the way of the file")
    staged: list[tuple[Path, Path]] = []
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for path in targets:
            aside = path.with_name(f".{path.name}.ocean-hook-init")
            staged.append((aside, path))
            aside.write_text(template(source, path.name), encoding="utf-8")
    except OSError as exc:
        _remove(aside for aside, _ in staged)
        # named as the file it was to be, not as the staging file beside it
        failed = staged[-1][1] if staged else directory
        raise OceanHookError(f"cannot write {failed}: {exc.strerror or exc}") from None
    _move_into_place(staged)
    return targets


def _ours(path: Path) -> bool:
    """A file `init` wrote, for one source or another, unchanged since."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return any(text == template(source, path.name) for source in STARTERS)


def _move_into_place(staged: list[tuple[Path, Path]]) -> None:
    """Each staged file over its target; if one cannot be, those already moved get their old
    content back (a file that cannot be replaced, say), so it is all or nothing still."""
    kept: list[tuple[Path, bytes | None]] = []
    for aside, path in staged:
        try:
            kept.append((path, path.read_bytes() if path.exists() else None))
            aside.replace(path)
        except OSError as exc:
            for done, old in kept[:-1]:
                with contextlib.suppress(OSError):
                    if old is None:
                        done.unlink()
                    else:
                        done.write_bytes(old)
            _remove(a for a, _ in staged)
            raise OceanHookError(f"cannot write {path}: {exc.strerror or exc} (nothing was changed)") from None


def _remove(paths: Iterable[Path]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def new_secret() -> str:
    return secrets.token_hex(32)


def config_option(directory: Path) -> str:
    """`--config DIR/ocean-hook.yaml`, or nothing when the config is where the commands look."""
    if directory.resolve() == Path.cwd().resolve():
        return ""
    return f" --config {shlex.quote(str(directory / CONFIG_FILE))}"  # pasted into a shell


def next_steps(starter: Starter, directory: Path, secret: str | None) -> list[str]:
    """Plain lines: set the secret, check, start, point the sender here, look at the catalog."""
    opt = config_option(directory)
    # quoted: pasted as it is, `<...>` would be read by the shell as a redirection from a file
    value = secret if secret is not None else shlex.quote(f"<{starter.secret_from_sender}>")
    url = f"http://<host>:{DEFAULT_PORT}{starter.path}"
    secret_line = (f"the value of {starter.secret_env} above" if starter.secret_from_sender is None
                   else f"made by {starter.source}: copy it into {starter.secret_env} (step 1)")
    return [
        "Next steps:",
        "",
        "  1. Put the webhook secret in the environment"
        + (" (a fresh random one, made for you):" if secret is not None else ":"),
        f"       export {starter.secret_env}={value}",
        "  2. Check the config and mapping:",
        f"       ocean-hook check{opt}",
        "  3. Start the listener (127.0.0.1 only; --host 0.0.0.0 to accept other machines):",
        f"       ocean-hook serve{opt} --port {DEFAULT_PORT}",
        f"  4. Create the webhook in {starter.sender_setup}",
        f"       URL:     {url}",
        f"       Secret:  {secret_line}",
        f"       Events:  {starter.events}",
        "  5. Watch the catalog fill up (keep .ocean-hook/ out of version control):",
        f"       ocean-hook catalog list{opt}",
        f"  6. Later, to write to Port itself: create the blueprints of {BLUEPRINTS_FILE} in Port, then",
        "     target: {type: port} (README: \"Writing to a real Port organization\")",
    ]
