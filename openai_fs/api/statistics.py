"""What a client did, counted for ``openai-fs status``."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ClientStatistics:
    """Counts of what the client did, for ``openai-fs status``."""

    requests: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    errors: int = 0
    bytes_downloaded: int = 0
    bytes_uploaded: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"requests": dict(self.requests), "retries": self.retries, "errors": self.errors,
                "bytes_downloaded": self.bytes_downloaded, "bytes_uploaded": self.bytes_uploaded}
