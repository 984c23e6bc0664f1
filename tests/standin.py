#!/usr/bin/env python3
"""A stand-in for Proxmox VE's `pct` for the integration tests: real Debian roots, no Proxmox.

What it models
--------------
* ``pct exec VMID -- CMD...`` runs CMD as root in a Debian 12 root of its own for that VMID: an overlayfs whose lower
  layer is a shared, read-only cache root (see `build_cache`), entered with chroot inside a network namespace of its
  own (a veth pair to the host, a /30 out of 10.203.0.0/16, NAT to the outside so apt reaches the mirror). The
  environment is cleared to what lxc-attach gives (PATH, HOME, LANG), stdin/stdout/stderr are the caller's and the
  exit status is CMD's, as with the real ``pct exec``. The stand-in `exec`s into CMD, so signalling the ``pct``
  process signals CMD.
* ``pct set VMID --features X`` records X (`PctStandIn.features`).
* Every call is appended to ``STATE/calls.jsonl`` (`PctStandIn.calls`).
* Services behave as in a booted Proxmox container (systemd) as far as init.d scripts can make them. No systemd
  runs in a chroot, so each container gets, in its own upper layer (never in the cache):
  - ``/usr/sbin/policy-rc.d``: without one, invoke-rc.d in a chroot (no runlevel, no /sbin/init) starts nothing.
    It starts an enabled service when its package is installed, and, as systemd's deb-systemd-invoke does, a
    service that fails to start does not fail the install.
  - ``/usr/local/sbin/systemctl``: start/stop/restart/reload/status/is-active and ``enable --now`` go to
    ``/etc/init.d/UNIT``; everything else (enable, disable, is-enabled, daemon-reload, ...) to the real systemctl,
    which does those offline. ``systemctl start docker`` waits for the engine as systemd would (Type=notify) and
    fails with dockerd's own errors when it dies.
  Services run in the container's network namespace: a port they open is reachable from ``pct exec`` (``curl
  http://127.0.0.1/``), not from the host.

What it does not model
----------------------
* No PID, UTS, IPC, user or cgroup isolation: container processes see the host's processes (/proc is the host's)
  and could signal them; the hostname is the host's; there is no /sys. /dev is a small one of the container's own.
* No container life cycle (create, start, stop, status, config, resources, other subcommands): a VMID's root exists
  from its first ``exec`` (or `PctStandIn.root`) until `PctStandIn.cleanup`. ``--features`` changes nothing.
* Units without an init.d script cannot run; the shim says so and fails instead of pretending.
* Docker does not run: dockerd needs /sys/fs/cgroup (it panics with "cannot statfs cgroup root") and finds no
  storage driver but vfs on an overlayfs root. Mounting sysfs and cgroup2 into the chroot would let it start, but
  then the engine works in the host's cgroup tree, so it is not done. Where the init script's ``ulimit -n 1048576``
  is refused (a process tree without CAP_SYS_RESOURCE), it fails even before dockerd runs.
* The cache's apt lists are as old as the cache: a container's ``apt-get update`` brings newer ones, and then newer
  package versions come from the mirror instead of the cache.

Everything needs root, debootstrap, iproute2, nftables and overlayfs; `missing` says what is absent.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# systemd is in the cache root because Proxmox's Debian templates have it, and the real systemctl is what answers
# enable/disable/is-enabled offline in the containers.
BASE_INCLUDE = ("systemd",)
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# ip, mount, nft and debootstrap live in sbin, which a PATH from sshd's forced command or a daemon may lack.
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CONTAINER_NET = ipaddress.IPv4Network("10.203.0.0/16")
# Shared by every stand-in on this machine: which sessions need ip_forward, and its value before the first one.
GLOBAL_DIR = Path("/run/reconciler-standin")
REQUIRED_TOOLS = ("debootstrap", "ip", "nft", "chroot", "mount", "umount")
# Exit status when the stand-in itself refuses or fails (bad arguments, unsupported subcommand, no container).
STANDIN_FAILED = 2

APT_KEEP_DEBS = """\
// pct stand-in: containers install from this root's /var/cache/apt/archives, so never clean it after an install.
Binary::apt::APT::Keep-Downloaded-Packages "true";
APT::Keep-Downloaded-Packages "true";
// Every container's first apt-get update would write its own 40 MB copy of this source package cache; none needs it.
Dir::Cache::srcpkgcache "";
"""

# The cache build runs apt in a chroot on the host: nothing it installs may start there.
BUILD_POLICY_RC_D = "#!/bin/sh\n# pct stand-in cache build: start nothing on the host.\nexit 101\n"

# Package installs start services with invoke-rc.d, which in a chroot finds no runlevel and no init and then starts
# nothing; it asks policy-rc.d, so this one answers as a booted Proxmox container (systemd, runlevel 2) would.
CONTAINER_POLICY_RC_D = """\
#!/bin/sh
# pct stand-in: no init system runs in this chroot; answer invoke-rc.d as a booted systemd container would.
[ "$1" = --quiet ] && shift
service=$1 action=$2
enabled() {
    for link in /etc/rc2.d/S[0-9][0-9]"$service" /etc/rcS.d/S[0-9][0-9]"$service"; do
        [ -x "$link" ] && return 0
    done
    return 1
}
# A package's maintainer script on systemd calls deb-systemd-invoke for a unit of its own, which acts on an enabled
# unit and ignores a failure (|| true); its invoke-rc.d call (|| exit 1) is for sysvinit only. So run the init script
# here, ignore a failure, and tell invoke-rc.d to do nothing (101): a service that cannot start fails no install.
plain=${action#(}; plain=${plain%)}; plain=${plain%% *}
if [ -n "${DPKG_MAINTSCRIPT_PACKAGE:-}" ] && [ -e "/lib/systemd/system/$service.service" ]; then
    case $plain in
    start|restart) enabled || exit 101 ;;
    try-restart) "/etc/init.d/$service" status >/dev/null 2>&1 || exit 101; plain=restart ;;
    stop|reload|force-reload) ;;
    *) exit 0 ;;  # status and the like: let invoke-rc.d run them as usual
    esac
    # Our stdout is invoke-rc.d's command substitution: a daemon left holding it would hang the install.
    if "/etc/init.d/$service" "$plain" </dev/null >&2; then
        echo "pct stand-in: policy-rc.d ran /etc/init.d/$service $plain (as systemd would), not invoke-rc.d" >&2
    else
        echo "pct stand-in: /etc/init.d/$service $plain failed; with systemd that does not fail the install" >&2
    fi
    exit 101
