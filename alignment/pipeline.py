"""Run the human-feedback loop as one command: ``python -m alignment.pipeline recipe.yaml [--from S | --only S]``.

The pipeline recipe lists stages in order — classify (optional) → sft → candidates → annotate → rm → ppo or dpo →
evaluate — each naming its stage recipe plus overrides. The runner wires each stage's outputs into the next by path
(the SFT run becomes the candidates' policy and the DPO/PPO starting point, the annotation export becomes the RM and
DPO data, …), runs every training stage as its own process (``python -m alignment.<stage>``), and records a manifest.
A stage whose recipe, inputs and upstream stages are unchanged since its last successful run is skipped (content
hash), so re-running after a failure resumes at the failed stage — which itself resumes from its last checkpoint.

``rounds: N`` repeats the stages from candidates on, as InstructGPT and Llama 2 collected preferences: each round
samples candidates from the current policy (the SFT run, then the last round's PPO/DPO result) on its own slice of
``round_prompts`` prompts, sends ``round_budget`` of them to the raters chosen by ``selection`` (see
:mod:`alignment.selection`), retrains the RM on every judgement so far, optimises the policy from where it stands and
evaluates it. Round r's files are in ``round-r/``; the manifest keys its stages ``round-r/<stage>``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Literal

from alignment.config import as_flags, build_dataclasses, load_yaml, parse_overrides
from alignment.errors import AlignmentError, RecipeError
from alignment.report import build_report, last_key
from alignment.run import check_writable, environment, read_jsonl, stage_main, write_json, write_jsonl
from alignment.selection import Strategy
from alignment.simulate import SimulatedRaters

logger = logging.getLogger(__name__)

ONCE = ("classify", "sft")  # run before the rounds; the rest runs once per round
TRAINERS = ("classify", "sft", "rm", "dpo", "ppo")  # trainer runs: named in the trackers by pipeline and manifest key
DATA_KEYS = ("dataset_path", "validation_path", "test_path")


@dataclass
class StageSpec(SimulatedRaters):
    """One entry of the pipeline's ``stages``: the stage, its recipe and overrides, and (annotate only) how judgements
    are collected: simulated raters (SimulatedRaters' keys) or humans in the web app on ``port``."""

    name: str = "sft"  # a key of STAGES
    recipe: str | None = None
    overrides: dict = field(default_factory=dict)
    mode: Literal["simulated", "human"] = "simulated"
    oracle: str | None = None
    export_mode: Literal["majority", "per-rater"] = "per-rater"
    port: int = 7860

    def __post_init__(self) -> None:
        if self.name not in STAGES:
            raise ValueError(f"key 'name': expected one of {', '.join(map(repr, STAGES))}; got {self.name!r}")


@dataclass
class PipelineSpec:
    output_dir: str = "runs/pipeline"
    stages: list[dict] = field(default_factory=list)
    wandb_group: str | None = None  # the wandb group of every stage's run (default: the run folder's name)
    # The gold judge: what evaluation and the training monitors trust. Default: the simulated raters' oracle.
    gold: str | None = None
    # Held-out prompts the PPO/DPO monitors score while training (a validation set: the evaluate stage's
    # dataset_path is the test set, kept apart from it).
    validation_prompts: str | None = None
    # Rounds of human feedback (stages from candidates on repeat; see the module docstring).
    rounds: int = 1
    round_prompts: int | None = None  # prompts sampled per round: round r takes the r-th slice of the candidates' data
    round_budget: int | None = None  # tasks sent to the raters per round (x judgements_per_task judgements); None: all
    selection: Strategy = "random"  # which tasks: random | uncertainty | disagreement (round 1 is random: no RM yet)
    ensemble_members: int = 8  # reward heads of the disagreement ensemble
    seed: int = 0  # of the selection and of the simulated raters

    def __post_init__(self) -> None:
        if self.validation_prompts is not None and not Path(self.validation_prompts).is_file():
            raise ValueError(f"validation_prompts: no such file: {self.validation_prompts}")
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if self.rounds > 1 and not self.round_prompts:
            raise ValueError("rounds > 1 needs round_prompts: how many fresh prompts each round samples")
        for key in ("round_prompts", "round_budget"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1 (or null), got {getattr(self, key)}")
        if self.selection != "random" and self.round_budget is None:
            raise ValueError(f"selection: {self.selection} chooses within a round_budget; set round_budget")
        if self.ensemble_members < 2:
            raise ValueError(f"ensemble_members must be >= 2, got {self.ensemble_members}")

    @property
    def selective(self) -> bool:
        """Whether tasks are chosen per round (else every sampled prompt becomes a task, as one-round runs do)."""
        return self.round_budget is not None


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
    if [n for n in STAGES if n in names] != names:
        raise RecipeError(f"{path}: stages must run in the order {' → '.join(STAGES)}; got {names}")
    if (spec.rounds > 1 or spec.selective) and not {"candidates", "annotate"} <= set(names):
        raise RecipeError(f"{path}: rounds and round_budget need a candidates and an annotate stage; got {names}")
    if spec.selection != "random" and "rm" not in names:
        raise RecipeError(f"{path}: selection: {spec.selection} scores candidates with the last round's RM; add an rm stage")
    return spec, stages


@dataclass(frozen=True)
class Step:
    """One stage run: ``key`` names it in the manifest and is its folder below the run folder (``sft``, ``rm``, or
    ``round-2/rm`` when the pipeline has rounds)."""

    key: str
    stage: StageSpec
    round: int = 1


def plan(spec: PipelineSpec, stages: list[StageSpec]) -> list[Step]:
    """The stages in the order they run: those before the rounds once, then every round's."""
    once = [Step(s.name, s) for s in stages if s.name in ONCE]
    looped = [s for s in stages if s.name not in ONCE]
    if spec.rounds == 1:
        return once + [Step(s.name, s) for s in looped]
    return once + [Step(f"round-{r}/{s.name}", s, r) for r in range(1, spec.rounds + 1) for s in looped]


def round_dir(root: Path, spec: PipelineSpec, number: int) -> Path:
    """Where round ``number``'s files go: the run folder itself when there is one round."""
    return root if spec.rounds == 1 else root / f"round-{number}"


def current_policy(root: Path, spec: PipelineSpec, present: set[str], number: int) -> str | None:
    """The policy round ``number`` samples from and starts from: the SFT run, then the last round's result."""
    if number > 1:
        for name in ("ppo", "dpo"):
            if name in present:
                return str(round_dir(root, spec, number - 1) / name)
    return str(root / "sft") if "sft" in present else None


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


@dataclass(frozen=True)
class Wiring:
    """Where a stage of round ``number`` finds the outputs of the stages before it."""

    name: str
    root: Path
    present: set[str]
    spec: PipelineSpec
    gold: str | None
    number: int

    @property
    def here(self) -> Path:
        return round_dir(self.root, self.spec, self.number)

    @property
    def out(self) -> dict[str, Any]:
        folder = self.root if self.name in ONCE else self.here
        return {"output_dir": str(folder / self.name)}

    @property
    def policy(self) -> str | None:
        return current_policy(self.root, self.spec, self.present, self.number)

    @property
    def start(self) -> dict[str, Any]:
        return {"model_name_or_path": self.policy} if self.policy else {}


def wire_run_folder(w: Wiring) -> dict[str, Any]:
    return w.out


def wire_candidates(w: Wiring) -> dict[str, Any]:
    keys: dict[str, Any] = {"db": str(w.root / "annotations.db"), **({"policies": [w.policy]} if w.policy else {})}
    if w.spec.round_prompts:
        keys.update(dataset_path=str(w.here / "prompts.jsonl"), max_samples=None)
    if w.spec.selective:  # the annotate step chooses the round's tasks from these
        keys.update(tasks_per_prompt=0, candidates_out=str(w.here / "candidates.jsonl"))
    return keys


def wire_nothing(w: Wiring) -> dict[str, Any]:
    return {}


def wire_rm(w: Wiring) -> dict[str, Any]:
    return {**w.out, "dataset_path": str(w.here / "preferences.jsonl")}


def wire_dpo(w: Wiring) -> dict[str, Any]:
    monitor = monitor_keys(w.spec, w.gold)
    proxy = {"proxy_reward": str(w.here / "rm")} if monitor else {}
    return {**w.out, "dataset_path": str(w.here / "preferences.jsonl"), **monitor, **proxy, **w.start}


def wire_ppo(w: Wiring) -> dict[str, Any]:
    # PPO optimises the reward model learnt from the judgements, whatever reward its own recipe names.
    reward = {"reward_model": str(w.here / "rm"), "reward_label": None, "reward_function": None}
    return {**w.out, **reward, **monitor_keys(w.spec, w.gold), **w.start}


def wire_evaluate(w: Wiring) -> dict[str, Any]:
    sft = [str(w.root / "sft")] if "sft" in w.present else []
    trained = [str(w.here / n) for n in ("ppo", "dpo") if n in w.present]
    judges = {"reward": str(w.here / "rm"), **({"gold": w.gold} if w.gold else {})}
    return {**w.out, "policies": sft + trained, **judges}


def outputs_run_folder(step: Step, root: Path, spec: PipelineSpec) -> list[str]:
    return [str(root / step.key)]


def outputs_candidates(step: Step, root: Path, spec: PipelineSpec) -> list[str]:
    selected = [str(round_dir(root, spec, step.round) / "candidates.jsonl")] if spec.selective else []
    return [str(root / "annotations.db"), *selected]


def outputs_annotate(step: Step, root: Path, spec: PipelineSpec) -> list[str]:
    return [str(round_dir(root, spec, step.round) / "preferences.jsonl")]


@dataclass(frozen=True)
class StageKind:
    """A stage the pipeline runs: its module (None: in the pipeline's own process), the recipe keys that wire it to
    the stages before it, and the files it leaves."""

    module: str | None
    wire: Callable[[Wiring], dict[str, Any]]
    outputs: Callable[[Step, Path, PipelineSpec], list[str]] = outputs_run_folder


# Every stage the pipeline knows, in the order they run (ONCE and TRAINERS above say which run before the rounds and
# which train).
STAGES: dict[str, StageKind] = {
    "classify": StageKind("alignment.classify", wire_run_folder),
    "sft": StageKind("alignment.sft", wire_run_folder),
    "candidates": StageKind("alignment.candidates", wire_candidates, outputs_candidates),
    "annotate": StageKind(None, wire_nothing, outputs_annotate),
    "rm": StageKind("alignment.rm", wire_rm),
    "dpo": StageKind("alignment.dpo", wire_dpo),
    "ppo": StageKind("alignment.ppo", wire_ppo),
    "evaluate": StageKind("alignment.evaluate", wire_evaluate),
}


def wiring(stage: StageSpec, root: Path, present: set[str], spec: PipelineSpec, gold: str | None = None,
           number: int = 1) -> dict[str, Any]:
    """Recipe keys that connect ``stage`` (of round ``number``) to the outputs of the stages before it (and to the
    gold judge)."""
    return STAGES[stage.name].wire(Wiring(stage.name, root, present, spec, gold, number))


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


def run_annotate(step: Step, root: Path, present: set[str], spec: PipelineSpec, candidates: dict[str, Any]) -> dict[str, Any]:
    """Queue the round's selected tasks (with ``round_budget``), collect judgements (simulated raters, or wait for
    humans in the web app), then export every judgement so far as preferences."""
    from alignment.annotations.export import preference_rows
    from alignment.annotations.store import AnnotationStore

    stage, here = step.stage, round_dir(root, spec, step.round)
    store = AnnotationStore(str(root / "annotations.db"))
    selected = {"selected_tasks": select_round(store, step.round, root, spec, candidates)} if spec.selective else {}
    if stage.mode == "simulated":
        from alignment.rewards import resolve_reward
        from alignment.simulate import SimulationArguments, simulate

        oracle = oracle_spec(stage, root, present)
        if not oracle:
            raise RecipeError("annotate (simulated) needs an oracle: a reward spec, or a classify stage before it")
        judging = {f.name: getattr(stage, f.name) for f in fields(SimulatedRaters)}
        sim = SimulationArguments(db="", oracle=oracle, seed=spec.seed + 1000 * (step.round - 1), **judging)
        simulate(store, resolve_reward(oracle), sim)
    else:
        wait_for_humans(store, root, stage.port)
    records, candidate_map = store.records()
    n = write_jsonl(here / "preferences.jsonl", preference_rows(records, candidate_map, mode=stage.export_mode))
    if n == 0:
        raise AlignmentError("the annotation export holds no preference pairs (all ties or skips?)")
    return {"preference_pairs": n, **selected, **store.progress()}


def select_round(store, number: int, root: Path, spec: PipelineSpec, candidates: dict[str, Any]) -> int:
    """Choose round ``number``'s tasks from its sampled candidates (``selection``, within ``round_budget``) and queue
    them as task set ``round-<number>``; return how many tasks the round has. A resumed round keeps the tasks it
    chose; a candidate set some round already asked about is never offered again."""
    from alignment.candidates import CandidateArguments
    from alignment.selection import offers, reward_scorer, select

    task_set = f"round-{number}"
    if chosen := [t for t in store.task_sets() if t["task_set"] == task_set]:
        return sum(t["tasks"] for t in chosen)
    args = CandidateArguments(**{f.name: candidates[f.name] for f in fields(CandidateArguments) if f.name in candidates})
    records, candidate_map = store.records()
    taken = {(r.prompt, frozenset(candidate_map[c].text for c in r.candidate_ids)) for r in records}
    pool = offers(read_jsonl(args.candidates_out), args.task_kind, args.k, taken)
    strategy = spec.selection if number > 1 else "random"  # before the first judgements there is no RM to ask
    scorer = None
    if strategy != "random":
        last = round_dir(root, spec, number - 1)
        scorer = reward_scorer(last / "rm", strategy, read_jsonl(last / "preferences.jsonl"),
                               members=spec.ensemble_members, seed=spec.seed + number)
    picked = select(pool, spec.round_budget, strategy, seed=spec.seed * 1000 + number, scorer=scorer)
    store.import_tasks([o.as_row() for o in picked], task_set=task_set, kind=args.task_kind,
                       judgements_per_task=args.judgements_per_task, source=f"round {number} ({strategy} selection)")
    logger.info("round %d: %d of %d prompts' tasks selected (%s)", number, len(picked), len(pool), strategy)
    return len(picked)


def round_prompt_slices(candidates: StageSpec, spec: PipelineSpec) -> list[list[Any]]:
    """Each round's own prompts: round r takes rows (r-1)*round_prompts .. r*round_prompts of the candidates stage's
    data (its recipe and overrides), checked to be there before anything runs."""
    from alignment.data import DataArguments, load_data

    values = stage_values(candidates, {})
    keys = {f.name: values[f.name] for f in fields(DataArguments) if f.name in values}
    prompts = list(load_data(DataArguments(**{**keys, "max_samples": None}), "prompts").splits["train"]["prompt"])
    n = spec.round_prompts or 0
    if len(prompts) < spec.rounds * n:
        raise RecipeError(f"rounds: {spec.rounds} x round_prompts: {n} needs {spec.rounds * n} prompts, but the candidates "
                          f"stage's data ({keys.get('dataset_path')}) has {len(prompts)}")
    return [prompts[r * n : (r + 1) * n] for r in range(spec.rounds)]


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


def stage_metrics(key: str, root: Path) -> dict[str, Any]:
    for candidate in (root / key / "metrics.json", root / key / "evaluation.json"):
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
    steps = plan(spec, stages)
    by_name = {s.name: s for s in stages}
    slices = round_prompt_slices(by_name["candidates"], spec) if spec.round_prompts else []
    manifest_path = root / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"stages": {}}
    manifest.update(recipe=recipe, output_dir=str(root), environment=environment())
    keys = [step.key for step in steps]
    forced = select_stages(keys, start, only)
    present = set(by_name)
    group = os.environ.setdefault("WANDB_RUN_GROUP", spec.wandb_group or root.name)  # every stage's run in one group
    gold = gold_spec(spec, stages, root)
    upstream: list[str] = []
    values_of: dict[tuple[int, str], dict[str, Any]] = {}
    for step in steps:
        stage = step.stage
        if stage.name == "candidates" and slices:
            round_dir(root, spec, step.round).mkdir(parents=True, exist_ok=True)
            write_jsonl(round_dir(root, spec, step.round) / "prompts.jsonl", [{"prompt": p} for p in slices[step.round - 1]])
        wired = wiring(stage, root, present, spec, gold, step.round)
        values = values_of[step.round, stage.name] = stage_values(stage, wired)
        digest = content_hash(stage, values, upstream)
        upstream.append(digest)
        previous = manifest["stages"].get(step.key, {})
        if only and step.key != only:
            continue
        if step.key not in forced and previous.get("status") == "done" and previous.get("hash") == digest:
            logger.info("stage %s: unchanged since its last run (%s), skipped", step.key, digest)
            continue
        logger.info("stage %s: running", step.key)
        manifest["stages"][step.key] = {"hash": digest, "status": "running", "started": time.time()}
        write_json(manifest_path, manifest)
        began = time.time()
        if stage.name == "annotate":
            extra = run_annotate(step, root, present, spec, values_of.get((step.round, "candidates"), {}))
        else:
            # a name unique to this pipeline: trackio continues a run of the same name, it does not start another
            own_name = f"{group}-{step.key.replace('/', '-')}"
            named = {"run_name": values.get("run_name") or own_name} if stage.name in TRAINERS else {}
            flags = {**named, **stage.overrides, **wired}
            log = root / f"{step.key.replace('/', '-')}.log"
            run_module(STAGES[stage.name].module, stage.recipe, flags, log)
            extra = {}
        manifest["stages"][step.key] = {
            "hash": digest,
            "status": "done",
            "recipe": stage.recipe,
            "values": values,
            "outputs": stage_outputs(step, root, spec),
            "metrics": {**stage_metrics(step.key, root), **extra},
            "wall_time_s": round(time.time() - began, 1),
            **({"round": step.round} if spec.rounds > 1 else {}),
        }
        write_json(manifest_path, manifest)
    if spec.rounds > 1:
        manifest["rounds"] = round_table(manifest, spec.rounds)
        write_json(manifest_path, manifest)
    return manifest


def stage_outputs(step: Step, root: Path, spec: PipelineSpec) -> list[str]:
    return STAGES[step.stage.name].outputs(step, root, spec)


def round_table(manifest: dict[str, Any], rounds: int) -> list[dict[str, Any]]:
    """Per round: judgements collected so far, the RM's held-out accuracy, and each optimised policy's gold (or
    proxy) win rate against the SFT baseline with its interval."""
    stages, table = manifest["stages"], []
    for r in range(1, rounds + 1):
        metrics = lambda name: stages.get(f"round-{r}/{name}", {}).get("metrics", {})  # noqa: E731
        rm = metrics("rm").get("test") or metrics("rm").get("validation") or {}
        row: dict[str, Any] = {"round": r, "judgements": metrics("annotate").get("judgements"),
                               "selected_tasks": metrics("annotate").get("selected_tasks"),
                               "rm_accuracy": rm.get("pairwise_accuracy")}
        policies = list(metrics("evaluate").get("policies", {}).items())
        for policy, result in policies[1:]:
            judge = result.get("gold", result)
            row[Path(policy).name] = {"judge": "gold" if "gold" in result else "proxy",
                                      "win_rate": judge["win_rate_vs_baseline"], "ci95": judge["win_rate_ci95"]}
        table.append(row)
    return table


def summary(manifest: dict[str, Any]) -> str:
    """A few lines: what each stage produced and the headline numbers."""
    s = manifest["stages"]
    lines = []
    for name, info in s.items():
        lines.append(f"{name:<10} {info.get('status', '?'):<5} {info.get('wall_time_s', 0):>7.1f}s  {', '.join(info.get('outputs', []))}")
    m = lambda n: s.get(last_key(s, n) or "", {}).get("metrics", {})  # noqa: E731  (the last round's)
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
    return "\n".join(lines + [""] + heads + round_lines(manifest.get("rounds", [])) + result_lines(m("evaluate")))


def round_lines(rounds: list[dict[str, Any]]) -> list[str]:
    """One line per round: judgements so far, RM accuracy, and each policy's win rate against SFT."""
    lines = []
    for row in rounds:
        wins = [f"{name} {w['judge']} win rate {w['win_rate']:.2f} ({w['ci95'][0]:.2f}–{w['ci95'][1]:.2f})"
                for name, w in row.items() if isinstance(w, dict)]
        accuracy = f"{row['rm_accuracy']:.3f}" if row.get("rm_accuracy") is not None else "–"
        lines.append(f"round {row['round']}: {row.get('judgements')} judgements, RM accuracy {accuracy}; " + "; ".join(wins))
    return [""] + lines if lines else []


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
