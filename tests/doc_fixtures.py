"""A retrieval fixture: a corpus of made-up town descriptions, questions whose answers
sit in known passages, and a tiny sentence-transformers model trained on it.

The corpus is generated here (deterministic, ours, so free of any licence): 240 towns,
one paragraph each (its history, then its life: about 90 words).  Questions are of
two kinds, as in real use:

- *named*: "Where does Varnholm lie, ..." names the town.  Word matching (BM25) finds
  these; a small embedding model that never learned the name finds them poorly.
- *described*: "the settlement whose folk make cloth and hold a feast of lamps by the
  grain store" names nothing and shares no distinctive word with its passage ("weaving",
  "lantern festival", "granary"): only a model that learned those synonyms matches it.

The embedding model (a BERT without attention layers, hidden 64, word-level tokenizer) is trained for a
few hundred steps with in-batch contrastive loss on described questions about the FIRST
half of the towns; the evaluation asks about the SECOND half, which it never trained on.
So what it shows: a real trained encoder that generalises synonyms to unseen passages,
fused with BM25 that handles names, beats each alone.  It does not show quality on
real-world text (docs/DOCUMENTS.md says so).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path


TRADES = {  # passage words -> words a question uses instead
    "weaving": "cloth", "fishing": "nets", "mining": "ore", "brewing": "ale", "pottery": "clay",
    "shipbuilding": "hulls", "beekeeping": "honey", "tanning": "leather", "glassblowing": "glass",
    "milling": "flour", "winemaking": "grapes", "smithing": "anvils",
}
FESTIVALS = {
    "lantern": "lamps", "harvest": "reaping", "river": "water", "winter": "snow", "music": "songs",
    "kite": "wind", "horse": "riders", "flower": "blossoms", "fire": "bonfires", "mask": "disguises",
}
BUILDINGS = {
    "granary": "grain store", "lighthouse": "beacon tower", "abbey": "monastery", "bridge": "crossing",
    "library": "book hall", "clocktower": "bell tower", "windmill": "sails mill", "fortress": "citadel",
    "market hall": "trading house", "bathhouse": "hot pools",
}
REGIONS = ["northern hills", "eastern marshes", "southern plains", "western coast", "central valley",
           "high moors", "lake country", "pine forest"]
SYLLABLES = ["var", "hol", "ken", "dor", "mir", "tal", "bren", "os", "lin", "gar", "feld", "wick", "ston",
             "ash", "mor", "quel", "rin", "zan", "bel", "tor", "ulm", "vey", "cra", "nox"]
QUESTION_FORMS = [
    "the settlement whose folk make {t} and celebrate with {f} near the {b}",
    "which place is known for {t}, a feast of {f} and its {b}",
    "a town living from {t} that holds a {f} feast beside the {b}",
]


@dataclass(frozen=True)
class Town:
    name: str
    region: str
    river: str
    year: int
    trade: str
    festival: str
    building: str


@dataclass(frozen=True)
class Question:
    text: str
    answer: str  # a sentence of the passage that answers it
    kind: str  # "named" or "described"
    train: bool


def towns(count: int = 240, seed: int = 7) -> list[Town]:
    rng = random.Random(seed)
    names: set[str] = set()
    while len(names) < count + 40:
        names.add("".join(rng.sample(SYLLABLES, rng.choice((2, 3)))).capitalize())
    names_list = sorted(names)
    rng.shuffle(names_list)
    rivers, names_list = names_list[count:], names_list[:count]
    combos = [(t, f, b) for t in TRADES for f in FESTIVALS for b in BUILDINGS]
    rng.shuffle(combos)
    return [Town(name, rng.choice(REGIONS), rng.choice(rivers), rng.randrange(900, 1800), *combos[i])
            for i, name in enumerate(names_list)]


def passage(town: Town) -> str:
    """The town's paragraph: its history, then its life (about 100 tokens)."""
    return (f"{town.name} lies in the {town.region}, on the banks of the {town.river}. It was founded long ago "
            f"by settlers who came up the river in small boats, and its council still meets in the old hall. "
            f"The people of {town.name} live by {town.trade}, a craft passed from parents to children. Every year "
            f"they hold a {town.festival} festival, and the whole town gathers beside the {town.building}. "
            f"Travellers say the {town.building} of {town.name} is the finest in the {town.region}.")


def _described(town: Town) -> str:
    """What the paragraph says about a town's life, without its name or place."""
    return (f"The people live by {town.trade}, a craft passed from parents to children. Every year they hold a "
            f"{town.festival} festival, and the whole town gathers beside the {town.building}.")


def corpus_text(all_towns: list[Town]) -> str:
    return "\n\n".join(passage(town) for town in all_towns) + "\n"