fi
# Otherwise runlevel 2: invoke-rc.d writes "(start)" when it found no start link (it cannot look them up without a
# runlevel), so the links decide; everything else is allowed.
case $action in
\\(*\\)) enabled && exit 0; exit 101 ;;
esac
exit 0
"""

SYSTEMCTL_SHIM = """\
#!/bin/sh
# systemctl as the pct stand-in (reconciler tests/standin.py) provides it. No systemd runs in this chroot, so what
# would make systemd run or query a service goes to /etc/init.d/UNIT (inside the container's network namespace,
# like the real service); everything else (enable, disable, is-enabled, daemon-reload, ...) goes to the real
# systemctl, which does those offline. Init scripts get stdin from /dev/null and write to files that are copied out
# afterwards: a daemon they leave behind must not hold the caller's pipes open (under systemd it never has them).
set -f
real=/usr/bin/systemctl
verb= units= quiet= now= expect_value=
for arg do
    if [ -n "$expect_value" ]; then expect_value=; continue; fi
    case $arg in
    -q|--quiet) quiet=1 ;;
    --now) now=1 ;;
    -t|--type|--state|-p|--property|-o|--output|-n|--lines|--root|-H|--host|-M|--machine) expect_value=1 ;;
    -*) ;;
    *) if [ -z "$verb" ]; then verb=$arg; else units="$units ${arg%.service}"; fi ;;
    esac
done

say() { [ -n "$quiet" ] || echo "$@"; }

has_init() { [ -x "/etc/init.d/$1" ]; }

no_init() {
    echo "systemctl (pct stand-in): $1.service has no /etc/init.d/$1; without systemd it cannot be run here" >&2
    return 5
}

run_init() {  # UNIT ACTION: the init script's exit status, its output passed on
    out=$(mktemp) && err=$(mktemp) || return 1
    env -i PATH="$PATH" LANG=C.UTF-8 "/etc/init.d/$1" "$2" </dev/null >"$out" 2>"$err"
    status=$?
    cat "$out"; cat "$err" >&2; rm -f "$out" "$err"
    if [ "$status" -eq 0 ] && [ "$1" = docker ] && { [ "$2" = start ] || [ "$2" = restart ]; }; then
        wait_docker || status=1
    fi
    return "$status"
}

