"""Which entries of the requests folder are request files, and why the others are refused (pure).

The folder is listed, never walked, and an entry is judged by its name, its kind and its size before a byte
of it is read: a symbolic link, a folder or a special file is refused without looking at what it points to,
whatever its name. Each refused entry gets a status of its own, under a name no valid request can have when
its own name is not a valid request name (`.evil.yaml` must never write `status/evil.yaml`). Two entries
that name one request (`blog.yaml` beside `blog.yml`, or `Blog.yaml` beside `blog.yaml`, which collide on a
case-insensitive checkout) are both refused, in one status: neither is applied, never both. A name is
shortened in messages, and a status lists a few names and at most MAX_PROBLEMS problems: a folder of long or
many names must not make a status file of as many kilobytes.
"""

from __future__ import annotations

import hashlib
import re
import stat
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from reconciler.desired.request import DNS_LABEL
from reconciler.desired.validate import capped
from reconciler.model.desired import Invalid
from reconciler.model.problem import Problem
from reconciler.parse import MAX_FILE_BYTES, shorten

SUFFIXES = (".yaml", ".yml")
SHOWN_NAMES = 3  # entries a message or a status names; the rest are counted
_LABEL = re.compile(DNS_LABEL)


class Kind(StrEnum):
    """What a folder entry is, from lstat: links are never followed to find out."""

    FILE = "file"
    LINK = "link"
    FOLDER = "folder"
    OTHER = "other"


@dataclass(frozen=True)
class Entry:
    """One entry of the requests folder as listed: its kind and size, nothing of its content."""

    kind: Kind
    size: int = 0

    @classmethod
    def of(cls, mode: int, size: int) -> Entry:
        """The entry for an lstat result's st_mode and st_size."""
        if stat.S_ISLNK(mode):
            return cls(Kind.LINK, size)
        if stat.S_ISDIR(mode):
            return cls(Kind.FOLDER, size)
        if stat.S_ISREG(mode):
            return cls(Kind.FILE, size)
        return cls(Kind.OTHER, size)


@dataclass(frozen=True)
class Candidate:
    """A plain file with a valid request name: read it (at most MAX_FILE_BYTES + 1 bytes) and parse it."""

    entry: str  # the file's name in the folder
    name: str  # its stem, the request's name


@dataclass(frozen=True)
class Refused:
    """Entries refused together under one status name, with every reason."""

    name: str  # the request's name, or `_<stem>-<hash>` when the entries' own name cannot be one
    entries: tuple[str, ...]  # the entries' names in the folder, as listed
    problems: tuple[Problem, ...]

    def invalid(self, folder: str, revisions: Mapping[str, str]) -> Invalid:
        """The Invalid standing input; revisions: repository path -> last commit, newest first."""
        paths = {f"{folder}/{e}" for e in self.entries}
        revision = next((r for p, r in revisions.items() if p in paths), None)
        listed = sorted(display(folder, e) for e in self.entries)
        shown = ", ".join(listed[:SHOWN_NAMES])
        if len(listed) > SHOWN_NAMES:
            shown += f" and {len(listed) - SHOWN_NAMES} more"
        return Invalid(self.name, shown, revision, self.problems)


@dataclass(frozen=True)
class Listing:
    """The requests folder sorted out: files to read, entries refused; anything else (README.md) is ignored."""

    candidates: tuple[Candidate, ...]
    refused: tuple[Refused, ...]


def escape(text: str) -> str:
    """text in printable ASCII only, with repr-like escapes (\\n, \\x00, \\u043e; \\xff for an undecodable byte).

    A file name reaches status files, logs and commit messages this way: it can never add a line, and a
    look-alike letter shows as what it is.
    """
    out = []
    for char in text:
        code = ord(char)
        if char == "\\":
            out.append("\\\\")
        elif 0x20 <= code < 0x7F:
            out.append(char)
        elif char in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[char])
        elif 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8, as os.fsdecode keeps it
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)


def display(folder: str, entry: str) -> str:
    """The repository path of an entry, safe to print anywhere: escaped, its stem shortened, its suffix kept."""
    # A 255-byte name escapes to some 1,500 characters, repeated in every problem; the ellipsis that marks the
    # cut cannot be read as part of the name, since escape writes a real one as \u2026.
    stem, suffix = _split(entry) or (entry, "")
    return f"{folder}/{shorten(escape(stem))}{escape(suffix)}"


def _listed(folder: str, entries: list[str]) -> str:
    """Entries for a message, in plain words: the first SHOWN_NAMES, then how many more."""
    items = [display(folder, e) for e in entries[:SHOWN_NAMES]]
    if len(entries) > SHOWN_NAMES:
        items.append(f"{len(entries) - SHOWN_NAMES} more")
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _split(entry: str) -> tuple[str, str] | None:
    """(stem, suffix) when the name ends in .yaml or .yml, in any case; else None. The stem may be empty."""
    lowered = entry.lower()
    for suffix in SUFFIXES:
        if lowered.endswith(suffix):
            return entry[: -len(suffix)], entry[-len(suffix) :]
    return None


def _fold(stem: str) -> str:
    """The form under which two names are one file on a case-insensitive (and normalising) file system."""
    return unicodedata.normalize("NFC", stem).casefold()


def valid_name(stem: str) -> bool:
    """Whether stem can name a request (and so its status file): an RFC 1123 label, lower case."""
    return _LABEL.fullmatch(stem) is not None


