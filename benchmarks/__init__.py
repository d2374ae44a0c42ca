"""Benchmarks: the audit grid beside the paper's Table 2, and Weight-Modifier engine speed."""
