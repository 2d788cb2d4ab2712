"""The emulator's runtime configuration: set from ``openai-fs serve``'s options, changed by
``PATCH /_emulator/config``, restored by ``POST /_emulator/reset``, read by the ``/v1`` handlers."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from openai_fs.emulator import errors

#: The purposes whose content the real service hands back; ``GET /files/{id}/content`` of any
#: other answers 400 "Not allowed to download files of purpose: P" (spec/NOTES.md, "Where the
#: real service differs": a table given in a public reply, not an official one).
REAL_DOWNLOADABLE: tuple[str, ...] = ("batch", "vision", "assistants_output", "batch_output",
                                      "fine-tune-results")
#: ``downloadable`` value that serves the content of every purpose.
ALL_PURPOSES = "all"


def downloadable_value(value: object) -> str | list[str]:
    """``"all"`` or a sorted list of distinct purposes; ValueError for anything else."""
    if value == ALL_PURPOSES:
        return ALL_PURPOSES
    if isinstance(value, (list, tuple)) and all(isinstance(p, str) and p for p in value):
        return sorted(set(value))
    raise ValueError(f"downloadable must be {ALL_PURPOSES!r} or a list of purposes")


def parse_downloadable(text: str) -> str | list[str]:
    """The command line's form: ``all`` or comma-separated purposes (empty: none)."""
    text = text.strip()
    if text == ALL_PURPOSES:
        return ALL_PURPOSES
    return downloadable_value([p.strip() for p in text.split(",") if p.strip()])


def _real_downloadable() -> list[str]:
    return downloadable_value(REAL_DOWNLOADABLE)  # type: ignore[return-value]


@dataclass
class RuntimeConfig:
    """What ``PATCH /_emulator/config`` may change at runtime."""
    #: False (the real service): content is sent whole with 200, chunked, without Content-Length
    #: or Accept-Ranges, whatever the Range header asks. True: Accept-Ranges, 206 for a single
    #: range, 416 for an unsatisfiable one, and a Content-Length on every content response.
    honour_range: bool = False
    #: purposes whose content is served (``"all"``: every purpose); by default the real service's
    downloadable: str | list[str] = field(default_factory=_real_downloadable)
    page_cap: int | None = None
    latency: float = 0.0
    #: bytes per second each request's body and each response's body may move (a slower
    #: link than loopback, for benchmarks that should resemble a real network); None: no limit
    bandwidth: float | None = None

    def update(self, changes: dict) -> "RuntimeConfig":
        changes = dict(changes)
        if "ignore_range" in changes:
            # the name (and inverse meaning) this key had before the emulator followed the real
            # service by default; still accepted for code written against it
            ignore = changes.pop("ignore_range")
            if not isinstance(ignore, bool):
                raise errors.invalid("ignore_range must be a boolean", param="ignore_range")
            if changes.get("honour_range", not ignore) is ignore:
                raise errors.invalid("ignore_range and honour_range contradict each other", param="ignore_range")
            changes["honour_range"] = not ignore
        known = {f.name for f in fields(self)}
        for key in changes:
            if key not in known:
                raise errors.invalid(f"Unknown config key: {key}", param=key)
        new = replace(self, **changes)
        try:
            new.downloadable = downloadable_value(new.downloadable)
        except ValueError as exc:
            raise errors.invalid(str(exc), param="downloadable") from None
        if not isinstance(new.honour_range, bool):
            raise errors.invalid("honour_range must be a boolean", param="honour_range")
        if new.page_cap is not None and (isinstance(new.page_cap, bool) or not isinstance(new.page_cap, int)
                                         or new.page_cap < 1):
            raise errors.invalid("page_cap must be null or a positive integer", param="page_cap")
        if isinstance(new.latency, bool) or not isinstance(new.latency, (int, float)) or new.latency < 0:
            raise errors.invalid("latency must be a non-negative number of seconds", param="latency")
        new.latency = float(new.latency)
        if new.bandwidth is not None and (isinstance(new.bandwidth, bool)
                                          or not isinstance(new.bandwidth, (int, float))
                                          or new.bandwidth <= 0):
            raise errors.invalid("bandwidth must be null or a positive number of bytes per second",
                                 param="bandwidth")
        return new

    def serves_content(self, purpose: str) -> bool:
        return self.downloadable == ALL_PURPOSES or purpose in self.downloadable
