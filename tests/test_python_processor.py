"""A processor written in Python (mappings/custom/my_processor.py), named in the config as
`class: my_processor:DeployBotProcessor` and found beside its ocean-hook.yaml."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from serve_helpers import journal_depth, serve_in_process
from typer.testing import CliRunner
from webhook_samples import (
    MAPPINGS,
    SECRETS,
    catalog,
    changes,
    replay,
    replay_json,
    sample,
    secrets_env,
    sign,
    source_config,
)

from ocean_hook.cli import app
from ocean_hook.config import ConfigProblems, load_config
from ocean_hook.events import WebhookEvent, make_headers
from ocean_hook.pipeline import admit, process
from ocean_hook.processors.base import WebhookProcessor
from ocean_hook.replay import replay_runtime

DEPLOYMENT = ("deployment", "dep_01HX7K2M9Q")


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(*SECRETS["custom"])


def delivery(payload: Any = None, **headers: str) -> WebhookEvent:
    body, sample_headers = sample("custom", "deployment.finished")
    if payload is not None:
        body = json.dumps(payload).encode()
    signed = sign("custom", body, {**sample_headers, **headers})
    return WebhookEvent("POST", "/webhooks/deploybot", make_headers(signed), body)


def deployment(**changes: Any) -> dict[str, Any]:
    payload = json.loads(sample("custom", "deployment.finished")[0])
    payload["deployment"].update(changes)
    return payload


def test_config_loads_the_class_from_the_config_folder() -> None:
    folder = str((MAPPINGS / "custom").resolve())
    config = load_config(MAPPINGS / "custom" / "ocean-hook.yaml", env=secrets_env())
    (processor,) = config.processors
    assert type(processor).__name__ == "DeployBotProcessor"
    assert isinstance(processor, WebhookProcessor)
    assert type(processor).__module__ == "my_processor"
    assert processor.settings.options == {"environments": ["production", "staging"]}
    assert processor.settings.verifier.scheme == "hmac"
    assert processor.retry.max_retries == 3
    assert processor.path == "/webhooks/deploybot"
    assert folder not in sys.path  # put on sys.path for the import only


def test_replay_of_a_bare_payload_through_the_class(tmp_path: Path) -> None:
    config = source_config(tmp_path, "custom")
    body, headers = sample("custom", "deployment.finished")
    signature = sign("custom", body, {})["X-DeployBot-Signature"]
    args = ["--config", config, "--verify", "--path", "/webhooks/deploybot", *[
        f"--header={k}: {v}" for k, v in {**headers, "X-DeployBot-Signature": signature}.items()]]
    (out,) = replay_json(MAPPINGS / "custom" / "samples" / "deployment.finished.json", *args)
    assert (out["status"], out["auth"], out["validation"]) == ("processed", "passed", "passed")
    assert (out["processors"], out["kinds"]) == (["deploybot"], ["deployment"])
    assert out["delivery_id"] == "6f1c2a9e-3b7d-4e85-a0c4-9d2e7f1b5a63"
    assert changes(out) == [("create", *DEPLOYMENT)]
    entity = catalog(config)[DEPLOYMENT]
    assert entity["title"] == "payments-api v1.8.0 to production"
    assert entity["properties"]["triggeredBy"] == "alice-chen"
    assert entity["relations"] == {"service": "payments-api"}


async def test_pipeline_runs_every_stage_of_the_class(tmp_path: Path) -> None:
    config = load_config(source_config(tmp_path, "custom"), env=secrets_env())
    processors = config.processors_for_path("/webhooks/deploybot")
    runtime = replay_runtime(config, dry_run=False)
    try:
        admission = admit(delivery(), processors, now=None)
        assert admission.accepted and admission.event.delivery_id == "6f1c2a9e-3b7d-4e85-a0c4-9d2e7f1b5a63"
        result = await process(admission.event, admission.processors, runtime.mapping, runtime.target,
                               runtime.fetcher)
        assert [(c.action, c.identifier) for c in result.changes] == [("create", "dep_01HX7K2M9Q")]

        deleted = admit(delivery(deployment() | {"action": "deleted"}), processors, now=None)
        result = await process(deleted.event, deleted.processors, runtime.mapping, runtime.target, runtime.fetcher)
        assert [(c.action, c.identifier) for c in result.changes] == [("delete", "dep_01HX7K2M9Q")]
        assert catalog(config) == {}
    finally:
        await runtime.close()


def test_each_check_of_the_class_answers(tmp_path: Path) -> None:
    processors = load_config(source_config(tmp_path, "custom"), env=secrets_env()).processors
    dev = admit(delivery(deployment(environment="dev")), processors, now=None)
    assert (dev.status, dev.ignored) == (202, True)  # not one of options.environments
    other_event = admit(delivery(**{"X-DeployBot-Event": "ping"}), processors, now=None)
    assert other_event.ignored
    invalid = admit(delivery(deployment(status="exploded")), processors, now=None)
    assert (invalid.status, invalid.rejected_by) == (422, "deploybot")
    assert invalid.reason == "deployment.status must be one of canceled, failed, queued, running, succeeded"
    body, headers = sample("custom", "deployment.finished")
    forged = WebhookEvent("POST", "/webhooks/deploybot",
                          make_headers(sign("custom", body, headers, secret="guess")), body)
    assert admit(forged, processors, now=None).status == 401


def test_a_class_that_cannot_be_loaded_is_a_config_problem(tmp_path: Path) -> None:
    config = source_config(tmp_path, "custom")
    text = config.read_text()
    line = next(n for n, row in enumerate(text.splitlines(), start=1) if row.strip().startswith("class:"))
    (tmp_path / "custom" / "not_a_processor.py").write_text("class Thing:\n    pass\n")
    (tmp_path / "custom" / "exits_at_import.py").write_text("raise SystemExit(3)\n")
    (tmp_path / "custom" / "broken.py").write_text("def x(:\n")
    (tmp_path / "custom" / "calendar.py").write_text("class Proc:\n    pass\n")  # found by probing: a
    for ref, message in (  # "has no attribute 'Proc'" blamed the class, not the name
        ("exits_at_import:X", "importing exits_at_import failed: SystemExit: 3"),
        ("broken:X", "importing broken failed: SyntaxError: invalid syntax"),
        ("no_such_module:X", "cannot import no_such_module:X"),
        ("my_processor:Missing", "cannot import my_processor:Missing"),
        ("not_a_processor:Thing", "not a subclass of ocean_hook.processors.base.WebhookProcessor"),
        ("my_processor", "must be 'package.module:ClassName'"),
        ("calendar:Proc", f"'calendar' is a module of Python's own, loaded before "
                          f"{tmp_path / 'custom' / 'calendar.py'}: rename calendar.py"),
    ):
        config.write_text(text.replace("my_processor:DeployBotProcessor", ref))
        with pytest.raises(ConfigProblems) as raised:
            load_config(config, env=secrets_env())
        assert f"{config}:{line} (key processors[0].class)" in str(raised.value)
        assert message in str(raised.value)
    assert str((tmp_path / "custom").resolve()) not in sys.path


def test_declarative_rules_on_a_class_processor_are_problems_not_ignored(tmp_path: Path) -> None:
    """`validate`, `match`, `delete_when`, `fetch`... beside `class:` passed `check` and did
    nothing: a delivery the validate should refuse was applied (found by probing)."""
    config = source_config(tmp_path, "custom")
    text = config.read_text()
    line = next(n for n, row in enumerate(text.splitlines(), start=1) if row.strip().startswith("kinds:"))
    config.write_text(text.replace("    kinds: [deployment]\n", "    kinds: [deployment]\n"
                                   "    validate: ['.deployment.service != \"forbidden\"']\n"
                                   "    delete_when: 'true'\n"))
    with pytest.raises(ConfigProblems) as raised:
        load_config(config, env=secrets_env())
    problems = str(raised.value)
    for offset, key in ((2, "delete_when"), (1, "validate")):
        assert (f"{config}:{line + offset} (key processors[0].{key}): is not used by a class: processor, whose own "
                "methods decide it (see mappings/custom/)") in problems


@pytest.mark.parametrize(("method", "returns"), [("should_process_event", "bool"), ("order_key", "str")])
async def test_a_processor_whose_code_raises_is_500_with_the_place_named_and_nothing_stored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, method: str, returns: str
) -> None:
    """Its own bug is not the sender's fault (a 4xx would tell the sender to give up), and not a
    delivery to keep (its filter never ran): 500, the sender sends it again once it is fixed."""
    config = source_config(tmp_path, "custom")
    folder = config.parent
    signature = f"    def {method}(self, event: WebhookEvent) -> {returns}:\n"
    code = (folder / "my_processor.py").read_text()
    assert signature in code
    bug = "        if event.payload.get('boom'):\n            raise KeyError('boom')\n"
    code = code.replace(signature, signature + bug)
    module = f"buggy_{method}"  # a name of its own: my_processor is imported already
    (folder / f"{module}.py").write_text(code)
    config.write_text(config.read_text().replace("my_processor:", f"{module}:"))
    line = next(n for n, row in enumerate(code.splitlines(), 1) if "raise KeyError('boom')" in row)
    where = f"KeyError: 'boom' (in {method}, {folder / f'{module}.py'}:{line})"
    body = json.dumps(deployment() | {"boom": True}).encode()
    headers = sign("custom", body, sample("custom", "deployment.finished")[1])

    async with serve_in_process(config, env=secrets_env()) as server, aiohttp.ClientSession() as http:
        async with http.post(server.url + "/webhooks/deploybot", data=body, headers=headers) as response:
            assert response.status == 500
            assert (await response.json())["reason"] == ("processing code failed on this delivery "
                                                         "(see ocean-hook's log); send again later")
        depth = await journal_depth(server.state_dir)
    assert sum(depth.values()) == 0
    assert f"cannot admit a delivery to /webhooks/deploybot: processing code failed: {where}" in caplog.text

    bare = tmp_path / "boom.json"
    bare.write_bytes(body)
    args = ["--config", config, "--path", "/webhooks/deploybot", *[f"--header={k}: {v}" for k, v in headers.items()]]
    (out,) = await asyncio.to_thread(replay_json, bare, *args, exit_code=1)  # the CLI runs its own loop
    assert (out["status"], out["answer"]["status"]) == ("failed", 500)
    assert out["answer"]["reason"] == f"processing code failed: {where}"



WRONG_KIND = "\n".join((
    "from ocean_hook.processors.base import RawResults",
    "from my_processor import DeployBotProcessor",
    "",
    "",
    "class Hooks:  # a user's base class: its methods are the processor's too",
    "    {hooks}",
    "",
    "",
    "class Wrong(Hooks, DeployBotProcessor):",
    "    {own}",
    "",
))


def wrong_kind_module(
    folder: Path, name: str, method: str, *, is_async: bool, in_base: bool = False
) -> tuple[Path, int]:
    """A module `name` whose class `Wrong` defines `method` with def or async def, in the class or
    in its user base class: the file and the line of that def."""
    definition = f"{'async ' if is_async else ''}def {method}(self, *args, **kwargs):\n        return RawResults()"
    code = WRONG_KIND.format(hooks=definition if in_base else "pass", own="pass" if in_base else definition)
    file = folder / f"{name}.py"
    file.write_text(code)
    return file, next(n for n, row in enumerate(code.splitlines(), 1) if f"def {method}(" in row)


@pytest.mark.parametrize(("method", "is_async", "in_base"), [
    ("validate_payload", True, False),  # a coroutine where a Verdict is read: a 500 at the door
    ("should_process_event", True, False),
    ("could_process", True, True),
    ("delivery_id", True, False),
    ("order_key", True, False),
    ("get_matching_kinds", True, False),
    ("should_retry", True, False),
])
def test_def_where_awaited_or_async_def_where_not_is_a_config_problem(
    tmp_path: Path, method: str, is_async: bool, in_base: bool
) -> None:
    """Found by probing: `check` passed both, and then every delivery failed at run time."""
    config = source_config(tmp_path, "custom")
    module = f"wrong_kind_{method}"  # a name of its own: modules are imported once per process
    file, def_line = wrong_kind_module(config.parent, module, method, is_async=is_async, in_base=in_base)
    text = config.read_text()
    config.write_text(text.replace("my_processor:DeployBotProcessor", f"{module}:Wrong"))
    line = next(n for n, row in enumerate(text.splitlines(), start=1) if row.strip().startswith("class:"))
    with pytest.raises(ConfigProblems) as raised:
        load_config(config, env=secrets_env())
    should = ("async def, but the pipeline uses its answer without awaiting it: define it with def" if is_async
              else "def, but the pipeline awaits it: define it with async def")
    assert raised.value.problems == [f"{config}:{line} (key processors[0].class): {module}:Wrong.{method} "
                                     f"({file}:{def_line}) is defined with {should}"]


def test_check_and_replay_refuse_a_processor_with_an_async_def_where_an_answer_is_read(tmp_path: Path) -> None:
    config = source_config(tmp_path, "custom")
    (config.parent / "swapped_validate.py").write_text(
        "from ocean_hook.auth.base import Verdict\nfrom my_processor import DeployBotProcessor\n\n\n"
        "class Both(DeployBotProcessor):\n    async def validate_payload(self, payload):\n"
        "        return Verdict.passed()\n")
    config.write_text(config.read_text().replace("my_processor:DeployBotProcessor", "swapped_validate:Both"))
    checked = CliRunner().invoke(app, ["check", "--config", str(config)], env=secrets_env())
    assert checked.exit_code == 1, checked.output
    assert "swapped_validate:Both.validate_payload" in " ".join(checked.output.split())  # rich wraps lines
    body = tmp_path / "delivery.json"
    body.write_bytes(sample("custom", "deployment.finished")[0])
    replayed = replay("--config", config, "--path", "/webhooks/deploybot", body)
    assert replayed.exit_code != 0
    assert "define it with def" in " ".join(replayed.output.split())


def with_class(tmp_path: Path, module: str, code: str, ref: str) -> Path:
    """The custom source's config, its processor the class `ref` of `module`.py (written from
    `code`, beside the config): the config's path."""
    config = source_config(tmp_path, "custom")
    (config.parent / f"{module}.py").write_text(code)
    config.write_text(config.read_text().replace("my_processor:DeployBotProcessor", f"{module}:{ref}"))
    return config


