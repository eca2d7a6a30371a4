"""Structured logs: every line about a delivery carries its delivery id; secrets never do."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import MutableMapping
from typing import Any

_STANDARD = set(vars(logging.makeLogRecord({})))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
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

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = self.extra or {}
        given = kwargs.get("extra")
        # the record copies `extra` into itself, so our own mapping can be handed over as it is
        kwargs["extra"] = {**extra, **given} if given else extra
        return f"[{extra.get('delivery_id', '-')}] {msg}", kwargs

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        """A plain line (no traceback, no options) skips the search for the calling source line,
        which no ocean-hook log format shows and which costs as much as formatting the line:
        `serve` writes two such lines per delivery."""
        if kwargs:
            super().log(level, msg, *args, **kwargs)
            return
        logger = self.logger
        if logger.isEnabledFor(level):
            msg, _ = self.process(msg, {})
            logger.handle(logger.makeRecord(logger.name, level, "(unknown file)", 0, msg, args, None,
                                            extra=self.extra))


def for_delivery(logger: logging.Logger, delivery_id: str | None) -> DeliveryLogger:
    return DeliveryLogger(logger, {"delivery_id": delivery_id or "-"})


class SenderErrorFilter(logging.Filter):
    """aiohttp logs a traceback at ERROR for every malformed request, which any sender can cause at
    will (and which is answered 400): those go to DEBUG, so real errors stay visible."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def quiet_sender_errors() -> None:
    logging.getLogger("aiohttp.server").addFilter(SenderErrorFilter())
