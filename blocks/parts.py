"""What every billing-recon block shares: the documentation link, and a clear error for a
block document saved by an older release (its fields no longer match the sections)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from billing_recon.errors import UserInputError

#: Where the block types' "documentation" link points in the Prefect UI.
DOCS_URL = "https://docs.prefect.io/v3/concepts/blocks"


def stale(slug: str, name: str, exc: ValidationError) -> UserInputError:
    """The error for a saved block document that no longer validates."""
    problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                         for e in exc.errors()[:3])
    return UserInputError(
        f"block {slug}/{name} does not hold valid billing-recon settings ({problems}); it may "
        "have been saved by an older release: `billing-recon blocks register --name "
        f"{name} --overwrite` saves it again from the current settings")


def required(data: Any, *sections: str) -> Any:
    """A block's document must hold its sections: an old flat document is refused, never
    silently read as the defaults."""
    if isinstance(data, dict):
        missing = [name for name in sections if name not in data]
        if missing:
            raise ValueError(f"no {', '.join(missing)} section")
    return data
