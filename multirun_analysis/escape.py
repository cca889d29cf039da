"""Recorded values, written where the report puts them: a Markdown table cell or line of prose, a shell word
of a command in a fenced block. A run folder is data from anyone: a value with a newline, a `|`, a code fence
or the README's results markers must stay one value in its place, never new structure (a row of its own, a
shifted column, a command of its own, text outside the markers).
"""
from __future__ import annotations

import re
import shlex

# Markdown that changes structure inline: escaped with a backslash. `_` only where it can open or close
# emphasis (not between two letters or digits: per_pixel_mean stays as it is).
_MARKDOWN = re.compile(r"[\\`*\[\]|~]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}  # no tag, comment (the README's markers) or entity


def inline(value: object) -> str:
    """A value as one line of Markdown text that shows it as it is: in a table cell, a list item, prose.
    Line breaks and other whitespace runs become one space."""
    text = " ".join(str(value).split())
    text = "".join(_HTML.get(c, c) for c in text)
    return _MARKDOWN.sub(lambda m: "\\" + m.group(0), text)


_SHELL_SAFE = re.compile(r"[^\x00-\x1f\x7f<>]*")  # printable, and no < or > (the README's markers are <!-- -->)


def shell_word(word: str) -> str:
    """One shell word on one line, as bash reads it back: shlex's quoting where the word is printable, else
    bash's $'...' with every control character and < > as an escape (a newline in a value cannot end the
    command, start another, or close the fenced block it is shown in)."""
    if _SHELL_SAFE.fullmatch(word):
        return shlex.quote(word)
    escaped = "".join(c if c.isalnum() or c in " =,._+-/:@%[]()" else f"\\x{ord(c):02x}" if ord(c) < 128
                      else f"\\u{ord(c):04x}" for c in word)
    return f"$'{escaped}'"


def fenced(lines: list[str], info: str = "") -> str:
    """A fenced code block of `lines`, its fence longer than any run of backticks in them."""
    longest = max((len(run) for line in lines for run in re.findall(r"`+", line)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n" + "\n".join(lines) + f"\n{fence}\n"
