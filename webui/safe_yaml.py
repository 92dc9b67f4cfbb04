"""The one YAML reader: safe tags only, with budgets for aliases and nesting.

`yaml.safe_load` refuses Python tags, but not a "billion laughs" file: a few hundred
bytes of nested aliases build a small graph of shared objects whose *expanded* size
is astronomical.  Loading is fast; what hangs the process is the first thing that
walks the value as a tree (validation, copying, an error message that shows it).
So before anything is built, the file's events are walked once, iteratively, and the
expanded size is counted: every alias adds the full size of what it names.  A file
over the budget, or nested deeper than a settings file ever is, is refused, and the
error names the file only, never its value (docs/SECURITY.md, "YAML").
"""

from __future__ import annotations

import yaml

# A preset has ~40 values, a character ~20 strings; these are orders of magnitude above.
MAX_NODES = 100_000  # scalars and collections, aliases expanded
MAX_SCALAR_CHARS = 4 << 20  # characters of all scalars, aliases expanded
MAX_DEPTH = 64  # nested collections


class YAMLRefused(ValueError):
    """YAML that is malformed or over a budget; the message never quotes its content."""


def load_yaml(text: str) -> object:
    """Parse `text` as safe YAML within the budgets, or raise YAMLRefused."""
    check_budget(text)
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as exc:
        raise YAMLRefused(f"not valid YAML ({exc.__class__.__name__})") from None
    except (OverflowError, ValueError, TypeError) as exc:
        # Scalars that parse but cannot be built: a sexagesimal float past float's range
        # (1:0:0:...:0.5), a date like 9999-99-99, an int of 5,000 digits (Python's limit).
        # Anything escaping here stopped the app from starting with a settings.yaml.
        raise YAMLRefused(f"holds a value that cannot be read ({exc.__class__.__name__})") from None


def check_budget(text: str) -> None:
    """Walk the parser's events (no objects are built) and count the expanded size."""
    sizes: dict[str, tuple[int, int]] = {}  # anchor -> (nodes, scalar chars) it expands to
    # One frame per open collection: [anchor, nodes, chars] counted inside it so far.
    stack: list[list] = [[None, 0, 0]]
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                if event.anchor not in sizes:  # undefined, or a collection that contains itself
                    raise YAMLRefused("an alias refers to an unknown or enclosing anchor")
                nodes, chars = sizes[event.anchor]
                _add(stack[-1], nodes, chars)
            elif isinstance(event, yaml.ScalarEvent):
                _add(stack[-1], 1, len(event.value))
                if event.anchor is not None:
                    sizes[event.anchor] = (1, len(event.value))
            elif isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                if len(stack) > MAX_DEPTH:
                    raise YAMLRefused(f"nested deeper than {MAX_DEPTH} levels")
                stack.append([event.anchor, 1, 0])
            elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                anchor, nodes, chars = stack.pop()
                if anchor is not None:
                    sizes[anchor] = (nodes, chars)
                _add(stack[-1], nodes, chars)
            if _open_total(stack):
                raise YAMLRefused("aliases expand beyond the size a settings file may have")
    except yaml.YAMLError as exc:
        raise YAMLRefused(f"not valid YAML ({exc.__class__.__name__})") from None


def _add(frame: list, nodes: int, chars: int) -> None:
    frame[1] += nodes
    frame[2] += chars


def _open_total(stack: list[list]) -> bool:
    # Counts sit in open frames until their collection ends; check their sum too, so a
    # single huge collection is refused while it is being read, not after.
    return sum(f[1] for f in stack) > MAX_NODES or sum(f[2] for f in stack) > MAX_SCALAR_CHARS


def nesting_depth(value: object) -> int:
    """How deeply lists and dicts nest in `value` (0 for a scalar), walked iteratively so
    depth itself cannot exhaust the stack; for data that will be written as YAML."""
    deepest, pending = 0, [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            pending.extend((v, depth + 1) for v in item.values())
            deepest = max(deepest, depth + 1)
        elif isinstance(item, (list, tuple)):
            pending.extend((v, depth + 1) for v in item)
            deepest = max(deepest, depth + 1)
    return deepest
