"""Acceptance experiment for policy optimisation: sentiment steering of a QLoRA policy with our PPO and with DPO.

    nice -n 19 .venv/bin/python bench/ppo_sentiment.py [--classifier runs/classify-demo] [--policy builtin:...]
        [--ppo-steps 10] [--ppo-batch-size 16] [--samples-per-prompt 2] [--dpo-epochs 2] [--eval-repeats 2] [--out DIR]

The reward is the classify demo's MiniLM sentiment classifier: p(positive) of a continuation of a neutral movie-review
opening (data/prompts). Parts, each timed and run through the project's real stages:

1. reward: train the classifier (``alignment.classify recipes/classify/demo.yaml --baseline none``), or reuse
   ``--classifier DIR``;
2. PPO: ``alignment.ppo recipes/ppo/demo.yaml`` on the start policy (``--policy``: SmolLM2-135M-Instruct by default,
   standing in for an SFT policy; an SFT run folder works too) with that classifier as the reward; the training reward
   start -> end and the KL to the reference come from the run's metrics.jsonl;
3. DPO pairs: the start policy samples ``--samples-per-prompt`` continuations of each training opening (the sampler
   PPO uses: same temperature and length, no top-p); the classifier labels them: chosen = highest p(positive),
   rejected = lowest (exact ties dropped);
4. DPO: ``alignment.dpo recipes/dpo/demo.yaml`` on those pairs (QLoRA, reference = adapter disabled);
5. evaluation: ``alignment.evaluate.evaluate_policies`` on the held-out openings (x ``--eval-repeats`` samples each,
   the same seed for every policy): mean reward with bootstrap CIs, win rate of PPO and DPO against the start policy
   judged by the classifier (ties count half), KL to the start policy; plus the share of continuations the classifier
   calls negative (p < 0.5) and the mean log-odds, which the saturated mean p(positive) hides.

Prints the figures and writes them to ``--json`` (default OUT/ppo_sentiment.json). Subprocess logs go to OUT/logs/.
About 15-20 minutes on a 2-core CPU with the defaults.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PPO_RECIPE = ROOT / "recipes" / "ppo" / "demo.yaml"
DPO_RECIPE = ROOT / "recipes" / "dpo" / "demo.yaml"
CLASSIFY_RECIPE = ROOT / "recipes" / "classify" / "demo.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-ppo-sentiment", help="work folder (runs and logs)")
    p.add_argument("--json", type=Path, default=None, help="figures file (default OUT/ppo_sentiment.json)")
    p.add_argument("--classifier", type=Path, default=None, help="reuse this alignment.classify run (default: train one)")
    p.add_argument("--policy", default="builtin:smollm2-135m-instruct", help="start policy: a builtin name or an SFT run")
    p.add_argument("--train-prompts", type=Path, default=ROOT / "data" / "prompts" / "movie_reviews.jsonl")
    p.add_argument("--heldout-prompts", type=Path, default=ROOT / "data" / "prompts" / "movie_reviews_heldout.jsonl")
    p.add_argument("--max-new-tokens", type=int, default=24, help="continuation length everywhere (PPO, pairs, eval)")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature everywhere")
    p.add_argument("--ppo-recipe", type=Path, default=PPO_RECIPE)
    p.add_argument("--ppo-steps", type=int, default=None, help="PPO steps (default: the recipe's)")
    p.add_argument("--ppo-batch-size", type=int, default=None, help="prompts per PPO step (default: the recipe's)")
    p.add_argument("--ppo", action="append", default=[], metavar="KEY=VALUE", help="more PPO recipe overrides")
    p.add_argument("--samples-per-prompt", type=int, default=2, help="DPO pairs: best vs worst of K samples per prompt")
    p.add_argument("--pair-prompts", type=int, default=None, help="DPO pairs from the first N training openings (default all)")
    p.add_argument("--dpo-epochs", type=float, default=2)
    p.add_argument("--dpo-lr", type=float, default=5e-4)
    p.add_argument("--dpo-beta", type=float, default=0.1)
    p.add_argument("--dpo", action="append", default=[], metavar="KEY=VALUE", help="more DPO recipe overrides")
    p.add_argument("--eval-repeats", type=int, default=2, help="held-out samples per opening for each policy")
    p.add_argument("--eval-prompts", type=int, default=None, help="evaluate on the first N held-out openings (default all)")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0, help="seed of the pair sampling and of the evaluation")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (1 avoids spin-waiting on shared CPUs)")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------------------ helpers
def read_prompts(path: Path) -> list[str]:
    return [json.loads(line)["prompt"] for line in path.read_text().splitlines() if line.strip()]


def overrides(pairs: list[str]) -> list[str]:
    flags = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            sys.exit(f"override {pair!r}: expected KEY=VALUE")
        flags += [f"--{key}", value]
    return flags


def run_stage(name: str, cmd: list[str], logs: Path, threads: int) -> float:
    """Run a stage CLI (output to OUT/logs/NAME.log); return its wall time; stop the bench if it fails."""
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    print(f"[{name}] {' '.join(cmd[2:])}", flush=True)
    start = time.perf_counter()
    with (logs / f"{name}.log").open("w") as log:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = (logs / f"{name}.log").read_text()[-3000:]
        sys.exit(f"[{name}] failed (exit {proc.returncode}) after {wall:.0f}s:\n{tail}")
    print(f"[{name}] done in {wall:.0f}s", flush=True)
    return wall


def module(name: str) -> list[str]:
    return [sys.executable, "-m", name]


def sample_continuations(policy: str, prompts: list[str], k: int, max_new_tokens: int, temperature: float, seed: int) -> list[list[str]]:
    """K continuations per raw prompt from ``policy`` with PPO's sampler (temperature, no top-k/top-p), decoded as
    generated (leading space kept, so prompt + continuation tokenises as sampled)."""
    import torch

    from alignment.models import load_trained

    model, tok, _ = load_trained(policy, "causal")
    tok.padding_side = "left"
    torch.manual_seed(seed)
    out: list[list[str]] = []
    for start in range(0, len(prompts), 16):
        chunk = prompts[start : start + 16]
        enc = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            ids = model.generate(
                **enc, do_sample=True, temperature=temperature, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
                num_return_sequences=k, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
            )[:, enc["input_ids"].shape[1] :]
        texts = []
        for row in ids.tolist():
            if tok.eos_token_id in row:
                row = row[: row.index(tok.eos_token_id)]
            texts.append(tok.decode([t for t in row if t != tok.pad_token_id], skip_special_tokens=True))
        out.extend(texts[i * k : (i + 1) * k] for i in range(len(chunk)))
    del model
    return out


def log_odds(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def ppo_figures(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
    rewards = [r["reward_mean"] for r in rows]
    half = max(1, len(rows) // 4)
    return {
        "steps": len(rows),
        "episodes": rows[-1]["episodes"],
        "reward_start": rewards[0],
        "reward_end": rewards[-1],
        "reward_first_quarter_mean": sum(rewards[:half]) / half,
        "reward_last_quarter_mean": sum(rewards[-half:]) / half,
        "reward_by_step": [round(r, 4) for r in rewards],
        "kl_end": rows[-1]["kl"],
        "kl_by_step": [round(r["kl"], 3) for r in rows],
        "kl_coef_end": rows[-1]["kl_coef"],
        "entropy_start": rows[0]["entropy"],
        "entropy_end": rows[-1]["entropy"],
        "seconds_per_step": sum(r["time_step"] for r in rows) / len(rows),
    }


# ------------------------------------------------------------------------------------------------------ parts
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    out = args.out.resolve()
    logs = out / "logs"
    out.mkdir(parents=True, exist_ok=True)
    json_path = args.json or out / "ppo_sentiment.json"
    timings: dict[str, float] = {}
    bench_start = time.perf_counter()
    figures: dict = {"policy": args.policy, "max_new_tokens": args.max_new_tokens, "temperature": args.temperature}

    # 1. the reward: the classify demo's sentiment classifier
    if args.classifier:
        classifier = args.classifier.resolve()
        if not (classifier / "alignment_model.json").is_file():
            sys.exit(f"--classifier {classifier}: not an alignment.classify run folder")
        timings["classifier"] = 0.0
    else:
        classifier = out / "classifier"
        shutil.rmtree(classifier, ignore_errors=True)
        timings["classifier"] = run_stage(
            "classify", module("alignment.classify") + [str(CLASSIFY_RECIPE), "--baseline", "none", "--output_dir", str(classifier)],
            logs, args.threads,
        )
    metrics = json.loads((classifier / "metrics.json").read_text())
    figures["classifier"] = {"run": str(classifier), "test_accuracy": metrics.get("test", {}).get("accuracy")}

    # 2. PPO through the stage CLI
    ppo_run = out / "ppo"
    shutil.rmtree(ppo_run, ignore_errors=True)
    flags = [
        "--model_name_or_path", args.policy, "--dataset_path", str(args.train_prompts), "--reward_model", str(classifier),
        "--reward_label", "positive", "--response_length", str(args.max_new_tokens), "--temperature", str(args.temperature),
        "--output_dir", str(ppo_run), "--resume", "false",
    ]
    if args.ppo_steps is not None:
        flags += ["--total_steps", str(args.ppo_steps)]
    if args.ppo_batch_size is not None:
        flags += ["--batch_size", str(args.ppo_batch_size)]
    timings["ppo"] = run_stage("ppo", module("alignment.ppo") + [str(args.ppo_recipe), *flags, *overrides(args.ppo)], logs, args.threads)
    figures["ppo_training"] = ppo_figures(ppo_run)

    # 3. DPO pairs: the start policy's samples on the training openings, labelled by the classifier
    from alignment.rewards import load_classifier

    clf = load_classifier(classifier)
    start = time.perf_counter()
    prompts = read_prompts(args.train_prompts)[: args.pair_prompts]
    samples = sample_continuations(args.policy, prompts, args.samples_per_prompt, args.max_new_tokens, args.temperature, args.seed)
    flat = [t for group in samples for t in group]
    scores = clf.scores(flat, label="positive")
    pairs, gaps, k = [], [], args.samples_per_prompt
    for i, prompt in enumerate(prompts):
        group = list(zip(scores[i * k : (i + 1) * k], samples[i]))
        best, worst = max(group), min(group)
        if best[0] > worst[0]:
            pairs.append({"prompt": prompt, "chosen": best[1], "rejected": worst[1]})
            gaps.append(best[0] - worst[0])
    pairs_path = out / "dpo_pairs.jsonl"
    pairs_path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    timings["dpo_pairs"] = time.perf_counter() - start
    figures["dpo_pairs"] = {
        "prompts": len(prompts), "samples": len(flat), "pairs": len(pairs), "mean_sample_reward": sum(scores) / len(scores),
        "mean_gap": sum(gaps) / max(len(gaps), 1), "pairs_with_gap_over_0.5": sum(g > 0.5 for g in gaps),
    }
    print(f"[dpo pairs] {len(pairs)} pairs from {len(flat)} samples in {timings['dpo_pairs']:.0f}s", flush=True)

    # 4. DPO through the stage CLI
    dpo_run = out / "dpo"
    shutil.rmtree(dpo_run, ignore_errors=True)
    dpo_flags = [
        "--model_name_or_path", args.policy, "--dataset_path", str(pairs_path), "--validation_split", "0",
        "--eval_strategy", "no", "--save_strategy", "no", "--max_length", str(args.max_new_tokens + 64),
        "--num_train_epochs", str(args.dpo_epochs), "--learning_rate", str(args.dpo_lr), "--beta", str(args.dpo_beta),
        "--output_dir", str(dpo_run), "--resume", "false",
    ]
    timings["dpo"] = run_stage("dpo", module("alignment.dpo") + [str(DPO_RECIPE), *dpo_flags, *overrides(args.dpo)], logs, args.threads)
    dpo_metrics = json.loads((dpo_run / "metrics.json").read_text())
    figures["dpo_training"] = {k: v for k, v in dpo_metrics.items() if isinstance(v, (int, float)) and ("loss" in k or "runtime" in k or "accuracy" in k or "margin" in k)}

    # 5. evaluation on held-out openings with alignment.evaluate
    from alignment.evaluate import EvaluateArguments, evaluate_policies
    from alignment.generation import SamplingArguments

    start = time.perf_counter()
    heldout = read_prompts(args.heldout_prompts)[: args.eval_prompts] * args.eval_repeats
    policies = {"start": args.policy, "ppo": str(ppo_run), "dpo": str(dpo_run)}
    report = evaluate_policies(
        heldout,
        EvaluateArguments(policies=list(policies.values()), reward=f"{classifier}#positive", bootstrap=args.bootstrap, use_chat_template=False),
        SamplingArguments(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=1.0, top_k=0, batch_size=16, seed=args.seed),
    )
    timings["evaluate"] = time.perf_counter() - start
    evaluation = {}
    for name, path in policies.items():
        r = report["policies"][path]
        texts = [s[path] for s in report["samples"]]
        p = clf.scores(texts, label="positive")
        evaluation[name] = {
            "policy": path,
            "mean_reward": r["mean_reward"], "mean_reward_ci95": r["mean_reward_ci95"],
            "win_rate_vs_start": r["win_rate_vs_baseline"], "win_rate_ci95": r["win_rate_ci95"],
            "kl_to_start": r["kl_to_reference"], "kl_ci95": r["kl_ci95"],
            "share_negative": sum(x < 0.5 for x in p) / len(p),
            "mean_log_odds": sum(log_odds(x) for x in p) / len(p),
            "mean_length_tokens": r["mean_length_tokens"],
            "examples": [{"prompt": s["prompt"], "response": s[path]} for s in report["samples"][:4]],
        }
    figures["heldout"] = {"prompts": len(heldout), **evaluation}
    timings["total"] = time.perf_counter() - bench_start
    figures["wall_seconds"] = {k: round(v, 1) for k, v in timings.items()}
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(figures, indent=2))
    print_summary(figures, json_path)
    return 0


def print_summary(f: dict, json_path: Path) -> None:
    t, ppo, pairs, h = f["wall_seconds"], f["ppo_training"], f["dpo_pairs"], f["heldout"]
    print("\n=== PPO / DPO sentiment steering (reward: p(positive) from the classify demo's classifier) ===")
    print(f"classifier: {f['classifier']['run']} (test accuracy {f['classifier']['test_accuracy']})")
    print(
        f"PPO training ({ppo['steps']} steps, {ppo['episodes']} rollouts, {ppo['seconds_per_step']:.0f}s/step): "
        f"reward {ppo['reward_start']:.3f} -> {ppo['reward_end']:.3f} (first/last quarter {ppo['reward_first_quarter_mean']:.3f} -> "
        f"{ppo['reward_last_quarter_mean']:.3f}); KL to reference {ppo['kl_end']:.2f} nats/seq at the end (coef {ppo['kl_coef_end']:.3g}); "
        f"entropy {ppo['entropy_start']:.2f} -> {ppo['entropy_end']:.2f}"
    )
    print(f"  reward by step: {ppo['reward_by_step']}")
    print(
        f"DPO pairs: {pairs['pairs']} from {pairs['samples']} start-policy samples on {pairs['prompts']} openings "
        f"(mean p(positive) {pairs['mean_sample_reward']:.3f}, mean gap {pairs['mean_gap']:.3f}, {pairs['pairs_with_gap_over_0.5']} with gap > 0.5)"
    )
    print(f"held-out ({h['prompts']} samples per policy):")
    print(f"  {'policy':<6} {'mean p(pos)':>12} {'95% CI':>16} {'win vs start':>13} {'95% CI':>16} {'KL to start':>12} {'% negative':>11} {'log-odds':>9}")
    for name in ("start", "ppo", "dpo"):
        r = h[name]
        ci = "({:.3f}, {:.3f})".format(*r["mean_reward_ci95"])
        wci = "({:.2f}, {:.2f})".format(*r["win_rate_ci95"])
        print(
            f"  {name:<6} {r['mean_reward']:>12.3f} {ci:>16} {r['win_rate_vs_start']:>13.2f} {wci:>16} {r['kl_to_start']:>12.2f} "
            f"{100 * r['share_negative']:>10.1f}% {r['mean_log_odds']:>9.2f}"
        )
    print("wall time: " + ", ".join(f"{k} {v:.0f}s" for k, v in t.items()))
    print(f"figures: {json_path}")


if __name__ == "__main__":
    raise SystemExit(main())
