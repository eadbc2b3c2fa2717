"""Critic-free online RL on identical work: our trainer (grpo, rloo, and gae PPO) against trl 1.16's GRPOTrainer and
RLOOTrainer.

    nice -n 19 .venv/bin/python bench/online_rl.py [--updates 8] [--variants ours-grpo,trl-grpo,...] [--json FILE]

Every variant runs in its own process on the same work: SmolLM2-135M-Instruct with QLoRA (NF4 base, LoRA r 16 on
q/k/v/o), the movie-review openings of data/prompts/movie_reviews.jsonl in the same order, 8 prompts x 4 completions
of at most 24 tokens per update at temperature 0.7, the same reward (the built-in ``keyword`` function counting
praise words, as recipes/ppo/keyword.yaml), learning rate 2e-3 (constant, as that recipe), KL coefficient 0.04, and one optimizer
step per update on all 32 completions. Variants:

* ``ours-grpo``, ``ours-rloo``: ``alignment.ppo.PPOTrainer`` with ``advantage_estimator`` grpo / rloo (no value
  function), the stage's defaults otherwise (bf16 autocast where the CPU has native bf16);
* ``ours-gae``: PPO with a value head on the policy's hidden states, the same 4 completions per prompt;
* ``trl-grpo``, ``trl-rloo``: trl's trainers as a user would write them: the settings above, trl's defaults for the
  rest (bf16, gradient checkpointing, DAPO loss for GRPO);
* ``trl-grpo-cpu``: trl's GRPOTrainer tuned for a CPU: gradient checkpointing off (it recomputes activations to save
  memory, ~30% slower), dropout off.

Per variant: completions/s and wall time per update (the training loop only, loading and evaluation excluded), peak
RSS of the process (ru_maxrss, loading included), and on 32 held-out openings (data/prompts/movie_reviews_heldout.jsonl)
before and after training the mean reward and the KL to the start policy (summed log-ratio of the sampled tokens,
reference = adapter disabled), with one sampler and seed for every variant (alignment.generation). Prints the figures
and ratios against trl-grpo; writes them, with the CPU's model name and flags, to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL = "builtin:smollm2-135m-instruct"
TRAIN = ROOT / "data" / "prompts" / "movie_reviews.jsonl"
HELDOUT = ROOT / "data" / "prompts" / "movie_reviews_heldout.jsonl"
KEYWORDS = ["great", "good", "best", "love", "loved", "enjoyed", "amazing", "wonderful", "brilliant", "fantastic",
            "beautiful", "perfect", "excellent"]
VARIANTS = ("ours-grpo", "ours-rloo", "ours-gae", "trl-grpo", "trl-rloo", "trl-grpo-cpu")
WORK = {"prompts_per_update": 8, "generations": 4, "response_length": 24, "temperature": 0.7, "learning_rate": 2e-3,
        "kl_coef": 0.04, "lora_r": 16, "heldout_prompts": 32, "seed": 42}


def cpu_description() -> dict:
    """The CPU's model name, core count and the flags that decide bf16/AMX speed."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "unknown")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "amx_int8")
    return {"model": name, "cores": os.cpu_count(), "flags": [f for f in wanted if f in flags]}


def recorded_settings(args) -> dict:
    """A script's arguments as its result file records them: paths inside the repository relative to it."""
    def shown(value):
        if isinstance(value, (str, Path)) and Path(value).is_absolute() and Path(value).resolve().is_relative_to(ROOT):
            return str(Path(value).resolve().relative_to(ROOT))
        return str(value) if isinstance(value, Path) else value

    return {key: shown(value) for key, value in vars(args).items()}


def read_prompts(path: Path, limit: int | None = None) -> list[str]:
    rows = [json.loads(line)["prompt"] for line in path.read_text().splitlines() if line.strip()]
    return rows[:limit] if limit else rows


def praise(prompts, completions, **_) -> list[float]:
    from alignment.reward_functions import keyword

    return keyword(prompts, completions, KEYWORDS)


# --------------------------------------------------------------------------------------------- held-out scoring
def heldout(model, tokenizer) -> dict:
    """Mean reward and KL to the adapter-disabled start policy on the held-out openings, one seeded sample each."""
    import numpy as np
    import torch

    from alignment.generation import SamplingArguments, generate, response_logprobs

    prompts = read_prompts(HELDOUT, WORK["heldout_prompts"])
    sampling = SamplingArguments(max_new_tokens=WORK["response_length"], temperature=WORK["temperature"], top_p=1.0,
                                 batch_size=20, seed=0)
    with torch.no_grad():
        answers = [o[0] for o in generate(model, tokenizer, prompts, sampling, use_chat_template=False)]
        texts, finished = [a["text"] for a in answers], [a["finished"] for a in answers]
        logp = np.asarray(response_logprobs(model, tokenizer, prompts, texts, False, finished))
        with model.disable_adapter():
            ref = np.asarray(response_logprobs(model, tokenizer, prompts, texts, False, finished))
    rewards = praise(prompts, texts)
    return {"reward": float(np.mean(rewards)), "kl": float(np.mean(logp - ref)), "example": texts[0]}


