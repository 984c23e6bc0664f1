"""sd_notify without a dependency: READY, WATCHDOG, STATUS and STOPPING on $NOTIFY_SOCKET."""

from __future__ import annotations

import contextlib
import os
import socket
import time


class Notifier:
    """Talks to systemd when run under Type=notify; does nothing otherwise."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC", "")
        # Ping at twice the rate systemd expects, as sd_watchdog_enabled(3) advises.
        self.watchdog_interval = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else None
        self._last_ping = 0.0

    def notify(self, message: str) -> None:
        if not self._address:
            return
        # systemd may have gone away: there is then nobody to tell.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock, contextlib.suppress(OSError):
            sock.sendto(message.encode(), self._address)

    def ready(self, status: str) -> None:
        self.notify(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def watchdog(self) -> None:
        """Ping the watchdog, at most at the rate it needs."""
        if self.watchdog_interval is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog_interval / 2:
            self._last_ping = now
            self.notify("WATCHDOG=1")
