"""gmint's command line (installed as the `gmint_cli` package, console script `gmint`)."""
