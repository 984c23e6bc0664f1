"""A request's setup steps: which of the shipped scripts run in its container, and the values they are given.

Only the scripts and file templates in `steps/` ever run, with package names taken from the profiles' package
sets. A request's values reach the container as arguments (`sh -s -- ARG...`, each passed as one argv entry)
or inside files rendered here and escaped for their format, then passed base64-encoded: a description of
`$(reboot)` is only text on a page.
"""

from __future__ import annotations

import base64
import functools
import html
import re
from collections.abc import Mapping
from pathlib import Path

from reconciler.model.setup import Setup, Step
from reconciler.model.vocab import StepName
from reconciler.parse import one_line

STEPS_DIR = Path(__file__).resolve().parent / "steps"
NETWORK_WAIT = 120  # seconds the first step waits for a default route
HEALTH_WAIT = 60  # seconds the health path has to answer
WEB_SERVERS = ("nginx", "apache")
DOCKER_SET = "docker"
NODE_EXPORTER_SET = "node-exporter"
DOCKER_FEATURES = ("nesting=1", "keyctl=1")  # what Docker in an unprivileged container needs; root@pam only
_TOKEN = re.compile(r"\{\{(\w+)\}\}")
# What a request may put in a web server's configuration: DNS names, labels, and health paths as the request
# format allows them (service.health); nothing that quotes, ends a directive or names a variable.
_CONF_SAFE = re.compile(r"^[A-Za-z0-9._/:~%-]+$")


@functools.cache
def template(name: str) -> str:
    """A file shipped in steps/."""
    return (STEPS_DIR / name).read_text(encoding="utf-8")


def render(name: str, values: Mapping[str, str]) -> str:
    """A shipped template with its {{tokens}} replaced; every token must have a value."""
    return _TOKEN.sub(lambda m: values[m.group(1)], template(name))


@functools.cache
def script(body: str) -> str:
    """A step's whole script: the shared prelude, then the body as a function whose stdin is /dev/null.

    The script itself arrives on stdin; the function is read whole before it runs, so no command in it can
    swallow the rest of the script, and none can wait for input.
    """
    return f'{template("prelude.sh")}\nmain() {{\n{template(body)}}}\n\nmain "$@" </dev/null\n'


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _conf(value: str) -> str:
    """A value for a web server config; request values here are DNS names, labels and paths, checked again."""
    if not _CONF_SAFE.fullmatch(value):  # match() with `$` would let a trailing line break through
        raise ValueError(f"unsafe value for a web server configuration: {value!r}")
    return value


def web_site(server: str, name: str, path: str, domain: str | None, port: int, docroot: str, health: str | None) -> str:
    """The site file of a request for nginx or apache."""
    values = {
        "name": name,
        "path": one_line(path),  # in a comment line: a line break or (Apache) a trailing backslash would end it
        "port": str(port),
        "server_name": _conf(domain) if domain else ("_" if server == "nginx" else name),
        "docroot": _conf(docroot),
        "health_path": _conf(health) if health else "",
        "listen": "" if port == 80 else f"Listen {port}\n",
    }
    values["health"] = render(f"{server}-health.conf", values) if health else ""
    return render(f"{server}-site.conf", values)


def index_page(name: str, hostname: str, domain: str | None, description: str, docroot: str) -> str:
    return render(
        "index.html",
        {
            "title": html.escape(domain or hostname),
            "description": html.escape(description or f"The {name} workload.").replace("\n", "<br>\n"),
            "name": html.escape(name),
            "docroot": html.escape(docroot),
        },
    )


def build_setup(
    *,
    name: str,
    path: str,
    hostname: str,
    description: str,
    actions: list[str],
    package_sets: list[str],
    packages: Mapping[str, list[str]],
    web_server: str,
    monitoring: bool,
    domain: str | None,
    port: int | None,
    health: str | None,
) -> Setup:
    """The ordered steps for one request (pure): sets are names from the profile, packages their resolution."""
    sets = list(dict.fromkeys([*package_sets, *([web_server] if web_server in WEB_SERVERS else [])]))
    if monitoring and NODE_EXPORTER_SET not in sets:
        sets.append(NODE_EXPORTER_SET)
    names = tuple(dict.fromkeys(p for s in sets for p in packages[s]))
    return _steps(
        name, path, hostname, description, tuple(actions), tuple(sets), names, web_server, domain, port, health
    )


@functools.lru_cache(maxsize=8192)
def _steps(
    name: str,
    path: str,
    hostname: str,
    description: str,
    actions: tuple[str, ...],
    sets: tuple[str, ...],
    names: tuple[str, ...],
    web_server: str,
    domain: str | None,
    port: int | None,
    health: str | None,
) -> Setup:
    # Cached: every pass resolves every request again, and nearly all are unchanged.
    docker = DOCKER_SET in sets
    docroot = f"/var/www/{name}"
    steps = [
        Step(
            StepName.WAIT_NETWORK, "wait for the container's network", script("wait-network.sh"), (str(NETWORK_WAIT),)
        ),
        Step(StepName.APT_UPDATE, "refresh the package lists", script("apt-update.sh")),
    ]
    if "install-packages" in actions and names:
        summary = f"install {', '.join(sets)} ({' '.join(names)})"
        steps.append(Step(StepName.INSTALL_PACKAGES, summary, script("install-packages.sh"), tuple(names)))
    web = web_server in WEB_SERVERS
    if web and "prepare-docroot" in actions:
        page = index_page(name, hostname, domain, description, docroot)
        steps.append(
            Step(StepName.PREPARE_DOCROOT, f"prepare {docroot}", script("prepare-docroot.sh"), (docroot, _b64(page)))
        )
    if web and "write-web-server-config" in actions and port is not None:
        site = web_site(web_server, name, path, domain, port, docroot, health)
        summary = f"write the {web_server} site for {domain or hostname} on port {port} and check it"
        steps.append(
            Step(StepName.WRITE_WEB_SERVER_CONFIG, summary, script(f"{web_server}-site.sh"), (name, _b64(site)))
        )
    if NODE_EXPORTER_SET in sets:
        steps.append(Step(StepName.ENABLE_NODE_EXPORTER, "enable node exporter", script("enable-node-exporter.sh")))
    if docker:
        steps.append(Step(StepName.ENABLE_DOCKER, "enable the Docker engine", script("enable-docker.sh")))
    if health and port is not None:
        summary = f"check that {health} answers on port {port}"
        steps.append(
            Step(StepName.CHECK_HEALTH, summary, script("check-health.sh"), (str(port), health, str(HEALTH_WAIT)))
        )
    return Setup(tuple(steps), DOCKER_FEATURES if docker else ())
