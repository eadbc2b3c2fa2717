"""Batched generation from chat or plain prompts; shared by SFT sample logging, ``alignment.generate``,
candidate sampling and evaluation."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm


@dataclass
class SamplingArguments:
    """Recipe keys for sampling (also used by ``alignment.generate`` flags)."""

    max_new_tokens: int = field(default=64, metadata={"help": "Tokens to generate per completion."})
    temperature: float = field(default=0.7, metadata={"help": "0 = greedy decoding."})
    top_p: float = field(default=0.95, metadata={"help": "Nucleus sampling threshold."})
    top_k: int = field(default=0, metadata={"help": "Top-k sampling (0 = off)."})
    repetition_penalty: float = field(default=1.0, metadata={"help": "1.0 = off."})
    num_return_sequences: int = field(default=1, metadata={"help": "Completions per prompt."})
    batch_size: int = field(default=8, metadata={"help": "Prompts per generation batch."})
    seed: int = field(default=0, metadata={"help": "Sampling seed."})

    def generate_kwargs(self) -> dict[str, Any]:
        greedy = self.temperature <= 0
        kw: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": not greedy}
        if not greedy:
            kw.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        if self.repetition_penalty != 1.0:
            kw["repetition_penalty"] = self.repetition_penalty
        return kw

    def as_record(self) -> dict[str, Any]:
        return asdict(self)


def prompt_text(prompt: str | list[dict[str, str]]) -> str:
    """A prompt as plain text: a string as it is, a message list as its ``role: content`` turns, blank-line separated
    (how the annotation store shows it and what a classifier reward reads)."""
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in prompt)


def render_prompt(tokenizer, prompt: str | list[dict[str, str]], use_chat_template: bool = True) -> str:
    """A plain string prompt or a message list, through the chat template when the tokenizer has one."""
    if isinstance(prompt, str):
        if not use_chat_template or tokenizer.chat_template is None:
            return prompt
        prompt = [{"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[Any],
    sampling: SamplingArguments,
    *,
    use_chat_template: bool = True,
    progress: bool = False,
) -> list[list[dict[str, Any]]]:
    """For each prompt, ``num_return_sequences`` dicts: ``text`` (special tokens stripped), ``finished``
    (emitted EOS), ``num_tokens``. Left padding, so every batch row ends where generation starts."""
    tokenizer.padding_side = "left"
    was_training = model.training
    model.eval()
    torch.manual_seed(sampling.seed)
    results: list[list[dict[str, Any]]] = []
    n = sampling.num_return_sequences
    eos = tokenizer.eos_token_id
    batches = range(0, len(prompts), sampling.batch_size)
    for start in tqdm(batches, desc="generating", disable=not progress, unit="batch"):
        chunk = [render_prompt(tokenizer, p, use_chat_template) for p in prompts[start : start + sampling.batch_size]]
        enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        out = model.generate(
            **enc, **sampling.generate_kwargs(), num_return_sequences=n, pad_token_id=tokenizer.pad_token_id, eos_token_id=eos
        )
        new = out[:, enc["input_ids"].shape[1] :]
        for i in range(len(chunk)):
            rows = []
            for seq in new[i * n : (i + 1) * n]:
                ids = seq.tolist()
                finished = eos in ids
                ids = ids[: ids.index(eos) + 1] if finished else [t for t in ids if t != tokenizer.pad_token_id]
                rows.append(
                    {"text": tokenizer.decode(ids, skip_special_tokens=True).strip(), "finished": finished, "num_tokens": len(ids)}
                )
            results.append(rows)
    model.train(was_training)
    return results


@torch.no_grad()
def response_logprobs(
    model, tokenizer, prompts: list, responses: list[str], use_chat_template: bool = True, finished: list[bool] | None = None,
    batch_size: int = 16,
) -> list[float]:
    """Σ log p(response tokens | prompt) per pair, the response tokenised after the rendered prompt, plus EOS where
    the response ended with one (``finished``; all of them when not given). Rows are right-padded in batches.

    Generated texts are stripped; a continuation of a raw prompt that ends in a word gets its separating space back,
    so it is tokenised as it was sampled (" word", not "word").
    """
    rows = []
    for i, (prompt, response) in enumerate(zip(prompts, responses)):
        rendered = render_prompt(tokenizer, prompt, use_chat_template)
        if not use_chat_template and response and not response[0].isspace() and rendered and not rendered[-1].isspace():
            response = " " + response
        eos = (tokenizer.eos_token or "") if finished is None or finished[i] else ""
        p_ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
        rows.append((p_ids, tokenizer(response + eos, add_special_tokens=False)["input_ids"]))
    totals: list[float] = []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in tqdm(range(0, len(rows), batch_size), desc="log-probs", unit="batch", leave=False):
        chunk = rows[start : start + batch_size]
        width = max(len(p) + len(r) for p, r in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        attention = torch.zeros_like(ids)
        response = torch.zeros_like(ids, dtype=torch.bool)  # True at the positions of response tokens
        for j, (p_ids, r_ids) in enumerate(chunk):
            ids[j, : len(p_ids) + len(r_ids)] = torch.tensor(p_ids + r_ids)
            attention[j, : len(p_ids) + len(r_ids)] = 1
            response[j, len(p_ids) : len(p_ids) + len(r_ids)] = True
        ids, attention, response = ids.to(model.device), attention.to(model.device), response.to(model.device)
        logp = torch.log_softmax(model(input_ids=ids, attention_mask=attention).logits[:, :-1].float(), -1)
        token_logp = logp.gather(-1, ids[:, 1:, None])[..., 0]
        totals.extend((token_logp * response[:, 1:]).sum(-1).tolist())
    return totals
