"""Run the human-feedback loop as one command: ``python -m alignment.pipeline recipe.yaml [--from S | --only S]``.

The pipeline recipe lists stages in order — classify (optional) → sft → candidates → annotate → rm → ppo or dpo →
evaluate — each naming its stage recipe plus overrides. The runner wires each stage's outputs into the next by path
(the SFT run becomes the candidates' policy and the DPO/PPO starting point, the annotation export becomes the RM and
DPO data, …), runs every training stage as its own process (``python -m alignment.<stage>``), and records a manifest.
A stage whose recipe, inputs and upstream stages are unchanged since its last successful run is skipped (content
hash), so re-running after a failure resumes at the failed stage — which itself resumes from its last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from alignment.config import as_flags, build_dataclasses, load_yaml, parse_overrides
from alignment.errors import AlignmentError, RecipeError
from alignment.report import build_report
from alignment.run import check_writable, environment, stage_main, write_json

logger = logging.getLogger(__name__)

STAGE_MODULES = {
    "classify": "alignment.classify",
    "sft": "alignment.sft",
    "candidates": "alignment.candidates",
    "rm": "alignment.rm",
    "dpo": "alignment.dpo",
    "ppo": "alignment.ppo",
    "evaluate": "alignment.evaluate",
}
ORDER = ["classify", "sft", "candidates", "annotate", "rm", "dpo", "ppo", "evaluate"]
DATA_KEYS = ("dataset_path", "validation_path", "test_path")


@dataclass
class StageSpec:
    name: Literal["classify", "sft", "candidates", "annotate", "rm", "dpo", "ppo", "evaluate"] = "sft"
    recipe: str | None = None
    overrides: dict = field(default_factory=dict)
    # annotate only
    mode: Literal["simulated", "human"] = "simulated"
    oracle: str | None = None
    raters: int = 3
    noise: float = 0.1
    disagreement: float = 0.1
    tie_threshold: float = 0.02
    export_mode: Literal["majority", "per-rater"] = "per-rater"
    port: int = 7860


@dataclass
class PipelineSpec:
    output_dir: str = "runs/pipeline"
    stages: list[dict] = field(default_factory=list)
    wandb_group: str | None = None
    # The gold judge: what evaluation and the training monitors trust. Default: the simulated raters' oracle.
    gold: str | None = None
    # Held-out prompts the PPO/DPO monitors score while training (a validation set: the evaluate stage's
    # dataset_path is the test set, kept apart from it).
    validation_prompts: str | None = None

    def __post_init__(self) -> None:
        if self.validation_prompts is not None and not Path(self.validation_prompts).is_file():
            raise ValueError(f"validation_prompts: no such file: {self.validation_prompts}")


def load_pipeline(path: str) -> tuple[PipelineSpec, list[StageSpec]]:
    """Parse and validate a pipeline recipe (and each stage's own recipe path) before anything runs."""
    (spec,) = build_dataclasses(load_yaml(path), (PipelineSpec,), path)
    stages = []
    for i, raw in enumerate(spec.stages):
        if not isinstance(raw, dict):
            raise RecipeError(f"{path}: stages[{i}] must be a mapping with a 'name'")
        (stage,) = build_dataclasses(raw, (StageSpec,), f"{path}: stages[{i}]")
        if stage.name != "annotate" and stage.recipe and not Path(stage.recipe).is_file():
            raise RecipeError(f"{path}: stages[{i}] ({stage.name}): recipe not found: {stage.recipe}")
        stages.append(stage)
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise RecipeError(f"{path}: a stage appears twice: {names}")
    if [n for n in ORDER if n in names] != names:
        raise RecipeError(f"{path}: stages must run in the order {' → '.join(ORDER)}; got {names}")
    return spec, stages


# ------------------------------------------------------------------------------------------------------- wiring
def oracle_spec(stage: StageSpec, root: Path, present: set[str]) -> str | None:
    """The simulated raters' judge: the annotate stage's ``oracle``, else the classify stage's p(positive)."""
    return stage.oracle or (f"{root / 'classify'}#positive" if "classify" in present else None)


def gold_spec(spec: PipelineSpec, stages: list[StageSpec], root: Path) -> str | None:
    """The pipeline's ``gold``, else the oracle of a simulated annotate stage (None with human raters)."""
    if spec.gold:
        return spec.gold
    present = {s.name for s in stages}
    annotate = [s for s in stages if s.name == "annotate" and s.mode == "simulated"]
    return oracle_spec(annotate[0], root, present) if annotate else None


def monitor_keys(spec: PipelineSpec, gold: str | None) -> dict[str, Any]:
    """The PPO/DPO held-out monitor's keys: the validation prompts and the gold judge."""
    if not spec.validation_prompts:
        return {}
    return {"eval_prompts": spec.validation_prompts, **({"gold_reward": gold} if gold else {})}


def wiring(stage: StageSpec, root: Path, present: set[str], spec: PipelineSpec, gold: str | None = None) -> dict[str, Any]:
    """Recipe keys that connect ``stage`` to the outputs of the stages before it (and to the gold judge)."""
    out = root / stage.name
    sft = str(root / "sft") if "sft" in present else None
    prefs = str(root / "preferences.jsonl")
    if stage.name in ("classify", "sft"):
        return {"output_dir": str(out)}
    if stage.name == "candidates":
        return {"db": str(root / "annotations.db"), **({"policies": [sft]} if sft else {})}
    if stage.name == "rm":
        return {"output_dir": str(out), "dataset_path": prefs}
    monitor = monitor_keys(spec, gold)
    if stage.name == "dpo":
        proxy = {"proxy_reward": str(root / "rm")} if monitor else {}
        return {"output_dir": str(out), "dataset_path": prefs, **monitor, **proxy, **({"model_name_or_path": sft} if sft else {})}
    if stage.name == "ppo":
        # PPO optimises the reward model learnt from the judgements, whatever reward its own recipe names.
        rm = {"reward_model": str(root / "rm"), "reward_label": None, "reward_function": None}
        return {"output_dir": str(out), **rm, **monitor, **({"model_name_or_path": sft} if sft else {})}
    if stage.name == "evaluate":
        trained = [str(root / n) for n in ("ppo", "dpo") if n in present]
        judges = {"reward": str(root / "rm"), **({"gold": gold} if gold else {})}
        return {"output_dir": str(out), "policies": [p for p in [sft, *trained] if p], **judges}
    return {}


def stage_values(stage: StageSpec, wired: dict[str, Any]) -> dict[str, Any]:
    """The stage recipe's keys after the pipeline's overrides and wiring (wiring wins: it is what connects stages)."""
    values = load_yaml(stage.recipe) if stage.recipe else {}
    return {**values, **stage.overrides, **wired}


def content_hash(stage: StageSpec, values: dict[str, Any], upstream: list[str]) -> str:
    """Hash of what determines a stage's result: its spec, resolved keys, input data files and upstream hashes."""
    h = hashlib.sha256(json.dumps([asdict(stage), values, upstream], sort_keys=True, default=str).encode())
    for key in DATA_KEYS:
        path = values.get(key)
        if isinstance(path, str) and Path(path).is_file() and not path.endswith("preferences.jsonl"):
            h.update(Path(path).read_bytes())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------------------------ running
def run_module(module: str, recipe: str | None, flags: dict[str, Any], log_path: Path) -> None:
    """Run one stage as its own process (its recipe, then overrides and wiring as flags); output to console + log."""
    cmd = [sys.executable, "-m", module, *([recipe] if recipe else []), *as_flags(flags)]
    logger.info("$ %s", " ".join(cmd))
    with log_path.open("a") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ})
        for line in proc.stdout:  # type: ignore[union-attr]
            sys.stdout.write(line)
            log.write(line)
        if proc.wait() != 0:
            raise AlignmentError(f"stage {module} failed with exit status {proc.returncode}; see {log_path}")


