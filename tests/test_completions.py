"""completions/: generated from the CLI, up to date, and they complete in a real bash."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from typer.testing import CliRunner

from ocean_hook.cli import app

ROOT = Path(__file__).resolve().parent.parent


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_completions", ROOT / "scripts" / "gen_completions.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def complete_bash(line: str) -> list[str]:
    """What the CLI answers the bash script for the words of `line` (the last one being typed)."""
    words = line.split(" ")
    env = {"_OCEAN_HOOK_COMPLETE": "complete_bash", "COMP_WORDS": line, "COMP_CWORD": str(len(words) - 1)}
    result = CliRunner().invoke(app, [], prog_name="ocean-hook", env=env)
    assert result.exit_code == 0, result.output
    return result.stdout.split()


def test_checked_in_scripts_are_up_to_date(tmp_path: Path) -> None:
    gen = generator()
    written = gen.generate(tmp_path)
    assert {p.name for p in written} == {"ocean-hook.bash", "_ocean-hook", "ocean-hook.fish"}
    for path in written:
        checked_in = ROOT / "completions" / path.name
        assert checked_in.is_file(), f"{checked_in} missing: run python scripts/gen_completions.py"
        assert checked_in.read_text() == path.read_text(), (
            f"{checked_in} is out of date: run python scripts/gen_completions.py"
        )
    assert (ROOT / "completions" / "_ocean-hook").read_text().startswith("#compdef ocean-hook\n")


def test_bash_completes_commands_subcommands_and_choices() -> None:
    assert complete_bash("ocean-hook te") == ["test-mapping"]
    assert {"init", "check", "serve", "replay", "catalog", "deliveries"} <= set(complete_bash("ocean-hook "))
    assert complete_bash("ocean-hook catalog ex") == ["export"]
    assert complete_bash("ocean-hook init --source p") == ["pagerduty"]
    assert "markdown" in complete_bash("ocean-hook test-mapping --format ")


def test_the_bash_script_completes_in_bash() -> None:
    """Source the checked-in file in bash and press Tab after `ocean-hook te`."""
    script = ROOT / "completions" / "ocean-hook.bash"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("_OCEAN_HOOK_COMPLETE", None)
    done = subprocess.run(
        ["bash", "--norc", "-c",
         f'source "{script}"; COMP_WORDS=(ocean-hook te); COMP_CWORD=1; '
         '_ocean_hook_completion ocean-hook; printf "%s\\n" "${COMPREPLY[@]}"'],
        env=env, capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["test-mapping"]
