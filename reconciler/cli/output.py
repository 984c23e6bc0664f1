"""The command line's terminal output, in one place: a rich Console per stream, the table for people, styles.

Colour and styles only when the stream is a terminal and neither NO_COLOR (https://no-color.org) nor TERM=dumb
says otherwise. Anything else (a pipe, a file, a test's StringIO) gets plain text that is never wrapped nor
cut: scripts, logs and tests read whole lines.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

# Wide enough that no line a command prints is ever wrapped or cut when the reader is not a person.
UNLIMITED_WIDTH = 1_000_000

PHASE_STYLES = {
    "Ready": "green",
    "Failed": "red",
    "Invalid": "red",
    "Provisioning": "yellow",
    "Pending": "yellow",
    "Orphaned": "dim",
    "Deleted": "dim",
}
JOB_STYLES = {"succeeded": "green", "failed": "red", "running": "yellow", "pending": "yellow"}
# A plan line's style by its leading sign: what is created, changed in place, or destroyed.
PLAN_STYLES = {"+": "green", "~": "yellow", "-": "red"}


def is_terminal(stream: TextIO) -> bool:
    """Whether a person reads stream: a terminal (a closed or odd stream counts as not)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def colour_wanted(stream: TextIO) -> bool:
    """Colour and styles: on a terminal, unless NO_COLOR is set (to anything but empty) or TERM is dumb."""
    return is_terminal(stream) and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def console_for(stream: TextIO) -> Console:
    """A Console writing to stream: styled on a terminal (see colour_wanted), plain and never wrapped otherwise.

    A dumb terminal (TERM=dumb: Emacs' shell, some CI consoles) cannot move its cursor and has no width to
    trust: it is written to as a pipe is.
    """
    terminal = is_terminal(stream) and os.environ.get("TERM") != "dumb"
    colour = colour_wanted(stream)
    return Console(
        file=stream,
        # Decided here, not by rich's own guesses (FORCE_COLOR, Jupyter...): the stream itself says.
        force_terminal=terminal,
        force_interactive=terminal,
        color_system="auto" if colour else None,
        no_color=not colour,
        width=None if terminal else UNLIMITED_WIDTH,
        soft_wrap=not terminal,
        highlight=False,
        markup=False,
        emoji=False,
    )


def styled(text: str, style: str | None) -> Text:
    """text in style (None: plain); a Text is never read as markup, so a message with [brackets] stays as is."""
    return Text(text, style=style or "")


def table(columns: Sequence[str], rows: Iterable[Sequence[str | Text]]) -> Table:
    """A table for people: a header row and aligned columns two spaces apart, no box lines, no title."""
    grid = Table(
        box=None,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1),
        header_style="bold",
        show_header=True,
        expand=False,
    )
    for name in columns:
        # On a narrow terminal the last column (a message) folds; the others keep their words whole.
        grid.add_column(name, no_wrap=name != columns[-1], overflow="fold")
    for row in rows:
        grid.add_row(*(cell if isinstance(cell, Text) else Text(cell) for cell in row))
    return grid


def print_table(console: Console, grid: Table) -> None:
    """Print grid; off a terminal without the padding that would end each line with spaces."""
    if console.is_terminal:
        console.print(grid)
        return
    with console.capture() as captured:
        console.print(grid)
    console.file.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def print_line(console: Console, text: str | Text) -> None:
    """One line of text, styled or not, never read as markup."""
    console.print(text if isinstance(text, Text) else Text(text), soft_wrap=True)


def plan_line(line: str) -> Text:
    """A line of `reconciler plan`'s text, coloured by its leading sign (other lines stay plain)."""
    return styled(line, PLAN_STYLES.get(line[:2].strip()) if line[1:2] == " " else None)
