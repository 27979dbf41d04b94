"""What the commands print for programs: one JSON document per line."""

from __future__ import annotations

import json
from typing import Any


def emit(obj: Any) -> None:
    """Print one JSON line and flush (consumers read it as soon as it is written)."""
    print(json.dumps(obj, sort_keys=True), flush=True)
