"""Audited models: the architecture zoo (every family registered on import), training, safe loading."""

from gmint.models import architectures, zoo  # noqa: F401  (zoo first; architectures register into it)
