"""A training run's figures: its tokens/s is over the run, and stays put once it ends."""

from __future__ import annotations

from webui.training import progress as progress_module
from webui.training.progress import Progress


def test_a_finished_runs_rate_does_not_keep_falling(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: now[0])
    run = Progress("demo")
    run.begin(0, 10, [])
    now[0] += 10
    run.add_tokens(1000)
    run.step(10, 1.5)
    assert run.snapshot().tokens_per_second == 100.0
    run.set_state("saving")
    now[0] += 50  # saving, then an hour of the Training tab open
    run.set_state("done")
    now[0] += 3600
    assert run.snapshot().tokens_per_second == 100.0
    run.begin(10, 20, [(10, 1.5)])  # a resumed run measures itself afresh
    now[0] += 5
    run.add_tokens(100)
    assert run.snapshot().tokens_per_second == 20.0
