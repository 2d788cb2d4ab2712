"""The emulator's runtime configuration: set from ``openai-fs serve``'s options, changed by
``PATCH /_emulator/config``, restored by ``POST /_emulator/reset``, read by the ``/v1`` handlers."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from openai_fs.emulator import errors


@dataclass
class RuntimeConfig:
    """What ``PATCH /_emulator/config`` may change at runtime."""
    ignore_range: bool = False
    page_cap: int | None = None
    latency: float = 0.0
    #: bytes per second each request's body and each response's body may move (a slower
    #: link than loopback, for benchmarks that should resemble a real network); None: no limit
    bandwidth: float | None = None

    def update(self, changes: dict) -> "RuntimeConfig":
        known = {f.name for f in fields(self)}
        for key in changes:
            if key not in known:
                raise errors.invalid(f"Unknown config key: {key}", param=key)
        new = replace(self, **changes)
        if not isinstance(new.ignore_range, bool):
            raise errors.invalid("ignore_range must be a boolean", param="ignore_range")
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
