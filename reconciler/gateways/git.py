"""The only module that runs git: keep a checkout level with the remote, read it, and publish generated files.

The checkout belongs to the reconciler. Anything in it that is not on the remote is generated output that
the next cycle writes again, so syncing resets it to the remote branch; publishing replays the generated
files on the remote's tip until a plain push goes through. Nothing is ever force-pushed.

Whether a GitError is temporary is decided here, once: a step that talks to the remote (fetch, push,
ls-remote) may go through later by itself, except a push the remote refused by its own rules (a hook,
branch protection) while nobody else pushed; a local step (commit, checkout, reading history) will not.

git runs with exactly the environment git_environment makes, never the daemon's whole one (which holds the
Proxmox token): commands are started here, not by GitPython, and GitPython only reads refs (for objects it
would keep a `git cat-file` process of its own).
"""

from __future__ import annotations

import base64
import contextlib
import math
import os
import shlex
import signal
import stat
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath

import git
import structlog
from git.exc import InvalidGitRepositoryError, NoSuchPathError
from git.refs.symbolic import SymbolicReference

from reconciler.config import GIT_TOKEN_ENV, GitConfig, read_secret
from reconciler.gateways.folder import list_entries, read_plain
from reconciler.logs import register_secret
from reconciler.model.errors import GitError
from reconciler.parse import MAX_FILE_BYTES

log = structlog.get_logger("reconciler.git")

PUSH_ATTEMPTS = 5
OWN_COMMITS = 32  # how many of its own pushed commits a Checkout remembers

# Steps that talk to the remote: their failures may pass by themselves (see the module's docstring).
REMOTE_STEPS = frozenset({"fetch", "push", "ls-remote"})
STOPPING = "not finished: the reconciler is stopping"
TERM_GRACE = 2.0  # s git has after TERM to remove its lock files before KILL
TICK = 0.2  # s between looks at a remote step's deadline, which a stop may bring forward


def _tidy(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())[:500]


def _push_status(porcelain: str, ref: str) -> tuple[str, str]:
    """The flag and summary `git push --porcelain` printed for ref, e.g. ("!", "[remote rejected] (...)")."""
    for line in porcelain.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[1].rsplit(":", 1)[-1] == ref:
            return parts[0], parts[2].strip()
    return "", ""


