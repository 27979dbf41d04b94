"""``python -m billing_recon_cli``: the same as the ``billing-recon`` command."""

from billing_recon_cli.main import main

raise SystemExit(main())
