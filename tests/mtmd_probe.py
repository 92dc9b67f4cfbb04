"""Run in a child process by tests/test_gguf_vision.py (a native crash must not take the
test session with it): a GGUF model and its mmproj through llama.cpp's multimodal library
(llama-cpp-python's `llama_cpp.mtmd_cpp`), one image per run, greedy tokens printed as JSON.

    python tests/mtmd_probe.py MODEL.gguf MMPROJ.gguf PROMPT_WITH_<image> SEED:WxH [...]

Each image is W x H random RGB pixels drawn from SEED.
"""

from __future__ import annotations

import ctypes
import json
import random
import sys

import llama_cpp as L
import llama_cpp.mtmd_cpp as M

TOKENS = 8


def main() -> None:
    model_path, mmproj_path, prompt, *images = sys.argv[1:]
    L.llama_backend_init()
    model = L.llama_model_load_from_file(model_path.encode(), L.llama_model_default_params())
    params = L.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_threads, params.n_threads_batch = 512, 512, 1, 1
    ctx = L.llama_init_from_model(model, params)
    options = M.mtmd_context_params_default()
    options.use_gpu, options.n_threads, options.print_timings, options.warmup = False, 1, False, False
    mtmd = M.mtmd_init_from_file(mmproj_path.encode(), model, options)
    if not mtmd:
        raise SystemExit("mtmd_init_from_file failed")
    vocab_size = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))
    text = prompt.replace("<image>", M.mtmd_default_marker().decode()).encode()
    results = []
    for spec in images:
        seed, size = spec.split(":")
        width, height = map(int, size.split("x"))
        data = random.Random(int(seed)).randbytes(width * height * 3)
        bitmap = M.mtmd_bitmap_init(width, height, (ctypes.c_ubyte * len(data)).from_buffer_copy(data))
        L.llama_memory_clear(L.llama_get_memory(ctx), True)
        chunks = M.mtmd_input_chunks_init()
        request = M.mtmd_input_text(text, len(text), False, True)
        if M.mtmd_tokenize(mtmd, chunks, ctypes.byref(request), (ctypes.c_void_p * 1)(bitmap), 1) != 0:
            raise SystemExit("mtmd_tokenize failed")
        positions = ctypes.c_int(0)
        if M.mtmd_helper_eval_chunks(mtmd, ctx, chunks, 0, 0, 512, True, ctypes.byref(positions)) != 0:
            raise SystemExit("mtmd_helper_eval_chunks failed")
        tokens = []
        for _ in range(TOKENS):
            logits = L.llama_get_logits_ith(ctx, -1)
            token = max(range(vocab_size), key=lambda i: logits[i])
            tokens.append(token)
            if L.llama_decode(ctx, L.llama_batch_get_one((L.llama_token * 1)(token), 1)) != 0:
                raise SystemExit("llama_decode failed")
        results.append({"positions": positions.value, "chunks": M.mtmd_input_chunks_size(chunks), "tokens": tokens})
        M.mtmd_input_chunks_free(chunks)
        M.mtmd_bitmap_free(bitmap)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
