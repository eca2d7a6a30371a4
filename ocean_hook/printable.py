"""Text from outside (payload values, ids, file names) on its way to a terminal or a log line.

A control character in it could move the cursor, recolor or clear the operator's terminal
(ESC sequences), or start what looks like a new log line (a newline): each is spelled out as
`\\xNN` instead, so the text is shown for what it is. So are the characters that reorder text
on screen (bidirectional overrides and isolates, U+202E say: "Trojan Source") and the Unicode
line separators, as `\\uNNNN`.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def _spelled(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    return _CONTROL.sub(_spelled, text)