# docker.service is Type=notify: systemctl start returns once dockerd is ready, and fails when it dies first. The
# init script returns at once, so wait here the way systemd would and show the engine's own last words if it dies.
wait_docker() {
    i=0
    while [ "$i" -lt 100 ]; do
        [ -S /run/docker.sock ] && docker version >/dev/null 2>&1 && return 0
        /etc/init.d/docker status >/dev/null 2>&1 || break
        sleep 0.2; i=$((i + 1))
    done
    echo "Job for docker.service failed: dockerd did not come up. From /var/log/docker.log:" >&2
    # The errors and the panic, not the goroutine dump after it.
    lines=$(grep -E '^panic:|level=(fatal|error)|failed to start' /var/log/docker.log 2>/dev/null | tail -n 8)
    if [ -n "$lines" ]; then echo "$lines" >&2; else tail -n 15 /var/log/docker.log >&2 2>/dev/null; fi
    return 1
}

active() { has_init "$1" && "/etc/init.d/$1" status </dev/null >/dev/null 2>&1; }

each() {  # ACTION: run the init script ACTION for every unit
    rc=0
    for unit in $units; do
        if has_init "$unit"; then run_init "$unit" "$1" || rc=1; else no_init "$unit" || rc=$?; fi
    done
    return "$rc"
}

case $verb in
start|stop|restart|reload|status)
    each "$verb"; exit ;;
reload-or-restart|try-reload-or-restart|try-restart|condrestart|force-reload)
    rc=0
    for unit in $units; do
        has_init "$unit" || { no_init "$unit" || rc=$?; continue; }
        if active "$unit"; then
            case $verb in
            try-restart|condrestart) run_init "$unit" restart || rc=1 ;;
            *) run_init "$unit" reload || run_init "$unit" restart || rc=1 ;;
            esac
        elif [ "$verb" = reload-or-restart ] || [ "$verb" = force-reload ]; then
            run_init "$unit" start || rc=1
        fi
    done
    exit "$rc" ;;
is-active)
    rc=0
    for unit in $units; do
        if active "$unit"; then say active; else say inactive; rc=3; fi
    done
    exit "$rc" ;;
enable|disable)
    if [ -n "$now" ]; then
        "$real" ${quiet:+--quiet} "$verb" $units || exit
        if [ "$verb" = enable ]; then each start; else each stop; fi
        exit
    fi ;;
esac
exec "$real" "$@"
"""


class StandInError(RuntimeError):
    """The stand-in could not do what was asked (a tool failed, the cache is absent, ...)."""


# ---------------------------------------------------------------------------------------------------------------------
# Small helpers


def _run(
    cmd: Sequence[str | Path], *, stdin_text: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a host command with its output captured; a failure raises with the command's own words."""
    args = [str(part) for part in cmd]
    done = subprocess.run(args, input=stdin_text, capture_output=True, text=True, check=False, env=_host_env())
    if check and done.returncode != 0:
        output = (done.stdout + done.stderr).strip().splitlines()
        tail = "\n".join(output[-25:])
        raise StandInError(f"{shlex.join(args)} exited {done.returncode}:\n{tail}")
    return done


def _host_env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{HOST_PATH}:{os.environ.get('PATH', '')}".rstrip(":")}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on PATH (created if needed) for the block; the lock dies with the process."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace PATH (a file or a symlink, e.g. resolv.conf) with TEXT."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        path.unlink()
    path.write_text(text)
    path.chmod(mode)


