"""Report: the files the reconciler writes back to Git (status, Caddy services)."""
