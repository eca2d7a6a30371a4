"""All rendering of plans, diffs and summaries: rich text, markdown and JSON documents.

The one place that turns `Change`s into something a person or a machine reads, so `test-mapping`,
`replay --dry-run` and `serve --target dry-run` show a plan the same way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape

from ocean_hook.diff import Change
from ocean_hook.mapping.engine import KEY_FIELDS
from ocean_hook.mapping.misconfigured import Row as Misconfigured
from ocean_hook.printable import printable

_SYMBOL = {"create": "+", "update": "~", "delete": "-", "unchanged": " "}
_STYLE = {"create": "green", "update": "yellow", "delete": "red", "unchanged": "dim"}


def value_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def change_title(change: Change) -> str:
    identifier = change.identifier if isinstance(change.identifier, str) else value_text(change.identifier)
    return f"{change.blueprint}/{identifier}"


def change_lines(change: Change) -> list[str]:
    """Plain lines for one change: a header, then one line per changed field."""
    head = f"{_SYMBOL[change.action]} {change.action} {change_title(change)}"
    if change.kind:
        head += f"  (kind {change.kind})"
    lines = [head]
    for f in change.fields:
        if change.action == "create":
            lines.append(f"    + {f.path}: {value_text(f.after)}")
        else:
            lines.append(f"    ~ {f.path}: {value_text(f.before)} → {value_text(f.after)}")
    return lines


def summary_line(summary: Mapping[str, int]) -> str:
    line = (
        f"{summary.get('create', 0):,} to create, {summary.get('update', 0):,} to update, "
        f"{summary.get('delete', 0):,} to delete, {summary.get('unchanged', 0):,} unchanged"
    )
    extras = [f"{summary[k]:,} {'error' if k == 'errors' and summary[k] == 1 else k}"
              for k in ("filtered", "skipped", "misconfigured", "errors") if summary.get(k)]
    return line + (f" ({', '.join(extras)})" if extras else "")


#: SGR codes of `_STYLE`, written directly: rich lays out a line in ~40 µs, too slow for a plan
#: of 100,000 entities
_SGR = {"create": "32", "update": "33", "delete": "31", "unchanged": "2"}


def print_changes(console: Console, changes: Iterable[Change], *, show_unchanged: bool = False) -> None:
    """Many changes in one write, colored when the console is (not when piped or NO_COLOR)."""
    color = console.color_system is not None and not console.no_color
    out: list[str] = []
    for change in changes:
        if change.action == "unchanged" and not show_unchanged:
            continue
        lines = [printable(line) for line in change_lines(change)]
        if color:
            code = _SGR[change.action]
            lines = [f"\x1b[1;{code}m{lines[0]}\x1b[0m", *(f"\x1b[{code}m{x}\x1b[0m" for x in lines[1:])]
        out += lines
    if out:
        console.file.write("\n".join(out) + "\n")
        console.file.flush()


def print_change(console: Console, change: Change, *, show_unchanged: bool = False) -> None:
    print_changes(console, [change], show_unchanged=show_unchanged)


def print_errors(console: Console, errors: Iterable[str]) -> None:
    """Mapping errors, on the error console."""
    for error in errors:
        console.print(f"[red]error: {escape_text(error)}[/]", highlight=False)


def entities_text(count: int) -> str:
    return "1 entity" if count == 1 else f"{count:,} entities"


def print_misconfigured(console: Console, tally: Iterable[Misconfigured]) -> None:
    """One line per misconfigured field, however many entities."""
    for row in tally:
        console.print(f"[yellow]! {escape_text(misconfigured_line(row))}[/]", highlight=False)


def misconfigured_line(row: Misconfigured) -> str:
    kind, path, expr, count, example = row
    return f"{kind}: {path} is {_missing(path)} in {entities_text(count)} (jq: {expr}), e.g. {example}"


def _missing(path: str) -> str:
    """An empty identifier or blueprint skips the entity as null does, and is said with it."""
    return "null or empty" if path in KEY_FIELDS else "null"


#: GitHub refuses comments over 65,536 characters; leave room for what a workflow adds around it
MARKDOWN_LIMIT = 60_000


def plan_markdown(
    changes: Iterable[Change],
    summary: Mapping[str, int],
    *,
    misconfigured: Iterable[Misconfigured] = (),
    errors: Iterable[str] = (),
    title: str = "ocean-hook plan",
    limit: int = MARKDOWN_LIMIT,
) -> str:
    """A pull-request comment: summary first, then a diff block (GitHub colors +/- lines).

    It stays under `limit` characters (a comment's size limit): long lists are cut at a whole
    line with a note saying how much was left out. Payload text cannot break out of its code
    block or inline code, whatever backticks it holds.
    """
    head = [f"### {title}", "", f"**{summary_line(summary)}**", ""]
    diff = [printable(line) for change in changes if change.writes for line in change_lines(change)]
    problems = [
        f"- {_code(kind)}: {_code(path)} is {_missing(path)} in {entities_text(count)} (jq: {_code(expr)}), "
        f"e.g. {_code(example)}"
        for kind, path, expr, count, example in misconfigured
    ]
    errs = [f"- {_code(e)}" for e in errors]
    # errors matter most, then misconfigurations (at most half of what is left), then the diff
    budget = limit - sum(len(line) + 1 for line in head) - 400  # 400: fences, headings, notes
    errs, budget = _fit(errs, budget)
    problems, unused = _fit(problems, budget // 2)
    diff, _ = _fit(diff, budget - budget // 2 + unused)
    out = head
    if diff:
        fence = _fence(diff)
        out += [f"{fence}diff", *diff, fence, ""]
    else:
        out += ["No changes.", ""]
    if problems:
        out += ["<details><summary>Misconfigured fields</summary>", "", *problems, "", "</details>", ""]
    if errs:
        out += ["**Errors**", "", *errs, ""]
    return "\n".join(out)


def _fit(lines: list[str], budget: int) -> tuple[list[str], int]:
    """The lines that fit in `budget` characters, plus a note for the rest; and what is left."""
    used = 0
    for i, line in enumerate(lines):
        if used + len(line) + 1 > budget:
            rest = len(lines) - i
            return [*lines[:i], f"... {rest} more line{'s' if rest != 1 else ''} not shown (too long for a comment)"], 0
        used += len(line) + 1
    return lines, budget - used


def _fence(lines: list[str]) -> str:
    """A code fence longer than any run of backticks inside the block."""
    longest = max((len(run) for line in lines for run in re.findall(r"`+", line)), default=0)
    return "`" * max(3, longest + 1)


def _code(text: str) -> str:
    """Inline code that holds any text: more backticks than inside it, no line breaks and no
    control characters (spelled out, as in a terminal)."""
    text = printable(str(text))
    ticks = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def escape_text(text: str) -> str:
    """Text from outside (payloads, ids, files) inside rich markup: neither markup nor control codes."""
    return escape(printable(text))


def dumps(document: Any) -> str:
    """The JSON form of every machine-readable output: stable key order, two-space indent."""
    return json.dumps(document, indent=2, ensure_ascii=False, default=str)


def data_table(columns: Sequence[str], rows: Iterable[Sequence[object]], *, whole: Sequence[str] = ()) -> Any:
    """A rich table of what came from outside (delivery ids, entity titles, errors): shown as
    written, never read as rich markup ('[/]' in a title raised an error), control codes spelled
    out (an ESC in a payload would otherwise reach the operator's terminal). Columns in `whole`
    wrap onto more lines rather than being cut short: a key the user must type back."""
    from rich.table import Column, Table
    from rich.text import Text

    table = Table(*(Column(name, overflow="fold") if name in whole else name for name in columns))
    for row in rows:
        table.add_row(*(Text(printable(str(cell))) for cell in row))
    return table


def counts_table(title: str, counts: Mapping[str, int]) -> Any:
    """A small rich table of named counts (replay's processed / skipped / failed)."""
    from rich.table import Table

    table = Table(title=title, show_header=True, header_style="bold")
    for name in counts:
        table.add_column(name, justify="right")
    table.add_row(*[str(v) for v in counts.values()])
    return table


def print_outcome_header(console: Console, file: str, status: str, detail: str) -> None:
    style = {"processed": "green", "sent": "green", "skipped": "dim", "failed": "red"}.get(status, "")
    line = f"[bold {style}]{escape_text(status):>9}[/] {escape_text(file)}  {escape_text(detail)}"
    console.print(line, highlight=False)
