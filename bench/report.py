"""How a benchmark hands its figures to bench/run_all.py: one line per figure on stdout,
beside the script's own human-readable output."""

from __future__ import annotations

import json

MARK = "@figure "


def figure(what: str, value: str, detail: str = "") -> None:
    """One figure: what was compared, the result (a ratio, a rate), and how it was got."""
    print(MARK + json.dumps({"what": what, "value": value, "detail": detail}), flush=True)


def read_figures(output: str) -> list[dict[str, str]]:
    return [json.loads(line[len(MARK):]) for line in output.splitlines() if line.startswith(MARK)]
