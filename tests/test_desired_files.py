"""Which entries of requests/ are request files: the pure rules over a listing (desired/files.py)."""

from __future__ import annotations

import itertools
import re

from hypothesis import given
from hypothesis import strategies as st

from reconciler.desired.files import (
    Candidate,
    Entry,
    Kind,
    Listing,
    display,
    escape,
    sort_out,
    unopened,
    valid_name,
)
from reconciler.desired.validate import MAX_PROBLEMS
from reconciler.parse import MAX_FILE_BYTES, SHOWN

FILE = Entry(Kind.FILE, 300)


def listing(**kinds: Entry) -> dict[str, Entry]:
    return dict(kinds)


def refused_by_name(result: Listing) -> dict[str, list[str]]:
    return {r.name: [str(p) for p in r.problems] for r in result.refused}


def test_plain_request_files_are_read_and_other_plain_files_ignored() -> None:
    result = sort_out("requests", {"blog.yaml": FILE, "web.yml": FILE, "README.md": FILE, ".gitkeep": FILE})
    assert result.candidates == (Candidate("blog.yaml", "blog"), Candidate("web.yml", "web"))
    assert result.refused == ()


def test_two_files_for_one_request_are_both_refused_in_one_status() -> None:
    result = sort_out("requests", {"blog.yaml": FILE, "blog.yml": FILE, "web.yaml": FILE})
    assert result.candidates == (Candidate("web.yaml", "web"),)
    [refused] = result.refused
    assert (refused.name, refused.entries) == ("blog", ("blog.yaml", "blog.yml"))
    assert [str(p) for p in refused.problems] == [
        "requests/blog.yaml and requests/blog.yml name the same request blog; neither is applied until one is removed"
    ]
    invalid = refused.invalid("requests", {"requests/blog.yml": "c2", "requests/blog.yaml": "c1"})
    assert (invalid.path, invalid.revision) == ("requests/blog.yaml, requests/blog.yml", "c2")  # the newest


def test_names_differing_only_in_case_are_both_refused_saying_why() -> None:
    result = sort_out("requests", {"Blog.yaml": FILE, "blog.yaml": FILE})
    assert result.candidates == ()
    assert refused_by_name(result) == {
        "blog": [
            "requests/Blog.yaml and requests/blog.yaml differ only in case: they collide on case-insensitive "
            "checkouts (macOS, Windows); neither is applied until one is renamed"
        ]
    }
    # Without a file of exactly that name, the status goes where no request's can.
    [alone] = sort_out("requests", {"Blog.yaml": FILE, "BLOG.yml": FILE}).refused
    assert alone.name.startswith("_blog-")


def test_a_stem_that_is_no_request_name_never_takes_another_requests_status() -> None:
    result = sort_out("requests", {"evil.yaml": FILE, ".evil.yaml": FILE, "..evil.yaml": FILE, "Evil.yml": FILE})
    # Evil.yml folds onto evil.yaml: both refused; the dotted ones get names no request can have.
    names = sorted(r.name for r in result.refused)
    assert names[-1] == "evil" and all(re.fullmatch(r"_evil-[0-9a-f]{8}", n) for n in names[:-1])
    assert len(set(names)) == 3
    dotted = {r.entries: r for r in result.refused}[(".evil.yaml",)]
    assert [str(p) for p in dotted.problems] == [
        "requests/.evil.yaml: '.evil' is not a valid request name (lower-case letters, digits and '-', starting "
        "and ending with a letter or digit, at most 63 characters)"
    ]


def test_links_folders_and_special_files_are_refused_whatever_their_name() -> None:
    result = sort_out(
        "requests",
        {
            "blog.yaml": Entry(Kind.LINK, 12),
            "notes.md": Entry(Kind.LINK, 12),
            "archive": Entry(Kind.FOLDER),
            "old.yaml": Entry(Kind.FOLDER),
            "pipe.yaml": Entry(Kind.OTHER),
        },
    )
    assert result.candidates == ()
    problems = {r.entries[0]: [str(p) for p in r.problems] for r in result.refused}
    assert problems["blog.yaml"] == ["requests/blog.yaml is a symbolic link; the reconciler does not follow links"]
    assert problems["notes.md"] == ["requests/notes.md is a symbolic link; the reconciler does not follow links"]
    assert problems["archive"] == ["requests/archive is a folder; request files must lie directly in requests/"]
    assert problems["old.yaml"] == ["requests/old.yaml is a folder; request files must lie directly in requests/"]
    assert problems["pipe.yaml"] == [
        "requests/pipe.yaml is not a plain file (a pipe, socket or device); request files are plain files"
    ]
    names = {r.entries[0]: r.name for r in result.refused}
    assert (names["blog.yaml"], names["old.yaml"], names["pipe.yaml"]) == ("blog", "old", "pipe")
    assert names["notes.md"].startswith("_notes-md-") and names["archive"].startswith("_archive-")


