"""One base model, four roles: policy, reference, value function and (optionally) reward model, as peft adapters.

The base (usually 4-bit NF4) is loaded once. Its peft wrapper holds

* ``default`` — the policy's LoRA adapter (trained; continued from an SFT adapter when PPO starts from one);
* ``value`` — a second LoRA adapter whose last hidden state feeds a scalar ``value_head`` (``value_model: adapter``),
  or nothing, the head then reading the policy's hidden states (``value_model: head``), or neither adapter nor head
  (``value_model: none``, the critic-free estimators);
* ``reference`` — a frozen copy of the SFT adapter the policy started from; when the policy starts from a base or
  a merged checkpoint there is none and the reference policy is the base with adapters disabled;
* ``reward`` — optionally, a reward model's LoRA adapter (trained on the same base) with its frozen score head.

Switching roles switches the active adapter; which parameters train never changes (policy, value adapter, value
head), so one optimizer and one backward pass serve both losses, and one ``forward`` call computes policy logits and
values (what DDP needs).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from alignment.errors import ModelError

POLICY, VALUE, REFERENCE, REWARD = "default", "value", "reference", "reward"


def adapter_of(parameter_name: str) -> str | None:
    """The adapter a peft parameter belongs to (``...lora_A.value.weight`` -> ``value``), None for base weights."""
    parts = parameter_name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part.startswith("lora_") or part == "modules_to_save":
            return parts[i + 1]
    return None


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, as ``generate`` computes them for left-padded prompts."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class ActorCritic(nn.Module):
    """A peft causal LM plus a value head; see the module docstring for the adapters it holds."""

    def __init__(self, peft_model, value_model: str, value_config, reference_adapter: str | None = None) -> None:
        super().__init__()
        self.model = peft_model
        self.value_model = value_model
        self.value_head: nn.Linear | None = None
        if value_model != "none":
            self.value_head = nn.Linear(peft_model.get_base_model().config.hidden_size, 1)
            nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)
        self.reward_head: nn.Linear | None = None
        if value_model == "adapter":
            peft_model.add_adapter(VALUE, value_config)
        self.has_reference_adapter = reference_adapter is not None
        if reference_adapter is not None:
            peft_model.load_adapter(reference_adapter, adapter_name=REFERENCE, is_trainable=False)
        self.trainable_names = {
            name for name, _ in self.named_parameters() if adapter_of(name) in (POLICY, VALUE) or name.startswith("value_head.")
        }
        self.use_adapter(POLICY)

    # ------------------------------------------------------------------------------------------ adapters
    def use_adapter(self, name: str) -> None:
        """Make adapter ``name`` the active one; the trained parameters stay exactly the policy's and the value's."""
        self.model.set_adapter(name)
        for param_name, param in self.named_parameters():
            param.requires_grad_(param_name in self.trainable_names)

    @contextmanager
    def reference(self) -> Iterator[None]:
        """Inside, forward passes are the reference policy's: the frozen SFT adapter, or the bare base."""
        if not self.has_reference_adapter:
            with self.model.disable_adapter():
                yield
            return
        self.use_adapter(REFERENCE)
        try:
            yield
        finally:
            self.use_adapter(POLICY)

    def enable_gradient_checkpointing(self) -> None:
        """Recompute the base's activations in the backward pass. transformers checkpoints only in training mode, so
        every dropout (LoRA's, attention's, the blocks') is zeroed first: in training mode the policy is then the same
        function as in the rollouts."""
        for module in self.modules():
            if isinstance(module, nn.Dropout):
                module.p = 0.0
            if isinstance(getattr(module, "attention_dropout", None), float):
                module.attention_dropout = 0.0
        self._base().activation_checkpointing_enable({"use_reentrant": False})

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if name in self.trainable_names]

    def value_state(self) -> dict[str, torch.Tensor]:
        """The trained weights that are not the policy adapter's (value adapter and head), by parameter name."""
        return {
            name: p.detach().contiguous()
            for name, p in self.named_parameters()
            if name in self.trainable_names and adapter_of(name) != POLICY
        }

    def keep_only_policy(self) -> None:
        """Delete every adapter but the policy's (before saving the final policy in plain peft format)."""
        for name in [n for n in self.model.peft_config if n != POLICY]:
            self.model.delete_adapter(name)
        self.model.set_adapter(POLICY)

    # ------------------------------------------------------------------------------------------ forward passes
    @property
    def device(self) -> torch.device:
        return next(p for p in self.parameters() if p.requires_grad).device

    def _base(self):
        return self.model.get_base_model()

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Last hidden states of the transformer body through the active adapter, [batch, seq, hidden]."""
        base = self._base()
        body = getattr(base, base.base_model_prefix)
        out = body(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask), use_cache=False)
        return out.last_hidden_state

    def causal_lm(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_start: int, hidden: bool = False):
        """The model's own forward through the active adapter, projecting only the positions that predict response
        tokens: its logits are the model's, whatever its head applies (Gemma-2/3 final logit softcapping, Granite's
        logits scaling, Cohere's logit scale), [batch, R, vocab]; with ``hidden`` also the last hidden states there."""
        out = self._base()(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask), use_cache=False,
            logits_to_keep=input_ids.shape[1] - response_start + 1, output_hidden_states=hidden,
        )
        logits = out.logits[:, :-1]
        return (logits, out.hidden_states[-1][:, response_start - 1 : -1]) if hidden else logits

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_start: int) -> torch.Tensor:
        """Logits that predict each response token (positions ``response_start - 1 .. -2``), [batch, R, vocab]."""
        return self.causal_lm(input_ids, attention_mask, response_start)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_start: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Policy logits [batch, R, vocab] and values V(s_t) [batch, R] of the states before each response token
        (None without a value function)."""
        if self.value_model == "none":
            return self.causal_lm(input_ids, attention_mask, response_start), None
        if self.value_model == "head":
            logits, hidden = self.causal_lm(input_ids, attention_mask, response_start, hidden=True)
        else:
            logits = self.causal_lm(input_ids, attention_mask, response_start)
            self.use_adapter(VALUE)
            try:
                hidden = self.hidden_states(input_ids, attention_mask)[:, response_start - 1 : -1]
            finally:
                self.use_adapter(POLICY)
        values = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)
        return logits, values

    @torch.no_grad()
    def generate(self, **kwargs) -> torch.Tensor:
        """Sample from the policy (``transformers`` ``generate``)."""
        return self.model.generate(**kwargs)

    # ------------------------------------------------------------------------------------------ reward adapter
    def add_reward_adapter(self, run_dir: str | Path) -> None:
        """Load a LoRA reward model trained on this base (an ``alignment.rm`` run folder) and its score head."""
        from safetensors.torch import load_file

        weights_file = Path(run_dir) / "adapter_model.safetensors"
        if not weights_file.is_file():
            raise ModelError(f"{run_dir}: no adapter_model.safetensors to load as a reward adapter")
        head = {key.rsplit(".", 1)[-1]: w for key, w in load_file(str(weights_file)).items() if "lora_" not in key}
        if set(head) not in ({"weight"}, {"weight", "bias"}) or head["weight"].shape[0] != 1:
            raise ModelError(f"{weights_file}: expected one scalar score head besides the LoRA weights, found {sorted(head)}")
        self.model.load_adapter(str(run_dir), adapter_name=REWARD, is_trainable=False)
        self.reward_head = nn.Linear(head["weight"].shape[1], 1, bias="bias" in head)
        self.reward_head.load_state_dict(head)
        self.reward_head.requires_grad_(False)
        self.reward_head.to(self.device)
        self.use_adapter(POLICY)

    @torch.no_grad()
    def reward_scores(self, batch_ids: list[list[int]], pad_token_id: int, batch_size: int) -> list[float]:
        """Reward-adapter scores of encoded sequences, read at each sequence's last token (as the RM was trained)."""
        if self.reward_head is None:
            raise ModelError("no reward adapter loaded")
        device = self.device
        scores: list[float] = []
        self.use_adapter(REWARD)
        try:
            for start in range(0, len(batch_ids), batch_size):
                chunk = batch_ids[start : start + batch_size]
                width = max(len(row) for row in chunk)
                input_ids = torch.tensor([row + [pad_token_id] * (width - len(row)) for row in chunk], device=device)
                mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in chunk], device=device)
                hidden = self.hidden_states(input_ids, mask)
                last = hidden[torch.arange(len(chunk), device=device), mask.sum(-1) - 1]
                scores.extend(self.reward_head(last.to(self.reward_head.weight.dtype)).squeeze(-1).float().tolist())
        finally:
            self.use_adapter(POLICY)
        return scores
