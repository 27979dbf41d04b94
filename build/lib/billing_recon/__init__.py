"""billing-recon: a safe billing-discrepancy agent.

The core package never imports Prefect; orchestration lives in the top-level
``flows``, ``tasks`` and ``blocks`` packages.
"""

__version__ = "0.1.0"
