"""Images for a GGUF vision model: llama.cpp's multimodal library (libmtmd, bound by
llama-cpp-python as `llama_cpp.mtmd_cpp`) with the model's image projector (its folder's
`mmproj-*.gguf`, webui/loaders/gguf_files.py).

Runs where the model runs, in the llama.cpp worker process (webui/loaders/gguf_worker.py):
the projector is native code reading pixels, and a crash in it ends only that process.

A prompt with images is written by the model's chat template with libmtmd's marker in
each image's place (webui/chat/prompt.py, `image_marker`).  `mtmd_tokenize` cuts it into
chunks, text tokens and images; the backend (webui/loaders/gguf_backend.py) feeds the text
chunks as it feeds any prompt and has libmtmd encode each image chunk into the
sequence's cache cells.  For the engine's ids and prefix-cache key each image stands as
a run of `placeholder` tokens as long as the image's tokens (webui/generation/vision.py):
the same image in the next turn is found in the cache and not encoded again.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webui.generation.request import PromptError
from webui.loaders.base import LoadError


@dataclass(frozen=True)
class Chunk:
    """One piece of a tokenized vision prompt: text tokens, or an image of `size` tokens."""

    tokens: tuple[int, ...] = ()
    image: int | None = None  # the image's index among the prompt's images
    size: int = 0

    @property
    def length(self) -> int:
        return len(self.tokens) if self.image is None else self.size


class Chunks:
    """libmtmd's chunks of one prompt (freed with `close`) and what they hold."""

    def __init__(self, mtmd: Any, handle: Any, pieces: list[Chunk]):
        self._mtmd, self.handle, self.pieces = mtmd, handle, pieces

    def pointer(self, index: int) -> Any:
        return self._mtmd.mtmd_input_chunks_get(self.handle, index)

    def close(self) -> None:
        if self.handle is not None:
            self._mtmd.mtmd_input_chunks_free(self.handle)
            self.handle = None


class Projector:
    """An open image projector for one loaded model."""

    def __init__(self, mtmd: Any, context: Any):
        self._mtmd = mtmd
        self._ctx = context
        self.marker = mtmd.mtmd_default_marker().decode()

    @classmethod
    def open(cls, path: Path, model: Any, threads: int) -> Projector:
        try:
            import llama_cpp.mtmd_cpp as mtmd
        except ImportError as exc:  # a llama-cpp-python built without libmtmd
            raise LoadError(f"{path.name}: this llama-cpp-python has no multimodal library (mtmd)") from exc
        import llama_cpp

        from webui.loaders.llama_logs import route_mtmd_logs

        route_mtmd_logs(mtmd, llama_cpp)  # its lines join llama.cpp's, at their levels
        params = mtmd.mtmd_context_params_default()
        params.use_gpu, params.n_threads, params.print_timings, params.warmup = False, threads, False, False
        context = mtmd.mtmd_init_from_file(str(path).encode(), model, params)
        if not context:
            raise LoadError(f"llama.cpp could not load the image projector {path.name} for this model "
                            "(the server log says why)")
        self = cls(mtmd, context)
        if not mtmd.mtmd_support_vision(context):
            self.close()
            raise LoadError(f"{path.name} is not an image projector (it reads no images)")
        return self

    def tokenize(self, text: str, images: tuple, add_special: bool) -> Chunks:
        """`text` with its markers cut around `images` (checked RGB ImageInputs, in order);
        `add_special`: whether libmtmd puts the BOS token first (not when the template did)."""
        count = text.count(self.marker)
        if count != len(images):
            raise PromptError(f"the prompt has {count} place{'s' if count != 1 else ''} for images and "
                              f"{len(images)} image{'s' if len(images) != 1 else ''}", param="messages")
        if self._mtmd.mtmd_decode_use_mrope(self._ctx):
            # Qwen2-VL's positions are 2-D inside an image: the engine's one-position-per-token
            # accounting (and its cache key) does not hold for them.
            raise PromptError("this GGUF vision model places image tokens in two dimensions (M-RoPE), "
                              "which is not served yet; use its Transformers checkpoint", param="messages")
        bitmaps = [self._bitmap(image) for image in images]
        handle = self._mtmd.mtmd_input_chunks_init()
        try:
            raw = text.encode()
            request = self._mtmd.mtmd_input_text(raw, len(raw), add_special, True)
            array = (ctypes.c_void_p * max(1, len(bitmaps)))(*bitmaps)
            status = self._mtmd.mtmd_tokenize(self._ctx, handle, ctypes.byref(request), array, len(bitmaps))
            if status != 0:
                raise PromptError(f"llama.cpp could not place the images in the prompt (status {status})",
                                  param="messages")
            chunks = Chunks(self._mtmd, handle, self._pieces(handle))
        except BaseException:
            self._mtmd.mtmd_input_chunks_free(handle)
            raise
        finally:
            for bitmap in bitmaps:
                self._mtmd.mtmd_bitmap_free(bitmap)
        return chunks

    def _bitmap(self, image) -> Any:
        width, height = image.size
        data = image.image.tobytes()  # RGB, 3 bytes a pixel (webui/images.py normalized it)
        bitmap = self._mtmd.mtmd_bitmap_init(width, height, (ctypes.c_ubyte * len(data)).from_buffer_copy(data))
        if not bitmap:
            raise PromptError("llama.cpp could not take the image", param="messages")
        return bitmap

    def _pieces(self, handle: Any) -> list[Chunk]:
        m = self._mtmd
        pieces, image = [], 0
        for index in range(m.mtmd_input_chunks_size(handle)):
            chunk = m.mtmd_input_chunks_get(handle, index)
            kind = m.mtmd_input_chunk_get_type(chunk)
            if kind == m.MTMD_INPUT_CHUNK_TYPE_TEXT:
                n = ctypes.c_size_t(0)
                tokens = m.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
                pieces.append(Chunk(tokens=tuple(int(tokens[i]) for i in range(n.value))))
            elif kind == m.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                size = int(m.mtmd_input_chunk_get_n_tokens(chunk))
                if int(m.mtmd_input_chunk_get_n_pos(chunk)) != size:
                    raise PromptError("this GGUF vision model gives an image fewer positions than tokens, "
                                      "which is not served yet", param="messages")
                pieces.append(Chunk(image=image, size=size))
                image += 1
            else:
                raise PromptError("this projector made a chunk that is not text or an image (audio?)",
                                  param="messages")
        return pieces

    def encode(self, chunks: Chunks, index: int, lctx: Any, position: int, seq: int, n_batch: int) -> None:
        """Encode image chunk `index` and write it into `seq`'s cache from `position` on,
        the last position's logits computed."""
        new_position = ctypes.c_int(0)
        status = self._mtmd.mtmd_helper_eval_chunk_single(
            self._ctx, lctx, chunks.pointer(index), position, seq, n_batch, True, ctypes.byref(new_position))
        if status != 0:
            raise RuntimeError(f"llama.cpp could not encode an image (status {status})")

    def close(self) -> None:
        if self._ctx is not None:
            self._mtmd.mtmd_free(self._ctx)
            self._ctx = None
