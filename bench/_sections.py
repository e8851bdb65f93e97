"""Writing a bench's table into its page of the docs, leaving the rest of the page as it is."""

from __future__ import annotations

from pathlib import Path


def replace_section(path: Path, heading: str, section: str, *, new_page: str, ends: tuple[str, ...] = ("## ",)) -> None:
    """Replace the section that starts at the line ``heading`` (up to the next line that starts with one
    of ``ends``) by ``section``, or append it; a page that does not exist yet starts as ``new_page``."""
    old = path.read_text() if path.exists() else new_page
    lines = old.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == heading)
    except StopIteration:
        new = old.rstrip() + "\n\n" + section
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith(ends)), len(lines))
        before = "\n".join(lines[:start]).rstrip()
        after = "\n".join(lines[end:]).strip()
        new = (before + "\n\n" if before else "") + section + ("\n" + after + "\n" if after else "")
    path.write_text(new.rstrip() + "\n")
