"""Structured logs: every line about a delivery carries its delivery id; secrets never do."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from ocean_hook.printable import printable

_STANDARD = set(vars(logging.makeLogRecord({})))


class _SecondStamp:
    """`time.strftime` of the current second, redone only when the second changes: `serve`
    writes two lines per delivery, and formatting the date was a fifth of each line's cost."""

    def __init__(self, fmt: str, convert: Callable[[float], time.struct_time]) -> None:
        self.fmt, self.convert = fmt, convert
        self.second, self.text = -1, ""

    def __call__(self, created: float) -> str:
        second = int(created)
        if second != self.second:
            self.second, self.text = second, time.strftime(self.fmt, self.convert(second))
        return self.text


class TextFormatter(logging.Formatter):
    """`2026-11-29 05:35:28,183 INFO ocean_hook.server: message`: the standard library's
    `%(asctime)s %(levelname)s %(name)s: %(message)s`, byte for byte, at a fraction of the cost,
    except that control characters in the message are spelled out (`printable.py`)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._stamp = _SecondStamp(self.default_time_format, time.localtime)

    def format(self, record: logging.LogRecord) -> str:
        stamp = f"{self._stamp(record.created)},{int(record.msecs):03d}"
        message = record.getMessage()
        if not message.isprintable():  # a payload's text in it must not forge a line or drive the terminal
            message = printable(message)
        line = f"{stamp} {record.levelname} {record.name}: {message}"
        return line + self._trace(record) if record.exc_info or record.exc_text or record.stack_info else line

    def _trace(self, record: logging.LogRecord) -> str:
        """The traceback and stack lines the standard formatter puts after the message."""
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        trace = f"\n{record.exc_text}" if record.exc_text else ""
        return trace + (f"\n{self.formatStack(record.stack_info)}" if record.stack_info else "")


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._stamp = _SecondStamp("%Y-%m-%dT%H:%M:%S", time.gmtime)

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 3),
            "time": self._stamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        doc.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class DeliveryLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger bound to one delivery: its id goes on every line (as text prefix and JSON field)."""

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        """A plain line (no traceback, no options) skips the search for the calling source line,
        which no ocean-hook log format shows and which costs as much as formatting the line:
        `serve` writes two such lines per delivery."""
        logger = self.logger
        if not logger.isEnabledFor(level):
            return
        extra = self.extra or {}
        msg = self._prefixed(msg, str(extra.get("delivery_id", "-")), args)
        if kwargs:
            given = kwargs.get("extra")
            kwargs["extra"] = {**extra, **given} if given else extra
            logger.log(level, msg, *args, **kwargs)
            return
        logger.handle(logger.makeRecord(logger.name, level, "(unknown file)", 0, msg, args, None, extra=extra))

    @staticmethod
    def _prefixed(msg: Any, delivery_id: str, args: tuple[Any, ...]) -> str:
        """The id is the sender's text: a '%' in it must reach the line as written, not be read as
        a place for an argument (which lost the line to a logging error)."""
        return f"[{delivery_id.replace('%', '%%') if args else delivery_id}] {msg}"


def for_delivery(logger: logging.Logger, delivery_id: str | None) -> DeliveryLogger:
    return DeliveryLogger(logger, {"delivery_id": delivery_id or "-"})


class SenderErrorFilter(logging.Filter):
    """aiohttp logs a traceback at ERROR for every malformed request, which any sender can cause at
    will (and which is answered 400), for a body that does not decode as its Content-Encoding
    (once answered 400, again as aiohttp reads past it) and for a sender hanging up mid-body:
    those go to DEBUG, so real errors stay visible."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError
        from aiohttp.web_protocol import RequestPayloadError

        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError | RequestPayloadError | ConnectionResetError):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def quiet_sender_errors() -> None:
    logging.getLogger("aiohttp.server").addFilter(SenderErrorFilter())
