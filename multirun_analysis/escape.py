"""Recorded values, written where the report puts them: a Markdown table cell or line of prose, a shell word
of a command in a fenced block. A run folder is data from anyone: a value with a newline, a `|`, a code fence
or the README's results markers must stay one value in its place, never new structure (a row of its own, a
shifted column, a command of its own, text outside the markers).
"""
from __future__ import annotations

import re
import shlex
import unicodedata

# Markdown that changes structure inline: escaped with a backslash. `_` only where it can open or close
# emphasis (not between two letters or digits: per_pixel_mean stays as it is).
_MARKDOWN = re.compile(r"[\\`*\[\]|~]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}  # no tag, comment (the README's markers) or entity


def hidden(c: str) -> bool:
    """A character that does not show as itself: a control (ESC would move a terminal's cursor as the file
    is read) or a format character (a right-to-left override shows text in another order than it runs)."""
    return unicodedata.category(c) in ("Cc", "Cf", "Cs")  # Cs: a lone surrogate, no character at all


def visible(c: str) -> str:
    """A character as the escape that names it, the same in a shell word (bash's $'...') and in text:
    \\xHH for ASCII (a byte), \\uHHHH and \\UHHHHHHHH for the rest (a character: \\xe9 would be a byte,
    not é): \\x1b, \\u202e, \\U000e0001."""
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def inline(value: object) -> str:
    """A value as one line of Markdown text that shows it as it is: in a table cell, a list item, prose.
    Line breaks and other whitespace runs become one space; a control or format character its escape."""
    text = " ".join(str(value).split())
    text = "".join(_HTML.get(c, visible(c) if hidden(c) else c) for c in text)
    return _MARKDOWN.sub(lambda m: "\\" + m.group(0), text)


def for_terminal(text: str) -> str:
    """What the report prints (its account, an error naming a recorded value): lines as they are, any other
    hidden character as its escape, so that a value holding ESC sequences cannot drive the terminal."""
    return "".join(visible(c) if hidden(c) and c != "\n" else c for c in text)


def _shell_safe(word: str) -> bool:
    """Printable, and no < or > (the README's markers are <!-- -->)."""
    return not any(hidden(c) or c in "<>" for c in word)


def shell_word(word: str) -> str:
    """One shell word on one line, as bash reads it back: shlex's quoting where the word is printable, else
    bash's $'...' with every character but ASCII letters, digits and a few signs as its escape (visible). A
    newline in a value cannot end the command, start another, or close the fenced block it is shown in."""
    if _shell_safe(word):
        return shlex.quote(word)
    escaped = "".join(c if (c.isalnum() and c.isascii()) or c in " =,._+-/:@%[]()" else visible(c) for c in word)
    return f"$'{escaped}'"


def fenced(lines: list[str], info: str = "") -> str:
    """A fenced code block of `lines`, its fence longer than any run of backticks in them."""
    longest = max((len(run) for line in lines for run in re.findall(r"`+", line)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n" + "\n".join(lines) + f"\n{fence}\n"