# What git may see of the daemon's environment: how to run and find its programs, where its own settings are, and
# how to reach the remote. Everything else (the Proxmox token, a TSIG key, the webhook secret) stays out of git,
# its hooks and the ssh it starts.
GIT_MAY_SEE = frozenset(
    {"PATH", "HOME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "SSH_AUTH_SOCK"}
    | {f"{name}_proxy" for name in ("http", "https", "no", "all")}
    | {f"{name}_PROXY" for name in ("HTTP", "HTTPS", "NO", "ALL")}
)


def _git_may_see(name: str) -> bool:
    return name in GIT_MAY_SEE or name.startswith("GIT_")


def git_environment(config: GitConfig, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The whole environment git gets: what it may see of environ, the identity and the credentials (as
    environment only: nothing lands in .git/config)."""
    env = os.environ if environ is None else environ
    out = {name: value for name, value in env.items() if _git_may_see(name)}
    out |= {
        "GIT_AUTHOR_NAME": config.author_name,
        "GIT_AUTHOR_EMAIL": config.author_email,
        "GIT_COMMITTER_NAME": config.author_name,
        "GIT_COMMITTER_EMAIL": config.author_email,
        "GIT_TERMINAL_PROMPT": "0",
    }
    token = read_secret(GIT_TOKEN_ENV, env)
    if token and config.remote.startswith("https://"):
        basic = base64.b64encode(f"{config.username}:{token.reveal()}".encode()).decode()
        register_secret(basic)
        count = int(env.get("GIT_CONFIG_COUNT", "0") or 0)
        out["GIT_CONFIG_COUNT"] = str(count + 1)
        out[f"GIT_CONFIG_KEY_{count}"] = "http.extraHeader"
        out[f"GIT_CONFIG_VALUE_{count}"] = f"Authorization: Basic {basic}"
    if config.ssh_key is not None:
        out["GIT_SSH_COMMAND"] = f"ssh -i {shlex.quote(str(config.ssh_key))} -o IdentitiesOnly=yes -o BatchMode=yes"
    return out


class GitTimeout(GitError):
    """A step that talks to the remote did not end within git.timeout; it was killed with all it started."""

    def __init__(self, step: str, seconds: float) -> None:
        super().__init__(step, f"the remote did not answer within {seconds:g} s", temporary=True)
        self.seconds = seconds


class _RemoteSteps:
    """The remote steps running now, so /readyz can name one that hangs and a stop can end them in its grace."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[int, tuple[str, float]] = {}  # key -> (step, monotonic start)
        self._keys = 0
        self.stop_at = math.inf  # monotonic; no remote step runs past it

    def begin(self, step: str, began: float) -> int:
        with self._lock:
            self._keys += 1
            self._running[self._keys] = (step, began)
            return self._keys

    def end(self, key: int) -> None:
        with self._lock:
            self._running.pop(key, None)

    def oldest(self) -> tuple[str, float] | None:
        with self._lock:
            return min(self._running.values(), key=lambda item: item[1], default=None)


def _end(process: subprocess.Popen[bytes]) -> None:
    """TERM the command's process group (git then removes its lock files), KILL what is left, and reap it."""
    for sig, wait in ((signal.SIGTERM, TERM_GRACE), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.communicate(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


class Checkout:
    """The reconciler's own clone of the operator's repository."""

    def __init__(self, config: GitConfig, environ: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.path = Path(config.checkout)
        self._env = git_environment(config, environ)
        # Owner-only from the start, whatever the umask; one left open by an older release is closed.
        with contextlib.suppress(OSError):  # cannot create it: the clone says why, in its own words
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.mkdir(mode=0o700, exist_ok=True)
            if stat.S_IMODE(self.path.stat().st_mode) & 0o077:
                self.path.chmod(0o700)
        self._repo: git.Repo | None = None
        self._own: deque[str] = deque(maxlen=OWN_COMMITS)
        self._own_lock = threading.Lock()
        self._remote_steps = _RemoteSteps()

    @property
    def repo(self) -> git.Repo:
        if self._repo is None:
            self._repo = self._open_or_clone()
        return self._repo

    def _open_or_clone(self) -> git.Repo:
        try:
            repo = git.Repo(self.path)
        except (InvalidGitRepositoryError, NoSuchPathError):
            pass
        else:
            self._point_at_remote()
            return repo
        if self.path.exists() and any(self.path.iterdir()):
            raise GitError("clone", f"{self.path} exists, is not empty and is not a git checkout")
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        for args in (("init", "-q", "-b", self.config.branch), ("remote", "add", "origin", self.config.remote)):
            status, out, err = self._run("clone", *args)
            if status != 0:
                raise GitError("clone", _tidy(err or out) or f"exit status {status}")
        return git.Repo(self.path)

    def _point_at_remote(self) -> None:
        """Make the checkout's origin the configured remote: a changed git.remote takes effect, and a URL an older
        release wrote with a token in it leaves .git/config (the old value is never logged)."""
        status, url, _ = self._run("clone", "config", "--get", "remote.origin.url")
        if status == 0 and url.strip() == self.config.remote:
            return
        action = ("set-url", "origin") if status == 0 else ("add", "origin")
        status, out, err = self._run("clone", "remote", *action, self.config.remote)
        if status != 0:
            raise GitError("clone", _tidy(err or out) or f"exit status {status}")
        log.info("git remote replaced", remote=self.config.remote)

    def _git(self, step: str, *args: str) -> str:
        self.repo  # noqa: B018 - opened (or cloned) before git runs in it
        status, out, err = self._remote(step, *args) if step in REMOTE_STEPS else self._run(step, *args)
        if status != 0:
            raise GitError(step, _tidy(err or out) or f"exit status {status}", temporary=step in REMOTE_STEPS)
        return out.rstrip("\n")

    def _start(self, *args: str) -> subprocess.Popen[bytes]:
        """git in the checkout with exactly the environment git_environment made: GitPython would add the whole
        of os.environ (the Proxmox token among it) under whatever it is given, so git is started here."""
        return subprocess.Popen(
            ["git", *args],
            cwd=self.path,
            env=self._env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )

    def _run(self, step: str, *args: str) -> tuple[int, str, str]:
        """Run a local git command (no remote involved): (exit status, stdout, stderr)."""
        try:
            process = self._start(*args)
        except OSError as exc:
            raise GitError(step, f"cannot run git: {exc.strerror}") from None
        out, err = process.communicate()
        return process.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")

    def _remote(self, step: str, *args: str) -> tuple[int, str, str]:
        """Run a git command that talks to the remote: (exit status, stdout, stderr).

        It leads its own process group, so ending it ends what it started too (git-remote-http, ssh), which
        would otherwise hold the connection: at git.timeout (GitTimeout), or at the deadline a stop set.
        """
        steps = self._remote_steps
        began = time.monotonic()
        limit = began + self.config.timeout
        if steps.stop_at <= began:
            raise GitError(step, STOPPING, temporary=True)
        try:
            process = self._start(*args)
        except OSError as exc:
            raise GitError(step, f"cannot run git: {exc.strerror}", temporary=True) from None
        key = steps.begin(step, began)
        try:
            while True:
                deadline = min(limit, steps.stop_at)
                try:
                    out, err = process.communicate(timeout=max(0.0, min(TICK, deadline - time.monotonic())))
                    break
                except subprocess.TimeoutExpired:
                    if time.monotonic() < deadline:
                        continue
                    _end(process)
                    if deadline == limit:
                        raise GitTimeout(step, self.config.timeout) from None
                    raise GitError(step, STOPPING, temporary=True) from None
        except (KeyboardInterrupt, SystemExit):  # Ctrl-C on `once`: git has its own session and would stay
            _end(process)
            raise
        finally:
            steps.end(key)
        return process.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")

    def remote_step(self) -> tuple[str, float] | None:
        """The step talking to the remote (fetch, push, ls-remote) that has run longest now, with its seconds."""
        oldest = self._remote_steps.oldest()
        return None if oldest is None else (oldest[0], time.monotonic() - oldest[1])

    def finish_by(self, deadline: float) -> None:
        """Let no step talking to the remote run past deadline (time.monotonic()): a stop's grace bounds them."""
        self._remote_steps.stop_at = min(self._remote_steps.stop_at, deadline)

    @property
    def _remote_ref(self) -> str:
        return f"refs/remotes/origin/{self.config.branch}"

    def _fetch(self) -> str | None:
        """Fetch the branch into its remote-tracking ref; the remote's tip, or None when it has no such branch."""
        branch = self.config.branch
        self._git("fetch", "fetch", "--prune", "origin", f"+refs/heads/{branch}:{self._remote_ref}")
        return self._git("checkout", "for-each-ref", "--format=%(objectname)", self._remote_ref).strip() or None

    def sync(self) -> str | None:
        """Fetch the branch and make the checkout equal to it; the revision, or None for an empty remote."""
        if self._fetch() is None:
            return None
        return self._reset()

    def _reset(self) -> str | None:
        """Make the checkout equal to the remote-tracking ref fetched last."""
        self._git("checkout", "checkout", "-q", "-B", self.config.branch, self._remote_ref)
        self._git("checkout", "reset", "-q", "--hard", self._remote_ref)
        self._git("checkout", "clean", "-q", "-fdx")
        return self.head()

    def remote_tip(self) -> str | None:
        """The remote branch's current commit, asked of the remote itself; None when it has no such branch."""
        ref = f"refs/heads/{self.config.branch}"
        for line in self._git("ls-remote", "ls-remote", "origin", ref).splitlines():
            commit, _, name = line.partition("\t")
            if name.strip() == ref:
                return commit.strip()
        return None

    def is_own(self, commit: str) -> bool:
        """Whether this Checkout pushed commit (or was about to: it is remembered before the push starts)."""
        with self._own_lock:
            return commit in self._own

    def _remember(self, commit: str) -> None:
        with self._own_lock:
            if commit not in self._own:
                self._own.append(commit)

    def head(self) -> str | None:
        """The checkout's commit, read from its refs (no git process), or None before the first commit."""
        try:
            # Not head.commit: looking up the object starts a `git cat-file` with the daemon's whole environment.
            return str(SymbolicReference.dereference_recursive(self.repo, "HEAD"))
        except ValueError:  # no commit yet
            return None

    def _open_folder(self, relative: str) -> int | None:
        """A descriptor of a folder of the checkout, reached part by part without following a link; None when
        it is not there (or a file stands in its way). A part that is a symbolic link raises GitError: what it
        points to is never read, and the caller writes nothing through it either."""
        path = PurePosixPath(relative)
        if not path.parts or path.is_absolute() or ".." in path.parts:
            raise GitError("read", f"{relative!r} is not a folder inside the checkout")
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the configured root: trusted
        except FileNotFoundError:  # not cloned yet
            return None
        try:
            for depth, part in enumerate(path.parts, 1):
                try:
                    found = os.stat(part, dir_fd=fd, follow_symlinks=False)
                except (FileNotFoundError, NotADirectoryError):
                    os.close(fd)
                    return None
                if stat.S_ISLNK(found.st_mode):
                    where = "/".join(path.parts[:depth])
                    raise GitError(
                        "read", f"{where} is a symbolic link; the reconciler reads and writes only real folders"
                    )
                if not stat.S_ISDIR(found.st_mode):
                    os.close(fd)
                    return None
                inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                os.close(fd)
                fd = inner
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
        return fd

    def list_dir(self, relative: str) -> dict[str, os.stat_result]:
        """Every entry directly in a folder of the checkout, by name, with its lstat (links are not followed);
        {} when the folder is not there. Raises GitError when the folder or one above it is a symbolic link."""
        fd = self._open_folder(relative)
        if fd is None:
            return {}
        try:
            return list_entries(fd)
        finally:
            os.close(fd)

    def read_entries(self, relative: str, names: Iterable[str], limit: int) -> dict[str, bytes | None]:
        """At most limit bytes of each named file directly in a folder of the checkout; None for one that is
        not a plain file when opened (a link is never followed, a pipe never waited on)."""
        fd = self._open_folder(relative)
        if fd is None:
            return dict.fromkeys(names)
        try:
            return {name: read_plain(name, fd, limit) for name in names}
        finally:
            os.close(fd)

    def read_dir(
        self, relative: str, suffixes: tuple[str, ...] = (".yaml", ".yml"), limit: int = MAX_FILE_BYTES + 1
    ) -> dict[str, bytes]:
        """Plain files directly in a folder of the checkout: repository path -> at most limit bytes of each.

        Links and anything else that is not a plain file are left out, never followed; a folder that is (or
        lies under) a symbolic link raises GitError.
        """
        plain = [n for n, st in self.list_dir(relative).items() if stat.S_ISREG(st.st_mode) and n.endswith(suffixes)]
        read = self.read_entries(relative, plain, limit)
        return {f"{relative}/{name}": data for name, data in read.items() if data is not None}

    def read_file(self, relative: str, limit: int = MAX_FILE_BYTES + 1) -> bytes | None:
        """At most limit bytes of one file of the checkout, or None when it is not there or not a plain file, or
        a link lies on its way (never followed)."""
        path = PurePosixPath(relative)
        if len(path.parts) > 1:
            try:
                return self.read_entries(str(path.parent), [path.name], limit)[path.name]
            except GitError:
                return None
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            return read_plain(relative, fd, limit)
        finally:
            os.close(fd)

    def link_in_path(self, relative: str) -> str | None:
        """The first part of relative (a path in the checkout) that is a symbolic link, or None: nothing is
        ever written through a link (see _write)."""
        parts = PurePosixPath(relative).parts
        current = self.path
        for depth, part in enumerate(parts, 1):
            current = current / part
            try:
                found = os.lstat(current)
            except (FileNotFoundError, NotADirectoryError):
                return None
            if stat.S_ISLNK(found.st_mode):
                return "/".join(parts[:depth])
        return None

    def last_change(self, relative: str) -> str | None:
        """The last commit that changed anything under relative, or None."""
        if self.head() is None:
            return None
        return self._git("read history", "log", "-1", "--format=%H", "HEAD", "--", relative).strip() or None

    def last_changes(self, relative: str, paths: set[str]) -> dict[str, str]:
        """For each path, the commit that last changed it, from one walk of the history."""
        found: dict[str, str] = {}
        if not paths or self.head() is None:
            return found
        output = self._git("read history", "log", "--format=%x01%H", "--name-only", "HEAD", "--", relative)
        commit = ""
        for line in output.splitlines():
            if line.startswith("\x01"):
                commit = line[1:]
            elif line in paths and line not in found:
                found[line] = commit
                if len(found) == len(paths):
                    break
        return found

    def publish(self, files: Mapping[str, str | None], message: str) -> str | None:
        """Write files (None deletes) and push them as one commit; the new revision, or None if nothing changed.

        After a failed push the branch is fetched: when its tip is no longer the commit ours was built on, the
        remote moved meanwhile, so the same files are written again on its new tip and pushed again. When it
        did not move, the push failed for its own reason and that is the error.
        """
        ref = f"refs/heads/{self.config.branch}"
        for _ in range(PUSH_ATTEMPTS):
            changed = self._write(files)
            if not changed:
                return None
            base = self.head()
            self._git("commit", "add", "--all", "--", *changed)
            self._git("commit", "commit", "-q", "--no-verify", "-m", message, "--", *changed)
            ours = self._git("commit", "rev-parse", "HEAD").strip()
            self._remember(ours)  # before pushing: a watcher may see the remote move before push returns
            status, stdout, stderr = self._remote("push", "push", "--porcelain", "origin", f"{ours}:{ref}")
            if status == 0:
                return ours
            flag, summary = _push_status(stdout, ref)
            reason = _tidy(f"{summary}\n{stderr}" if summary else stderr or stdout) or f"exit status {status}"
            try:
                tip = self._fetch()
            except GitError as exc:
                raise GitError("push", f"{reason}; then fetching failed: {exc.reason}", temporary=True) from None
            if tip == ours:  # it went through; only the report of it was lost
                return ours
            if tip is None and base is not None:  # the branch went away meanwhile: the next cycle starts over
                raise GitError("push", f"{reason}; the branch is gone from the remote", temporary=True)
            if tip != base:  # the remote moved meanwhile: build again on its new tip
                self._reset()
                continue
            refused = flag == "!" and summary.startswith("[remote rejected]")
            raise GitError("push", reason, temporary=not refused)
        raise GitError("push", f"the remote kept moving; gave up after {PUSH_ATTEMPTS} attempts", temporary=True)

    def _write(self, files: Mapping[str, str | None]) -> list[str]:
        changed = []
        root = self.path.resolve()
        for relative, content in sorted(files.items()):
            link = self.link_in_path(relative)
            if link is not None:
                raise GitError("commit", f"refusing to write {relative}: {link} is a symbolic link")
            target = (root / relative).resolve()
            if root not in target.parents or (root / ".git") in (target, *target.parents):
                raise GitError("commit", f"refusing to write {relative}: outside the checkout")
            if content is None:
                if target.exists():
                    target.unlink()
                    changed.append(relative)
                continue
            data = content.encode("utf-8")
            if target.is_file() and target.read_bytes() == data:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            changed.append(relative)
        return changed


def seed_bare_repo(path: Path, files: Mapping[str, bytes], author: str, branch: str = "main") -> str:
    """Make a bare repository at path with one commit holding files; returns its revision (demo, tests)."""
    git.Repo.init(path, bare=True, initial_branch=branch)
    work = path.with_name(path.name + ".seed")
    repo = git.Repo.clone_from(str(path), work)
    name, email = author.split(" <")[0], author.split(" <")[1].rstrip(">")
    for relative, data in files.items():
        target = work / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    repo.git.add("--all")
    env = {
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": name,
        "GIT_COMMITTER_EMAIL": email,
    }
    repo.git.execute(["git", "commit", "-q", "-m", "Seed requests"], env={**os.environ, **env})
    repo.git.push("origin", f"HEAD:refs/heads/{branch}")
    revision = str(repo.head.commit.hexsha)
    repo.close()
    return revision
