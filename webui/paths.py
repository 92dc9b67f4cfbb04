"""The one place where a name from a browser or API request becomes a path.

Names are never joined onto a folder directly.  The server lists what exists, and a
requested name is looked up in that listing; anything else is refused with the same
message whether or not such a file exists (docs/SECURITY.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from webui.errors import AppError

# Plain names: letters, digits, space, dot, dash, underscore; no leading dot, and no
# trailing dot or space (Windows drops them, so "a." and "a" would be one file).
# Always used with fullmatch: `$` would also match before a trailing newline.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9 ._\-]{0,126}[A-Za-z0-9_\-])?")
# Device names Windows reserves in every folder, with any extension ("NUL.txt" is NUL).
_RESERVED = re.compile(r"(?:CON|PRN|AUX|NUL|COM[0-9\u00b9\u00b2\u00b3]|LPT[0-9\u00b9\u00b2\u00b3])(?:\..*)?",
                       re.IGNORECASE)


class NameRefused(AppError, ValueError):
    """A user-given name that is not in the server's own listing."""

    status, code = 404, "not_found"


def is_plain_name(name: object) -> bool:
    return (isinstance(name, str) and _PLAIN_NAME.fullmatch(name) is not None and ".." not in name
            and _RESERVED.fullmatch(name) is None)


def list_entries(folder: Path, *, suffixes: Iterable[str] = (), dirs: bool = False) -> dict[str, Path]:
    """Map plain names to paths for what `folder` holds.

    With `suffixes`, files with those suffixes are listed under their stem; with
    `dirs`, sub-folders under their name.  Hidden and oddly named entries are skipped,
    so they can never be chosen.
    """
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    suffixes = tuple(suffixes)
    for entry in sorted(folder.iterdir()):
        if dirs and entry.is_dir() and is_plain_name(entry.name):
            found[entry.name] = entry
        elif suffixes and entry.is_file() and entry.suffix in suffixes and is_plain_name(entry.stem):
            found[entry.stem] = entry
    return found


PICK_SHOWN = 10  # names a refusal lists


def pick(name: object, listing: Mapping[str, Path], what: str) -> Path:
    """Return listing[name] for a listed plain name; refuse anything else."""
    if is_plain_name(name) and name in listing:
        return listing[name]  # type: ignore[index]
    shown = name if isinstance(name, str) and is_plain_name(name) else "(invalid name)"
    # Said with what would work: the names there are to choose from (the first few).
    names = sorted(listing)
    choices = ", ".join(names[:PICK_SHOWN]) + (f" and {len(names) - PICK_SHOWN} more" if len(names) > PICK_SHOWN else "")
    raise NameRefused(f"unknown {what}: {shown}; " + (f"choose one of: {choices}" if names else f"there is no {what} yet"))


def new_entry(folder: Path, name: object, suffix: str, what: str) -> Path:
    """Path for saving a new entry named by the user: a plain name, directly in `folder`."""
    if not is_plain_name(name):
        raise NameRefused(
            f"invalid {what} name: use letters, digits, spaces, '.', '-' or '_' (at most 128, no leading dot, "
            "no trailing dot or space, not a reserved device name such as CON or NUL)"
        )
    return folder / f"{name}{suffix}"
