"""Hostile listing entries: raw JSON values that tests add to every ``GET /files`` page, so
that a client meets what a broken or malicious server may send (ids such as ``../../x``, with
``/`` or NUL, empty or huge; missing fields, wrong types, negative sizes...). They are never
validated. Set through ``POST /_emulator/listing_extras``."""

from __future__ import annotations

from typing import Any


class ListingExtras:
    def __init__(self) -> None:
        self._entries: list[tuple[str | None, Any]] = []

    def add(self, entries: list, purpose: str | None = None) -> None:
        """Append these entries to listings of ``purpose`` (None: to every listing)."""
        self._entries += [(purpose, entry) for entry in entries]

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def list(self) -> list[dict]:
        return [{"purpose": purpose, "entry": entry} for purpose, entry in self._entries]

    def for_listing(self, purpose: str | None) -> list[Any]:
        """The entries a listing filtered on ``purpose`` carries (all of them without a filter)."""
        return [entry for p, entry in self._entries if purpose is None or p is None or p == purpose]

    def by_id(self, file_id: str) -> dict | None:
        """The first entry that is an object whose ``id`` is exactly ``file_id``."""
        for _, entry in self._entries:
            if isinstance(entry, dict) and entry.get("id") == file_id:
                return entry
        return None
