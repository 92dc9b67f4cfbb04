"""Training data -> tokenized examples ({"input_ids", "labels"}), checked before any work.

Three kinds of data:
- raw text (.txt): the whole file tokenized once and cut into windows of `cutoff_len`
  tokens, each sharing `overlap` tokens with the one before (so no sentence is only
  ever seen cut in half);
- instruction records (.json: a list; .jsonl: one per line) rendered with the model's
  chat template: {"instruction", "input"?, "output", "system"?} or {"messages": [...]};
  only the reply is learned (the prompt's labels are -100);
- the same records rendered with a Text Generation WebUI format file: a JSON object
  whose keys name the non-empty fields of a record ("instruction,output") and whose
  values are the prompt with %field% placeholders; the whole text is learned.

Anything wrong (an empty file, JSON that does not parse, a record of the wrong shape,
no record the format covers) raises DatasetError naming the file and the place.
"""

from __future__ import annotations

from webui.errors import AppError

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# A training file is read whole; beyond this it is a mistake or an attack.
MAX_DATASET_BYTES = 256 << 20
MAX_FORMAT_BYTES = 1 << 20
IGNORE = -100  # labels transformers' loss skips

Example = dict[str, list[int]]


class DatasetError(AppError, ValueError):
    """Training data that cannot be used, with where and why."""


def read_text(path: Path, limit: int = MAX_DATASET_BYTES) -> str:
    try:
        if path.stat().st_size > limit:
            raise DatasetError(f"{path.name}: larger than {limit >> 20} MiB")
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DatasetError(f"{path.name}: not UTF-8 text") from None
    except OSError as exc:
        raise DatasetError(f"{path.name}: cannot be read ({exc.strerror or exc.__class__.__name__})") from None


def text_windows(tokenizer: Any, text: str, cutoff_len: int, overlap: int, name: str = "the text") -> list[Example]:
    """Raw text cut into windows of `cutoff_len` tokens overlapping by `overlap`."""
    if not text.strip():
        raise DatasetError(f"{name}: the file is empty")
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    if len(ids) < 2:
        raise DatasetError(f"{name}: too short to learn from ({len(ids)} token)")
    stride = cutoff_len - overlap
    examples = []
    for start in range(0, max(1, len(ids) - overlap), stride):
        window = ids[start : start + cutoff_len]
        if len(window) >= 2:
            examples.append({"input_ids": window, "labels": list(window)})
    return examples


def read_records(path: Path) -> list[dict[str, Any]]:
    """Instruction records from .json (a list of objects) or .jsonl (an object a line)."""
    text = read_text(path)
    if not text.strip():
        raise DatasetError(f"{path.name}: the file is empty")
    if path.suffix == ".jsonl":
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                records.append(_parse(line, f"{path.name}, line {number}"))
    else:
        records = _parse(text, path.name)
        if not isinstance(records, list):
            raise DatasetError(f"{path.name}: expected a JSON list of records, not a {type(records).__name__}")
    if not records:
        raise DatasetError(f"{path.name}: holds no records")
    for number, record in enumerate(records, 1):
        if not isinstance(record, dict):
            raise DatasetError(f"{path.name}: record {number} is a {type(record).__name__}, not an object")
    return records


def _parse(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise DatasetError(f"{where}: nested too deeply") from None


def read_format(path: Path) -> dict[str, str]:
    data = _parse(read_text(path, MAX_FORMAT_BYTES), path.name)
    if not isinstance(data, dict) or not data or not all(isinstance(v, str) for v in data.values()):
        raise DatasetError(f"{path.name}: a format file maps field lists (\"instruction,output\") to prompt text")
    return data


def format_examples(tokenizer: Any, records: Sequence[Mapping[str, Any]], template: Mapping[str, str],
                    cutoff_len: int, name: str) -> list[Example]:
    """Records rendered with a format file; a record no key covers is an error."""
    by_fields = {frozenset(part.strip() for part in key.split(",")): text for key, text in template.items()}
    examples = []
    for number, record in enumerate(records, 1):
        fields = frozenset(k for k, v in record.items() if isinstance(v, str) and v.strip())
        text = by_fields.get(fields)
        if text is None:
            raise DatasetError(f"{name}: record {number} has fields {', '.join(sorted(fields)) or '(none)'}, "
                               f"which the format file does not cover")
        for field in fields:
            text = text.replace(f"%{field}%", record[field])
        ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"][:cutoff_len]
        if tokenizer.eos_token_id is not None and len(ids) < cutoff_len:
            ids.append(tokenizer.eos_token_id)
        if len(ids) >= 2:
            examples.append({"input_ids": ids, "labels": list(ids)})
    return _non_empty(examples, name)


def chat_examples(tokenizer: Any, records: Sequence[Mapping[str, Any]], cutoff_len: int, name: str) -> list[Example]:
    """Records rendered with the model's chat template; only the last reply is learned."""
    if not getattr(tokenizer, "chat_template", None):
        raise DatasetError("the model has no chat template: pick a format file for instruction data")
    examples = []
    for number, record in enumerate(records, 1):
        messages = _messages(record, f"{name}: record {number}")
        prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        # A template may render the prompt differently once a reply follows it; the
        # common prefix is what is certainly prompt.
        shared = 0
        for a, b in zip(prompt_ids, ids, strict=False):
            if a != b:
                break
            shared += 1
        labels = [IGNORE] * shared + ids[shared:]
        ids, labels = ids[:cutoff_len], labels[:cutoff_len]
        if any(label != IGNORE for label in labels):
            examples.append({"input_ids": ids, "labels": labels})
    return _non_empty(examples, name, "every reply starts beyond cutoff_len")


def _messages(record: Mapping[str, Any], where: str) -> list[dict[str, str]]:
    if "messages" in record:
        messages = record["messages"]
        if (not isinstance(messages, list) or len(messages) < 2
                or not all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                           for m in messages)):
            raise DatasetError(f"{where}: 'messages' must be a list of at least two {{role, content}} objects")
        if messages[-1]["role"] != "assistant":
            raise DatasetError(f"{where}: the last message must be the assistant's (the reply to learn)")
        return [{"role": m["role"], "content": m["content"]} for m in messages]
    instruction, output = record.get("instruction"), record.get("output")
    if not isinstance(instruction, str) or not isinstance(output, str) or not output.strip():
        raise DatasetError(f"{where}: expected 'instruction' and 'output' text (or 'messages')")
    extra = record.get("input")
    user = instruction + (f"\n\n{extra}" if isinstance(extra, str) and extra.strip() else "")
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    system = record.get("system")
    if isinstance(system, str) and system.strip():
        messages.insert(0, {"role": "system", "content": system})
    return messages


def _non_empty(examples: list[Example], name: str, why: str = "every record is empty") -> list[Example]:
    if not examples:
        raise DatasetError(f"{name}: nothing to learn from ({why})")
    return examples


def build_examples(tokenizer: Any, path: Path, cutoff_len: int, overlap: int,
                   format_path: Path | None = None) -> list[Example]:
    """The examples for one data file, by its kind (see the module docstring)."""
    if path.suffix == ".txt":
        return text_windows(tokenizer, read_text(path), cutoff_len, overlap, path.name)
    records = read_records(path)
    if format_path is not None:
        return format_examples(tokenizer, records, read_format(format_path), cutoff_len, path.name)
    return chat_examples(tokenizer, records, cutoff_len, path.name)
