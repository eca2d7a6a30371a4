"""Text from outside (payload values, ids, file names) on its way to a terminal or a log line.

A control character in it could move the cursor, recolor or clear the operator's terminal
(ESC sequences), or start what looks like a new log line (a newline): each is spelled out as
`\\xNN` instead, so the text is shown for what it is.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