def run_annotate(stage: StageSpec, root: Path, present: set[str]) -> dict[str, Any]:
    """Collect judgements (simulated raters, or wait for humans in the web app), then export preferences."""
    from alignment.annotations.export import preference_rows
    from alignment.annotations.store import AnnotationStore
    from alignment.run import write_jsonl

    store = AnnotationStore(str(root / "annotations.db"))
    if stage.mode == "simulated":
        from alignment.rewards import resolve_reward
        from alignment.simulate import SimulationArguments, simulate

        oracle = oracle_spec(stage, root, present)
        if not oracle:
            raise RecipeError("annotate (simulated) needs an oracle: a reward spec, or a classify stage before it")
        sim = SimulationArguments(db="", oracle=oracle, raters=stage.raters, noise=stage.noise,
                                  disagreement=stage.disagreement, tie_threshold=stage.tie_threshold)
        simulate(store, resolve_reward(oracle), sim)
    else:
        wait_for_humans(store, root, stage.port)
    records, candidates = store.records()
    n = write_jsonl(root / "preferences.jsonl", preference_rows(records, candidates, mode=stage.export_mode))
    if n == 0:
        raise AlignmentError("the annotation export holds no preference pairs (all ties or skips?)")
    return {"preference_pairs": n, **store.progress()}


