"""A GGUF model's tokenizer, with the part of Hugging Face's tokenizer interface the app uses.

llama.cpp tokenizes with the vocabulary stored in the GGUF file, so prompts are cut
into exactly the tokens the model was trained on.  The app (engine, chat prompts,
samplers, API) only ever calls: `tokenizer(text, add_special_tokens=)["input_ids"]`,
`encode`, `decode`, `bos_token`/`eos_token` (+ `_id`), `pad_token(_id)`, `chat_template`
and `apply_chat_template`; that is what this class offers.

Chat templates are rendered by transformers' own renderer (`render_jinja_template`):
the same Jinja sandbox as for Transformers models, so a template that reaches for
Python internals fails with SecurityError here too (docs/SECURITY.md).
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any


class GGUFTokenizer:
    # Set when the model loads with an image projector: the text a chat template writes in
    # each image's place (libmtmd's marker, webui/loaders/gguf_vision.py), read by
    # webui/chat/prompt.py.  None: images are written as the template's own image parts.
    image_marker: str | None = None

    def __init__(self, llama_cpp: Any, model: Any, chat_template: str | None):
        self._lib = llama_cpp
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        self.vocab_size = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        self.chat_template = chat_template or None
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        self.bos_token_id = self._known(llama_cpp.llama_vocab_bos(self._vocab))
        self.eos_token_id = self._known(llama_cpp.llama_vocab_eos(self._vocab))
        # As the Transformers loader does: no pad token of its own -> pad with EOS.
        self.pad_token_id = self._known(llama_cpp.llama_vocab_pad(self._vocab))
        if self.pad_token_id is None:
            self.pad_token_id = self.eos_token_id
        # Every end-of-generation token ends a reply: EOS, end-of-turn, and the others
        # llama.cpp counts as such though the GGUF names them neither EOS nor EOT
        # (Phi-4's <|end|> beside <|endoftext|>, gpt-oss's <|call|> beside <|return|>).
        # One call per token: ~0.1 s for 250k tokens, once per load.
        is_eog = llama_cpp.llama_vocab_is_eog
        self.eog_ids = {i for i in range(self.vocab_size) if is_eog(self._vocab, i)}
        if self.eos_token_id is not None:
            self.eog_ids.add(self.eos_token_id)

    @property
    def llama_vocab(self) -> Any:
        """llama.cpp's vocabulary handle: what a grammar reads the tokens from
        (webui/generation/samplers/grammar.py)."""
        return self._vocab

    def _known(self, token: int) -> int | None:
        return int(token) if 0 <= token < self.vocab_size else None

    def token_text(self, token: int | None) -> str | None:
        if token is None:
            return None
        raw = self._lib.llama_vocab_get_text(self._vocab, token)
        return raw.decode("utf-8", errors="replace") if raw is not None else None

    @property
    def bos_token(self) -> str | None:
        return self.token_text(self.bos_token_id)

    @property
    def eos_token(self) -> str | None:
        return self.token_text(self.eos_token_id)

    @property
    def pad_token(self) -> str | None:
        return self.token_text(self.pad_token_id)

    def __len__(self) -> int:
        return self.vocab_size

    # -- text <-> ids -----------------------------------------------------------------
    def encode(self, text: str, add_special_tokens: bool = True, **_: Any) -> list[int]:
        """Token ids; special tokens written in the text ("<s>", "<|im_start|>") become
        those tokens, as Hugging Face tokenizers do.  add_special_tokens: a BOS in front
        when the model wants one."""
        data = text.encode("utf-8")
        room = len(data) + 8
        while True:
            buffer = (self._lib.llama_token * room)()
            n = self._lib.llama_tokenize(self._vocab, data, len(data), buffer, room, add_special_tokens, True)
            if n >= 0:
                return list(buffer[:n])
            room = -n  # it says how many it needs

    def __call__(self, text: str, add_special_tokens: bool = True, **kwargs: Any) -> dict[str, list[int]]:
        return {"input_ids": self.encode(text, add_special_tokens=add_special_tokens)}

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False, **_: Any) -> str:
        ids = [int(i) for i in ids]
        if not ids:
            return ""
        tokens = (self._lib.llama_token * len(ids))(*ids)
        room = 8 * len(ids) + 16
        while True:
            buffer = ctypes.create_string_buffer(room)
            # remove_special: drop a leading BOS / trailing EOS as HF's skip_special_tokens
            # does; unparse_special: write control tokens' text unless they are skipped.
            n = self._lib.llama_detokenize(self._vocab, tokens, len(ids), buffer, room, skip_special_tokens,
                                           not skip_special_tokens)
            if n >= 0:
                # A character split across byte tokens decodes to U+FFFD until complete,
                # which the incremental decoder (webui/generation/detok.py) relies on.
                return buffer.raw[:n].decode("utf-8", errors="replace")
            room = -n

    def convert_ids_to_tokens(self, ids: int | Sequence[int]) -> Any:
        if isinstance(ids, int):
            return self.token_text(ids)
        return [self.token_text(int(i)) for i in ids]

    # -- chat templates ---------------------------------------------------------------
    def apply_chat_template(self, conversation: list[dict[str, Any]], chat_template: str | None = None,
                            tokenize: bool = True, add_generation_prompt: bool = False, **kwargs: Any) -> Any:
        from transformers.utils.chat_template_utils import render_jinja_template

        template = chat_template or self.chat_template
        if not template:
            raise ValueError("this model has no chat template; choose one in the Model tab")
        rendered, _ = render_jinja_template(
            conversations=[conversation], chat_template=template, add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token or "", eos_token=self.eos_token or "", **kwargs,
        )
        text = rendered[0]
        return self.encode(text, add_special_tokens=False) if tokenize else text