def unsafe_name(entries: Iterable[str]) -> str:
    """A status name for entries whose own name is no request's: it starts with `_`, which no valid name has,
    and ends with a hash of the raw names, so two such entries never share a status file."""
    raw = sorted(e.encode("utf-8", "surrogateescape") for e in entries)
    digest = hashlib.sha256(b"\0".join(raw)).hexdigest()[:8]
    first = _split(raw[0].decode("utf-8", "replace"))
    stem = first[0] if first else raw[0].decode("utf-8", "replace")
    safe = re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")[:40].strip("-") or "file"
    return f"_{safe}-{digest}"


def _kind_problem(folder: str, entry: str, kind: Kind) -> Problem | None:
    shown = display(folder, entry)
    if kind == Kind.LINK:
        return Problem("", f"{shown} is a symbolic link; the reconciler does not follow links")
    if kind == Kind.FOLDER:
        return Problem("", f"{shown} is a folder; request files must lie directly in {folder}/")
    if kind == Kind.OTHER:
        return Problem("", f"{shown} is not a plain file (a pipe, socket or device); request files are plain files")
    return None


def _name_problems(folder: str, entry: str) -> list[Problem]:
    parts = _split(entry)
    shown = display(folder, entry)
    if parts is None:
        return [Problem("", f"{shown}: a request file's name ends in .yaml or .yml")]
    stem, suffix = parts
    problems = []
    if not stem:
        problems.append(
            Problem(
                "", f"{shown}: no request name before {escape(suffix)}; name the file after its request (blog.yaml)"
            )
        )
    elif not valid_name(stem):
        problems.append(
            Problem(
                "",
                f"{shown}: '{shorten(escape(stem))}' is not a valid request name (lower-case letters, digits and '-', "
                "starting and ending with a letter or digit, at most 63 characters)",
            )
        )
    if suffix != suffix.lower():
        problems.append(Problem("", f"{shown}: the name must end in .yaml or .yml in lower case"))
    return problems


def _size_problem(folder: str, entry: str, size: int, limit: int) -> Problem | None:
    if size > limit:
        return Problem("", f"{display(folder, entry)} is {size} bytes; a request file may hold at most {limit}")
    return None


def _stem(entry: str) -> str:
    parts = _split(entry)
    return parts[0] if parts else entry


def _group_problems(folder: str, names: list[str]) -> list[Problem]:
    by_stem: dict[str, list[str]] = {}
    for entry in names:
        by_stem.setdefault(_stem(entry), []).append(entry)
    problems = []
    for stem, same in sorted(by_stem.items()):
        if len(same) > 1:  # the very same stem: blog.yaml beside blog.yml
            shown = _listed(folder, same)
            problems.append(
                Problem(
                    "",
                    f"{shown} name the same request {shorten(escape(stem))}; neither is applied until one is removed",
                )
            )
    if len(by_stem) > 1:
        shown = _listed(folder, names)
        problems.append(
            Problem(
                "",
                f"{shown} differ only in case: they collide on case-insensitive checkouts (macOS, Windows); "
                "neither is applied until one is renamed",
            )
        )
    return problems


def sort_out(folder: str, entries: Mapping[str, Entry], limit: int = MAX_FILE_BYTES) -> Listing:
    """Sort a listing of the requests folder (name -> entry) into files to read and refused entries.

    Plain files whose name does not end in .yaml or .yml are ignored (a README); anything else that is not a
    plain file is refused, whatever its name, and so is a file named just `.yaml` or `.yml`. Nothing here reads
    a file.
    """
    groups: dict[str, list[str]] = {}
    refused: list[Refused] = []
    for entry_name, entry in entries.items():
        parts = _split(entry_name)
        if parts is None:
            problem = _kind_problem(folder, entry_name, entry.kind)
            if problem is not None:
                refused.append(Refused(unsafe_name([entry_name]), (entry_name,), (problem,)))
            continue
        if not parts[0]:  # `.yaml` names no request: refused on its own, never grouped with `.yml`
            found = _kind_problem(folder, entry_name, entry.kind)
            problems = ([found] if found else []) + _name_problems(folder, entry_name)
            refused.append(Refused(unsafe_name([entry_name]), (entry_name,), tuple(problems)))
            continue
        groups.setdefault(_fold(parts[0]), []).append(entry_name)
    candidates: list[Candidate] = []
    for key, names in groups.items():
        names.sort()
        name = key if key in {_stem(n) for n in names} and valid_name(key) else unsafe_name(names)
        problems = _group_problems(folder, names) if len(names) > 1 else []
        for entry_name in names:
            entry = entries[entry_name]
            found = _kind_problem(folder, entry_name, entry.kind)
            if found is not None:
                problems.append(found)
            if len(names) == 1:
                problems += _name_problems(folder, entry_name)
                too_big = _size_problem(folder, entry_name, entry.size, limit) if entry.kind == Kind.FILE else None
                if too_big is not None:
                    problems.append(too_big)
        if problems:
            # One folder of case variants (blog.yaml, BLOG.Yml, Blog.YAML, ...) could make hundreds of problems.
            refused.append(Refused(name, tuple(names), capped(problems)))
        else:
            candidates.append(Candidate(names[0], name))
    return Listing(
        tuple(sorted(candidates, key=lambda c: c.name)),
        tuple(sorted(refused, key=lambda r: r.name)),
    )


def unopened(folder: str, candidate: Candidate) -> Refused:
    """A candidate that was no longer a plain file when opened (it is never followed to find out more).

    What was read is judged by load_yaml (empty, binary, over MAX_FILE_BYTES, not UTF-8) like any request.
    """
    shown = display(folder, candidate.entry)
    problem = Problem("", f"{shown} could not be opened as a plain file; the reconciler does not follow links")
    return Refused(candidate.name, (candidate.entry,), (problem,))
