"""`reconciler reconcile [NAME…]`: ask the running daemon for a pass now, wait for it, print what changed.

The daemon's POST /reconcile answers only the bearer token named by `http.api_token_env`; this command reads
the same variable. It never starts a pass of its own: without a daemon it says so and points at `once`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from reconciler.cli.common import EXIT_ERROR, EXIT_FAILED
from reconciler.config import DEFAULT_CONFIG, HttpConfig, load_config, read_secret
from reconciler.model.errors import ConfigError
from reconciler.parse import dump_yaml

SLACK = 30.0  # s the client waits beyond the daemon's own wait: the pass may be under way when the wait ends


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `reconcile`."""
    p.add_argument(
        "names", nargs="*", metavar="NAME", help="wait for these requests to settle (default: the pass only)"
    )
    p.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help=f"the daemon's config: its http.listen and http.api_token_env (default: {DEFAULT_CONFIG})",
    )
    p.add_argument("--url", help="the daemon's listener, e.g. http://127.0.0.1:9105 (default: from the config)")
    p.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds to wait for the pass and for named requests to leave Pending and Provisioning",
    )
    p.add_argument(
        "-o", "--output", choices=("text", "json", "yaml"), default="text", help="text for people, or a document"
    )
    p.epilog = (
        "exit status: 0; 1 when a named request (without names: any request shown) is Failed or Invalid; "
        "2 no daemon, a refused token, a failed pass or the timeout"
    )


def cmd_reconcile(args: argparse.Namespace, out: TextIO) -> int:
    """Ask the daemon for a pass now and print its answer."""
    http_config = _http_config(args)
    url = args.url or _local_url(http_config.listen)
    token = read_secret(http_config.api_token_env, dict(os.environ))
    if token is None:
        raise ConfigError(
            http_config.api_token_env,
            [f"not set: export the daemon's API token as {http_config.api_token_env} (http.api_token_env)"],
        )
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ConfigError("--url", [f"{url}: give http://HOST:PORT, the daemon's http.listen"])
    if args.output == "text":
        who = f" for {', '.join(args.names)}" if args.names else ""
        sys.stderr.write(f"► asking the daemon at {url} for a pass{who}\n")
    began = time.monotonic()
    body = json.dumps({"names": args.names, "wait": args.timeout}).encode()
    try:
        conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=args.timeout + SLACK)
        conn.request(
            "POST",
            "/reconcile",
            body,
            {"Authorization": f"Bearer {token.reveal()}", "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        status, raw = response.status, response.read(16 * 1024 * 1024)
        conn.close()
    except OSError as exc:  # refused, no such host, reset, timed out
        reason = "nothing listens there" if isinstance(exc, ConnectionRefusedError) else type(exc).__name__
        sys.stderr.write(
            f"reconciler: no daemon answers at {url} ({reason}). Is `reconciler run` running? "
            "To reconcile without one, run `reconciler once`.\n"
        )
        return EXIT_ERROR
    try:
        doc: dict[str, Any] = json.loads(raw)
    except ValueError:
        sys.stderr.write(f"reconciler: {url} answered HTTP {status} without JSON: is it the reconciler?\n")
        return EXIT_ERROR
    if status in (401, 503) or "passes" not in doc:
        hint = {
            401: f"the daemon refused the token: {http_config.api_token_env} must hold the daemon's own",
            503: f"{doc.get('error', 'unavailable')}; set {http_config.api_token_env} in the daemon's environment",
        }.get(status, str(doc.get("error", f"HTTP {status}")))
        sys.stderr.write(f"reconciler: {hint}\n")
        return EXIT_ERROR
    if args.output == "text":
        out.write(render(doc, time.monotonic() - began))
    else:
        out.write(json.dumps(doc, indent=2) + "\n" if args.output == "json" else dump_yaml(doc))
    if doc["error"] or doc["unknown"]:
        if args.output != "text":
            sys.stderr.write(f"reconciler: {doc['error'] or 'no request named ' + ', '.join(doc['unknown'])}\n")
        return EXIT_ERROR
    return EXIT_FAILED if any(r["phase"] in ("Failed", "Invalid") for r in doc["requests"]) else 0


def _http_config(args: argparse.Namespace) -> HttpConfig:
    """The daemon's listener settings: from its config, or the defaults when --url is given without one."""
    path = args.config or DEFAULT_CONFIG
    if args.url and args.config is None and not path.exists():
        return HttpConfig()
    return load_config(path).http


def _local_url(listen: str) -> str:
    """The URL to reach a listener from this machine: a wildcard address is reached on loopback."""
    host, port = listen.rsplit(":", 1)
    host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "::": "[::1]"}.get(host, host)
    return f"http://{host}:{port}"


def render(doc: dict[str, Any], seconds: float) -> str:
    """The answer for people: each pass, the jobs started, the requests named or changed, and the outcome."""
    lines = []
    for p in doc["passes"]:
        if p["error"]:
            lines.append(f"✗ pass {p['number']} failed: {p['error']}")
            continue
        pushed = f", pushed {p['commit'][:12]}" if p["commit"] else ", nothing to commit"
        lines.append(f"✔ pass {p['number']} done at {(p['revision'] or 'no revision')[:12]}{pushed}")
    for job in doc["started"]:
        lines.append(f"  started job {job['job']} for {job['request']}")
    for r in doc["requests"]:
        where = " ".join(str(v) for v in (r["vmid"], r["node"], r["address"], r["domain"]) if v is not None)
        lines.append(f"  {r['name']}: {r['phase']}{' (' + where + ')' if where else ''}: {r['message']}")
        lines.extend(f"    {problem}" for problem in r["problems"])
    if not doc["requests"] and not doc["error"]:
        lines.append("  no request changed")
    for name in doc["unknown"]:
        lines.append(f"✗ no request named {name}")
    if doc["error"]:
        lines.append(f"✗ {doc['error']}")
    failing = [r["name"] for r in doc["requests"] if r["phase"] in ("Failed", "Invalid")]
    verdict = f"{', '.join(failing)} failing" if failing else "done"
    lines.append(f"{verdict} in {seconds:.1f} s")
    return "\n".join(lines) + "\n"