def _unescape_mountinfo(field: str) -> str:
    """/proc/self/mountinfo writes space, tab, newline and backslash as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)


def _mounts_under(path: Path) -> list[str]:
    """Mount points at or below PATH in this mount namespace, in mount order."""
    top = os.path.realpath(path)
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = _unescape_mountinfo(line.split()[4])
        if point == top or point.startswith(top + "/"):
            found.append(point)
    return found


def _unmount_all(path: Path) -> None:
    """Unmount everything at or below PATH, deepest first; raise if something stays."""
    for _ in range(20):
        points = _mounts_under(path)
        if not points:
            return
        # Deepest first; at equal depth the later mount first (it may cover an earlier one at the same point).
        order = sorted(enumerate(points), key=lambda item: (item[1].count("/"), item[0]), reverse=True)
        for _index, point in order:
            if _run(["umount", point], check=False).returncode != 0:
                time.sleep(0.1)
    points = _mounts_under(path)
    if points:
        # Every process that could use them has been killed: detach what is still busy rather than leave it mounted.
        for point in reversed(points):
            _run(["umount", "--lazy", point], check=False)
    if _mounts_under(path):
        raise StandInError(f"cannot unmount {_mounts_under(path)}")


def _mount_dev(root: Path) -> None:
    """A small /dev of ROOT's own, as LXC gives a container.

    Not a bind mount of the host's /dev: a root left mounted by a crashed session is later deleted with rmtree (pytest
    removes old temporary directories), which would go through a bind mount and delete the host's device nodes.
    """
    dev = root / "dev"
    _run(["mount", "-t", "tmpfs", "-o", "mode=0755,nosuid,size=1m", "tmpfs", dev])
    devices = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9), "tty": (5, 0)}
    for name, (major, minor) in devices.items():
        os.mknod(dev / name, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        (dev / name).chmod(0o666)  # mknod's mode is cut by the umask
    links = {"fd": "/proc/self/fd", "stdin": "fd/0", "stdout": "fd/1", "stderr": "fd/2", "ptmx": "pts/ptmx"}
    for name, target in links.items():
        (dev / name).symlink_to(target)
    (dev / "pts").mkdir()
    (dev / "shm").mkdir()
    # apt runs dpkg on a pseudo-terminal; a devpts instance of its own keeps the host's terminals out of reach.
    _run(["mount", "-t", "devpts", "-o", "newinstance,gid=5,mode=0620,ptmxmode=0666", "devpts", dev / "pts"])
    _run(["mount", "-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "tmpfs", dev / "shm"])


def _pids_rooted_under(path: Path) -> list[int]:
    """Processes whose root directory (chroot) is PATH or below it."""
    top = os.path.realpath(path)
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            root = os.readlink(entry / "root")
        except OSError:
            continue
        if root == top or root.startswith(top + "/"):
            pids.append(int(entry.name))
    return pids


def _netns_pids(netns: str) -> list[int]:
    done = _run(["ip", "netns", "pids", netns], check=False)
    return [int(word) for word in done.stdout.split() if word.isdigit()] if done.returncode == 0 else []


def _kill_all(find: Callable[[], list[int]]) -> None:
    """SIGKILL what FIND returns until it returns nothing (daemons may fork while we kill)."""
    for _ in range(100):
        pids = [pid for pid in find() if pid != os.getpid()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    raise StandInError(f"processes keep running: {find()}")


def _host_resolv_conf() -> str:
    """The host's resolver settings as a container can use them.

    A loopback name server (systemd-resolved's 127.0.0.53) is the host's own loopback, which a network namespace
    cannot reach; resolved's list of upstream servers is used instead when there is one.
    """
    text = Path("/etc/resolv.conf").read_text()
    servers = [line.split()[1] for line in text.splitlines() if line.startswith("nameserver") and len(line.split()) > 1]
    upstream = Path("/run/systemd/resolve/resolv.conf")
    if servers and all(ipaddress.ip_address(server).is_loopback for server in servers) and upstream.exists():
        return upstream.read_text()
    return text


def missing() -> str | None:
    """Why the stand-in cannot run on this machine, or None when it can."""
    if os.geteuid() != 0:
        return "the pct stand-in needs root (mounts, network namespaces, nftables)"
    absent = [tool for tool in REQUIRED_TOOLS if shutil.which(tool, path=_host_env()["PATH"]) is None]
    if absent:
        return f"the pct stand-in needs {', '.join(absent)} (apt-get install debootstrap iproute2 nftables mount)"
    if not Path("/proc/self/ns/net").exists():
        return "the kernel has no network namespaces"
    # /proc/filesystems lists overlay only once the module is loaded, so try a real mount.
    with tempfile.TemporaryDirectory(prefix="standin-overlay-") as scratch:
        parts = {name: Path(scratch, name) for name in ("lower", "upper", "work", "merged")}
        for part in parts.values():
            part.mkdir()
        options = f"lowerdir={parts['lower']},upperdir={parts['upper']},workdir={parts['work']}"
        done = _run(["mount", "-t", "overlay", "overlay", "-o", options, parts["merged"]], check=False)
        if done.returncode != 0:
            return f"overlayfs is not available here: {done.stderr.strip()}"
        _run(["umount", parts["merged"]], check=False)
    return None


# ---------------------------------------------------------------------------------------------------------------------
# The cache root


def _marker(cache_dir: Path) -> Path:
    return cache_dir.with_name(cache_dir.name + ".complete")


def _discard(path: Path) -> None:
    """Remove a root left by an interrupted build: stop its processes and unmount before deleting anything."""
    if not path.exists():
        return
    _kill_all(lambda: _pids_rooted_under(path))
    _unmount_all(path)
    shutil.rmtree(path)


@contextlib.contextmanager
def _build_chroot(root: Path) -> Iterator[Callable[[Sequence[str]], None]]:
    """Mount what apt needs in ROOT and forbid service starts; yields a runner of commands in the chroot."""
    policy = root / "usr/sbin/policy-rc.d"
    _write(policy, BUILD_POLICY_RC_D, 0o755)

    def in_root(command: Sequence[str]) -> None:
        env = ["/usr/bin/env", "-i", f"PATH={CONTAINER_PATH}", "HOME=/root", "LANG=C.UTF-8"]
        _run(["chroot", root, *env, "DEBIAN_FRONTEND=noninteractive", *command])

    try:
        _run(["mount", "-t", "proc", "proc", root / "proc"])
        _mount_dev(root)
        yield in_root
    finally:
        _kill_all(lambda: _pids_rooted_under(root))
        _unmount_all(root)
        policy.unlink(missing_ok=True)


def _download(in_root: Callable[[Sequence[str]], None], packages: Sequence[str]) -> None:
    in_root(["apt-get", "update", "-q"])
    if packages:
        in_root(["apt-get", "install", "-q", "-y", "--download-only", "--no-install-recommends", *packages])


def build_cache(cache_dir: Path, package_sets: Mapping[str, Sequence[str]]) -> Path:
    """Build (once) the Debian root every container's overlay sits on, and return it (= CACHE_DIR).

    A minbase bookworm with systemd, fresh apt lists and the .debs of every package in PACKAGE_SETS (and their
    dependencies) in /var/cache/apt/archives, so container installs need the network only for `apt-get update`.
    ``CACHE_DIR.complete`` records what was downloaded; a later call with more packages downloads the rest into the
    same root (do not do that while containers use it: overlayfs does not allow changing a lower layer under a
    mount). ``CACHE_DIR.lock`` keeps two processes from building at once.
    """
    cache_dir = cache_dir.absolute()
    wanted = sorted({package for packages in package_sets.values() for package in packages})
    marker = _marker(cache_dir)
    with _locked(cache_dir.with_name(cache_dir.name + ".lock")):
        if marker.exists() and cache_dir.is_dir():
            have = set(json.loads(marker.read_text())["packages"])
            lacking = [package for package in wanted if package not in have]
            if lacking:
                with _build_chroot(cache_dir) as in_root:
                    _download(in_root, lacking)
                marker.write_text(json.dumps({"packages": sorted(have | set(lacking))}))
            return cache_dir
        marker.unlink(missing_ok=True)
        partial = cache_dir.with_name(cache_dir.name + ".partial")
        _discard(partial)
        _discard(cache_dir)
        try:
            _run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_INCLUDE)}", SUITE, partial, MIRROR])
        finally:
            # debootstrap mounts proc and sys in the target and leaves them when it fails.
            _kill_all(lambda: _pids_rooted_under(partial))
            _unmount_all(partial)
        _write(partial / "etc/apt/apt.conf.d/90standin-keep-debs", APT_KEEP_DEBS)
        (partial / "etc/apt/apt.conf.d/docker-clean").unlink(missing_ok=True)
        with _build_chroot(partial) as in_root:
            _download(in_root, wanted)
        partial.rename(cache_dir)
        marker.write_text(json.dumps({"packages": wanted}))
    return cache_dir


# ---------------------------------------------------------------------------------------------------------------------
# Containers


def _check_vmid(vmid: int | str) -> str:
    text = str(vmid)
    if not re.fullmatch(r"[0-9]+", text):
        raise StandInError(f"VMID must be digits, not {text!r}")
    return text


class PctStandIn:
    """The containers and records of one test session, all under STATE.

    CACHE_ROOT (from `build_cache`) is recorded in STATE the first time it is given, so the ``pct`` wrapper (which
    only knows STATE) finds it.
    """

    def __init__(self, state: Path, cache_root: Path | None = None) -> None:
        state.mkdir(parents=True, exist_ok=True)
        self.state = state.resolve()
        # Names on the host (network namespaces, interfaces, the nft table) carry this, so sessions do not clash.
        self.tag = hashlib.sha256(str(self.state).encode()).hexdigest()[:6]
        self.nft_table = f"reconciler_standin_{self.tag}"
        if cache_root is not None:
            (self.state / "cache-root").write_text(str(cache_root.absolute()))

    # -- the API for tests ------------------------------------------------------------------------------------------

    def root(self, vmid: int | str) -> Path:
        """VMID's root directory as its commands see it (prepared if needed); files put here land in its upper layer."""
        vmid = _check_vmid(vmid)
        self._prepare(vmid)
        return self._ct(vmid) / "root"

    def calls(self) -> list[list[str]]:
        """The argument lists of every ``pct`` call so far, oldest first."""
        path = self.state / "calls.jsonl"
        if not path.exists():
            return []
        return [list(json.loads(line)["argv"]) for line in path.read_text().splitlines() if line.strip()]

    def features(self, vmid: int | str) -> str | None:
        """The value of the last ``pct set VMID --features``, or None."""
        path = self._ct(_check_vmid(vmid)) / "features"
        return path.read_text() if path.exists() else None

    def netns(self, vmid: int | str) -> str:
        """The name of VMID's network namespace (``ip netns exec NAME ...``)."""
        return f"rct{self.tag}-{_check_vmid(vmid)}"

    def exec_argv(self, vmid: int | str, command: Sequence[str]) -> list[str]:
        """The host command line that runs COMMAND in VMID's container (prepared if needed), as ``pct exec`` does."""
        root = self.root(vmid)
        env = ["/usr/bin/env", "-i", f"PATH={CONTAINER_PATH}", "HOME=/root", "LANG=C.UTF-8"]
        return ["ip", "netns", "exec", self.netns(vmid), "chroot", str(root), *env, *command]

    def cleanup(self) -> None:
        """Stop every container process and undo every mount, namespace, interface and host setting; idempotent.

        The containers' upper layers are deleted too; the features files and calls.jsonl stay.
        """
        cts = self.state / "ct"
        if cts.is_dir():
            for ct in sorted(cts.iterdir()):
                if ct.is_dir() and ct.name.isdigit():
                    with _locked(ct / "lock"):
                        self._teardown(ct.name)
                        for part in ("root", "upper", "work"):
                            # Only once nothing is mounted there: rmtree would follow into the mounts.
                            if (ct / part).exists() and not _mounts_under(ct):
                                shutil.rmtree(ct / part)
        self._release_host()

    # -- the pct command ----------------------------------------------------------------------------------------------

    def record(self, argv: Sequence[str]) -> None:
        """Append one call (the arguments after ``pct``) to calls.jsonl."""
        line = json.dumps({"time": time.time(), "argv": list(argv)}) + "\n"
        with _locked(self.state / "calls.lock"), (self.state / "calls.jsonl").open("a") as out:
            out.write(line)

    def set_features(self, vmid: int | str, features: str) -> None:
        """What ``pct set VMID --features FEATURES`` does here: remember them."""
        ct = self._ct(_check_vmid(vmid))
        ct.mkdir(parents=True, exist_ok=True)
        (ct / "features").write_text(features)

    # -- containers ---------------------------------------------------------------------------------------------------

    def _ct(self, vmid: str) -> Path:
        return self.state / "ct" / vmid

    def _veths(self, vmid: str) -> tuple[str, str]:
        # Interface names have at most 15 characters; a digest of the namespace name fits any VMID.
        digest = hashlib.sha256(self.netns(vmid).encode()).hexdigest()[:9]
        return f"rs{digest}h", f"rs{digest}c"

    def _cache_root(self) -> Path:
        recorded = self.state / "cache-root"
        if not recorded.exists():
            raise StandInError(f"no cache root recorded in {self.state}: create PctStandIn(state, build_cache(...))")
        root = Path(recorded.read_text())
        if not _marker(root).exists():
            raise StandInError(f"the cache root {root} is not complete: run build_cache first")
        return root

    def _ready(self, vmid: str) -> bool:
        ct = self._ct(vmid)
        return (
            (ct / "ready").exists() and os.path.ismount(ct / "root") and Path("/run/netns", self.netns(vmid)).exists()
        )

    def _prepare(self, vmid: str) -> None:
        """Make VMID's container usable; safe to call from several processes at once."""
        ct = self._ct(vmid)
        ct.mkdir(parents=True, exist_ok=True)
        with _locked(ct / "lock"):
            if self._ready(vmid):
                return
            lower = self._cache_root()
            self._teardown(vmid)  # what a crashed or interrupted preparation left; the upper layer stays
            self._ensure_host()
            self._mount(vmid, lower)
            self._network(vmid)
            self._furnish(vmid)
            (ct / "ready").touch()

    def _mount(self, vmid: str, lower: Path) -> None:
        ct = self._ct(vmid)
        upper, work, root = ct / "upper", ct / "work", ct / "root"
        for part in (upper, work, root):
            part.mkdir(exist_ok=True)
        if any(char in str(path) for path in (lower, upper, work) for char in ",:\\"):
            raise StandInError(f"overlayfs options cannot carry the paths {lower}, {upper}")
        options = f"lowerdir={lower},upperdir={upper},workdir={work}"
        _run(["mount", "-t", "overlay", f"standin-{vmid}", "-o", options, root])
        _mount_dev(root)
        _run(["mount", "-t", "proc", "proc", root / "proc"])
        # A fresh /run as at boot; without /run/systemd/system, init scripts and invoke-rc.d take the sysvinit path.
        _run(["mount", "-t", "tmpfs", "-o", "mode=0755,nosuid,nodev", "tmpfs", root / "run"])
        (root / "run/lock").mkdir(mode=0o1777)
        (root / "run/lock").chmod(0o1777)

    def _network(self, vmid: str) -> None:
        netns = self.netns(vmid)
        host_if, ct_if = self._veths(vmid)
        _run(["ip", "netns", "add", netns])
        _run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", ct_if, "netns", netns])
        # Picking the /30 and putting it on the host side is one step under a machine-wide lock, so two sessions
        # (each with its own VMID 200) never pick the same addresses.
        with _locked(GLOBAL_DIR / "lock"):
            subnet = self._free_subnet(vmid)
            host_ip, ct_ip = list(subnet.hosts())
            _run(["ip", "addr", "add", f"{host_ip}/30", "dev", host_if])
        # The name is a digest; the alias says whose it is (`ip link show` prints it).
        _run(["ip", "link", "set", host_if, "alias", f"pct stand-in {netns} ({self.state})"])
        _run(["ip", "link", "set", host_if, "up"])
        _run(["ip", "-n", netns, "link", "set", ct_if, "name", "eth0"])
        _run(["ip", "-n", netns, "addr", "add", f"{ct_ip}/30", "dev", "eth0"])
        _run(["ip", "-n", netns, "link", "set", "eth0", "up"])
        _run(["ip", "-n", netns, "link", "set", "lo", "up"])
        _run(["ip", "-n", netns, "route", "add", "default", "via", str(host_ip)])
        net = {"netns": netns, "host_if": host_if, "host_ip": str(host_ip), "ip": str(ct_ip)}
        (self._ct(vmid) / "net.json").write_text(json.dumps(net))

    @staticmethod
    def _free_subnet(vmid: str) -> ipaddress.IPv4Network:
        """The /30 for VMID: derived from it, moved on past any /30 an address on this host already uses."""
        listing = _run(["ip", "-4", "-o", "addr", "show"]).stdout
        used = set()
        for match in re.finditer(r"inet (\d+\.\d+\.\d+\.\d+)/", listing):
            address = ipaddress.IPv4Address(match.group(1))
            if address in CONTAINER_NET:
                used.add(ipaddress.IPv4Network(f"{address}/30", strict=False))
        subnets = list(CONTAINER_NET.subnets(new_prefix=30))
        start = int(vmid) % len(subnets)
        for offset in range(len(subnets)):
            subnet = subnets[(start + offset) % len(subnets)]
            if subnet not in used:
                return subnet
        raise StandInError(f"no free /30 left in {CONTAINER_NET}")

    def _furnish(self, vmid: str) -> None:
        """The container's own files, written through the overlay so they land in its upper layer only."""
        root = self._ct(vmid) / "root"
        _write(root / "etc/resolv.conf", _host_resolv_conf())
        _write(root / "usr/local/sbin/systemctl", SYSTEMCTL_SHIM, 0o755)
        _write(root / "usr/sbin/policy-rc.d", CONTAINER_POLICY_RC_D, 0o755)

    def _teardown(self, vmid: str) -> None:
        """Kill VMID's processes, unmount its root, delete its namespace and veth; idempotent, keeps the upper layer."""
        ct, netns = self._ct(vmid), self.netns(vmid)
        (ct / "ready").unlink(missing_ok=True)
        _kill_all(lambda: _netns_pids(netns) + _pids_rooted_under(ct / "root"))
        _unmount_all(ct)
        if Path("/run/netns", netns).exists():
            _run(["ip", "netns", "delete", netns])
        # Deleting the namespace deletes the veth pair, but not always before `ip netns delete` returns.
        host_if, _ = self._veths(vmid)
        for _ in range(50):
            if not Path("/sys/class/net", host_if).exists():
                break
            _run(["ip", "link", "delete", host_if], check=False)
            time.sleep(0.05)
        else:
            raise StandInError(f"cannot delete the interface {host_if}")

    # -- host settings ------------------------------------------------------------------------------------------------

    def _ensure_host(self) -> None:
        """NAT for the containers' addresses and IPv4 forwarding, once per session."""
        with _locked(self.state / "host.lock"):
            done = self.state / "host-ready"
            if done.exists() and _run(["nft", "list", "table", "ip", self.nft_table], check=False).returncode == 0:
                return
            with _locked(GLOBAL_DIR / "lock"):
                sessions = GLOBAL_DIR / "sessions"
                sessions.mkdir(parents=True, exist_ok=True)
                original = GLOBAL_DIR / "ip_forward.orig"
                forward = Path("/proc/sys/net/ipv4/ip_forward")
                # The first session remembers the value from before any of them; the last one puts it back.
                if not any(sessions.iterdir()) or not original.exists():
                    original.write_text(forward.read_text().strip())
                (sessions / self.tag).write_text(str(self.state))
                forward.write_text("1\n")
            table = self.nft_table
            net = CONTAINER_NET
            _run(
                ["nft", "-f", "-"],
                stdin_text=(
                    f"table ip {table}\n"
                    f"delete table ip {table}\n"
                    f"table ip {table} {{\n"
                    "  chain postrouting {\n"
                    "    type nat hook postrouting priority srcnat; policy accept;\n"
                    f"    ip saddr {net} ip daddr != {net} masquerade\n"
                    "  }\n"
                    "}\n"
                ),
            )
            done.touch()

    def _release_host(self) -> None:
        with _locked(self.state / "host.lock"):
            _run(["nft", "delete", "table", "ip", self.nft_table], check=False)
            with _locked(GLOBAL_DIR / "lock"):
                mine = GLOBAL_DIR / "sessions" / self.tag
                if mine.exists():
                    mine.unlink()
                    original = GLOBAL_DIR / "ip_forward.orig"
                    if not any((GLOBAL_DIR / "sessions").iterdir()) and original.exists():
                        Path("/proc/sys/net/ipv4/ip_forward").write_text(original.read_text().strip() + "\n")
                        original.unlink()
            (self.state / "host-ready").unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------------------------
# The command line


def install(bin_dir: Path, state: Path, cache_root: Path | None = None) -> Path:
    """Write BIN_DIR/pct, a wrapper that runs this stand-in for STATE; returns its path.

    Give CACHE_ROOT here or to `PctStandIn` before the first ``pct exec``.
    """
    if cache_root is not None:
        PctStandIn(state, cache_root)
    bin_dir.mkdir(parents=True, exist_ok=True)
    wrapper = bin_dir / "pct"
    # -I: the wrapper may run from sshd or the daemon with any environment; the stand-in needs only the stdlib.
    state.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-I", str(Path(__file__).resolve()), "pct", "--state", str(state.resolve())]
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.join(command)} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def _fail(message: str) -> int:
    print(f"pct stand-in: {message}", file=sys.stderr)
    return STANDIN_FAILED


