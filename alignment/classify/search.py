"""Hyperparameter search with optuna over recipe keys (the ``search:`` block of a classification recipe).

Each trial is the stage's own training run with the trial's values given as command-line overrides, so every
value is checked by the recipe parser. Trials live in ``<run>/search/`` (an optuna SQLite study, so an interrupted
search continues where it stopped, and ``trials.json``); the best values are returned for the final training.
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna
from transformers import TrainerCallback

from alignment.config import as_flags
from alignment.errors import AlignmentError, RecipeError
from alignment.run import write_json

logger = logging.getLogger(__name__)

METHODS = ("grid", "random", "tpe")
PARAM_TYPES = {"loguniform": ("low", "high"), "uniform": ("low", "high"), "int": ("low", "high"), "categorical": ("choices",)}
BLOCK_KEYS = {"method", "n_trials", "metric", "direction", "seed", "pruner", "space"}
DEFAULT_TRIALS = 10

TrainTrial = Callable[[list[str], list[TrainerCallback]], dict[str, float]]


@dataclass
class SearchSpec:
    method: str
    metric: str
    direction: str
    space: dict[str, dict[str, Any]]
    n_trials: int = DEFAULT_TRIALS
    seed: int = 0
    pruner: str = "median"
    grid: dict[str, list] = field(default_factory=dict)

    def examples(self) -> list[dict[str, Any]]:
        """Value sets that together hold both ends of every range and every choice, to check the whole space
        against the recipe parser before any trial runs."""
        n = max([2] + [len(s["choices"]) for s in self.space.values() if s["type"] == "categorical"])

        def value(s: dict, i: int):
            if s["type"] == "categorical":
                return s["choices"][min(i, len(s["choices"]) - 1)]
            sampled = distribution(s)  # its ends as the trials sample them (an int range ends at its last step)
            return sampled.low if i == 0 else sampled.high

        return [{k: value(s, i) for k, s in self.space.items()} for i in range(n)]


def parse_search(block: dict, default_metric: str, allowed_keys: set[str]) -> SearchSpec:
    """Validate the ``search:`` block; ``allowed_keys`` are the recipe keys a trial may change."""
    unknown = set(block) - BLOCK_KEYS
    if unknown:
        raise RecipeError(f"search: unknown keys {sorted(unknown)}; expected some of {sorted(BLOCK_KEYS)}")
    method = block.get("method", "tpe")
    if method not in METHODS:
        raise RecipeError(f"search.method: expected one of {', '.join(METHODS)}, got {method!r}")
    space = block.get("space")
    if not isinstance(space, dict) or not space:
        raise RecipeError("search.space: expected a mapping of recipe keys to {type, low, high} or {type: categorical, choices}")
    for key, spec in space.items():
        _check_param(key, spec, allowed_keys, method)
    metric = str(block.get("metric", default_metric)).removeprefix("eval_")
    direction = block.get("direction", "minimize" if "loss" in metric else "maximize")
    if direction not in ("maximize", "minimize"):
        raise RecipeError(f"search.direction: expected maximize or minimize, got {direction!r}")
    pruner = block.get("pruner", "median")
    if pruner not in ("median", "none"):
        raise RecipeError(f"search.pruner: expected median or none, got {pruner!r}")
    grid = {k: list(s["choices"]) for k, s in space.items()} if method == "grid" else {}
    n_trials = block.get("n_trials", math.prod(len(v) for v in grid.values()) if grid else DEFAULT_TRIALS)
    if not isinstance(n_trials, int) or isinstance(n_trials, bool) or n_trials < 1:
        raise RecipeError(f"search.n_trials: expected a positive integer, got {n_trials!r}")
    seed = block.get("seed", 0)
    if not isinstance(seed, int):
        raise RecipeError(f"search.seed: expected an integer, got {seed!r}")
    return SearchSpec(method, metric, direction, space, n_trials, seed, pruner, grid)


def _check_param(key: str, spec: Any, allowed_keys: set[str], method: str) -> None:
    where = f"search.space.{key}"
    if key not in allowed_keys:
        raise RecipeError(
            f"{where}: not a searchable recipe key (training, model and classify keys are; data keys, "
            "model_name_or_path, max_length and output_dir are fixed for a search)"
        )
    if not isinstance(spec, dict) or spec.get("type") not in PARAM_TYPES:
        raise RecipeError(f"{where}: expected {{type: {' | '.join(PARAM_TYPES)}, ...}}, got {spec!r}")
    kind = spec["type"]
    missing = [k for k in PARAM_TYPES[kind] if k not in spec]
    if missing:
        raise RecipeError(f"{where}: type {kind} needs {', '.join(PARAM_TYPES[kind])}; missing {', '.join(missing)}")
    if method == "grid" and kind != "categorical":
        raise RecipeError(f"{where}: a grid search needs {{type: categorical, choices: [...]}} for every key")
    if kind == "categorical":
        if not isinstance(spec["choices"], list) or not spec["choices"]:
            raise RecipeError(f"{where}: choices must be a non-empty list")
        return
    try:
        low, high = float(spec["low"]), float(spec["high"])
    except (TypeError, ValueError):
        raise RecipeError(f"{where}: low and high must be numbers, got {spec['low']!r}, {spec['high']!r}") from None
    if not low < high or (kind == "loguniform" and low <= 0):
        raise RecipeError(f"{where}: expected 0 < low < high for loguniform and low < high otherwise, got {low}, {high}")
    if kind == "int" and spec.get("log") and spec.get("step", 1) != 1:
        raise RecipeError(f"{where}: an int range with log: true takes no step (optuna samples it on a log scale), got step {spec['step']}")


def distribution(spec: dict[str, Any]) -> optuna.distributions.IntDistribution | optuna.distributions.FloatDistribution:
    """The range a numeric space entry samples (optuna moves an int range's high down to its last step)."""
    if spec["type"] == "int":
        return optuna.distributions.IntDistribution(
            int(spec["low"]), int(spec["high"]), step=int(spec.get("step", 1)), log=bool(spec.get("log", False))
        )
    return optuna.distributions.FloatDistribution(float(spec["low"]), float(spec["high"]), log=spec["type"] == "loguniform")


def suggest(trial: optuna.Trial, key: str, spec: dict[str, Any]) -> Any:
    if spec["type"] == "categorical":
        return trial.suggest_categorical(key, spec["choices"])
    d = distribution(spec)
    if isinstance(d, optuna.distributions.IntDistribution):
        return trial.suggest_int(key, d.low, d.high, step=d.step, log=d.log)
    return trial.suggest_float(key, d.low, d.high, log=d.log)


class ReportToTrial(TrainerCallback):
    """Report the search metric at every evaluation; stop a trial the pruner finds hopeless."""

    def __init__(self, trial: optuna.Trial, metric: str):
        self.trial, self.metric, self.last_step = trial, metric, None

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if state.global_step == self.last_step:  # the final evaluation of the best model repeats the last step
            return
        self.last_step = state.global_step
        value = (metrics or {}).get(f"eval_{self.metric}")
        if value is None:
            raise RecipeError(f"search.metric: '{self.metric}' is not an evaluation metric; got {sorted(metrics or {})}")
        self.trial.report(value, state.global_step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"{self.metric}={value:.4f} at step {state.global_step}")


def _sampler(spec: SearchSpec) -> optuna.samplers.BaseSampler:
    if spec.method == "grid":
        return optuna.samplers.GridSampler(spec.grid, seed=spec.seed)
    if spec.method == "random":
        return optuna.samplers.RandomSampler(seed=spec.seed)
    return optuna.samplers.TPESampler(seed=spec.seed)


def _pruner(spec: SearchSpec) -> optuna.pruners.BasePruner:
    return optuna.pruners.MedianPruner(n_startup_trials=2) if spec.pruner == "median" else optuna.pruners.NopPruner()


def trial_records(study: optuna.Study) -> list[dict[str, Any]]:
    return [
        {
            "number": t.number,
            "state": t.state.name,
            "params": t.params,
            "value": t.value,
            "intermediate": {str(step): v for step, v in sorted(t.intermediate_values.items())},
            "metrics": t.user_attrs.get("metrics"),
            "error": t.user_attrs.get("error"),
            "seconds": t.duration.total_seconds() if t.duration else None,
        }
        for t in study.trials
    ]


def run_search(spec: SearchSpec, search_dir: Path, train_trial: TrainTrial) -> dict[str, Any]:
    """Run the trials still missing from the study in ``search_dir`` and return the best trial's params.

    ``train_trial(flags, callbacks)`` trains with the extra recipe ``flags`` and returns the final evaluation
    metrics (without the ``eval_`` prefix). Trials that end in a training error (e.g. a NaN loss) are recorded as
    failed; recipe errors stop the search.
    """
    search_dir.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name="classify",
        storage=f"sqlite:///{search_dir / 'study.db'}",
        load_if_exists=True,
        direction=spec.direction,
        sampler=_sampler(spec),
        pruner=_pruner(spec),
    )
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    remaining = spec.n_trials - len(study.get_trials(deepcopy=False, states=finished))
    if remaining < spec.n_trials:
        logger.info("search: %d of %d trials already done in %s", spec.n_trials - remaining, spec.n_trials, search_dir)

    def objective(trial: optuna.Trial) -> float:
        params = {k: suggest(trial, k, s) for k, s in spec.space.items()}
        trial_dir = search_dir / f"trial-{trial.number}"
        flags = [*as_flags(params), f"--output_dir={trial_dir}", "--report_to=none"]
        try:
            metrics = train_trial(flags, [ReportToTrial(trial, spec.metric)])
        except RecipeError:
            raise
        except AlignmentError as exc:
            logger.warning("search: trial %d failed: %s", trial.number, exc)
            trial.set_user_attr("error", str(exc))
            return float("nan")
        finally:
            shutil.rmtree(trial_dir, ignore_errors=True)
        trial.set_user_attr("metrics", metrics)
        return metrics[spec.metric]

    def record(study: optuna.Study, _trial) -> None:
        write_json(search_dir / "trials.json", {"trials": trial_records(study), "best": _best(study)})

    if remaining > 0:
        study.optimize(objective, n_trials=remaining, callbacks=[record])
    best = _best(study)
    if best is None:
        raise AlignmentError(f"search: no trial completed (see {search_dir / 'trials.json'})")
    record(study, None)
    logger.info("search: best trial %d, %s=%.4f, params %s", best["number"], spec.metric, best["value"], best["params"])
    return best["params"]


def _best(study: optuna.Study) -> dict[str, Any] | None:
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        return None
    best = study.best_trial
    return {"number": best.number, "params": best.params, "value": best.value}