def wait_for_humans(store, root: Path, port: int) -> None:
    """Point raters at the web app and wait until every task has its judgements."""
    print(f"Annotation: start the app with `python -m annotation_ui --db {root / 'annotations.db'} --port {port}`, "
          "add raters with `python -m annotation_ui users add NAME --role rater`; waiting for judgements…")
    while True:
        p = store.progress()
        print(f"\r{p['judgements']} / {p['judgements_needed']} judgements", end="", flush=True)
        if p["judgements"] >= p["judgements_needed"]:
            print()
            return
        time.sleep(10)


def stage_metrics(name: str, root: Path) -> dict[str, Any]:
    for candidate in (root / name / "metrics.json", root / name / "evaluation.json"):
        if candidate.is_file():
            data = json.loads(candidate.read_text())
            data.pop("samples", None)
            return data
    return {}


def select_stages(names: list[str], start: str | None, only: str | None) -> set[str]:
    """Stages forced to run: ``--only S`` runs S alone; ``--from S`` re-runs S and everything after it."""
    for flag, value in (("--from", start), ("--only", only)):
        if value is not None and value not in names:
            raise RecipeError(f"{flag} {value}: not a stage of this pipeline ({', '.join(names)})")
    if only:
        return {only}
    if start:
        return set(names[names.index(start) :])
    return set()


def run_pipeline(recipe: str, start: str | None = None, only: str | None = None) -> dict[str, Any]:
    spec, stages = load_pipeline(recipe)
    root = Path(spec.output_dir)
    check_writable(root)
    manifest_path = root / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"stages": {}}
    manifest.update(recipe=recipe, output_dir=str(root), environment=environment())
    names = [s.name for s in stages]
    forced = select_stages(names, start, only)
    present = set(names)
    if spec.wandb_group:
        os.environ.setdefault("WANDB_RUN_GROUP", spec.wandb_group)
    gold = gold_spec(spec, stages, root)
    upstream: list[str] = []
    for stage in stages:
        wired = wiring(stage, root, present, spec, gold)
        values = stage_values(stage, wired)
        digest = content_hash(stage, values, upstream)
        upstream.append(digest)
        previous = manifest["stages"].get(stage.name, {})
        if only and stage.name != only:
            continue
        if stage.name not in forced and previous.get("status") == "done" and previous.get("hash") == digest:
            logger.info("stage %s: unchanged since its last run (%s), skipped", stage.name, digest)
            continue
        logger.info("stage %s: running", stage.name)
        manifest["stages"][stage.name] = {"hash": digest, "status": "running", "started": time.time()}
        write_json(manifest_path, manifest)
        began = time.time()
        if stage.name == "annotate":
            extra = run_annotate(stage, root, present)
        else:
            flags = {**stage.overrides, **wired}
            run_module(STAGE_MODULES[stage.name], stage.recipe, flags, root / f"{stage.name}.log")
            extra = {}
        manifest["stages"][stage.name] = {
            "hash": digest,
            "status": "done",
            "recipe": stage.recipe,
            "values": values,
            "outputs": stage_outputs(stage.name, root),
            "metrics": {**stage_metrics(stage.name, root), **extra},
            "wall_time_s": round(time.time() - began, 1),
        }
        write_json(manifest_path, manifest)
    return manifest


