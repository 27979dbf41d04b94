"""``billing-recon blocks register``: the block types on the server, and a block set to start from.

The documents are made from the current environment and defaults (what the CLI would use
without blocks), so registering on a configured machine moves its configuration to the server.
Secret values are saved, never printed.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL

from billing_recon.config import Settings, load
from billing_recon.errors import UserInputError
from billing_recon_blocks.settings import BLOCK_TYPES, DEFAULT_BLOCK_SET, AnyBlock

Print = Callable[[str], None]


def register_block_types() -> list[str]:
    """Register (idempotently) every block type and schema; their slugs."""
    for cls in BLOCK_TYPES:
        cls.register_type_and_schema()
    return [cls.get_block_type_slug() for cls in BLOCK_TYPES]


def default_blocks(settings: Settings | None = None) -> list[AnyBlock]:
    """One block of each type holding ``settings`` (default: the environment's)."""
    settings = settings or load()
    return [cls.from_settings(settings) for cls in BLOCK_TYPES]


def shown(block: AnyBlock) -> str:
    """The block's values as JSON, secrets masked (pydantic prints SecretStr as stars)."""
    data = block.model_dump(mode="json", exclude={"block_type_slug"})
    return json.dumps(data, sort_keys=True)


def _exists(client: SyncPrefectClient, block: AnyBlock, name: str) -> bool:
    try:
        client.read_block_document_by_name(name, block.get_block_type_slug(),
                                           include_secrets=False)
    except ObjectNotFound:
        return False
    return True


def save_block_set(blocks: list[AnyBlock], name: str, overwrite: bool, out: Print) -> int:
    """Save each block under ``name``; an existing one is kept unless ``overwrite``."""
    saved = 0
    with get_client(sync_client=True) as client:
        for block in blocks:
            ref = f"{block.get_block_type_slug()}/{name}"
            if not overwrite and _exists(client, block, name):
                out(f"kept     {ref} (exists; --overwrite replaces it)")
                continue
            block.save(name, overwrite=overwrite)
            saved += 1
            out(f"saved    {ref} {shown(block)}")
    return saved


def register(name: str = DEFAULT_BLOCK_SET, overwrite: bool = False, out: Print = print) -> int:
    """The ``blocks register`` command: register the types, save the defaults; exit code 0."""
    blocks = default_blocks()  # a bad environment is reported before the server is touched
    try:
        for slug in register_block_types():
            out(f"registered block type {slug}")
        save_block_set(blocks, name, overwrite, out)
    except httpx.HTTPError as exc:
        raise UserInputError(f"cannot reach the Prefect API at {PREFECT_API_URL.value()}: "
                             f"{exc}") from exc
    out(f"flows load them with BILLING_RECON_BLOCKS={name} (deployments: the name "
        f"{DEFAULT_BLOCK_SET!r})")
    return 0