# --------------------------------------------------------------------------------------------- variants
def run_ours(variant: str, updates: int, out: Path) -> dict:
    from alignment.ppo.trainer import PPOTrainer

    estimator = variant.split("-", 1)[1]
    prompts = out / "train.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in read_prompts(TRAIN)))
    flags = {
        "model_name_or_path": MODEL, "method": "qlora", "lora_r": WORK["lora_r"], "lora_alpha": 2 * WORK["lora_r"],
        "lora_target_modules": "[q_proj, k_proj, v_proj, o_proj]", "dataset_path": str(prompts),
        "use_chat_template": "false", "reward_function": "keyword", "reward_kwargs": json.dumps({"keywords": KEYWORDS}),
        "advantage_estimator": estimator, "num_generations": WORK["generations"],
        "batch_size": WORK["prompts_per_update"] * WORK["generations"], "num_mini_batches": 1, "ppo_epochs": 1,
        "response_length": WORK["response_length"], "temperature": WORK["temperature"],
        "learning_rate": WORK["learning_rate"], "lr_scheduler_type": "constant", "kl_coef": WORK["kl_coef"],
        "total_steps": updates, "save_steps": 10_000, "seed": WORK["seed"], "output_dir": str(out / "run"),
        "normalize_rewards": "false" if estimator != "gae" else "true",
        "missing_eos_penalty": "null",  # trl's trainers score cut completions as they are
        **({"value_model": "head"} if estimator == "gae" else {}),
    }
    trainer = PPOTrainer.from_recipe([x for k, v in flags.items() for x in (f"--{k}", str(v))])
    model, tokenizer = trainer.actor_critic.model, trainer.tokenizer
    before = heldout(model, tokenizer)
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    rows = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    generation = sum(r["time_generation"] for r in rows)
    return {"wall": wall, "generation_share": generation / sum(r["time_step"] for r in rows), "before": before,
            "after": heldout(model, tokenizer), "train_reward_first_last": [rows[0]["reward_mean"], rows[-1]["reward_mean"]]}


def run_trl(variant: str, updates: int, out: Path) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    from alignment.models.builtin import resolve

    path = resolve(MODEL)
    tokenizer = AutoTokenizer.from_pretrained(path)
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(path, quantization_config=quantization)
    lora = LoraConfig(r=WORK["lora_r"], lora_alpha=2 * WORK["lora_r"], lora_dropout=0.05,
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM")
    common = dict(
        output_dir=str(out / "run"), use_cpu=True, num_generations=WORK["generations"],
        per_device_train_batch_size=WORK["prompts_per_update"] * WORK["generations"],
        max_completion_length=WORK["response_length"], temperature=WORK["temperature"], top_p=1.0,
        learning_rate=WORK["learning_rate"], lr_scheduler_type="constant", beta=WORK["kl_coef"], max_steps=updates,
        logging_steps=1, save_strategy="no", report_to="none", seed=WORK["seed"],
    )
    if variant == "trl-grpo-cpu":
        common.update(gradient_checkpointing=False, disable_dropout=True)
    config_cls, trainer_cls = (RLOOConfig, RLOOTrainer) if variant == "trl-rloo" else (GRPOConfig, GRPOTrainer)
    data = Dataset.from_list([{"prompt": p} for p in read_prompts(TRAIN)])
    trainer = trainer_cls(model=model, reward_funcs=praise, args=config_cls(**common), train_dataset=data,
                          processing_class=tokenizer, peft_config=lora)
    policy = trainer.model
    before = heldout(policy, tokenizer)
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    rewards = [r["reward"] for r in trainer.state.log_history if "reward" in r]
    return {"wall": wall, "before": before, "after": heldout(policy, tokenizer),
            "train_reward_first_last": [rewards[0], rewards[-1]] if rewards else None}


def worker(variant: str, updates: int, out: Path) -> None:
    import torch

    torch.manual_seed(WORK["seed"])
    result = (run_ours if variant.startswith("ours-") else run_trl)(variant, updates, out)
    completions = updates * WORK["prompts_per_update"] * WORK["generations"]
    result.update(
        variant=variant, updates=updates, completions=completions, completions_per_s=completions / result["wall"],
        seconds_per_update=result["wall"] / updates, peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
    (out / "result.json").write_text(json.dumps(result, indent=2))


# --------------------------------------------------------------------------------------------- driver
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=8)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench-online-rl"))
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "online_rl.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.updates, Path(args.out))
        return 0
    results = {}
    for variant in args.variants.split(","):
        out = Path(args.out) / variant
        out.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
        cmd = [sys.executable, __file__, "--worker", variant, "--updates", str(args.updates), "--out", str(out)]
        with open(out / "log.txt", "w") as log:
            code = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
        if code != 0:
            print(f"{variant}: failed (exit {code}); see {out / 'log.txt'}")
            continue
        results[variant] = json.loads((out / "result.json").read_text())
        r = results[variant]
        print(f"{variant}: {r['completions_per_s']:.2f} completions/s, {r['seconds_per_update']:.1f} s/update, "
              f"peak RSS {r['peak_rss_mib']:.0f} MiB, held-out reward {r['before']['reward']:.2f} -> {r['after']['reward']:.2f}, "
              f"KL {r['after']['kl']:.2f}", flush=True)
    report = {"cpu": cpu_description(), "threads": args.threads, "work": {**WORK, "updates": args.updates}, "results": results}
    base = results.get("trl-grpo")
    if base:
        report["ratios_vs_trl_grpo"] = {
            v: {"completions_per_s": r["completions_per_s"] / base["completions_per_s"],
                "peak_rss": r["peak_rss_mib"] / base["peak_rss_mib"],
                "heldout_reward_after_minus_trl": r["after"]["reward"] - base["after"]["reward"]}
            for v, r in results.items()
        }
        print("\nratio to trl-grpo (completions/s, peak RSS; held-out reward after, difference):")
        for v, q in report["ratios_vs_trl_grpo"].items():
            print(f"  {v:14s} {q['completions_per_s']:.2f}x  {q['peak_rss']:.2f}x  {q['heldout_reward_after_minus_trl']:+.2f}")
    print(f"cpu: {report['cpu']['model']} ({report['cpu']['cores']} cores; {' '.join(report['cpu']['flags']) or 'no avx512/amx'})")
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
