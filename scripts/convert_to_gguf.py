"""Convert a Transformers model folder to GGUF (f16 and Q8_0 by default), for the llama.cpp loader.

    .venv/bin/python scripts/convert_to_gguf.py models/demo-kjv-4m
    -> models/demo-kjv-4m-GGUF/demo-kjv-4m-f16.gguf and demo-kjv-4m-q8_0.gguf

The output folder is one model entry in the Model tab, with the file chosen there.
The conversion is llama.cpp's own `convert_hf_to_gguf.py`, run from llama-cpp-python's
source package: `--fetch` downloads that package once into ~/.cache/webui (pip, no
build); LLAMA_CPP_SRC points at an unpacked llama.cpp or llama-cpp-python source
instead.  Models with a SentencePiece tokenizer (tokenizer.model) convert; llama.cpp
refuses byte-level BPE tokenizers it does not recognise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from webui.loaders.gguf_convert import OUT_TYPES, ConvertError, convert, converter, fetch_converter  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a Transformers model folder (config.json + safetensors)")
    parser.add_argument("--outtype", nargs="+", choices=OUT_TYPES, default=["f16", "q8_0"],
                        help="GGUF types to write (default: f16 q8_0)")
    parser.add_argument("--outdir", type=Path, help="where to write (default: FOLDER-GGUF beside FOLDER)")
    parser.add_argument("--fetch", action="store_true",
                        help="download llama-cpp-python's source (for its converter) if it is not cached")
    args = parser.parse_args(argv)
    folder = args.folder.resolve()
    if not (folder / "config.json").is_file():
        parser.error(f"{folder} has no config.json")
    outdir = args.outdir or folder.with_name(f"{folder.name}-GGUF")
    try:
        script = fetch_converter() if args.fetch else converter()
        for outtype in args.outtype:
            path = convert(folder, outdir / f"{folder.name}-{outtype}.gguf", outtype, script)
            print(f"wrote {path} ({path.stat().st_size / (1 << 20):.1f} MiB)")
    except ConvertError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