def test_a_file_over_the_cap_is_refused_from_its_size_before_it_is_read() -> None:
    result = sort_out("requests", {"big.yaml": Entry(Kind.FILE, MAX_FILE_BYTES + 1), "ok.yaml": FILE})
    assert result.candidates == (Candidate("ok.yaml", "ok"),)
    assert refused_by_name(result) == {
        "big": [f"requests/big.yaml is {MAX_FILE_BYTES + 1} bytes; a request file may hold at most {MAX_FILE_BYTES}"]
    }
    assert sort_out("requests", {"edge.yaml": Entry(Kind.FILE, MAX_FILE_BYTES)}).refused == ()


def test_an_upper_case_suffix_is_refused() -> None:
    assert refused_by_name(sort_out("requests", {"blog.YAML": FILE})) == {
        "blog": ["requests/blog.YAML: the name must end in .yaml or .yml in lower case"]
    }


def test_names_that_try_to_escape_are_refused_and_shown_escaped() -> None:
    names = ["a\nname: x.yaml", "nul\0.yaml", "../up.yaml", "/abs.yaml", "bl\u043eg.yaml", "bad\udcff.yaml", "t\t.yml"]
    result = sort_out("requests", dict.fromkeys(names, FILE))
    assert result.candidates == ()
    assert len(result.refused) == len(names)
    for item in result.refused:
        assert item.name.startswith("_") and re.fullmatch(r"_[a-z0-9-]+", item.name)
        invalid = item.invalid("requests", {})
        for text in (invalid.path, *map(str, invalid.problems)):
            assert text.isascii() and text.isprintable(), text
    shown = {r.entries[0]: r.invalid("requests", {}).path for r in result.refused}
    assert shown["a\nname: x.yaml"] == "requests/a\\nname: x.yaml"
    assert shown["nul\0.yaml"] == "requests/nul\\x00.yaml"
    assert shown["bl\u043eg.yaml"] == "requests/bl\\u043eg.yaml"  # a look-alike shows as what it is
    assert shown["bad\udcff.yaml"] == "requests/bad\\xff.yaml"  # a byte that is not UTF-8


def test_a_file_named_just_yaml_or_yml_is_refused_under_a_status_of_its_own() -> None:
    result = sort_out("requests", {".yaml": FILE, ".yml": FILE, ".YAML": FILE, "blog.yaml": FILE})
    assert result.candidates == (Candidate("blog.yaml", "blog"),)
    problems = {r.entries: [str(p) for p in r.problems] for r in result.refused}
    assert problems == {
        (".yaml",): ["requests/.yaml: no request name before .yaml; name the file after its request (blog.yaml)"],
        (".yml",): ["requests/.yml: no request name before .yml; name the file after its request (blog.yaml)"],
        (".YAML",): [
            "requests/.YAML: no request name before .YAML; name the file after its request (blog.yaml)",
            "requests/.YAML: the name must end in .yaml or .yml in lower case",
        ],
    }
    names = [r.name for r in result.refused]
    assert len(set(names)) == 3 and all(re.fullmatch(r"_file-[0-9a-f]{8}", n) for n in names)


def _shown_names(problem: str) -> list[str]:
    """The escaped file names a message quotes (each starts with requests/)."""
    return re.findall(r"requests/[^ ,:']*", problem)


def test_a_long_name_is_shortened_in_every_message_and_keeps_its_suffix() -> None:
    lower, upper = "\u0436" * 120 + ".yaml", "\u0416" * 120 + ".yml"  # 245 bytes each, 725 once escaped
    assert len(lower.encode()) <= 255
    result = sort_out("requests", {lower: FILE, upper: FILE, "\u0436" * 126 + ".YAML": FILE})
    texts = [r.invalid("requests", {}).path for r in result.refused]
    texts += [str(p) for r in result.refused for p in r.problems]
    assert len(texts) == 5
    for text in texts:
        assert len(text) < 350, text  # the sentence, and each name cut to SHOWN characters
        for name in _shown_names(text):
            assert len(name) <= len("requests/") + SHOWN + len("….yaml") and "…." in name
    [alone] = [r for r in result.refused if len(r.entries) == 1]
    cut = "\\u0436" * 10 + "…"  # SHOWN characters of the escaped stem
    assert [str(p) for p in alone.problems] == [
        f"requests/{cut}.YAML: '{cut}' is not a valid request name (lower-case letters, digits and '-', starting "
        "and ending with a letter or digit, at most 63 characters)",
        f"requests/{cut}.YAML: the name must end in .yaml or .yml in lower case",
    ]


def _case_variants(word: str) -> list[str]:
    return ["".join(chars) for chars in itertools.product(*[(c.lower(), c.upper()) for c in word])]


