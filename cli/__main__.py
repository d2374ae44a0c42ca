"""`python -m gmint_cli ...` — the same app as the `gmint` console script (used under torchrun)."""

from __future__ import annotations

from gmint_cli.app import main

main()
