"""The assessment stage: from a MINT classifier and feature stores to figures an auditor can defend.

`metrics` (AUC, TPR at low FPR, bootstrap intervals) → `evaluate` (held-out rows, baselines, negative
control) → `audit` (scores for new samples and the set-level verdict) → `report` (tables, JSON, plots).
"""