def questions(all_towns: list[Town], seed: int = 11) -> list[Question]:
    """Two per town; `answer` is the paragraph's first sentence (it names the town)."""
    rng = random.Random(seed)
    found = []
    half = len(all_towns) // 2
    for index, town in enumerate(all_towns):
        answer, train = passage(town).split(". ")[0], index < half
        found.append(Question(f"Where does {town.name} lie, and who founded it?", answer, "named", train))
        form = rng.choice(QUESTION_FORMS)
        found.append(Question(form.format(t=TRADES[town.trade], f=FESTIVALS[town.festival],
                                          b=BUILDINGS[town.building]), answer, "described", train))
    return found


def build_embedder(folder: Path, all_towns: list[Town], steps: int = 200, seed: int = 0) -> Path:
    """Train and save the tiny sentence-transformers model (about 10 s on 2 cores)."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    rng = random.Random(seed)
    all_questions = questions(all_towns)
    texts = [corpus_text(all_towns)] + [q.text for q in all_questions]
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=64, num_hidden_layers=0, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=256, type_vocab_size=1)
    model = BertModel(config, add_pooling_layer=False)
    # Words start at zero: a word no training pair holds (the held-out towns' names) then
    # adds nothing to a text's vector, instead of a random direction that drowns the rest.
    torch.nn.init.zeros_(model.embeddings.word_embeddings.weight)
    # Trained on the described questions only, against what they describe, without the
    # town's name or place: so it learns what the words mean, and cannot learn to pick
    # training towns out by name (which would teach it nothing about the held-out ones).
    pairs = [(q.text, _described(all_towns[i // 2])) for i, q in enumerate(all_questions)
             if q.train and q.kind == "described"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    # Tokenized once: the steps then only index and run the model.
    encoded = {text: tokenizer(text, truncation=True, max_length=160)["input_ids"] for pair in pairs for text in pair}

    def encode(batch: list[str]) -> torch.Tensor:
        longest = max(len(encoded[t]) for t in batch)
        ids = torch.tensor([encoded[t] + [0] * (longest - len(encoded[t])) for t in batch])
        mask = (torch.arange(longest)[None, :] < torch.tensor([len(encoded[t]) for t in batch])[:, None]).long()
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).float()
        return torch.nn.functional.normalize((hidden * weights).sum(1) / weights.sum(1), dim=-1)

    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads would only contend
    try:
        _train(model, encode, pairs, optimizer, rng, steps)
    finally:
        torch.set_num_threads(threads)
    model.eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 160, "do_lower_case": False}))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 64, "pooling_mode_mean_tokens": True}))
    (folder / "2_Normalize").mkdir(exist_ok=True)
    return folder


def _train(model, encode, pairs, optimizer, rng, steps: int) -> None:
    import torch

    for _ in range(steps):
        batch = rng.sample(pairs, min(48, len(pairs)))
        q, p = encode([a for a, _ in batch]), encode([b for _, b in batch])
        logits = q @ p.T / 0.05
        loss = torch.nn.functional.cross_entropy(logits, torch.arange(len(batch)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


# -- files in the formats the extractors read, built by hand (no writer library) ---------
def pdf_bytes(pages: list[str]) -> bytes:
    """A minimal valid PDF with one text line per page (Helvetica, WinAnsi)."""
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", None, "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica "
               "/Encoding /WinAnsiEncoding >>"]
    kids = []
    for text in pages:
        lines = [text[i:i + 90] for i in range(0, len(text), 90)] or [""]
        body = "BT /F1 10 Tf 40 800 Td 12 TL " + " ".join(
            "(" + line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ") '" for line in lines) + " ET"
        stream = body.encode("latin-1")
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream.decode('latin-1')}\nendstream")
        content = len(objects)
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 3 0 R >> "
                       f">> /Contents {content} 0 R >>")
        kids.append(len(objects))
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(f'{k} 0 R' for k in kids)}] /Count {len(kids)} >>"
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{obj}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def docx_bytes(paragraphs: list[str], document_xml: str | None = None) -> bytes:
    """A minimal .docx (the parts Word needs), or one whose document.xml is `document_xml`."""
    import io
    import zipfile
    from xml.sax.saxutils import escape

    body = "".join(f"<w:p><w:r><w:t>{escape(p)}</w:t></w:r></w:p>" for p in paragraphs)
    xml = document_xml or ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:document xmlns:w='
                           f'"http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>{body}'
                           "</w:body></w:document>")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.'
                         'org/package/2006/content-types"><Default Extension="xml" ContentType="application/xml"/>'
                         '<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-'
                         'officedocument.wordprocessingml.document.main+xml"/></Types>')
        archive.writestr("word/document.xml", xml)
    return buffer.getvalue()


# -- shared pytest fixtures (imported by the documents test modules) -----------------------
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def town_embedder_folder(tmp_path_factory) -> Path:
    """The trained tiny sentence-transformers model, in a models folder of its own."""
    return build_embedder(tmp_path_factory.mktemp("embedding-models") / "town-embedder", towns())
