"""LoRA training and perplexity on the built-in demo model (real Trainer, real peft).

One short run (module fixture) feeds several tests: the loss falls, the adapter is
published with its settings and loss history, it changes the output, and perplexity
on the training text is lower with it.  A subprocess is killed with SIGKILL mid-run
and the run resumed from its checkpoint.  Bad input is refused before any work.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from webui.generation.engine import GenerationEngine, GenerationRequest
from webui.generation.params import make_params
from webui.loaders.base import LoadOptions
from webui.loaders.registry import default_registry
from webui.model_manager import ModelLent, ModelManager
from webui.paths import NameRefused
from webui.settings import DEMO_MODEL, PROJECT_ROOT
from webui.training.datasets import DatasetError
from webui.training.service import SAMPLE_NAME, TrainingError, TrainingService
from webui.training.settings import TrainingSettings

# Out of the demo model's domain (it has only read the King James Bible), so a few
# dozen steps visibly teach it something.
TEXT = ("The lighthouse keeper climbed the stairs every evening and lit the great lamp. "
        "Ships passed far out on the grey water and their lamps answered hers. ") * 12
PROMPT = "The lighthouse keeper"
RUN = dict(cutoff_len=32, overlap=8, micro_batch_size=4, learning_rate=2e-3, warmup_steps=4, steps=24,
           save_steps=100, rank=8, alpha=16, target_modules="q_proj,k_proj,v_proj,o_proj")


def greedy(engine: GenerationEngine) -> str:
    params = make_params({"temperature": 0.0, "max_new_tokens": 16, "ban_eos_token": True})
    return engine.generate(GenerationRequest(PROMPT, params)).text()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    user_data = tmp_path_factory.mktemp("user_data")
    data = user_data / "training" / "datasets"
    data.mkdir(parents=True)
    (data / "keeper.txt").write_text(TEXT, encoding="utf-8")
    models = ModelManager(PROJECT_ROOT / "models", default_registry(), LoadOptions(cpu=True),
                          lora_dir=user_data / "loras")
    models.load(DEMO_MODEL)
    engine = GenerationEngine(models)
    service = TrainingService(models, user_data)
    base_text = greedy(engine)
    base_ppl, _ = service.evaluate("keeper.txt")
    service.start(TrainingSettings(lora_name="keeper", dataset="keeper.txt", **RUN))
    snap = service.wait(300)
    assert snap.state == "done", snap.line()
    return models, engine, service, user_data, base_text, base_ppl, snap


def test_loss_goes_down_and_the_adapter_is_published(setup):
    models, _, _, user_data, _, _, snap = setup
    losses = [loss for _, loss in snap.losses]
    assert [step for step, _ in snap.losses] == list(range(1, 25))
    assert sum(losses[-5:]) / 5 < 0.85 * sum(losses[:5]) / 5
    folder = user_data / "loras" / "keeper"
    assert "keeper" in models.loras()
    assert json.loads((folder / "training_settings.json").read_text())["rank"] == 8
    assert json.loads((folder / "training_log.json").read_text())["losses"][-1][0] == 24
    assert not list((user_data / "loras").glob(".*"))  # no staging folder left behind
    assert not (user_data / "training" / "checkpoints" / "keeper").exists()  # nothing left to resume
    assert models.current.loras == () and models.lent_for is None  # given back as lent


def test_the_adapter_changes_the_output_and_lowers_perplexity(setup):
    models, engine, service, _, base_text, base_ppl, _ = setup
    assert greedy(engine) == base_text  # the run left the base model as it was
    models.set_loras(["keeper"])
    try:
        assert greedy(engine) != base_text
        tuned, _ = service.evaluate("keeper.txt")
    finally:
        models.set_loras([])
    assert tuned.loras == "keeper" and tuned.perplexity < 0.5 * base_ppl.perplexity
    rows = service.results.rows()
    assert [(r.loras, r.data) for r in rows[-2:]] == [("none", "keeper.txt"), ("keeper", "keeper.txt")]


def test_perplexity_on_the_bundled_sample_with_a_stride(setup):
    _, _, service, _, _, _, _ = setup
    disjoint, _ = service.evaluate(SAMPLE_NAME, context=256, stride=256)
    overlapping, _ = service.evaluate(SAMPLE_NAME, context=256, stride=128)
    assert disjoint.tokens == overlapping.tokens > 2000
    # More context before each scored token: the model predicts it better.
    assert overlapping.perplexity < disjoint.perplexity < 200
    with pytest.raises(TrainingError, match="stride"):
        service.evaluate(SAMPLE_NAME, context=64, stride=128)
    for context, stride in ((-1, 0), (0, -5), (1.5, 0)):
        with pytest.raises(TrainingError, match="whole numbers"):
            service.evaluate(SAMPLE_NAME, context=context, stride=stride)
    for bad in ("../keeper.txt", "/etc/hostname", "missing.txt"):
        with pytest.raises(NameRefused):
            service.evaluate(bad)


@pytest.mark.parametrize(("name", "content", "message"), [
    ("empty.txt", "  \n", "empty"),
    ("broken.json", '[{"instruction": "a", "output": ', "not valid JSON"),
    ("object.json", '{"instruction": "a"}', "expected a JSON list"),
    ("shape.json", '[{"instruction": "a"}]', "expected 'instruction' and 'output'"),
    ("scalars.json", "[1, 2]", "record 1 is a int"),
    ("lines.jsonl", '{"instruction": "a", "output": "b"}\nnot json\n', "line 2"),
    ("none.jsonl", "\n\n", "empty"),
])
def test_malformed_data_is_refused_before_any_work(setup, name, content, message):
    _, _, service, user_data, _, _, _ = setup
    (user_data / "training" / "datasets" / name).write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError, match=message):
        service.start(TrainingSettings(lora_name="bad-data", dataset=name, **RUN))
    assert not (user_data / "training" / "checkpoints" / "bad-data").exists()
    assert service.status().name != "bad-data"


def test_instruction_data_and_other_bad_requests(setup):
    models, _, service, user_data, _, _, _ = setup
    data = user_data / "training" / "datasets"
    records = [{"instruction": f"Name number {i}.", "output": f"Number {i}."} for i in range(6)]
    (data / "numbers.jsonl").write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    plan = service.plan(TrainingSettings(lora_name="n", dataset="numbers.jsonl", **RUN))
    # Only the reply is learned: the prompt's labels are masked.
    first = plan.examples[0]
    assert -100 in first["labels"] and first["labels"][-1] != -100
    formats = user_data / "training" / "formats"
    formats.mkdir(parents=True, exist_ok=True)
    (formats / "qa.json").write_text('{"instruction,output": "Q: %instruction%\\nA: %output%"}', encoding="utf-8")
    plan = service.plan(TrainingSettings(lora_name="n", dataset="numbers.jsonl", format="qa", **RUN))
    assert models.current.tokenizer.decode(plan.examples[0]["input_ids"]).startswith("Q: Name number 0.\nA: Number 0.")
    checks = [
        (dict(lora_name="keeper", dataset="keeper.txt"), TrainingError, "already exists"),
        (dict(lora_name="x", dataset="keeper.txt", cutoff_len=1024, overlap=8), TrainingError, "context"),
        (dict(lora_name="x", dataset="keeper.txt", target_modules="c_attn"), TrainingError, "no layers named c_attn"),
        (dict(lora_name="x", dataset="keeper.txt", format="qa"), TrainingError, "raw text"),
        (dict(lora_name="x", dataset="missing.txt"), NameRefused, "unknown dataset"),
        (dict(lora_name="x", dataset="keeper.txt", format="nope"), NameRefused, "unknown format"),
    ]
    for changes, error, message in checks:
        with pytest.raises(error, match=message):
            service.plan(TrainingSettings(**{**RUN, **changes}))
    for bad in ("../x", "a/b", ".hidden", "x" * 300):
        with pytest.raises(ValueError):
            TrainingSettings(**{**RUN, "lora_name": bad, "dataset": "keeper.txt"})
    with pytest.raises(TrainingError, match="no checkpoint"):
        service.plan(TrainingSettings(lora_name="x", dataset="keeper.txt", **RUN), resume=True)


def test_requests_and_swaps_are_refused_while_the_model_is_lent(setup):
    models, engine, _, _, base_text, _, _ = setup
    with models.lend("training demo") as loaded:
        assert loaded is models.current and models.lent_for == "training demo"
        with pytest.raises(ModelLent, match="training demo is in progress"):
            models.load(DEMO_MODEL)
        with pytest.raises(ModelLent):
            models.set_loras([])
        with pytest.raises(ModelLent, match="training demo is in progress"):  # a 503, its own type
            greedy(engine)
        with pytest.raises(ModelLent, match="already"):
            with models.lend("another"):
                pass
    assert greedy(engine) == base_text  # serving again


def cli(user_data, *args):
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "webui", *args, "--model", DEMO_MODEL, "--user-data-dir", str(user_data),
               "--cpu"]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=PROJECT_ROOT)


def test_kill_9_mid_run_then_resume_continues_from_the_checkpoint(setup):
    _, _, _, user_data, _, _, _ = setup
    run = user_data / "training" / "checkpoints" / "crash"
    args = ["train", "--lora", "crash", "--data", "keeper.txt", "--steps", "30", "--save-steps", "5",
            "--cutoff-len", "32", "--overlap", "8", "--micro-batch-size", "2"]
    first = cli(user_data, *args)
    try:
        deadline = time.monotonic() + 240
        while not (run / "checkpoint-10" / "trainer_state.json").exists():
            assert first.poll() is None, first.stdout.read()
            assert time.monotonic() < deadline, "no checkpoint-10 in time"
            time.sleep(0.1)
        first.send_signal(signal.SIGKILL)
    finally:
        first.kill()
        first.wait()
    assert first.returncode == -signal.SIGKILL
    assert not (user_data / "loras" / "crash").exists()
    second = cli(user_data, "train", "--lora", "crash", "--resume")
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 0, out
    resumed = int(out.split("resumed at step ")[1].split()[0])
    assert resumed >= 10, out
    assert "done: step 30/30" in out
    log = json.loads((user_data / "loras" / "crash" / "training_log.json").read_text())
    assert log["steps"] == 30 and [step for step, _ in log["losses"]] == list(range(1, 31))


def test_perplexity_matches_the_models_own_loss_when_one_window_holds_the_text(setup):
    import math

    import torch

    from webui.training.perplexity import perplexity

    models, _, _, _, _, _, _ = setup
    loaded = models.current
    ids = loaded.tokenizer(TEXT, add_special_tokens=False)["input_ids"][:200]
    with torch.inference_mode():
        expected = math.exp(float(loaded.model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss))
    value, scored = perplexity(loaded.model, ids, context=512, stride=512, device="cpu")
    assert scored == 199 and value == pytest.approx(expected, rel=1e-4)
    # Windows shorter than the text: every token still scored exactly once.
    assert perplexity(loaded.model, ids, context=50, stride=20, device="cpu")[1] == 199


def test_stop_saves_a_checkpoint_and_resume_finishes_the_run(setup):
    from tests.conftest import wait_for

    models, _, service, user_data, _, _, _ = setup
    settings = TrainingSettings(lora_name="stopped", dataset="keeper.txt",
                                **{**RUN, "steps": 20, "micro_batch_size": 2, "save_steps": 1000})
    service.start(settings)
    assert wait_for(lambda: service.status().step >= 3, timeout=120)
    assert "checkpoint" in service.stop()
    snap = service.wait(120)
    assert snap.state == "stopped" and 3 <= snap.step < 20
    assert (user_data / "training" / "checkpoints" / "stopped" / f"checkpoint-{snap.step}").is_dir()
    assert service.unfinished() == ["stopped"] and "stopped" not in models.loras()
    assert models.lent_for is None and models.current.loras == ()  # serving again meanwhile
    with pytest.raises(TrainingError, match="unfinished run"):
        service.start(settings)  # a fresh run may not overwrite it
    service.resume("stopped")
    done = service.wait(300)
    assert done.state == "done" and done.first_step == snap.step and done.step == 20
    assert [step for step, _ in done.losses] == list(range(1, 21))
    assert "stopped" in models.loras() and service.unfinished() == []


def test_perplexity_command_prints_the_value_last(setup):
    _, _, service, user_data, _, _, _ = setup
    process = cli(user_data, "perplexity", "--data", "keeper.txt", "--lora", "keeper", "--context", "128")
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 0, out
    last = out.strip().splitlines()[-1]
    assert last.startswith("perplexity: ") and float(last.split(": ")[1]) > 1
    row = service.results.rows()[-1]
    assert (row.loras, row.context, row.perplexity) == ("keeper", 128, float(last.split(": ")[1]))
    refused = cli(user_data, "perplexity", "--data", "../keeper.txt")
    out, _ = refused.communicate(timeout=300)
    assert refused.returncode == 2 and "no such file" in out and "keeper.txt" in out


def test_the_commands_take_a_data_file_by_its_path(tmp_path):
    """--data /path/to/file.txt, as people pass it: copied into the datasets folder (and
    said), then measured; the same file again is used where it is; a path that is not a
    usable file is refused, saying what would work."""
    from webui.training.cli import DataRefused, adopt_data

    user_data = tmp_path / "user_data"
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    text = outside / "psalms.txt"
    text.write_text(TEXT, encoding="utf-8")
    process = cli(user_data, "perplexity", "--data", str(text), "--context", "64")
    out, _ = process.communicate(timeout=600)
    assert process.returncode == 0, out
    copied = user_data / "training" / "datasets" / "psalms.txt"
    assert copied.read_text(encoding="utf-8") == TEXT
    assert f"copied {text} to {copied}" in out and out.strip().splitlines()[-1].startswith("perplexity: ")
    # The same file again is used where it was copied; another file of that name is copied beside it.
    assert adopt_data(str(text), user_data, train=False) == "psalms.txt"
    other = tmp_path / "psalms.txt"
    other.write_text(TEXT + " More.", encoding="utf-8")
    assert adopt_data(str(other), user_data, train=True) == "psalms-2.txt"
    assert adopt_data("psalms.txt", user_data, train=True) == "psalms.txt"  # a listed name, as before
    for bad, train, words in ((tmp_path / "missing.txt", False, "no such file"), (outside, False, "no such file"),
                              ("../keeper.txt", True, "no such file")):
        with pytest.raises(DataRefused) as refused:
            adopt_data(str(bad), user_data, train=train)
        message = str(refused.value)
        assert words in message and "pass the path of a .txt" in message, message
        assert "psalms.txt" in message  # the names there are listed
    records = outside / "records.csv"
    records.write_text("a,b\n", encoding="utf-8")
    with pytest.raises(DataRefused, match="a .txt or .json or .jsonl file is needed"):
        adopt_data(str(records), user_data, train=True)


def test_help_documents_both_commands():
    from webui.cli import parser as app_parser
    from webui.training.cli import parser

    assert "webui train" in app_parser().format_help() and "webui perplexity" in app_parser().format_help()
    commands = parser()._subparsers._group_actions[0].choices
    train_help, ppl_help = commands["train"].format_help(), commands["perplexity"].format_help()
    for flag in ("--lora", "--data", "--steps", "--epochs", "--rank", "--alpha", "--target-modules", "--resume",
                 "--micro-batch-size", "--gradient-accumulation", "--cutoff-len", "--load-in-4bit"):
        assert flag in train_help, flag
    for flag in ("--model", "--data", "--lora", "--context", "--stride"):
        assert flag in ppl_help, flag
