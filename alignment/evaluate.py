"""Compare policies on held-out prompts: ``python -m alignment.evaluate recipe.yaml [--key value ...]``.

Each policy answers the same prompts; a reward (reward model, classifier or function) scores the answers. Reported
per policy, each with a bootstrap 95% confidence interval: win rate against the first policy (the baseline; ties
count half), mean reward, KL to the reference policy (mean over prompts of Σ log π(y|x) − log π_ref(y|x) on the
policy's own samples), response length and EOS rate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from alignment.config import parse_recipe
from alignment.data import DataArguments, load_data
from alignment.errors import RecipeError
from alignment.generation import SamplingArguments, generate, render_prompt
from alignment.models import load_trained
from alignment.rewards import resolve_reward
from alignment.run import default_output_dir, stage_main, write_json

logger = logging.getLogger(__name__)


@dataclass
class EvaluateArguments:
    policies: list[str] = field(default_factory=list, metadata={"help": "Policies to compare; the first is the baseline."})
    reward: str = field(default="", metadata={"help": "Reward spec: RM run folder, CLASSIFIER_RUN#label, or module:function."})
    extra_rewards: list[str] = field(
        default_factory=list, metadata={"help": "More reward specs reported per policy (e.g. the true objective)."}
    )
    reference: str | None = field(default=None, metadata={"help": "Reference policy for KL (default: the baseline)."})
    bootstrap: int = field(default=1000, metadata={"help": "Bootstrap resamples for the confidence intervals."})
    use_chat_template: bool = field(
        default=True, metadata={"help": "Render prompts through the chat template; false continues the raw text."}
    )
    output_dir: str | None = field(default=None, metadata={"help": "Where evaluation.json and samples go."})


def bootstrap_ci(values: np.ndarray, n: int, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean."""
    if len(values) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n, len(values)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


@torch.no_grad()
def response_logprobs(
    model, tokenizer, prompts: list, responses: list[str], use_chat_template: bool = True, finished: list[bool] | None = None
) -> np.ndarray:
    """Σ log p(response tokens | prompt) per pair, the response tokenised after the rendered prompt, plus EOS where
    the response ended with one (``finished``; all of them when not given).

    Generated texts are stripped; a continuation of a raw prompt that ends in a word gets its separating space back,
    so it is tokenised as it was sampled (" word", not "word").
    """
    totals = []
    pairs = tqdm(enumerate(zip(prompts, responses)), total=len(prompts), desc="log-probs", unit="response", leave=False)
    for i, (prompt, response) in pairs:
        rendered = render_prompt(tokenizer, prompt, use_chat_template)
        if not use_chat_template and response and not response[0].isspace() and rendered and not rendered[-1].isspace():
            response = " " + response
        p_ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
        eos = (tokenizer.eos_token or "") if finished is None or finished[i] else ""
        r_ids = tokenizer(response + eos, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([p_ids + r_ids], device=model.device)
        logits = model(input_ids=ids).logits[0, len(p_ids) - 1 : -1].float()
        totals.append(torch.log_softmax(logits, -1).gather(-1, ids[0, len(p_ids) :, None]).sum().item())
    return np.asarray(totals)


def evaluate_policies(prompts: list, args: EvaluateArguments, sampling: SamplingArguments) -> dict:
    reward = resolve_reward(args.reward)
    extras = {spec: resolve_reward(spec) for spec in args.extra_rewards}
    reference_path = args.reference or args.policies[0]
    answers: dict[str, list[dict]] = {}
    own_logp: dict[str, np.ndarray] = {}
    for policy in args.policies:
        model, tok, _ = load_trained(policy, "causal")
        outputs = generate(model, tok, prompts, sampling, use_chat_template=args.use_chat_template, progress=True)
        answers[policy] = [o[0] for o in outputs]
        own_logp[policy] = response_logprobs(
            model, tok, prompts, [a["text"] for a in answers[policy]], args.use_chat_template, [a["finished"] for a in answers[policy]]
        )
        del model
    ref_model, ref_tok, _ = load_trained(reference_path, "causal")
    results, baseline_rewards = {}, None
    for policy in args.policies:
        texts = [a["text"] for a in answers[policy]]
        rewards = np.asarray(reward(prompts, texts), dtype=float)
        finished = [a["finished"] for a in answers[policy]]
        kl = own_logp[policy] - response_logprobs(ref_model, ref_tok, prompts, texts, args.use_chat_template, finished)
        if baseline_rewards is None:
            baseline_rewards = rewards
        wins = (rewards > baseline_rewards).astype(float) + 0.5 * (rewards == baseline_rewards)
        lengths = np.asarray([a["num_tokens"] for a in answers[policy]], dtype=float)
        results[policy] = {
            "mean_reward": float(rewards.mean()),
            "mean_reward_ci95": bootstrap_ci(rewards, args.bootstrap),
            "win_rate_vs_baseline": float(wins.mean()),
            "win_rate_ci95": bootstrap_ci(wins, args.bootstrap),
            "kl_to_reference": float(kl.mean()),
            "kl_ci95": bootstrap_ci(kl, args.bootstrap),
            "mean_length_tokens": float(lengths.mean()),
            "eos_rate": float(np.mean([a["finished"] for a in answers[policy]])),
            "extra_rewards": {
                spec: {"mean": float(np.mean(x)), "ci95": bootstrap_ci(np.asarray(x, dtype=float), args.bootstrap)}
                for spec, fn in extras.items()
                for x in [fn(prompts, texts)]
            },
        }
    samples = [
        {"prompt": p, **{policy: answers[policy][i]["text"] for policy in args.policies}} for i, p in enumerate(prompts)
    ]
    return {"baseline": args.policies[0], "reference": reference_path, "num_prompts": len(prompts), "policies": results, "samples": samples}


@stage_main
def main(argv: list[str]) -> None:
    """usage: python -m alignment.evaluate [RECIPE.yaml] --policies '[A, B]' --reward SPEC --dataset_path prompts.jsonl"""
    args, data_args, sampling = parse_recipe(
        argv, (EvaluateArguments, DataArguments, SamplingArguments), check_paths=("dataset_path",)
    )
    if len(args.policies) < 1 or not args.reward:
        raise RecipeError("evaluate needs policies (the first is the baseline) and a reward")
    prompts = list(load_data(data_args, "prompts").splits["train"]["prompt"])
    report = evaluate_policies(prompts, args, sampling)
    out = Path(args.output_dir or default_output_dir("evaluate"))
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "evaluation.json", report)
    for policy, r in report["policies"].items():
        print(
            f"{policy}: reward {r['mean_reward']:.3f} {tuple(round(x, 3) for x in r['mean_reward_ci95'])}, "
            f"win rate {r['win_rate_vs_baseline']:.2f}, KL {r['kl_to_reference']:.2f}, length {r['mean_length_tokens']:.1f}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
