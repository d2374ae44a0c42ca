"""Datasets: readers (registered on import), membership splits, preprocessing."""

from gmint.data import readers  # noqa: F401  (registers every reader in DATASETS)