def replayed_sample(config: Path, exit_code: int) -> dict[str, Any]:
    """The custom sample delivery replayed as a dry run through `config`: its JSON outcome."""
    _, headers = sample("custom", "deployment.finished")
    [out] = replay_json(MAPPINGS / "custom" / "samples" / "deployment.finished.json", "--config", config, "--path",
                        "/webhooks/deploybot", "--dry-run", *[f"--header={k}: {v}" for k, v in headers.items()],
                        exit_code=exit_code)
    return out


@pytest.mark.parametrize(("handle", "error"), [
    # a plain def delegating to an async def: it was refused at load (found by probing)
    ("def handle_event(self, payload, resource, fetcher):\n        return super().handle_event(payload, resource, "
     "fetcher)", None),
    # a plain def answering at once: "object RawResults can't be used in 'await' expression", retried
    ("def handle_event(self, payload, resource, fetcher):\n        return RawResults()",
     "deploybot: handle_event must be defined with async def (it returned \"RawResults(updated=[], deleted=[])\") "
     "(not retryable)"),
])
def test_a_hook_the_pipeline_awaits_may_be_a_def_returning_an_awaitable(tmp_path: Path, handle: str,
                                                                        error: str | None) -> None:
    module = f"sync_handle_{0 if error is None else 1}"  # modules are imported once per process
    config = with_class(tmp_path, module, "from ocean_hook.processors.base import RawResults\nfrom my_processor "
                        f"import DeployBotProcessor\n\n\nclass Sync(DeployBotProcessor):\n    {handle}\n", "Sync")
    out = replayed_sample(config, exit_code=0 if error is None else 1)
    assert (out["status"], out["errors"]) == (("processed", []) if error is None else ("failed", [error]))
    # check says so, either way: only an answer tells one that returns an awaitable from one that does not
    checked = CliRunner().invoke(app, ["check", "--config", str(config)], env={**secrets_env(), "COLUMNS": "400"})
    assert checked.exit_code == 0, checked.output
    assert (f"warning: {config}:12 (key processors[0].class): {module}:Sync.handle_event "
            f"({config.parent / (module + '.py')}:6) is defined with def: the pipeline awaits what it returns, so "
            "unless it returns an awaitable, define it with async def") in checked.stderr


