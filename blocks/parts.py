"""What every billing-recon block shares: fields that are sections of the core's settings tree
(required, handed to the settings as they are), the documentation link, and a clear error for a
block document saved by an older release (its fields no longer match the sections)."""

from __future__ import annotations

from typing import Self

from prefect.blocks.core import Block
from pydantic import ValidationError

from billing_recon.config import Settings
from billing_recon.config.variables import Section, model_of
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


class SectionsBlock(Block):
    """A block whose fields are sections of ``Settings``, named as there (``database``...).

    The section fields have no default: a document without them (an older release's flat
    fields) fails validation, and is never silently read as the defaults.
    """

    @classmethod
    def section_names(cls) -> list[str]:
        """The fields that hold settings sections."""
        return [name for name, info in cls.model_fields.items()
                if (held := model_of(info.annotation)) is not None and issubclass(held, Section)]

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """The block that holds ``settings``' sections of this block's kind."""
        return cls(**{name: getattr(settings, name) for name in cls.section_names()})

    def sections(self) -> dict[str, Section]:
        """The settings sections this block holds (they replace the environment's)."""
        return {name: getattr(self, name) for name in self.section_names()}
