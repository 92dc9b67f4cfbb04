"""A retrieval fixture: a corpus of made-up town descriptions, questions whose answers
sit in known passages, and a tiny sentence-transformers model trained on it.

The corpus is generated here (deterministic, ours, so free of any licence): 240 towns,
two passages each (a history, a life), 480 passages of 50-70 words.  Questions are of
two kinds, as in real use:

- *named*: "When was Varnholm founded, ..." names the town.  Word matching (BM25) finds
  these; a small embedding model that never learned the name finds them poorly.
- *described*: "the settlement whose folk make cloth and hold a feast of lamps by the
  grain store" names nothing and shares no distinctive word with its passage ("weaving",
  "lantern festival", "granary"): only a model that learned those synonyms matches it.

The embedding model (a 1-layer BERT, hidden 64, word-level tokenizer) is trained for a
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


def passages(town: Town) -> tuple[str, str]:
    history = (f"{town.name} lies in the {town.region} on the banks of the {town.river}. It was founded in "
               f"{town.year} by settlers who came up the river in small boats. Its oldest street still follows "
               f"the line of the first palisade, and the town council meets in a hall built in {town.year + 120}.")
    life = (f"The people of {town.name} live by {town.trade}, a craft passed from parents to children. Every year "
            f"they hold a {town.festival} festival, and the whole town gathers beside the {town.building}. "
            f"Travellers say the {town.building} of {town.name} is the finest in the {town.region}.")
    return history, life


def corpus_text(all_towns: list[Town]) -> str:
    return "\n\n".join(p for town in all_towns for p in passages(town)) + "\n"


def questions(all_towns: list[Town], seed: int = 11) -> list[Question]:
    rng = random.Random(seed)
    found = []
    half = len(all_towns) // 2
    for index, town in enumerate(all_towns):
        history, life = passages(town)
        train = index < half
        found.append(Question(f"When was {town.name} founded, and who settled it?", history.split(". ")[0],
                              "named", train))
        form = rng.choice(QUESTION_FORMS)
        found.append(Question(form.format(t=TRADES[town.trade], f=FESTIVALS[town.festival],
                                          b=BUILDINGS[town.building]), life.split(". ")[0], "described", train))
    return found


def build_embedder(folder: Path, all_towns: list[Town], steps: int = 300, seed: int = 0) -> Path:
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
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=256, type_vocab_size=1)
    model = BertModel(config, add_pooling_layer=False)
    pairs = [(q.text, passages(all_towns[i // 2])[1]) for i, q in enumerate(all_questions)
             if q.train and q.kind == "described"]
    # Named questions teach that a name in the question meets the same name in the passage.
    pairs += [(q.text, passages(all_towns[i // 2])[0]) for i, q in enumerate(all_questions)
              if q.train and q.kind == "named"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def encode(batch: list[str]) -> torch.Tensor:
        enc = tokenizer(batch, padding=True, truncation=True, max_length=128, return_tensors="pt")
        hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)

    model.train()
    for _ in range(steps):
        batch = rng.sample(pairs, 48)
        q, p = encode([a for a, _ in batch]), encode([b for _, b in batch])
        logits = q @ p.T / 0.05
        loss = torch.nn.functional.cross_entropy(logits, torch.arange(len(batch)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128, "do_lower_case": False}))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 64, "pooling_mode_mean_tokens": True}))
    (folder / "2_Normalize").mkdir(exist_ok=True)
    return folder


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