def test_a_plain_def_on_error_is_named_as_the_hook_not_as_ocean_hooks_code(tmp_path: Path) -> None:
    code = ("from my_processor import DeployBotProcessor\n\n\nclass Sync(DeployBotProcessor):\n"
            "    async def handle_event(self, payload, resource, fetcher):\n        raise KeyError('boom')\n\n"
            "    def on_error(self, event, error):\n        return None\n")
    config = with_class(tmp_path, "sync_on_error", code, "Sync")
    [error] = replayed_sample(config, exit_code=1)["errors"]
    assert "; deploybot: on_error must be defined with async def (it returned null)" in error
    assert "pipeline.py" not in error


def test_what_the_pipeline_can_call_as_it_needs_is_not_a_problem(tmp_path: Path) -> None:
    """Decorated coroutines (functools.wraps), static and class methods, an `async def` inherited
    from a user's base class, and WebhookProcessor's own methods all load."""
    config = source_config(tmp_path, "custom")
    (config.parent / "right_kinds.py").write_text(
        "import functools\n"
        "from my_processor import DeployBotProcessor\n\n\n"
        "def traced(f):\n"
        "    @functools.wraps(f)\n"
        "    def wrapper(*args, **kwargs):\n"
        "        return f(*args, **kwargs)\n"
        "    return wrapper\n\n\n"
        "class Base(DeployBotProcessor):\n"
        "    async def on_error(self, event, error):\n"
        "        return None\n\n\n"
        "class Right(Base):\n"
        "    @traced\n"
        "    async def handle_event(self, payload, resource, fetcher):\n"
        "        return await super().handle_event(payload, resource, fetcher)\n\n"
        "    @staticmethod\n"
        "    def should_retry(error):\n"
        "        return False\n\n"
        "    @classmethod\n"
        "    def get_matching_kinds(cls, event):\n"
        "        return ['deployment']\n")
    config.write_text(config.read_text().replace("my_processor:DeployBotProcessor", "right_kinds:Right"))
    (processor,) = load_config(config, env=secrets_env()).processors
    assert type(processor).__name__ == "Right"
