"""Prefect Blocks: typed configuration and secrets that build the core's adapters.

Until the blocks land (the Prefect-native operations issue), configuration comes from the
environment; see ``billing_recon.config.Settings``.
"""
