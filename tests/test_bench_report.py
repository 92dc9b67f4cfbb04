"""bench/run_all.py: benchmarks' figures land in docs/PERFORMANCE.md's current-figures
section, stamped with date, commit and load, without touching the rest of the page."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture()
def run_all(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import run_all

    return run_all


def test_a_block_is_added_then_replaced_and_the_rest_of_the_page_is_kept(run_all):
    page = "# Performance\n\nIntro.\n\n## Old section\n\n| a | b |\n"
    bench = run_all.BENCHES[0]
    first = run_all.rewrite(page, {bench.name: run_all.block(bench, [{"what": "x", "value": "1.0", "detail": "d"}],
                                                             "day one")})
    assert first.index(run_all.BEGIN) < first.index("## Old section")
    assert "Intro." in first and first.endswith("## Old section\n\n| a | b |\n")
    assert "| x | **1.0** | d |" in first and "day one" in first
    second = run_all.rewrite(first, {bench.name: run_all.block(bench, [{"what": "x", "value": "2.0", "detail": "e"}],
                                                               "day two")})
    assert "| x | **2.0** | e |" in second and "day one" not in second
    assert second.count(f"<!-- figures:{bench.name} -->") == 1
    # Another benchmark's block is added beside it, the first one kept.
    other = run_all.BENCHES[1]
    third = run_all.rewrite(second, {other.name: run_all.not_run_block(other, "no reason", "day three")})
    assert "| x | **2.0** | e |" in third and "not run day three: no reason" in third
    assert run_all.rewrite(third, {}) == third


def test_a_pipe_in_a_figure_does_not_break_the_table(run_all):
    text = run_all.block(run_all.BENCHES[0], [{"what": "a|b", "value": "1", "detail": "x\ny"}], "now")
    assert "| a\\|b | **1** | x y |" in text


def test_a_real_quick_run_writes_the_samplers_figures(tmp_path):
    doc = tmp_path / "PERFORMANCE.md"
    doc.write_text("# Performance\n\nKept.\n")
    done = subprocess.run([sys.executable, str(BENCH / "run_all.py"), "--only", "samplers", "--quick", "--doc",
                           str(doc)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    text = doc.read_text()
    assert "<!-- figures:samplers -->" in text and "quick smoke run" in text and "commit " in text
    assert "every sampler on" in text and "min_p + DRY" in text and text.rstrip().endswith("Kept.")


def test_an_unknown_benchmark_name_is_refused(tmp_path):
    done = subprocess.run([sys.executable, str(BENCH / "run_all.py"), "--only", "nope", "--doc",
                           str(tmp_path / "x.md")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "unknown benchmark" in done.stderr
