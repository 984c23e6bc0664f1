"""The only module that runs git: keep a checkout level with the remote, read it, and publish generated files.

The checkout belongs to the reconciler. Anything in it that is not on the remote is generated output that
the next cycle writes again, so syncing resets it to the remote branch; publishing replays the generated
files on the remote's tip until a plain push goes through. Nothing is ever force-pushed.

Whether a GitError is temporary is decided here, once: a step that talks to the remote (fetch, push,
ls-remote) may go through later by itself, except a push the remote refused by its own rules (a hook,
branch protection) while nobody else pushed; a local step (commit, checkout, reading history) will not.
"""

from __future__ import annotations

import base64
import os
import shlex
import threading
from collections import deque
from collections.abc import Mapping
from pathlib import Path

import git
from git.exc import GitCommandError, InvalidGitRepositoryError, NoSuchPathError

from reconciler.config import GIT_TOKEN_ENV, GitConfig
from reconciler.model.errors import GitError

PUSH_ATTEMPTS = 5
OWN_COMMITS = 32  # how many of its own pushed commits a Checkout remembers

# Steps that talk to the remote: their failures may pass by themselves (see the module's docstring).
REMOTE_STEPS = frozenset({"fetch", "push", "ls-remote"})


def _tidy(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())[:500]


def _clean(exc: GitCommandError) -> str:
    """Git's own complaint, without the command line."""
    text = (exc.stderr or exc.stdout or str(exc)).strip()
    text = text.removeprefix("stderr:").strip().strip("'").strip()
    return _tidy(text)


def _push_status(porcelain: str, ref: str) -> tuple[str, str]:
    """The flag and summary `git push --porcelain` printed for ref, e.g. ("!", "[remote rejected] (...)")."""
    for line in porcelain.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[1].rsplit(":", 1)[-1] == ref:
            return parts[0], parts[2].strip()
    return "", ""


def git_environment(config: GitConfig, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Identity and credentials for git, as environment only: nothing lands in .git/config."""
    env = dict(os.environ if environ is None else environ)
    out = {
        "GIT_AUTHOR_NAME": config.author_name,
        "GIT_AUTHOR_EMAIL": config.author_email,
        "GIT_COMMITTER_NAME": config.author_name,
        "GIT_COMMITTER_EMAIL": config.author_email,
        "GIT_TERMINAL_PROMPT": "0",
    }
    token = env.get(GIT_TOKEN_ENV)
    if token and config.remote.startswith("https://"):
        basic = base64.b64encode(f"{config.username}:{token}".encode()).decode()
        count = int(env.get("GIT_CONFIG_COUNT", "0") or 0)
        out["GIT_CONFIG_COUNT"] = str(count + 1)
        out[f"GIT_CONFIG_KEY_{count}"] = "http.extraHeader"
        out[f"GIT_CONFIG_VALUE_{count}"] = f"Authorization: Basic {basic}"
    if config.ssh_key is not None:
        out["GIT_SSH_COMMAND"] = f"ssh -i {shlex.quote(str(config.ssh_key))} -o IdentitiesOnly=yes -o BatchMode=yes"
    return out


class Checkout:
    """The reconciler's own clone of the operator's repository."""

    def __init__(self, config: GitConfig, environ: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.path = Path(config.checkout)
        self._env = git_environment(config, environ)
        self._repo: git.Repo | None = None
        self._own: deque[str] = deque(maxlen=OWN_COMMITS)
        self._own_lock = threading.Lock()

    @property
    def repo(self) -> git.Repo:
        if self._repo is None:
            self._repo = self._open_or_clone()
            self._repo.git.update_environment(**self._env)
        return self._repo

    def _open_or_clone(self) -> git.Repo:
        try:
            return git.Repo(self.path)
        except (InvalidGitRepositoryError, NoSuchPathError):
            pass
        if self.path.exists() and any(self.path.iterdir()):
            raise GitError("clone", f"{self.path} exists, is not empty and is not a git checkout")
        self.path.mkdir(parents=True, exist_ok=True)
        repo = git.Repo.init(self.path, initial_branch=self.config.branch)
        repo.create_remote("origin", self.config.remote)
        return repo

    def _git(self, step: str, *args: str) -> str:
        try:
            return str(self.repo.git.execute(["git", *args], env=self._env))
        except GitCommandError as exc:
            raise GitError(step, _clean(exc), temporary=step in REMOTE_STEPS) from None

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
        try:
            return str(self.repo.head.commit.hexsha)
        except ValueError:  # no commit yet
            return None

    def read_dir(self, relative: str, suffixes: tuple[str, ...] = (".yaml", ".yml")) -> dict[str, bytes]:
        """Files directly in a directory of the checkout: repository path -> content."""
        directory = self.path / relative
        out: dict[str, bytes] = {}
        if not directory.is_dir():
            return out
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False) and entry.name.endswith(suffixes):
                    with open(entry.path, "rb") as handle:
                        out[f"{relative}/{entry.name}"] = handle.read()
        return out

    def read_file(self, relative: str) -> bytes | None:
        """One file of the checkout, or None when it is not there (or not a plain file)."""
        target = self.path / relative
        if target.is_symlink() or not target.is_file():
            return None
        return target.read_bytes()

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
            status, stdout, stderr = self.repo.git.execute(
                ["git", "push", "--porcelain", "origin", f"{ours}:{ref}"],
                env=self._env,
                with_extended_output=True,
                with_exceptions=False,
            )
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
