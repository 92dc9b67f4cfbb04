"""Transformers on the CPU against llama.cpp on the same weights: decode tokens/s, time to
first token of a long prompt, and peak memory; one server process per configuration,
measured in alternating rounds.

    .venv/bin/python bench/bench_cpu_loaders.py [--rounds 3] [--tokens 64] [--prompt 1000] [--only A,B]

The ~0.47B random Llama of bench_gguf.py (built once into --work-dir, saved in bf16 as
published checkpoints are), served
- by this app's OpenAI API (the Transformers loader) with `--dtype auto` (the default),
  fp32, bf16, cpu-int8 and bitsandbytes 8-bit and 4-bit; each in its own process;
- by `python -m llama_cpp.server` from f16, Q8_0 and Q4_K_M GGUF files of the same weights.
Both sides get --threads (default: every core).  Decode rate = extra tokens / extra
seconds between a short and a long greedy completion.  Time to first token: a streamed
completion of a --prompt-token text that starts with a word no earlier request used (so
neither side's prompt cache helps), until the first piece arrives.  Peak memory: the
server process's VmHWM after the run.  Each figure is the median over rounds; ratios
are taken against llama.cpp f16 within each round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402
from bench_gguf import build_folder, complete, free_port, start_llama_cpp_server, wait_until_serving  # noqa: E402
from report import figure  # noqa: E402

OURS = {
    "ours auto": [],
    "ours fp32": ["--dtype", "fp32"],
    "ours bf16": ["--dtype", "bf16"],
    "ours cpu-int8": ["--cpu-int8"],
    "ours bnb 8-bit": ["--load-in-8bit"],
    "ours bnb 4-bit": ["--load-in-4bit"],
}
LLAMA = {"llama.cpp f16": "f16", "llama.cpp Q8_0": "q8_0", "llama.cpp Q4_K_M": "q4_k_m"}
BASE = "llama.cpp f16"
FP32 = "ours fp32"  # what the Model tab's speed table counts from
WORDS = ("and the king of the land said unto them behold the servant went up into the city "
         "where the people gathered by the river at evening ").split()


def bf16_copy(work: Path, folder: Path) -> Path:
    """The model saved in bf16, as published checkpoints are: what every side loads."""
    out = work / f"{folder.name}-bf16"
    if not (out / "model.safetensors").is_file():
        import shutil

        import torch
        from transformers import AutoModelForCausalLM

        AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).save_pretrained(out)
        for path in folder.iterdir():  # the tokenizer files as they are (llama.cpp's converter reads them)
            if path.name.startswith("tokenizer") or path.suffix == ".jinja":
                shutil.copy(path, out / path.name)
    return out


def gguf_file(work: Path, folder: Path, kind: str) -> Path:
    """The same weights as GGUF `kind`: converted (f16, q8_0) or quantized from f16 (q4_k_m)."""
    from webui.loaders.gguf_convert import convert, fetch_converter

    out = work / f"{folder.name}-{kind}.gguf"
    if out.is_file():
        return out
    if kind in ("f16", "q8_0"):
        return convert(folder, out, kind, fetch_converter())
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    source = gguf_file(work, folder, "f16")
    if llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), params) != 0:
        raise RuntimeError(f"quantizing {source.name} to Q4_K_M failed")
    return out


def serve(args: argparse.Namespace) -> None:
    """One of our servers: the runtime and its OpenAI API on --port, until killed."""
    from webui.api.openai_api import APIServer
    from webui.cli import parse_flags
    from webui.runtime import build_runtime
    from webui.settings import build_settings

    with tempfile.TemporaryDirectory() as user_data:
        flags, _ = parse_flags(["--model", args.model, "--model-dir", str(args.work_dir), "--user-data-dir",
                                user_data, "--preset", "Deterministic", *json.loads(args.serve)])
        settings, _ = build_settings(flags, None)
        runtime = build_runtime(settings, use_remembered=False)
        if runtime.models.current is None:
            raise SystemExit(f"the model did not load: {runtime.warnings}")
        APIServer(runtime, port=args.port).start()
        while True:
            time.sleep(3600)


def start_ours(work: Path, model: str, flags: list[str], threads: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, __file__, "--work-dir", str(work), "--serve", json.dumps(flags), "--model", model,
               "--port", str(port)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)  # noqa: S603
    url = f"http://127.0.0.1:{port}/v1"
    return wait_until_serving(server, url, f"our server with {flags}", seconds=600), url


def decode_rate(url: str, model: str, tokens: int) -> float:
    # Untimed first: after the long-prompt request, a server's prompt cache holds another
    # text, and re-reading this prompt must not land in only one of the two timed requests.
    complete(url, model, 1, None)
    short_s, short_n = complete(url, model, 8, None)
    long_s, long_n = complete(url, model, tokens + 8, None)
    return (long_n - short_n) / (long_s - short_s)


def first_token_seconds(url: str, model: str, prompt: str) -> float:
    body = {"model": model, "prompt": prompt, "max_tokens": 4, "temperature": 0, "stream": True,
            "logit_bias": {"2": -100}}
    start = time.perf_counter()
    with httpx.stream("POST", f"{url}/completions", json=body, timeout=1200) as reply:
        reply.raise_for_status()
        for line in reply.iter_lines():
            # The first piece, even one whose text is still empty (a token that ends
            # inside a multi-byte character): the prompt has been read by then.
            if line.startswith("data: ") and line != "data: [DONE]" and json.loads(line[6:]).get("choices"):
                return time.perf_counter() - start
    raise RuntimeError("the stream ended without a token")


def long_prompt(tag: str, tokens: int, tokenizer) -> str:
    """About `tokens` tokens of text that starts with `tag` (unique per request)."""
    text, i = tag, 0
    while len(tokenizer(text).input_ids) < tokens:
        text += " " + " ".join(WORDS[(i + j) % len(WORDS)] for j in range(50))
        i += 7
    return text


def peak_gib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "webui-bench-gguf")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--prompt", type=int, default=1000, help="prompt tokens for the time to first token")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--only", default=",".join([*OURS, *LLAMA]), help="configurations, comma-separated")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        return serve(args)
    from transformers import AutoTokenizer

    args.work_dir.mkdir(parents=True, exist_ok=True)
    folder = bf16_copy(args.work_dir, build_folder(args.work_dir))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    chosen = [c for c in [*OURS, *LLAMA] if c in args.only.split(",")]
    servers: dict[str, tuple[subprocess.Popen, str, str]] = {}
    try:
        for name in chosen:  # one at a time: loads must not compete for the cores
            if name in OURS:
                process, url = start_ours(args.work_dir, folder.name, [*OURS[name], "--threads", str(args.threads)],
                                          args.threads)
                servers[name] = (process, url, folder.name)
            else:
                gguf = gguf_file(args.work_dir, folder, LLAMA[name])
                process, url = start_llama_cpp_server(gguf, args.threads)
                servers[name] = (process, url, gguf.name)
            complete(servers[name][1], servers[name][2], 4, None)  # first-call allocations
            print(f"{name}: ready", flush=True)
        decode = {name: [] for name in chosen}
        first = {name: [] for name in chosen}
        loads = []
        for round_ in range(args.rounds):
            for name in chosen:  # alternating: each round visits every server once
                _, url, model = servers[name]
                decode[name].append(decode_rate(url, model, args.tokens))
                first[name].append(first_token_seconds(url, model, long_prompt(f"{round_}{name}", args.prompt,
                                                                                tokenizer)))
            loads.append(os.getloadavg()[0])
            print(f"round {round_ + 1}: " + "; ".join(f"{n} {decode[n][-1]:.2f} tok/s, first token {first[n][-1]:.1f} s"
                                                     for n in chosen), flush=True)
        load = f"load average {min(loads):.1f}-{max(loads):.1f}, {args.threads} threads each side"
        for name in chosen:
            process = servers[name][0]
            rate, ttft = statistics.median(decode[name]), statistics.median(first[name])
            ratios = ""
            if BASE in chosen:
                speed = statistics.median(d / b for d, b in zip(decode[name], decode[BASE], strict=True))
                wait = statistics.median(f / b for f, b in zip(first[name], first[BASE], strict=True))
                ratios = f"decode ÷ {BASE} {speed:.2f}, first token ÷ {BASE} {wait:.2f}, "
            if name in OURS and name != FP32 and FP32 in chosen:  # the Model tab's table (MEASURED)
                speed = statistics.median(d / b for d, b in zip(decode[name], decode[FP32], strict=True))
                prefill = statistics.median(b / f for f, b in zip(first[name], first[FP32], strict=True))
                ratios += f"speed ÷ {FP32}: decode {speed:.2f}, prefill {prefill:.2f}, "
            figure(f"{name}, ~0.47B Llama on the CPU", f"{rate:.1f} tok/s, first token {ttft:.1f} s",
                   f"{ratios}peak RSS {peak_gib(process.pid):.2f} GiB; {args.prompt}-token prompt, "
                   f"{args.tokens} decode tokens, median of {args.rounds} alternating rounds; {load}")
    finally:
        for process, _, _ in servers.values():
            process.terminate()
        for process, _, _ in servers.values():
            process.wait(30)


if __name__ == "__main__":
    main()