def stage_outputs(name: str, root: Path) -> list[str]:
    if name == "candidates":
        return [str(root / "annotations.db")]
    if name == "annotate":
        return [str(root / "preferences.jsonl")]
    return [str(root / name)]


def summary(manifest: dict[str, Any]) -> str:
    """A few lines: what each stage produced and the headline numbers."""
    s = manifest["stages"]
    lines = []
    for name, info in s.items():
        lines.append(f"{name:<10} {info.get('status', '?'):<5} {info.get('wall_time_s', 0):>7.1f}s  {', '.join(info.get('outputs', []))}")
    m = lambda n: s.get(n, {}).get("metrics", {})  # noqa: E731
    heads = []
    if "accuracy" in m("classify").get("test", {}):
        heads.append(f"classifier test accuracy {m('classify')['test']['accuracy']:.3f}")
    if "eval_loss" in m("sft"):
        heads.append(f"SFT eval loss {m('sft')['eval_loss']:.3f}")
    if "preference_pairs" in m("annotate"):
        heads.append(f"{m('annotate')['preference_pairs']} preference pairs from {m('annotate').get('judgements', '?')} judgements")
    rm = m("rm")
    held = rm.get("test") or rm.get("validation") or {}
    if "pairwise_accuracy" in held:
        heads.append(f"RM held-out accuracy {held['pairwise_accuracy']:.3f}")
    return "\n".join(lines + [""] + heads + result_lines(m("evaluate")))


def result_lines(evaluation: dict[str, Any]) -> list[str]:
    """The result, one line per optimised policy against the baseline, in a fixed form that scripts read:
    ``ppo: gold win rate vs sft 0.74 (95% CI 0.66–0.81), gold reward 0.76 → 0.93, proxy reward 2.10 → 3.40, KL 2.90``
    (``proxy win rate`` when there is no gold judge)."""
    policies = evaluation.get("policies", {})
    if len(policies) < 2:
        return []
    (base, b), *others = policies.items()
    judges = evaluation.get("judges", {})
    lines = ["", f"{evaluation.get('num_prompts', '?')} held-out prompts x {evaluation.get('samples_per_prompt', 1)} samples; "
             f"gold: {judges.get('gold', 'none')}; proxy: {judges.get('proxy', '?')}; 95% CIs: paired bootstrap over prompts"]
    for policy, r in others:
        judge, w = ("gold", r["gold"]) if "gold" in r else ("proxy", r)
        line = f"{Path(policy).name}: {judge} win rate vs {Path(base).name} {w['win_rate_vs_baseline']:.2f} " \
               f"(95% CI {w['win_rate_ci95'][0]:.2f}–{w['win_rate_ci95'][1]:.2f}), "
        if "gold" in r:
            line += f"gold reward {b['gold']['mean_reward']:.2f} → {r['gold']['mean_reward']:.2f}, "
        lines.append(line + f"proxy reward {b['mean_reward']:.2f} → {r['mean_reward']:.2f}, KL {r['kl_to_reference']:.2f}")
    return lines


@stage_main
def main(argv: list[str]) -> None:
    """usage: python -m alignment.pipeline RECIPE.yaml [--from STAGE | --only STAGE]"""
    if not argv or argv[0].startswith("--"):
        raise RecipeError("usage: python -m alignment.pipeline RECIPE.yaml [--from STAGE | --only STAGE]")
    flags = parse_overrides(argv[1:])
    unknown = set(flags) - {"from", "only"}
    if unknown:
        raise RecipeError(f"unknown pipeline flag(s): {', '.join('--' + u for u in sorted(unknown))}; use --from or --only")
    began = time.time()
    manifest = run_pipeline(argv[0], flags.get("from"), flags.get("only"))
    root = Path(manifest["output_dir"])
    report = build_report(root)
    print(f"\npipeline wall time {time.time() - began:.0f}s; manifest: {root / 'manifest.json'}; report: {report}")
    print("\n" + summary(manifest))


if __name__ == "__main__":
    raise SystemExit(main())