def test_a_folder_of_case_variants_gets_one_status_of_bounded_size() -> None:
    # blog, bloG, ... (16 stems) times .yaml, .yamL, ..., .YML (24 suffixes): 384 links that all fold to blog.
    names = [
        stem + suffix for stem in _case_variants("blog") for suffix in _case_variants(".yaml") + _case_variants(".yml")
    ]
    result = sort_out("requests", dict.fromkeys(names, Entry(Kind.LINK, 9)))
    assert result.candidates == ()
    [refused] = result.refused
    assert (refused.name, len(refused.entries)) == ("blog", 384)
    problems = [str(p) for p in refused.problems]
    # 16 stems each named by 24 files, the case collision, then 384 links: the first MAX_PROBLEMS, then a count.
    assert len(problems) == MAX_PROBLEMS + 1
    assert problems[-1] == f"... and {16 + 1 + 384 - MAX_PROBLEMS} more problems"
    assert problems[16] == (
        "requests/BLOG.YAML, requests/BLOG.YAMl, requests/BLOG.YAmL and 381 more differ only in case: they collide "
        "on case-insensitive checkouts (macOS, Windows); neither is applied until one is renamed"
    )
    assert problems[0].startswith("requests/BLOG.YAML, requests/BLOG.YAMl, requests/BLOG.YAmL and 21 more name ")
    assert refused.invalid("requests", {}).path == (
        "requests/BLOG.YAML, requests/BLOG.YAMl, requests/BLOG.YAmL and 381 more"
    )
    assert sum(map(len, problems)) < 4000


def test_an_entry_that_stopped_being_a_plain_file_is_refused() -> None:
    refused = unopened("requests", Candidate("blog.yaml", "blog"))
    assert refused.name == "blog"
    assert [str(p) for p in refused.problems] == [
        "requests/blog.yaml could not be opened as a plain file; the reconciler does not follow links"
    ]


# Any listing at all: names from an alphabet rich in the characters that matter, any kind, any size.
NAMES = st.builds(
    str.__add__,
    st.text(alphabet=st.sampled_from("abB-._/\n\0\u043e\u212a\udcffK" + "0"), max_size=8),
    st.sampled_from(("", ".yaml", ".yml", ".YAML", ".md")),
)
ENTRIES = st.builds(Entry, st.sampled_from(list(Kind)), st.integers(0, 2 * MAX_FILE_BYTES))


def _stem(name: str) -> str | None:
    lowered = name.lower()
    for suffix in (".yaml", ".yml"):
        if lowered.endswith(suffix):  # `.yaml` too: refused, never ignored
            return name[: -len(suffix)]
    return None


@given(st.dictionaries(NAMES, ENTRIES, max_size=12))
def test_every_entry_is_read_refused_or_ignored_once_and_no_status_name_is_taken_twice(
    entries: dict[str, Entry],
) -> None:
    result = sort_out("requests", entries)
    seen = [c.entry for c in result.candidates] + [e for r in result.refused for e in r.entries]
    assert len(seen) == len(set(seen))
    for name, entry in entries.items():
        named_like_a_request = _stem(name) is not None
        assert (name in seen) == (named_like_a_request or entry.kind != Kind.FILE)
    statuses = [c.name for c in result.candidates] + [r.name for r in result.refused]
    assert len(statuses) == len(set(statuses))
    for candidate in result.candidates:
        assert valid_name(candidate.name) and _stem(candidate.entry) == candidate.name
        assert entries[candidate.entry].kind == Kind.FILE and entries[candidate.entry].size <= MAX_FILE_BYTES
    folded = [candidate.name.casefold() for candidate in result.candidates]
    assert len(folded) == len(set(folded))
    for refused in result.refused:
        # A valid request name is used only for entries among which one has exactly that stem: never another's.
        if not refused.name.startswith("_"):
            assert valid_name(refused.name) and refused.name in {_stem(e) for e in refused.entries}
        assert refused.problems
        assert len(refused.problems) <= MAX_PROBLEMS + 1
        invalid = refused.invalid("requests", {})
        for text in (invalid.path, *map(str, invalid.problems)):
            assert text.replace("…", "").isascii() and text.isprintable()  # … only where a long name is cut


@given(st.text(), st.sampled_from(("", ".yaml", ".YML", ".md")))
def test_display_gives_one_short_printable_line_and_keeps_the_suffix(stem: str, suffix: str) -> None:
    shown = display("requests", stem + suffix)
    kept = suffix if suffix in (".yaml", ".YML") else ""  # a request file's suffix shows even on a cut name
    assert shown.isprintable() and shown.replace("…", "").isascii()
    assert shown.endswith(kept) and len(shown) <= len("requests/") + SHOWN + len("…") + len(kept)
    if "…" in shown:  # the cut, never a character of the name: escape writes that one as \u2026
        assert shown.count("…") == 1 and len(escape(stem + suffix)) > SHOWN


@given(st.text())
def test_escape_gives_one_printable_ascii_line_and_keeps_plain_names(text: str) -> None:
    shown = escape(text)
    assert shown.isascii() and shown.isprintable()
    if re.fullmatch(r"[A-Za-z0-9._ -]*", text):
        assert shown == text
