"""Find extensions: bundled folders, the user's folders, and installed packages.

A folder extension is `<dir>/<name>/script.py`; a package declares an entry point in
the `webui.extensions` group whose name is the extension's name.  Names are listed
by the server and looked up in that listing (webui.paths), so a request can never
make us import anything that was not discovered here (docs/SECURITY.md).
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from webui.paths import is_plain_name, list_entries

ENTRY_POINT_GROUP = "webui.extensions"

Kind = Literal["bundled", "user", "package"]


@dataclass(frozen=True)
class Source:
    """Where an extension comes from."""

    name: str
    kind: Kind
    where: str  # a folder, or the entry point's "module:attr"
    path: Path | None = None
    entry_point: EntryPoint | None = None


def discover(bundled_dir: Path, user_dir: Path) -> tuple[dict[str, Source], list[str]]:
    """Every available extension by name, and notes about names that clash.

    On a clash the user's folder wins over a package, and a package over a bundled
    folder: the most specific choice of the user is the one kept.
    """
    found: dict[str, Source] = {}
    notes: list[str] = []

    def add(source: Source) -> None:
        if source.name in found:
            notes.append(f"extension {source.name}: the {source.kind} one ({source.where}) "
                         f"replaces the {found[source.name].kind} one ({found[source.name].where})")
        found[source.name] = source

    for name, path in list_entries(bundled_dir, dirs=True).items():
        if (path / "script.py").is_file():
            add(Source(name, "bundled", str(path), path=path))
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if not is_plain_name(ep.name):
            notes.append(f"an installed package declares an extension with an invalid name: {ep.name!r}")
            continue
        add(Source(ep.name, "package", ep.value, entry_point=ep))
    for name, path in list_entries(user_dir, dirs=True).items():
        if (path / "script.py").is_file():
            add(Source(name, "user", str(path), path=path))
    return dict(sorted(found.items())), notes


def import_extension(source: Source) -> Any:
    """Import the extension's code (it runs now: extensions are trusted code)."""
    if source.entry_point is not None:
        return source.entry_point.load()
    assert source.path is not None  # noqa: S101 - a folder source always has a path
    module_name = f"webui_extension_{source.name.replace('.', '_').replace('-', '_').replace(' ', '_')}"
    spec = importlib.util.spec_from_file_location(module_name, source.path / "script.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {source.path / 'script.py'}")
    module: ModuleType = importlib.util.module_from_spec(spec)
    # Registered while it runs, so dataclasses and the like inside it work; replaced
    # when the extension is loaded again.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module
