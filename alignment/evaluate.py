"""Compare policies on held-out prompts: ``python -m alignment.evaluate recipe.yaml [--key value ...]``.

Each policy answers the same prompts (``samples_per_prompt`` answers each); two judges score the answers:

* ``reward`` — the *proxy*: the reward the policies were optimised against (usually the reward model learnt from the
  raters);
* ``gold`` — the judge the result is trusted by: in a simulation the raters' hidden oracle (Gao, Schulman & Hilton
  2022), with real raters a held-out human-judged set, a stronger RM or a function.

Reported per policy and judge: win rate against the first policy (the baseline; per prompt over all answer pairs,
ties count half), mean reward and the paired reward gain; and KL to the reference policy (mean over answers of
Σ log π(y|x) − log π_ref(y|x) on the policy's own samples), response length and EOS rate. Every interval is a 95%
bootstrap over prompts, paired: one resample of the prompts serves every policy and judge (:mod:`alignment.stats`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from alignment.config import parse_recipe
from alignment.data import DataArguments, load_data
from alignment.errors import RecipeError
from alignment.generation import SamplingArguments, generate, response_logprobs
from alignment.models import load_trained
from alignment.rewards import RewardFn, check_reward_spec, resolve_reward
from alignment.run import default_output_dir, stage_main, write_json
from alignment.stats import bootstrap_indices, ci95, win_rates

logger = logging.getLogger(__name__)


@dataclass
class EvaluateArguments:
    policies: list[str] = field(default_factory=list, metadata={"help": "Policies to compare; the first is the baseline."})
    reward: str = field(
        default="", metadata={"help": "Proxy reward spec (the one optimised): RM run folder, CLASSIFIER_RUN#label, or module:function."}
    )
    gold: str | None = field(
        default=None, metadata={"help": "Gold reward spec: the judge the result is trusted by (a simulation's oracle)."}
    )
    samples_per_prompt: int = field(default=1, metadata={"help": "Answers sampled per prompt and policy."})
    reference: str | None = field(default=None, metadata={"help": "Reference policy for KL (default: the baseline)."})
    bootstrap: int = field(default=1000, metadata={"help": "Bootstrap resamples of the prompts for the 95% intervals."})
    use_chat_template: bool = field(
        default=True, metadata={"help": "Render prompts through the chat template; false continues the raw text."}
    )
    output_dir: str | None = field(default=None, metadata={"help": "Where evaluation.json and samples go."})

    def __post_init__(self) -> None:
        if self.samples_per_prompt < 1:
            raise ValueError(f"samples_per_prompt must be >= 1, got {self.samples_per_prompt}")
        if self.bootstrap < 1:
            raise ValueError(f"bootstrap must be >= 1, got {self.bootstrap}")


def check_arguments(args: EvaluateArguments, sampling: SamplingArguments, extra_columns: list[str] | None = None) -> None:
    """Every key a run needs, checked before any model loads; a function judge that reads data columns (e.g.
    exact_match's answer) needs them in ``extra_columns``."""
    if not args.policies or not args.reward:
        raise RecipeError("evaluate needs policies (the first is the baseline) and a reward")
    if sampling.num_return_sequences != 1:
        raise RecipeError("evaluate: set samples_per_prompt, not num_return_sequences")
    for key, spec in (("reward", args.reward), ("gold", args.gold)):
        if spec:
            check_reward_spec(spec, key, columns=extra_columns or [])


def judge_stats(scores: dict[str, np.ndarray], baseline: str, indices: np.ndarray) -> dict[str, dict]:
    """Per policy: mean reward, win rate vs the baseline and reward gain, each with its paired 95% interval.
    ``scores[policy]`` is [prompts, samples]."""
    base = scores[baseline].mean(axis=1)
    out = {}
    for policy, s in scores.items():
        per_prompt, wins = s.mean(axis=1), win_rates(s, scores[baseline])
        out[policy] = {
            "mean_reward": float(per_prompt.mean()),
            "mean_reward_ci95": ci95(per_prompt, indices),
            "win_rate_vs_baseline": float(wins.mean()),
            "win_rate_ci95": ci95(wins, indices),
            "reward_gain": float((per_prompt - base).mean()),
            "reward_gain_ci95": ci95(per_prompt - base, indices),
        }
    return out


def evaluate_policies(prompts: list, args: EvaluateArguments, sampling: SamplingArguments,
                      columns: dict[str, list] | None = None) -> dict:
    """``columns``: the prompts' extra data columns, handed to function judges that read them."""
    judges: dict[str, RewardFn] = {"proxy": resolve_reward(args.reward)}
    if args.gold:
        judges["gold"] = resolve_reward(args.gold)
    reference_path = args.reference or args.policies[0]
    n, k = len(prompts), args.samples_per_prompt
    flat_prompts = [p for p in prompts for _ in range(k)]
    flat_columns = {c: [v for v in values for _ in range(k)] for c, values in (columns or {}).items()}
    answers: dict[str, list[dict]] = {}
    own_logp: dict[str, np.ndarray] = {}
    reference = None  # (model, tokenizer), kept when the reference is one of the policies
    for policy in args.policies:
        model, tok, _ = load_trained(policy, "causal")
        outputs = generate(model, tok, prompts, replace(sampling, num_return_sequences=k), use_chat_template=args.use_chat_template, progress=True)
        answers[policy] = [a for per_prompt in outputs for a in per_prompt]
        own_logp[policy] = np.asarray(response_logprobs(
            model, tok, flat_prompts, [a["text"] for a in answers[policy]], args.use_chat_template, [a["finished"] for a in answers[policy]]
        ))
        if policy == reference_path:
            reference = (model, tok)
        del model
    ref_model, ref_tok = reference or load_trained(reference_path, "causal")[:2]
    indices = bootstrap_indices(n, args.bootstrap, sampling.seed)
    scores = {name: {} for name in judges}
    results = {}
    for policy in args.policies:
        texts = [a["text"] for a in answers[policy]]
        for name, judge in judges.items():
            scores[name][policy] = np.asarray(judge(flat_prompts, texts, **flat_columns), dtype=float).reshape(n, k)
        finished = [a["finished"] for a in answers[policy]]
        # the reference's own answers have KL 0 (their log-probs under it are own_logp)
        ref_logp = own_logp[policy] if policy == reference_path else response_logprobs(ref_model, ref_tok, flat_prompts, texts, args.use_chat_template, finished)
        kl = (own_logp[policy] - np.asarray(ref_logp)).reshape(n, k)
        results[policy] = {
            "kl_to_reference": float(kl.mean()),
            "kl_ci95": ci95(kl.mean(axis=1), indices),
            "mean_length_tokens": float(np.mean([a["num_tokens"] for a in answers[policy]])),
            "eos_rate": float(np.mean(finished)),
        }
    stats = {name: judge_stats(s, args.policies[0], indices) for name, s in scores.items()}
    for policy, r in results.items():
        r.update(stats["proxy"][policy])  # the proxy's figures at the top level; the gold's under "gold"
        if "gold" in stats:
            r["gold"] = stats["gold"][policy]
    samples = [
        {"prompt": p, **{policy: answers[policy][i * k]["text"] for policy in args.policies},
         **{f"{name} reward": {policy: float(scores[name][policy][i, 0]) for policy in args.policies} for name in judges}}
        for i, p in enumerate(prompts)
    ]
    return {
        "baseline": args.policies[0], "reference": reference_path, "num_prompts": n, "samples_per_prompt": k,
        "judges": {"proxy": args.reward, **({"gold": args.gold} if args.gold else {})},
        "policies": results, "samples": samples,
    }


@stage_main(keys=lambda: ((EvaluateArguments, DataArguments, SamplingArguments), {}))
def main(argv: list[str]) -> None:
    """usage: python -m alignment.evaluate [RECIPE.yaml] --policies '[A, B]' --reward SPEC [--gold SPEC] --dataset_path prompts.jsonl"""
    args, data_args, sampling = parse_recipe(
        argv, (EvaluateArguments, DataArguments, SamplingArguments), check_paths=("dataset_path",)
    )
    check_arguments(args, sampling, data_args.extra_columns)
    rows = load_data(data_args, "prompts").splits["train"]
    columns = {c: list(rows[c]) for c in data_args.extra_columns or []}
    report = evaluate_policies(list(rows["prompt"]), args, sampling, columns)
    out = Path(args.output_dir or default_output_dir("evaluate"))
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "evaluation.json", report)
    print(f"{report['num_prompts']} prompts x {report['samples_per_prompt']} samples; 95% CIs: paired bootstrap over prompts")
    for policy, r in report["policies"].items():
        line = (
            f"{policy}: proxy reward {r['mean_reward']:.3f} {ci(r['mean_reward_ci95'])}, "
            f"proxy win rate {r['win_rate_vs_baseline']:.2f} {ci(r['win_rate_ci95'])}"
        )
        if "gold" in r:
            g = r["gold"]
            line += f", gold reward {g['mean_reward']:.3f} {ci(g['mean_reward_ci95'])}, gold win rate {g['win_rate_vs_baseline']:.2f} {ci(g['win_rate_ci95'])}"
        print(line + f", KL {r['kl_to_reference']:.2f} {ci(r['kl_ci95'])}, length {r['mean_length_tokens']:.1f}")


def ci(interval: tuple[float, float]) -> str:
    return f"[{interval[0]:.3g}, {interval[1]:.3g}]"


if __name__ == "__main__":
    raise SystemExit(main())
