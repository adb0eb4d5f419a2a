"""Workers: one process per device slot that claims, runs and reports trials."""
