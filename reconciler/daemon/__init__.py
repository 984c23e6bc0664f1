"""The long-running daemon: triggers, retry backoff, the HTTP endpoints, metrics, systemd integration."""
