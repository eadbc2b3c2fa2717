"""Active preference selection against random selection, at equal judgement budgets, over seeds.

    nice -n 19 .venv/bin/python bench/active_rounds.py [--seeds 3] [--rounds 4] [--budget 6] [--json FILE]

Each (task, strategy, seed) runs the rounds of ``alignment.pipeline`` with the pipeline's own round selection
(``alignment.pipeline.select_round``), the annotation store, the simulated raters and the RM stage:

1. round r offers the r-th slice of the 120 movie-review openings (data/prompts/movie_reviews.jsonl), 4 candidates
   each, sampled once from SmolLM2-135M-Instruct (temperature 1.0, 32 tokens) and shared by every run;
2. ``--budget`` ranking tasks (4 candidates) are selected: ``random``, ``uncertainty`` (the last round's RM) or
   ``disagreement`` (8 reward heads on the last round's RM); round 1 is random for every strategy;
3. three simulated raters (noise 0.1, disagreement 0.15, tie threshold 0.02) rank them, following the task's gold;
4. a MiniLM reward model (``alignment.rm``, the demo pipeline's settings) is trained on every judgement so far;
5. the policy is best-of-4 under that RM: on 40 held-out openings (data/prompts/movie_reviews_heldout.jsonl), 8
   samples each from the same model, it answers with the RM's favourite of samples 1-4. Best-of-n stands in for
   PPO/DPO here (as in Gao, Schulman & Hilton 2022): it turns RM quality into a policy without a training run per
   point. Reported: its gold win rate against the model's own samples (all 8; ties half), and the RM's gold pairwise
   accuracy on every pair of those 8 samples whose gold scores differ.

Tasks (the gold judge the raters follow):

* ``sentiment``: the demo's gold, a MiniLM sentiment classifier's p(positive) (``alignment.classify`` on
  recipes/classify/demo.yaml, trained once);
* ``mixed``: 0.5 x p(positive) + 0.3 x [the answer has 60-160 characters] + 0.2 x [it names the film or movie].

Prints, per task and strategy, the mean and spread (std over seeds) of gold win rate and RM accuracy after each round
against judgements collected, and the judgements each active strategy needs to reach random selection's final mean
gold win rate (linear interpolation between rounds; "not reached" when it does not). Writes the figures, the
settings and the CPU's model name and flags to ``--json``, and the curves to a PNG beside it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.online_rl import cpu_description, recorded_settings  # noqa: E402

MODEL = "builtin:smollm2-135m-instruct"
POOL = ROOT / "data" / "prompts" / "movie_reviews.jsonl"
HELDOUT = ROOT / "data" / "prompts" / "movie_reviews_heldout.jsonl"
STRATEGIES = ("random", "uncertainty", "disagreement")
RATERS = {"raters": 3, "noise": 0.1, "disagreement": 0.15, "tie_threshold": 0.02}
RM_KEYS = {"model_name_or_path": "builtin:minilm-l6", "method": "full", "learning_rate": 5.0e-5, "num_train_epochs": 3,
           "max_length": 128, "save_strategy": "no", "eval_strategy": "no", "validation_split": 0.0, "test_split": 0.0,
           "bf16": False, "report_to": "none"}
SAMPLING = {"max_new_tokens": 32, "temperature": 1.0, "top_p": 0.95, "batch_size": 8}


def read_prompts(path: Path, limit: int | None = None) -> list[str]:
    rows = [json.loads(line)["prompt"] for line in path.read_text().splitlines() if line.strip()]
    return rows[:limit]


def sample(prompts: list[str], n: int, seed: int, cache: Path) -> list[list[str]]:
    """``n`` completions per prompt from the model (cached in ``cache``)."""
    if cache.is_file():
        return json.loads(cache.read_text())
    from alignment.generation import SamplingArguments, generate
    from alignment.models import load_trained

    model, tokenizer, _ = load_trained(MODEL, "causal")
    out = generate(model, tokenizer, prompts, SamplingArguments(**SAMPLING, num_return_sequences=n, seed=seed), progress=True)
    texts = [[c["text"] for c in row] for row in out]
    cache.write_text(json.dumps(texts))
    return texts


def train_classifier(work: Path) -> str:
    from alignment.classify.stage import main as classify_main

    out = work / "classify"
    if not (out / "alignment_model.json").is_file():
        assert classify_main([str(ROOT / "recipes/classify/demo.yaml"), "--baseline", "none", "--output_dir", str(out),
                              "--bf16", "false", "--report_to", "none"]) == 0
    return str(out)


def gold_judges(classifier: str) -> dict:
    from alignment.rewards import load_classifier

    clf = load_classifier(classifier)

    def sentiment(prompts, responses):
        return clf.scores(list(responses), "positive")

    def mixed(prompts, responses):
        positive = np.asarray(clf.scores(list(responses), "positive"))
        length = np.array([60 <= len(r) <= 160 for r in responses], dtype=float)
        names = np.array([("film" in r.lower() or "movie" in r.lower()) for r in responses], dtype=float)
        return list(0.5 * positive + 0.3 * length + 0.2 * names)

    return {"sentiment": sentiment, "mixed": mixed}


def heldout_figures(rm_dir: Path, prompts: list[str], samples: list[list[str]], gold: np.ndarray) -> dict:
    """Best-of-4 gold win rate against the model's samples, and the RM's gold pairwise accuracy."""
    from alignment.rewards import load_reward_model
    from alignment.stats import win_rates

    rm = load_reward_model(rm_dir)
    flat = rm.score([p for p, s in zip(prompts, samples) for _ in s], [t for s in samples for t in s])
    scores = np.asarray(flat).reshape(gold.shape)
    best = scores[:, 1:5].argmax(axis=1) + 1
    wins = win_rates(gold[np.arange(len(gold)), best][:, None], gold)
    i, j = np.triu_indices(gold.shape[1], k=1)
    g, r = gold[:, i] - gold[:, j], scores[:, i] - scores[:, j]
    decided = np.abs(g) > 1e-6
    return {"gold_win_rate": float(wins.mean()), "rm_gold_accuracy": float(((g > 0) == (r > 0))[decided].mean())}


def run_one(task: str, strategy: str, seed: int, args, pool_prompts, pool_samples, oracle, held, work: Path) -> list[dict]:
    from alignment.annotations.export import preference_rows
    from alignment.annotations.store import AnnotationStore
    from alignment.pipeline import PipelineSpec, select_round
    from alignment.rm import main as rm_main
    from alignment.run import write_jsonl
    from alignment.simulate import SimulationArguments, simulate

    root = work / f"{task}-{strategy}-{seed}"
    spec = PipelineSpec(output_dir=str(root), rounds=args.rounds, round_prompts=args.prompts_per_round,
                        round_budget=args.budget, selection=strategy, ensemble_members=8, seed=seed)
    root.mkdir(parents=True, exist_ok=True)
    store = AnnotationStore(str(root / "annotations.db"))
    n, curve = args.prompts_per_round, []
    for number in range(1, args.rounds + 1):
        here = root / f"round-{number}"
        here.mkdir(exist_ok=True)
        rows = [{"prompt": p, "candidates": [{"text": t, "policy": MODEL} for t in s]}
                for p, s in zip(pool_prompts[(number - 1) * n : number * n], pool_samples[(number - 1) * n : number * n])]
        for row in rows:
            store.add_candidates(store.add_prompt(row["prompt"]), row["candidates"])
        write_jsonl(here / "candidates.jsonl", rows)
        candidates = {"task_kind": "ranking", "k": 4, "judgements_per_task": 1, "candidates_out": str(here / "candidates.jsonl")}
        began = time.time()
        select_round(store, number, root, spec, candidates)
        simulate(store, oracle, SimulationArguments(db="", oracle="", seed=seed + 1000 * (number - 1), **RATERS))
        records, candidate_map = store.records()
        write_jsonl(here / "preferences.jsonl", preference_rows(records, candidate_map, mode="per-rater"))
        assert rm_main([str(ROOT / "recipes/rm/demo.yaml"), "--dataset_path", str(here / "preferences.jsonl"), "--output_dir", str(here / "rm"), "--seed", str(seed),
                        *[x for k, v in RM_KEYS.items() for x in (f"--{k}", json.dumps(v) if isinstance(v, bool) else str(v))]]) == 0
        point = {"round": number, "judgements": store.progress()["judgements"], **heldout_figures(here / "rm", *held),
                 "wall_s": round(time.time() - began, 1)}
        print(f"  {task} {strategy} seed {seed} round {number}: {point}", flush=True)
        curve.append(point)
    return curve


def judgements_to_reach(curve_x: list[float], curve_y: list[float], target: float) -> float | None:
    """The judgements at which a mean curve first reaches ``target`` (linear between rounds)."""
    for k, (x, y) in enumerate(zip(curve_x, curve_y)):
        if y >= target:
            if k == 0:
                return float(x)
            x0, y0 = curve_x[k - 1], curve_y[k - 1]
            return float(x0 + (target - y0) / (y - y0) * (x - x0))
    return None


def summarise(results: dict) -> dict:
    summary = {}
    for task, by_strategy in results.items():
        summary[task] = {}
        for strategy, curves in by_strategy.items():
            x = [float(np.mean([c[r]["judgements"] for c in curves])) for r in range(len(curves[0]))]
            win = np.array([[p["gold_win_rate"] for p in c] for c in curves])
            acc = np.array([[p["rm_gold_accuracy"] for p in c] for c in curves])
            summary[task][strategy] = {"judgements": x, "gold_win_rate_mean": win.mean(0).tolist(), "gold_win_rate_std": win.std(0).tolist(),
                                       "rm_gold_accuracy_mean": acc.mean(0).tolist(), "rm_gold_accuracy_std": acc.std(0).tolist()}
        if "random" in summary[task]:
            target = summary[task]["random"]["gold_win_rate_mean"][-1]
            final_x = summary[task]["random"]["judgements"][-1]
            for strategy, s in summary[task].items():
                reach = judgements_to_reach(s["judgements"], s["gold_win_rate_mean"], target)
                s["judgements_to_reach_random_final"] = reach
                s["fraction_of_random_judgements"] = None if reach is None else reach / final_x
    return summary


def plot(summary: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5 * len(summary), 3.5))
    for ax, (task, by_strategy) in zip(np.atleast_1d(fig.subplots(1, len(summary))), summary.items()):
        for strategy, s in by_strategy.items():
            ax.errorbar(s["judgements"], s["gold_win_rate_mean"], yerr=s["gold_win_rate_std"], marker="o", capsize=3, label=strategy)
        ax.set(title=task, xlabel="judgements collected", ylabel="gold win rate of best-of-4 vs samples")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--prompts_per_round", type=int, default=30)
    parser.add_argument("--budget", type=int, default=6, help="ranking tasks per round")
    parser.add_argument("--heldout", type=int, default=40)
    parser.add_argument("--tasks", default="sentiment,mixed")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-active-rounds")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "active_rounds.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    args.work.mkdir(parents=True, exist_ok=True)
    began = time.time()
    pool_prompts = read_prompts(POOL, args.rounds * args.prompts_per_round)
    if len(pool_prompts) < args.rounds * args.prompts_per_round:
        raise SystemExit(f"{POOL} has {len(pool_prompts)} prompts; --rounds x --prompts_per_round needs more")
    held_prompts = read_prompts(HELDOUT, args.heldout)
    pool_samples = sample(pool_prompts, 4, 0, args.work / f"pool_samples_{len(pool_prompts)}x4.json")
    held_samples = sample(held_prompts, 8, 1, args.work / f"heldout_samples_{len(held_prompts)}x8.json")
    golds = gold_judges(train_classifier(args.work))
    results: dict = {}
    for task in args.tasks.split(","):
        oracle = golds[task]
        gold = np.asarray(oracle([p for p, s in zip(held_prompts, held_samples) for _ in s], [t for s in held_samples for t in s]))
        held = (held_prompts, held_samples, gold.reshape(len(held_prompts), -1))
        results[task] = {s: [run_one(task, s, seed, args, pool_prompts, pool_samples, oracle, held, args.work)
                             for seed in range(args.seeds)] for s in args.strategies.split(",")}
    summary = summarise(results)
    for task, by_strategy in summary.items():
        print(f"\n{task}: gold win rate of best-of-4 (mean ± std over {args.seeds} seeds) after each round")
        for strategy, s in by_strategy.items():
            points = ", ".join(f"{x:.0f}: {m:.3f}±{d:.3f}" for x, m, d in zip(s["judgements"], s["gold_win_rate_mean"], s["gold_win_rate_std"]))
            accs = ", ".join(f"{m:.3f}" for m in s["rm_gold_accuracy_mean"])
            reach = s.get("fraction_of_random_judgements")
            reach_text = "not reached" if reach is None else f"{reach:.2f} of random's judgements"
            print(f"  {strategy:<13} {points}  | RM gold accuracy {accs} | random's final win rate: {reach_text}")
    report = {"cpu": cpu_description(), "settings": recorded_settings(args),
              "raters": RATERS, "rm": RM_KEYS, "sampling": SAMPLING, "wall_s": round(time.time() - began), "summary": summary,
              "curves": results}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    plot(summary, args.json.with_suffix(".png"))
    print(f"\n{time.time() - began:.0f} s; figures in {args.json} and {args.json.with_suffix('.png')}")


if __name__ == "__main__":
    main()
