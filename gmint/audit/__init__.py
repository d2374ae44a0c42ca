"""`gmint audit`: one configuration, one resumable run, one report (JSON and a self-contained HTML page)."""
