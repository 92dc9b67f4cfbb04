"""Tiny real vision models for tests: random weights, real architectures and processors.

Two families, each as transformers builds and loads it from a folder:

- LLaVA (LlavaForConditionalGeneration): a CLIP vision tower, a projector and a Llama;
  each image is 16 `<image>` tokens (32 x 32 pixels in 8 x 8 patches);
- SmolVLM v1 (Idefics3ForConditionalGeneration, the architecture SmolVLM-Instruct
  ships): a SigLIP-style tower, pixel shuffle and a Llama; each image is
  `<fake_token_around_image><global-img><image> x 4<fake_token_around_image>`.

Both use the SentencePiece tokenizer of tests/tiny_models.py with the families' image
tokens added, and a chat template (written for these tests) that places an image part
where the family's own templates do.  Create + save + load takes well under a second.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig

from tests.tiny_models import build_tokenizer

# Reads content given as a string (text-only chats) or as parts (with images).
LLAVA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for part in m['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SMOLVLM_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ m['role'] | capitalize }}:"
    "{% if m['content'] is string %} {{ m['content'] }}{% else %}{% for part in m['content'] %}"
    "{% if part['type'] == 'image' %}<image>{% elif part['type'] == 'text' %} {{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)
FAMILIES = ("llava", "smolvlm", "gemma3")


def _text_config(tokenizer, context: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=context,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )


def build_vision(folder: Path, family: str = "llava", seed: int = 0, context: int = 512) -> Path:
    """A tiny random-weight vision model of `family`, with its processor, saved in `folder`."""
    if family == "gemma3":
        return build_gemma3(folder, seed, context)
    build_tokenizer(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(seed)
    if family == "llava":
        from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlavaConfig,
                                  LlavaForConditionalGeneration, LlavaProcessor)

        tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
        vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                  image_size=32, patch_size=8, projection_dim=32)
        config = LlavaConfig(vision_config=vision, text_config=_text_config(tokenizer, context),
                             image_token_index=tokenizer.convert_tokens_to_ids("<image>"), image_seq_length=16,
                             vision_feature_layer=-1)
        model = LlavaForConditionalGeneration(config)
        images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
        processor = LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=8,
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                   chat_template=LLAVA_TEMPLATE)
        template = LLAVA_TEMPLATE
    elif family == "smolvlm":
        from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
        from transformers.models.idefics3.configuration_idefics3 import Idefics3VisionConfig

        try:  # the torchvision-free image processor, where transformers names it so
            from transformers.models.idefics3.image_processing_pil_idefics3 import (
                Idefics3ImageProcessorPil as ImageProcessor)
        except ImportError:
            from transformers import Idefics3ImageProcessor as ImageProcessor

        tokenizer.add_special_tokens({"additional_special_tokens": [
            "<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>"]})
        vision = Idefics3VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=2, image_size=32, patch_size=8)
        config = Idefics3Config(vision_config=vision, text_config=_text_config(tokenizer, context),
                                image_token_id=tokenizer.convert_tokens_to_ids("<image>"), scale_factor=2)
        model = Idefics3ForConditionalGeneration(config)
        images = ImageProcessor(do_image_splitting=False, size={"longest_edge": 32},
                                max_image_size={"longest_edge": 32})
        processor = Idefics3Processor(image_processor=images, tokenizer=tokenizer, image_seq_len=4,
                                      chat_template=SMOLVLM_TEMPLATE)
        template = SMOLVLM_TEMPLATE
    else:
        raise ValueError(f"unknown vision family {family!r}")
    tokenizer.chat_template = template
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def picture(seed: int, size: tuple[int, int] = (48, 40)):
    """A deterministic RGB test picture: random blocks of colour."""
    from PIL import Image

    generator = torch.Generator().manual_seed(seed)
    blocks = torch.randint(0, 256, (size[1] // 8 + 1, size[0] // 8 + 1, 3), generator=generator, dtype=torch.uint8)
    small = Image.fromarray(blocks.numpy(), "RGB")
    return small.resize(size, Image.NEAREST)


def png(image) -> bytes:
    import io

    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


GEMMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for part in m['content'] %}"
    "{% if part['type'] == 'image' %}<start_of_image>{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def build_gemma3(folder: Path, seed: int = 0, context: int = 512) -> Path:
    """A tiny random-weight Gemma 3 vision model (SigLIP tower, 4 image tokens) with its
    processor: the family llama.cpp's converter turns into a GGUF and an mmproj at this
    size (tests/test_gguf_vision.py), and that attends bidirectionally over an image's
    tokens (the processor's token_type_ids, passed with the prefill)."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor, Gemma3TextConfig
    from transformers import SiglipVisionConfig

    try:
        from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil as ImageProcessor
    except ImportError:
        from transformers import Gemma3ImageProcessor as ImageProcessor

    build_tokenizer(folder)
    marks = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
    tokenizer = AutoTokenizer.from_pretrained(folder, extra_special_tokens=marks)
    tokenizer.add_special_tokens({"additional_special_tokens": list(marks.values())})
    text = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=context, sliding_window=128,
        query_pre_attn_scalar=16, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=0)
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                image_size=32, patch_size=8, vision_use_head=False)
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in marks.items()}
    config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4,
                          boi_token_index=ids["boi_token"], eoi_token_index=ids["eoi_token"],
                          image_token_index=ids["image_token"])
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config)
    with torch.no_grad():  # the projection starts at zeros (every image would project to nothing)
        for name, parameter in model.named_parameters():
            if "mm_input_projection" in name:
                parameter.normal_(0.0, 0.5)
    processor = Gemma3Processor(image_processor=ImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer,
                                chat_template=GEMMA3_TEMPLATE, image_seq_length=4)
    tokenizer.chat_template = GEMMA3_TEMPLATE
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _legacy_names(folder: Path, out: Path) -> Path:
    """`folder` with the tensor names llama.cpp's converter knows: transformers 5 saves
    the SigLIP tower as `vision_tower.*`, the checkpoints it was written for say
    `vision_tower.vision_model.*`."""
    from safetensors.torch import load_file, save_file

    out.mkdir()
    for item in folder.iterdir():
        if item.name != "model.safetensors":
            (out / item.name).symlink_to(item.resolve())
    tensors = load_file(folder / "model.safetensors")
    renamed = {(name.replace("vision_tower.", "vision_tower.vision_model.", 1) if name.startswith("vision_tower.")
                else name): value.contiguous() for name, value in tensors.items()}
    save_file(renamed, out / "model.safetensors", metadata={"format": "pt"})
    return out


def build_gemma3_gguf(folder: Path) -> Path:
    """`folder` holding the tiny Gemma 3 as llama.cpp's own converter writes it: the text
    model (`tiny-gemma3.gguf`) and its image projector (`mmproj-tiny-gemma3.gguf`), as a
    model repository ships a GGUF vision model (needs scripts/install.sh gguf)."""
    import subprocess
    import sys
    import tempfile

    from webui.loaders.gguf_convert import converter, staged

    script = converter()
    assert script is not None, "llama.cpp's converter is missing: run scripts/install.sh gguf"
    folder.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        legacy = _legacy_names(build_gemma3(work / "hf"), work / "legacy")
        (work / "stage").mkdir()
        source = staged(legacy, work / "stage")
        for extra, out in (((), folder / "tiny-gemma3.gguf"), (("--mmproj",), folder / "mmproj-tiny-gemma3.gguf")):
            done = subprocess.run([sys.executable, str(script), str(source), "--outtype", "f32", "--outfile", str(out),
                                   *extra], capture_output=True, text=True, timeout=300)
            assert done.returncode == 0 and out.is_file(), done.stderr[-2000:]
    return folder
