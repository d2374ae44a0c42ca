"""The assessment stage: from a MINT classifier and feature stores to figures an auditor can defend.

`metrics` (AUC, TPR at low FPR, bootstrap intervals) → `evaluate` (held-out rows, baselines, negative
control) → `report` (tables, JSON, plots); for new samples, `scoring` (candidates' scores and the external
calibration) → `verdict` (the set-level test).
"""
