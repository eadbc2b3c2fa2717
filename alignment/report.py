"""Self-contained HTML report of a run folder: ``python -m alignment.report RUN_DIR [--out report.html]``.

Reads what the stages write: ``log_history.json`` (loss curves, DPO reward curves, eval history), ``metrics.json``
(tables, RM accuracy by preference strength), ``confusion_matrix*.png`` (classifiers), PPO's ``metrics.jsonl``
(reward, KL and entropy per step), ``samples.jsonl`` and ``evaluation.json`` (policies and their generations); or a
pipeline's ``manifest.json`` (an overview table, then one section per stage folder). Figures are written as PNGs
next to the HTML and embedded in it as base64 data URIs, so the HTML file alone is the whole report. Every text
taken from the run (model outputs included) is HTML-escaped, and the page has no JavaScript.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import re
import shutil
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from alignment.errors import AlignmentError, DataError
from alignment.run import read_jsonl, stage_main

RUN_INFO = ("recipe.yaml", "environment.json")
RUN_FILES = ("manifest.json", "metrics.json", "log_history.json", "metrics.jsonl", "eval.jsonl", "evaluation.json", "samples.jsonl")
HEADLINE = (
    "pairwise_accuracy", "ece", "accuracy", "f1_macro", "loss", "eval_loss", "train_loss",
    "mean_reward", "win_rate_vs_baseline", "kl_to_reference", "reward_mean_first_step", "reward_mean", "kl",
)
MAX_HEADLINE = 6
PPO_PANELS = {"reward": {"reward", "rewards", "score", "scores"}, "KL": {"kl"}, "entropy": {"entropy"}}
THROUGHPUT = ("_runtime", "_per_second")
MAX_SAMPLE_ROWS = 50
Panels = dict[str, dict[str, tuple[list, list]]]  # panel title -> line label -> (steps, values)
STYLE = """body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}th{background:#f0f0f0}
td.text{white-space:pre-wrap;max-width:480px}img{max-width:100%}pre{background:#f7f7f7;padding:.5em;overflow:auto}
.group,figure{display:inline-block;vertical-align:top;margin-right:2em}"""


def read_json(path: Path) -> Any:
    """Parsed JSON of ``path``; None when absent. An invalid file raises DataError naming file and line."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} line {exc.lineno}: not valid JSON ({exc.msg})") from None


class Figures:
    """Writes figures as ``<stem>-<prefix><name>.png`` next to the report and returns them as embedded ``<img>``."""

    def __init__(self, folder: Path, stem: str, prefix: str = ""):
        self.folder, self.stem, self.prefix = folder, stem, prefix

    def for_stage(self, name: str) -> Figures:
        """The figures of stage ``name`` (a manifest key: ``rm``, or ``round-2/rm``, written ``round-2-rm-``)."""
        return Figures(self.folder, self.stem, f"{self.prefix}{name.replace('/', '-')}-")

    def path(self, name: str) -> Path:
        return self.folder / f"{self.stem}-{self.prefix}{name}.png"

    def add(self, fig: Figure, name: str, caption: str) -> str:
        fig.tight_layout()
        fig.savefig(self.path(name), dpi=100)
        return self.embed(self.path(name), caption)

    def add_file(self, png: Path, caption: str) -> str:
        """Copy a PNG the stage wrote next to the report, then embed it."""
        target = self.path(png.stem)
        if png.resolve() != target.resolve():
            shutil.copyfile(png, target)
        return self.embed(target, caption)

    @staticmethod
    def embed(png: Path, caption: str) -> str:
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        text = html.escape(caption)
        return f'<figure><img src="data:image/png;base64,{data}" alt="{text}"><figcaption>{text}</figcaption></figure>'


def fmt(value: Any) -> str:
    """A value as text, not yet escaped: floats to 4 significant digits, chat messages as ``role: content`` lines."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list) and all(isinstance(v, (int, float, str)) for v in value):
        return ", ".join(fmt(v) for v in value)
    if isinstance(value, list) and all(isinstance(m, dict) and {"role", "content"} <= m.keys() for m in value):
        return "\n".join(f"{m['role']}: {fmt(m['content'])}" for m in value)
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def table(header: list[str], rows: list[list[Any]], text_columns: frozenset[int] = frozenset()) -> str:
    """An HTML table; every cell is escaped. ``text_columns`` keep line breaks (generated text)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(
            f'<td{" class=text" if i in text_columns else ""}>{html.escape(fmt(cell))}</td>'
            for i, cell in enumerate(row)
        ) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def section(slug: str, title: str, body: str, level: int) -> str:
    return f'<section id="{html.escape(slug)}"><h{level}>{html.escape(title)}</h{level}>{body}</section>'


def flatten(data: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value) for every leaf that is not a dict; lists of lists (matrices) are left out."""
    out = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out += flatten(value, f"{name}.")
        elif not (isinstance(value, list) and value and isinstance(value[0], (list, dict))):
            out.append((name, value))
    return out


def series(rows: list[dict], key: str) -> tuple[list, list]:
    """(steps, values) of ``key`` over the rows that hold a number for it; the step is the row index when absent."""
    points = [(row.get("step", i), row[key]) for i, row in enumerate(rows) if isinstance(row.get(key), (int, float))]
    return [p[0] for p in points], [p[1] for p in points]


def line_panels(panels: Panels) -> Figure:
    """One subplot per panel, one line per labelled series, steps on x."""
    fig = Figure(figsize=(4.5 * len(panels), 3.5))
    for ax, (title, lines) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels.items()):
        for label, (steps, values) in lines.items():
            ax.plot(steps, values, marker="o", markersize=3, label=label)
        ax.set(title=title, xlabel="step")
        ax.legend(fontsize=8)
    return fig


def train_eval_panels(history: list[dict], names: list[str]) -> Panels:
    """Per name: its train series and its ``eval_`` series, whichever exist."""
    panels = {}
    for name in names:
        lines = {label: series(history, key) for label, key in (("train", name), ("eval", f"eval_{name}"))}
        lines = {label: points for label, points in lines.items() if points[0]}
        if lines:
            panels[name] = lines
    return panels


def curves_sections(history: list[dict], figures: Figures, level: int) -> list[str]:
    """Loss curves, DPO reward curves (``rewards/*``) and the table of evaluations over steps."""
    out = []
    if panels := train_eval_panels(history, ["loss"]):
        figure = figures.add(line_panels(panels), "loss", "train and eval loss")
        out.append(section(figures.prefix + "loss", "Loss", figure, level))
    names = {key.removeprefix("eval_") for row in history for key in row}
    if panels := train_eval_panels(history, sorted(n for n in names if n.startswith("rewards/"))):
        figure = figures.add(line_panels(panels), "dpo-rewards", "DPO implicit rewards")
        out.append(section(figures.prefix + "dpo-rewards", "DPO rewards", figure, level))
    evals = [row for row in history if "eval_loss" in row]
    columns = dict.fromkeys(k for row in evals for k in row if k.startswith("eval_") and not k.endswith(THROUGHPUT))
    if evals:
        rows = [[row.get("step", ""), *(row.get(c, "") for c in columns)] for row in evals]
        out.append(section(figures.prefix + "eval-history", "Evaluations", table(["step", *columns], rows), level))
    return out


def ppo_panels(steps: list[dict]) -> Panels:
    """PPO's per-step keys whose name has a reward, KL or entropy token (not a std), grouped into one panel each."""
    panels: Panels = {}
    for key in dict.fromkeys(k for row in steps for k in row if k != "step"):
        tokens = set(re.split(r"[^a-z0-9]+", key.lower()))
        for title, words in PPO_PANELS.items():
            if tokens & words and "std" not in tokens and (points := series(steps, key))[0]:
                panels.setdefault(title, {})[key] = points
    return panels


def ppo_section(steps: list[dict], figures: Figures, level: int) -> str:
    if not (panels := ppo_panels(steps)):
        return ""
    figure = figures.add(line_panels(panels), "ppo", "reward, KL and entropy per PPO step")
    return section(figures.prefix + "ppo", "PPO", figure, level)


def metrics_sections(metrics: dict, figures: Figures, level: int) -> list[str]:
    """Final metrics (one table per group), the data report, RM accuracy by preference strength."""
    groups: dict[str, list[tuple[str, Any]]] = {}
    for key, value in flatten({k: v for k, v in metrics.items() if k != "data_report"}):
        group, _, name = key.partition(".")
        groups.setdefault(group if name else "run", []).append((name or key, value))
    body = "".join(
        f'<div class="group"><h{level + 1}>{html.escape(g)}</h{level + 1}>{table(["metric", "value"], rows)}</div>'
        for g, rows in groups.items()
    )
    if report := metrics.get("data_report"):
        items = "".join(f"<li>{html.escape(str(line))}</li>" for line in report)
        body += f"<h{level + 1}>data</h{level + 1}><ul>{items}</ul>"
    out = [section(figures.prefix + "metrics", "Metrics", body, level)] if body else []
    by_split = {s: m.get("accuracy_by_strength") for s, m in metrics.items() if isinstance(m, dict)}
    if by_split := {split: accuracy for split, accuracy in by_split.items() if accuracy}:
        figure = figures.add(strength_bars(by_split), "accuracy-by-strength", "RM accuracy by preference strength")
        out.append(section(figures.prefix + "accuracy-by-strength", "Accuracy by preference strength", figure, level))
    return out


def strength_bars(by_split: dict[str, dict[str, float]]) -> Figure:
    """One bar chart per split: pairwise accuracy per preference strength."""
    fig = Figure(figsize=(4.5 * len(by_split), 3.5))
    for ax, (split, accuracy) in zip(fig.subplots(1, len(by_split), squeeze=False)[0], by_split.items()):
        ax.bar(range(len(accuracy)), list(accuracy.values()), tick_label=list(accuracy))
        ax.set(title=f"{split}: pairwise accuracy", xlabel="preference strength (margin)", ylim=(0, 1))
    return fig


def evaluation_section(evaluation: dict, prefix: str, level: int) -> str:
    """Per-policy reward, win rate and KL; then the generations side by side."""
    policies = evaluation.get("policies", {})
    columns = list(dict.fromkeys(k for m in policies.values() for k in m))
    body = table(["policy", *columns], [[p, *(m.get(c, "") for c in columns)] for p, m in policies.items()])
    if samples := samples_table(evaluation.get("samples", [])):
        body += f"<h{level + 1}>Samples</h{level + 1}>{samples}"
    return section(prefix + "evaluation", "Evaluation", body, level)


def samples_table(rows: list[dict]) -> str:
    """The last generations as a table, every key a column ("" when there are none). Cells are escaped."""
    if not rows:
        return ""
    shown = rows[-MAX_SAMPLE_ROWS:]
    columns = list(dict.fromkeys(k for row in shown for k in row))
    texts = frozenset(i for i, c in enumerate(columns) if any(isinstance(row.get(c), (str, list)) for row in shown))
    note = f"<p>last {len(shown)} of {len(rows)}</p>" if len(shown) < len(rows) else ""
    return note + table(columns, [[row.get(c, "") for c in columns] for row in shown], texts)


def details(title: str, text: str) -> str:
    return f"<details><summary>{html.escape(title)}</summary><pre>{html.escape(text)}</pre></details>"


def log_history(run_dir: Path) -> list[dict]:
    """``log_history.json``, else the log history in the last checkpoint's ``trainer_state.json`` (classifier runs)."""
    if (run_dir / "log_history.json").is_file():
        return read_json(run_dir / "log_history.json")
    states = {p.parent.name.removeprefix("checkpoint-"): p for p in run_dir.glob("checkpoint-*/trainer_state.json")}
    steps = [step for step in states if step.isdigit()]
    return read_json(states[max(steps, key=int)]).get("log_history", []) if steps else []


def stage_sections(run_dir: Path, figures: Figures, level: int) -> list[str]:
    """Every section the files of one stage folder support, in reading order; [] when it holds none."""
    out = curves_sections(log_history(run_dir), figures, level)
    if ppo := ppo_section(read_jsonl(run_dir / "metrics.jsonl"), figures, level):
        out.append(ppo)
    if heldout := read_jsonl(run_dir / "eval.jsonl"):
        columns = list(dict.fromkeys(k for row in heldout for k in row))
        body = figures.add(overoptimisation_figure({run_dir.name: heldout}), "heldout", "held-out proxy and gold reward against KL")
        body += table(columns, [[row.get(c, "") for c in columns] for row in heldout])
        out.append(section(figures.prefix + "heldout", "Held-out monitor", body, level))
    out += metrics_sections(read_json(run_dir / "metrics.json") or {}, figures, level)
    if pngs := sorted(run_dir.glob("confusion_matrix*.png")):
        images = "".join(figures.add_file(png, png.stem) for png in pngs)
        out.append(section(figures.prefix + "confusion", "Confusion matrices", images, level))
    if evaluation := read_json(run_dir / "evaluation.json"):
        out.append(evaluation_section(evaluation, figures.prefix, level))
    if samples := samples_table(read_jsonl(run_dir / "samples.jsonl")):
        out.append(section(figures.prefix + "samples", "Sample generations", samples, level))
    files = [details(name, (run_dir / name).read_text(encoding="utf-8")) for name in RUN_INFO if (run_dir / name).is_file()]
    if out and files:
        out.append(section(figures.prefix + "run-files", "Recipe and environment", "".join(files), level))
    return out


def headline(metrics: dict) -> str:
    """The first few well-known metrics of a stage (accuracy, loss, reward…), as ``key=value`` text; per-policy
    figures are left to the result table."""
    picked = [
        (k, v) for k, v in flatten(metrics)
        if k.rpartition(".")[2] in HEADLINE and isinstance(v, (int, float)) and not k.startswith("policies.")
    ]
    return ", ".join(f"{k}={fmt(v)}" for k, v in picked[:MAX_HEADLINE])


def with_ci(stats: dict, key: str, interval: str) -> str:
    """``0.74 [0.66, 0.81]`` from ``stats[key]`` and the interval ``stats[interval]``."""
    low, high = stats.get(interval) or (float("nan"), float("nan"))
    return f"{fmt(float(stats[key]))} [{fmt(float(low))}, {fmt(float(high))}]" if key in stats else ""


def result_table(evaluation: dict) -> str:
    """One row per policy: gold and proxy win rate and reward against the baseline, and KL, with 95% intervals."""
    rows = []
    for policy, r in evaluation["policies"].items():
        gold = r.get("gold", {})
        win, reward = ("win_rate_vs_baseline", "win_rate_ci95"), ("mean_reward", "mean_reward_ci95")
        rows.append([Path(policy).name, with_ci(gold, *win), with_ci(gold, *reward), with_ci(r, *win), with_ci(r, *reward),
                     with_ci(r, "kl_to_reference", "kl_ci95")])
    base = Path(evaluation["baseline"]).name
    header = ["policy", f"gold win rate vs {base}", "gold reward", f"proxy win rate vs {base}", "proxy reward", "KL to reference"]
    return table(header, rows)


def overoptimisation_figure(curves: dict[str, list[dict]]) -> Figure:
    """Proxy and gold reward on the held-out prompts against KL to the reference, one line per optimiser (the
    monitors' ``eval.jsonl``), as in Gao et al. (2022): proxy rising while gold falls is over-optimisation."""
    judges = [j for j in ("proxy", "gold") if any(f"{j}_reward" in row for rows in curves.values() for row in rows)]
    fig = Figure(figsize=(4.5 * len(judges), 3.5))
    for ax, judge in zip(fig.subplots(1, len(judges), squeeze=False)[0], judges):
        for name, rows in curves.items():
            points = [(row["kl"], row[f"{judge}_reward"]) for row in rows if f"{judge}_reward" in row]
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, label=name)
        ax.set(title=f"{judge} reward (held-out)", xlabel="KL to reference (nats)")
        ax.legend(fontsize=8)
    return fig


def last_key(stages: dict[str, Any], name: str) -> str | None:
    """The manifest key of the last run of stage ``name`` (``name`` itself, or ``round-N/name`` for the last N)."""
    keys = [k for k in stages if k.rsplit("/", 1)[-1] == name]
    return keys[-1] if keys else None


def result_section(root: Path, stages: dict, figures: Figures) -> str:
    """The answer to "did it work?": the result table (of the last round), the proxy-vs-gold curves and the first
    three held-out prompts answered by every policy side by side. "" without an evaluation."""
    key = last_key(stages, "evaluate")
    evaluation = read_json(root / key / "evaluation.json") if key else None
    if not evaluation or not evaluation.get("policies"):
        return ""
    judges = evaluation.get("judges", {})
    note = (f"{evaluation.get('num_prompts', '?')} held-out prompts x {evaluation.get('samples_per_prompt', 1)} samples per policy; "
            f"gold judge: {judges.get('gold', 'none')}; proxy: {judges.get('proxy', '?')}; "
            "95% intervals from a paired bootstrap over prompts.")
    body = f"<p>{html.escape(note)}</p>" + result_table(evaluation)
    curves = {name: rows for name in stages if name.startswith(key[: -len("evaluate")]) and (rows := read_jsonl(root / name / "eval.jsonl"))}
    if curves:
        body += figures.add(overoptimisation_figure(curves), "overoptimisation", "proxy and gold reward on the validation prompts against KL to the reference, while training")
    policies = list(evaluation["policies"])
    shown = [[row["prompt"], *(row.get(p, "") for p in policies)] for row in evaluation.get("samples", [])[:3]]
    if shown:
        body += "<h3>First three held-out prompts</h3>" + table(
            ["prompt", *(Path(p).name for p in policies)], shown, frozenset(range(len(policies) + 1))
        )
    return section("result", "Result", body, 2)


def rounds_section(rounds: list[dict], figures: Figures) -> str:
    """Per round: judgements collected so far, RM accuracy, each policy's win rate against SFT; and the win rate
    against judgements. "" for a one-round pipeline."""
    if not rounds:
        return ""
    policies = [k for k in rounds[0] if isinstance(rounds[0][k], dict)]
    rows = [[r["round"], r.get("judgements"), r.get("selected_tasks"), r.get("rm_accuracy"),
             *(with_ci({"w": r[p]["win_rate"], "w_ci": r[p]["ci95"]}, "w", "w_ci") if p in r else "" for p in policies)]
            for r in rounds]
    header = ["round", "judgements so far", "tasks selected", "RM held-out accuracy",
              *(f"{p} {rounds[0][p]['judge']} win rate vs SFT" for p in policies)]
    body = table(header, rows)
    if policies:
        fig = Figure(figsize=(5, 3.2))
        ax = fig.subplots()
        for p in policies:
            points = [(r["judgements"], r[p]["win_rate"], *r[p]["ci95"]) for r in rounds if p in r and r.get("judgements")]
            if points:
                x, y, low, high = map(list, zip(*points))
                ax.errorbar(x, y, yerr=[[a - b for a, b in zip(y, low)], [b - a for a, b in zip(y, high)]], marker="o", capsize=3, label=p)
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax.set(xlabel="judgements collected", ylabel="win rate vs SFT")
        ax.legend()
        body += figures.add(fig, "rounds", "win rate against the SFT policy after each round, by judgements collected so far (95% CI)")
    return section("rounds", "Rounds", body, 2)


def pipeline_sections(root: Path, manifest: dict, figures: Figures) -> list[str]:
    """The result first, then the overview table (stage, status, wall time, outputs, headline metrics), then a
    section per stage folder."""
    stages = manifest.get("stages", {})
    rows = [
        [name, s.get("status", ""), f"{s['wall_time_s']:.1f} s" if "wall_time_s" in s else "", s.get("outputs", []),
         headline(s.get("metrics", {}))]
        for name, s in stages.items()
    ]
    overview = table(["stage", "status", "wall time", "outputs", "headline metrics"], rows)
    firsts = (result_section(root, stages, figures), rounds_section(manifest.get("rounds", []), figures))
    out = [part for part in firsts if part] + [section("overview", "Pipeline", overview, 2)]
    for name, s in stages.items():
        folder = root / name
        parts = stage_sections(folder, figures.for_stage(name), 3) if folder.is_dir() else []
        empty = f"No report files in {folder} (status: {s.get('status', '?')})."
        out.append(section(f"stage-{name}", f"Stage: {name}", "".join(parts) or f"<p>{html.escape(empty)}</p>", 2))
    if environment := manifest.get("environment"):
        out.append(section("environment", "Environment", details("environment", json.dumps(environment, indent=2)), 2))
    return out


def build_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the HTML report of a stage or pipeline run folder (default ``RUN_DIR/report.html``) and its PNGs
    (``<stem>-*.png`` beside it); return the HTML path. AlignmentError when the folder holds no run files."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise AlignmentError(f"{run_dir}: no such run folder")
    out = Path(out) if out else run_dir / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    figures = Figures(out.parent, out.stem)
    manifest = read_json(run_dir / "manifest.json")
    sections = pipeline_sections(run_dir, manifest, figures) if manifest else stage_sections(run_dir, figures, 2)
    if not sections:
        raise AlignmentError(f"{run_dir} is not a run folder: expected one of {', '.join(RUN_FILES)}")
    title = html.escape(f"Run report: {run_dir}")
    head = f'<head><meta charset="utf-8"><title>{title}</title><style>{STYLE}</style></head>'
    body = f'<body><h1>{title}</h1>{"".join(sections)}</body>'
    out.write_text(f'<!DOCTYPE html><html lang="en">{head}{body}</html>', encoding="utf-8")
    return out


@stage_main
def main(argv: list[str]) -> None:
    """usage: python -m alignment.report RUN_DIR [--out report.html]   (default: RUN_DIR/report.html)"""
    parser = argparse.ArgumentParser(prog="python -m alignment.report", description="HTML report of a run folder.")
    parser.add_argument("run_dir", type=Path, help="a stage or pipeline run folder")
    parser.add_argument("--out", type=Path, help="the HTML file to write (PNGs go beside it)")
    args = parser.parse_args(argv)
    print(build_report(args.run_dir, args.out))


if __name__ == "__main__":
    raise SystemExit(main())
