"""Re-run every benchmark and rewrite the "Current figures" section of docs/PERFORMANCE.md
with what they measured, the date, the commit and the machine's load.

    .venv/bin/python bench/run_all.py                   # everything this machine can run
    .venv/bin/python bench/run_all.py --only engine,api # some of them (the others' figures stay)
    .venv/bin/python bench/run_all.py --quick           # few rounds: a smoke run, marked as such
    .venv/bin/python bench/run_all.py --dry-run         # print the section instead of writing it

Each benchmark reports its figures through bench/report.py; each gets its own block in
the section, stamped with when and where it ran, so a partial re-run replaces only its
own blocks.  A benchmark this machine cannot run (no GPU, no llama.cpp, no browser) is
listed as not run, with the reason, and its previous block is kept.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from report import read_figures

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "PERFORMANCE.md"
BEGIN, END = "<!-- current-figures:begin -->", "<!-- current-figures:end -->"
HEADING = "## Current figures (`bench/run_all.py`)"


@dataclass(frozen=True)
class Bench:
    name: str
    title: str
    args: tuple[str, ...]
    quick: tuple[str, ...] = ()
    needs: str | None = None  # "cuda", a module, or "chromium"
    timeout: int = 1800

    def command(self, quick: bool) -> list[str]:
        return [sys.executable, *self.args, *(self.quick if quick else ())]

    def shown(self) -> str:
        return " ".join(["bench/" + Path(self.args[0]).name, *self.args[1:]])

    def missing(self) -> str | None:
        if self.needs == "cuda":
            import torch

            return None if torch.cuda.is_available() else "no CUDA GPU on this machine"
        if self.needs == "chromium":
            return None if shutil.which("chromium") else "Chromium is not installed"
        if self.needs and importlib.util.find_spec(self.needs) is None:
            return f"the {self.needs} package is not installed"
        return None


B = "bench/"
BENCHES = (
    Bench("engine", "One stream: our engine ÷ raw `model.generate` (demo model)", (B + "bench_engine.py",),
          ("--rounds", "3", "--tokens", "20")),
    Bench("batching", "Batching, prefix cache and fair scheduling (demo model)", (B + "bench_batching.py",),
          ("--rounds", "1", "--tokens", "16")),
    Bench("speculative", "Speculative decoding by prompt lookup ÷ none, one stream (demo model)",
          (B + "bench_speculative.py",), ("--rounds", "1", "--tokens", "20", "--drafts", "4")),
    Bench("batching-0.5b", "Batching and prefix cache (~0.47B random Llama, one thread)",
          (B + "bench_batching.py", "--random-0.5b", "--threads", "1", "--tokens", "16", "--rounds", "2",
           "--parts", "batching,follow-up"), ("--rounds", "1", "--tokens", "4"), timeout=3600),
    Bench("gguf-worker", "GGUF through the llama.cpp worker process ÷ in the server's process, and ÷ llama.cpp's "
          "own server (demo GGUF and a 60M random Q8_0 Llama)", (B + "bench_gguf_worker.py", "--rounds", "5"),
          ("--rounds", "1", "--tokens", "16"), needs="llama_cpp", timeout=3600),
    Bench("determinism", "Row-wise decode attention ÷ one masked call (8 streams); a deterministic follow-up's "
          "first token ÷ a cached one (~0.47B random Llama, bf16)",
          (B + "bench_determinism.py", "--random-0.5b", "--dtype", "bf16", "--tokens", "16", "--rounds", "3"),
          ("--rounds", "1", "--tokens", "4"), timeout=3600),
    # One thread: on a busy 2-core machine two threads measure the neighbours (docs/PERFORMANCE.md).
    Bench("cpu-dtypes", "CPU dtypes and 8-bit (fp32, fp16 on fbgemm, bf16, cpu-int8, bitsandbytes) ÷ fp32, "
          "~0.47B random Llama, one thread",
          (B + "bench_cpu_dtypes.py", "--threads", "1", "--rounds", "4"), ("--rounds", "1", "--tokens", "4", "--prompt", "32"), timeout=3600),
    Bench("openmp", "Decode while another thread keeps an OpenMP pool, given back ÷ kept (~0.47B random Llama)",
          (B + "bench_openmp.py",), ("--rounds", "1", "--tokens", "8"), timeout=3600),
    Bench("cpu-kernels", "One Linear layer on each CPU matmul kernel ÷ fp32 (MKL)", (B + "bench_cpu_kernels.py",),
          ("--reps", "10")),
    Bench("cpu-loaders", "Transformers on the CPU (every dtype and 8/4-bit) against llama.cpp f16/Q8_0/Q4_K_M, "
          "same weights, one server each", (B + "bench_cpu_loaders.py",),
          ("--rounds", "1", "--tokens", "8", "--prompt", "200"), needs="llama_cpp", timeout=3600),
    Bench("samplers", "Sampler chain vs plain sampling (demo model)", (B + "bench_samplers.py",),
          ("--rounds", "1", "--tokens", "20")),
    Bench("steer", "Decoding with a control vector ÷ without (demo model: Transformers, and its GGUF copy)",
          (B + "bench_steer.py",), ("--rounds", "1", "--tokens", "20")),
    Bench("token-view", "Token view's probabilities recorded vs not (demo model)", (B + "bench_token_view.py",),
          ("--rounds", "3", "--tokens", "20")),
    Bench("inspect", "Inspect tab: logit lens, attention and norms of 512 tokens ÷ one forward pass (demo model, "
          "~0.47B random Llama)", (B + "bench_inspect.py",), ("--rounds", "1", "--only", "demo"), timeout=3600),
    Bench("thinking", "A thinking reply split into thinking and answer as it streams ÷ not split (demo model)",
          (B + "bench_thinking.py",), ("--rounds", "3", "--tokens", "20")),
    Bench("structured", "Structured output: a JSON schema enforced ÷ unconstrained", (B + "bench_structured.py",),
          ("--rounds", "1", "--tokens", "32", "--skip-0.5b"), timeout=3600),
    Bench("tools", "One tool round trip: a tool file, an MCP stdio server (running, first call) ÷ the model "
          "writing the call (demo model)", (B + "bench_tools.py",), ("--rounds", "5")),
    Bench("grammar-budget", "A structured chat request with grammar/template budgets ÷ without (demo model)",
          (B + "bench_grammar_budget.py",), ("--rounds", "3", "--calls", "60")),
    Bench("training", "LoRA training tokens/s and the demo's perplexity in fp32/8-bit/4-bit",
          (B + "bench_training.py",), ("--steps", "2", "--no-0.5b"), timeout=3600),
    Bench("load-on-demand", "First token for a request that loads its model on demand ÷ resident (demo model, "
          "~0.47B random Llama)", (B + "bench_load_on_demand.py", "--rounds", "3"), ("--rounds", "1"),
          timeout=3600),
    Bench("api", "OpenAI API (streaming, loopback) ÷ engine (demo model)", (B + "bench_api.py",),
          ("--rounds", "3", "--tokens", "20")),
    Bench("embeddings", "Embeddings: one batched request ÷ one request per text (demo model)",
          (B + "bench_embeddings.py",), ("--rounds", "1", "--texts", "8", "--tokens", "10")),
    Bench("retrieval", "Documents: recall@5 per retrieval mode, indexing pages/s, query latency at 1k and 100k "
          "chunks (the town fixture's tiny embedding model)", (B + "bench_retrieval.py", "--threads", "1"),
          ("--big", "5000", "--queries", "10", "--pages", "20")),
    Bench("remote", "In front of a remote engine ÷ asking it directly", (B + "bench_remote.py",),
          ("--rounds", "3", "--tokens", "20")),
    Bench("vision", "Images in: first token with one 512x512 image ÷ the same text; a follow-up turn's "
          "image KV reused ÷ computed (tiny LLaVA and SmolVLM)", (B + "bench_vision.py",), ("--rounds", "2")),
    Bench("chat", "A 500-message chat ÷ an empty one, per streamed token", (B + "bench_chat.py",),
          ("--rounds", "2", "--tokens", "20")),
    Bench("lore", "Building a prompt with a 5,000-entry lorebook and a 500-message chat ÷ one token (demo model)",
          (B + "bench_lore.py",), ("--rounds", "2")),
    Bench("first-screen", "Navigation to a usable message box (Chromium)", (B + "bench_first_screen.py",),
          ("--rounds", "2"), needs="chromium"),
    Bench("idle", "An idle server's CPU: no tab, then one Chromium tab open (demo model)", (B + "bench_idle.py",),
          ("--seconds", "10", "--settle", "3")),
    Bench("gguf", "GGUF through llama.cpp: ours ÷ llama.cpp's own server", (B + "bench_gguf.py",),
          ("--rounds", "1", "--tokens", "16"), needs="llama_cpp", timeout=3600),
    Bench("soak", "Soak: API and UI clients with disconnects, model reloads and UI restarts",
          (B + "soak.py", "--minutes", "2"), ("--minutes", "0.5")),
    Bench("gpu-quant", "4-bit vs 16-bit and GPU+CPU splits on CUDA", (B + "gpu_quant.py",), needs="cuda"),
    Bench("gguf-gpu", "GGUF --n-gpu-layers offload on CUDA (a GPU build of llama-cpp-python)",
          (B + "gguf_gpu.py",), ("--tokens", "16"), needs="cuda", timeout=3600),
)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    import torch
    import transformers

    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return f"{cpu} ({os.cpu_count()} CPUs{gpu}), torch {torch.__version__}, transformers {transformers.__version__}"


def commit() -> str:
    git = shutil.which("git")
    if git is None:
        return "unknown"
    try:
        sha = subprocess.run([git, "rev-parse", "--short", "HEAD"], cwd=ROOT,  # noqa: S603 - fixed argv
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run([git, "status", "--porcelain", "--untracked-files=no"],  # noqa: S603
                               cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha} + uncommitted changes" if dirty else sha


def load() -> str:
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "?"


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def block(bench: Bench, figures: list[dict[str, str]], stamp: str) -> str:
    rows = "\n".join(f"| {cell(f['what'])} | **{cell(f['value'])}** | {cell(f['detail'])} |" for f in figures)
    return (f"<!-- figures:{bench.name} -->\n### {bench.title}\n\n`{bench.shown()}` — {stamp}\n\n"
            f"| what | figure | detail |\n|---|---|---|\n{rows}\n<!-- /figures:{bench.name} -->")


def not_run_block(bench: Bench, why: str, stamp: str) -> str:
    return (f"<!-- figures:{bench.name} -->\n### {bench.title}\n\n`{bench.shown()}` — not run {stamp}: "
            f"{why}.\n<!-- /figures:{bench.name} -->")


def rewrite(doc: str, blocks: dict[str, str]) -> str:
    """`doc` with each named block replaced, or added at the end of the section (which is
    created under the title when missing); everything outside the section is kept."""
    if BEGIN not in doc:
        title_end = doc.find("\n", doc.find("# ")) + 1 if doc.startswith("# ") else 0
        intro = ("\nWritten by `bench/run_all.py`; each block says when, at which commit and on what "
                 "machine it ran. The sections after this one explain the benchmarks and keep earlier, "
                 "dated figures for the history of what changed them.\n")
        doc = f"{doc[:title_end]}\n{BEGIN}\n{HEADING}\n{intro}\n{END}\n{doc[title_end:]}"
    head, rest = doc.split(BEGIN, 1)
    section, tail = rest.split(END, 1)
    for name, text in blocks.items():
        pattern = re.compile(rf"<!-- figures:{re.escape(name)} -->.*?<!-- /figures:{re.escape(name)} -->", re.S)
        if pattern.search(section):
            section = pattern.sub(lambda _, text=text: text, section)
        else:
            section = section.rstrip("\n") + f"\n\n{text}\n"
    return f"{head}{BEGIN}{section.rstrip()}\n\n{END}{tail}"


def run(bench: Bench, quick: bool) -> tuple[list[dict[str, str]] | None, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "bench")])}
    try:
        done = subprocess.run(bench.command(quick), cwd=ROOT, env=env, capture_output=True,  # noqa: S603
                              text=True, timeout=bench.timeout)  # (our own scripts, fixed argv)
    except subprocess.TimeoutExpired:
        return None, f"ran past {bench.timeout} s"
    sys.stdout.write(done.stdout)
    if done.returncode != 0:
        return None, f"failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:] or ''}"
    figures = read_figures(done.stdout)
    return (figures, "") if figures else (None, "reported no figures")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", help="comma-separated names: " + ", ".join(b.name for b in BENCHES))
    parser.add_argument("--quick", action="store_true", help="few rounds: checks the scripts, not the speed")
    parser.add_argument("--dry-run", action="store_true", help="print the section instead of writing it")
    parser.add_argument("--doc", type=Path, default=DOC)
    args = parser.parse_args(argv)
    chosen = BENCHES
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {b.name for b in BENCHES}
        if unknown:
            parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
        chosen = tuple(b for b in BENCHES if b.name in wanted)
    where, at = machine(), commit()
    blocks, failed = {}, []
    for bench in chosen:
        day = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        why = bench.missing()
        if why:
            print(f"== {bench.name}: not run ({why})", flush=True)
            if args.only:  # asked for by name: say so in the doc; otherwise keep the old figures
                blocks[bench.name] = not_run_block(bench, why, day)
            continue
        print(f"== {bench.name}: {' '.join(bench.command(args.quick))}", flush=True)
        before = load()
        figures, problem = run(bench, args.quick)
        if figures is None:
            print(f"== {bench.name}: {problem}", flush=True)
            failed.append(bench.name)
            continue
        kind = "quick smoke run (few rounds: not for comparison), " if args.quick else ""
        stamp = f"{kind}{day}, commit {at}, load average {before} → {load()}; {where}"
        blocks[bench.name] = block(bench, figures, stamp)
    doc = rewrite(args.doc.read_text(encoding="utf-8") if args.doc.exists() else "# Performance\n", blocks)
    if args.dry_run:
        print(doc.split(BEGIN, 1)[1].split(END, 1)[0])
    else:
        tmp = args.doc.with_suffix(".tmp")
        tmp.write_text(doc, encoding="utf-8")
        tmp.replace(args.doc)
        print(f"wrote {len(blocks)} block(s) to {args.doc}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
