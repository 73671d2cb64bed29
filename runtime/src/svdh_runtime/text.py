"""Text for the person at the terminal: one line per message, whatever a file name holds."""

from __future__ import annotations


def one_line(text: str) -> str:
    """``text`` with every control character escaped (a file name may hold a newline): one line, always."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