def _pct(standin: PctStandIn, args: list[str]) -> int:
    """One ``pct`` call; an ``exec`` does not return (the process becomes the command)."""
    standin.record(args)
    if len(args) >= 2 and args[0] in ("exec", "set") and not re.fullmatch(r"[0-9]+", args[1]):
        return _fail(f"{args[0]}: VMID must be digits, not {args[1]!r}")
    if len(args) >= 2 and args[0] == "exec":
        command = args[2:]
        if command[:1] == ["--"]:
            command = command[1:]
        if not command:
            return _fail("exec: no command given")
        try:
            argv = standin.exec_argv(args[1], command)
        except StandInError as error:
            return _fail(f"exec: cannot prepare container {args[1]}: {error}")
        sys.stdout.flush()
        sys.stderr.flush()
        os.execvpe(argv[0], argv, _host_env())
    if len(args) == 4 and args[0] == "set" and args[2] == "--features":
        standin.set_features(args[1], args[3])
        return 0
    if len(args) == 3 and args[0] == "set" and args[2].startswith("--features="):
        standin.set_features(args[1], args[2].removeprefix("--features="))
        return 0
    return _fail(f"unsupported: pct {shlex.join(args)}")


def main(argv: Sequence[str] | None = None) -> int:
    """``standin.py pct --state DIR ARGS...`` acts as pct; ``standin.py cleanup --state DIR`` cleans a session up."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) >= 3 and args[0] in ("pct", "cleanup") and args[1] == "--state":
        standin = PctStandIn(Path(args[2]))
        if args[0] == "pct":
            return _pct(standin, args[3:])
        if len(args) == 3:
            standin.cleanup()
            return 0
    return _fail("usage: standin.py pct --state DIR PCT-ARGS... | standin.py cleanup --state DIR")


if __name__ == "__main__":
    sys.exit(main())
