"""A parser of text/event-stream lines into events (sync and async streams alike)."""

from __future__ import annotations

import json

from pretrainer_client.types import Event


class EventParser:
    """Feed lines; an Event comes out at each blank line that ends a frame."""

    def __init__(self) -> None:
        self._event = "message"
        self._data: list[str] = []
        self._id: int | None = None

    def feed(self, line: str) -> Event | None:
        line = line.rstrip("\r\n")
        if not line:
            return self._flush()
        if line.startswith(":"):  # a comment: keep-alive
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")  # one optional space after the colon
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and value.isdigit():
            self._id = int(value)
        return None

    def _flush(self) -> Event | None:
        if not self._data:
            return None
        event = Event(self._event, json.loads("\n".join(self._data)), self._id)
        self._event, self._data, self._id = "message", [], None
        return event
