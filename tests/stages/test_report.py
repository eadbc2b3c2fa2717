"""alignment.report on hand-written run folders of every kind and one real RM run: the expected sections, PNGs beside
the HTML and embedded in it byte for byte, untrusted text escaped, clear errors, and headless Chromium renders it.
Chromium screenshots go to test-artifacts/ at the repository root (git-ignored)."""

from __future__ import annotations

import base64
import html
import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from matplotlib.image import imread

from alignment.classify.metrics import plot_confusion
from alignment.errors import AlignmentError, DataError
from alignment.report import build_report, main, ppo_panels, train_eval_panels
from alignment.run import read_jsonl

from helpers import ROOT, metrics, run_stage, write_jsonl

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
XSS = '<script>alert("xss")</script><img src=x onerror=alert(1)>'
DATA_URI = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def trainer_log(steps: int, extra=lambda step: {}) -> list[dict]:
    """A Trainer log_history: a train row per step, an eval row every 2 steps, the summary row last."""
    rows = []
    for step in range(1, steps + 1):
        rows.append({"step": step, "epoch": step / steps, "loss": 2.0 / step, "learning_rate": 1e-4, **extra(step)})
        if step % 2 == 0:
            evals = {f"eval_{k}": v for k, v in extra(step).items()}
            rows.append({"step": step, "eval_loss": 2.5 / step, "eval_runtime": 0.1, **evals})
    return rows + [{"step": steps, "train_loss": 1.0, "train_runtime": 3.0}]


def sft_run(d: Path) -> None:
    write_json(d / "log_history.json", trainer_log(4))
    write_json(d / "metrics.json", {
        "eval_loss": 0.625, "eval_perplexity": 1.868, "train": {"train_loss": 1.0}, "data_report": ["train: 8 rows"],
    })
    write_jsonl(d / "samples.jsonl", [
        {"step": 2, "prompt": "Say hi", "completion": XSS, "finished": True},
        {"step": 4, "prompt": [{"role": "user", "content": XSS}], "completion": "hi", "finished": False},
    ])
    (d / "recipe.yaml").write_text("learning_rate: 0.0002\n")
    write_json(d / "environment.json", {"python": "3.11"})


def dpo_run(d: Path) -> None:
    history = trainer_log(4, lambda step: {"rewards/margins": 0.1 * step, "rewards/accuracies": 0.5 + step / 10})
    write_json(d / "log_history.json", history)
    write_json(d / "metrics.json", {"eval_loss": 0.5, "eval_rewards/margins": 0.4})


def rm_run(d: Path) -> None:
    write_json(d / "log_history.json", trainer_log(2))
    write_json(d / "metrics.json", {
        "train": {"train_loss": 0.7},
        "test": {"pairwise_accuracy": 0.8125, "ece": 0.0625, "num_pairs": 16, "accuracy_by_strength": {"0": 0.5, "1": 0.75, "2": 1.0}},
    })


def classify_run(d: Path) -> None:
    write_json(d / "checkpoint-2" / "trainer_state.json", {"log_history": trainer_log(2)})
    write_json(d / "checkpoint-10" / "trainer_state.json", {"log_history": trainer_log(10)})
    write_json(d / "metrics.json", {
        "label_names": ["negative", "positive"],
        "test": {"accuracy": 0.875, "f1_macro": 0.8571, "confusion_matrix": [[4, 1], [0, 3]]},
    })
    plot_confusion([[4, 1], [0, 3]], ["negative", "positive"], d / "confusion_matrix_test.png", "test (n=8)")


def ppo_run(d: Path) -> None:
    steps = [
        {"step": s, "reward_mean": 0.1 * s, "reward_std": 0.2, "kl": 0.02 * s, "kl_coef": 0.05, "entropy": 2.0 - 0.1 * s}
        for s in range(1, 6)
    ]
    write_jsonl(d / "metrics.jsonl", steps)
    write_json(d / "metrics.json", {"steps": 5, "reward": "reward model runs/rm", "reward_mean_first_step": 0.1, "final": steps[-1]})
    write_jsonl(d / "samples.jsonl", [{"step": 5, "prompt": "Review:", "response": XSS, "score": 0.9, "kl": 0.1, "finished": True}])
    write_jsonl(d / "eval.jsonl", [
        {"step": s, "num_prompts": 4, "kl": 0.5 * s, "proxy_reward": 0.1 * s, "gold_reward": 0.5 - 0.05 * s} for s in (0, 4, 8)
    ])


def evaluate_run(d: Path) -> None:
    write_json(d / "evaluation.json", {
        "baseline": "runs/sft", "num_prompts": 4, "samples_per_prompt": 1, "judges": {"proxy": "runs/rm", "gold": "runs/clf#positive"},
        "policies": {
            "runs/sft": {"mean_reward": 0.25, "mean_reward_ci95": [0.1, 0.4], "win_rate_vs_baseline": 0.5, "kl_to_reference": 0.0,
                         "gold": {"mean_reward": 0.6, "mean_reward_ci95": [0.5, 0.7], "win_rate_vs_baseline": 0.5, "win_rate_ci95": [0.5, 0.5]}},
            "runs/dpo": {"mean_reward": 0.75, "mean_reward_ci95": [0.6, 0.9], "win_rate_vs_baseline": 0.8125, "kl_to_reference": 1.5,
                         "gold": {"mean_reward": 0.9, "mean_reward_ci95": [0.8, 1.0], "win_rate_vs_baseline": 0.875, "win_rate_ci95": [0.75, 1.0]}},
        },
        "samples": [{"prompt": "The film", "runs/sft": "was fine.", "runs/dpo": XSS}],
    })


KINDS = {
    "sft": (sft_run, {"loss", "eval-history", "metrics", "samples", "run-files"}, {"loss"}),
    "dpo": (dpo_run, {"loss", "dpo-rewards", "eval-history", "metrics"}, {"loss", "dpo-rewards"}),
    "rm": (rm_run, {"loss", "eval-history", "metrics", "accuracy-by-strength"}, {"loss", "accuracy-by-strength"}),
    "classify": (classify_run, {"loss", "eval-history", "metrics", "confusion"}, {"loss", "confusion_matrix_test"}),
    "ppo": (ppo_run, {"ppo", "heldout", "metrics", "samples"}, {"ppo", "heldout"}),
    "evaluate": (evaluate_run, {"evaluation"}, set()),
}


def pipeline_run(root: Path) -> None:
    stages = {}
    for name, (build, _, _) in KINDS.items():
        build(root / name)
        stages[name] = {
            "status": "done", "outputs": [str(root / name)], "wall_time_s": 12.25, "hash": "ab", "metrics": metrics_of(root / name),
        }
    stages["annotate"] = {"status": "running", "started": 0.0}
    write_json(root / "manifest.json", {"stages": stages, "environment": {"python": "3.11", "device": "cpu"}})


def metrics_of(run_dir: Path) -> dict:
    path = run_dir / "metrics.json" if (run_dir / "metrics.json").is_file() else run_dir / "evaluation.json"
    return json.loads(path.read_text())


def section_ids(page: str) -> set[str]:
    return set(re.findall(r'<section id="([^"]+)"', page))


def assert_figures_embedded(report: Path, names: set[str]) -> None:
    """The PNGs beside the report are exactly ``names`` and the page embeds each of them byte for byte."""
    pngs = {p.name: p.read_bytes() for p in report.parent.glob("*.png")}
    assert set(pngs) == {f"{report.stem}-{n}.png" for n in names}
    embedded = [base64.b64decode(data) for data in DATA_URI.findall(report.read_text())]
    assert sorted(embedded) == sorted(pngs.values())
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in embedded)


@pytest.mark.parametrize("kind", KINDS)
def test_stage_report_has_its_sections_and_embedded_figures(tmp_path, kind):
    build, sections, figures = KINDS[kind]
    build(tmp_path / "run")
    report = build_report(tmp_path / "run", tmp_path / "out" / "report.html")
    assert report == tmp_path / "out" / "report.html"
    assert section_ids(report.read_text()) == sections
    assert_figures_embedded(report, figures)


def test_report_shows_metric_values_and_defaults_into_the_run_folder(tmp_path):
    rm_run(tmp_path)
    evaluate_run(tmp_path)
    page = build_report(tmp_path).read_text()
    assert (tmp_path / "report.html").is_file() and (tmp_path / "report-accuracy-by-strength.png").is_file()
    assert "<td>pairwise_accuracy</td><td>0.8125</td>" in page and "<td>ece</td><td>0.0625</td>" in page
    assert "<td>runs/dpo</td><td>0.75</td><td>0.6, 0.9</td><td>0.8125</td><td>1.5</td>" in page


def test_untrusted_text_is_escaped_and_page_has_no_script(tmp_path):
    sft_run(tmp_path / "sft")
    ppo_run(tmp_path / "ppo")
    evaluate_run(tmp_path / "evaluate")
    for name in ("sft", "ppo", "evaluate"):
        page = build_report(tmp_path / name, tmp_path / f"{name}.html").read_text()
        assert XSS not in page and "<img src=x" not in page
        assert "<script" not in page.lower()
        assert html.escape(XSS) in page
    sft_page = (tmp_path / "sft.html").read_text()
    assert f"<td class=text>user: {html.escape(XSS)}</td>" in sft_page


def test_curves_pair_train_and_eval_series_by_step():
    history = trainer_log(4, lambda s: {"rewards/margins": 0.1 * s})
    panels = train_eval_panels(history, ["loss", "rewards/margins", "absent"])
    assert panels["loss"] == {"train": ([1, 2, 3, 4], [2.0, 1.0, 2 / 3, 0.5]), "eval": ([2, 4], [1.25, 0.625])}
    assert panels["rewards/margins"]["eval"] == ([2, 4], [0.2, 0.4])
    assert "absent" not in panels


def test_ppo_panels_group_reward_kl_and_entropy_keys():
    steps = [
        {"step": 3, "reward_mean": 0.5, "reward_std": 0.2, "rlhf_reward": 0.4, "objective/kl": 0.1, "kl_coef": 0.05,
         "entropy": 2.0, "policy_loss": 0.3, "skill": 1},
    ]
    assert ppo_panels(steps) == {
        "reward": {"reward_mean": ([3], [0.5]), "rlhf_reward": ([3], [0.4])},
        "KL": {"objective/kl": ([3], [0.1]), "kl_coef": ([3], [0.05])},
        "entropy": {"entropy": ([3], [2.0])},
    }


def test_pipeline_report_has_overview_and_a_section_per_stage(tmp_path):
    pipeline_run(tmp_path / "pipe")
    report = build_report(tmp_path / "pipe", tmp_path / "out" / "index.html")
    page = report.read_text()
    rows = dict(re.findall(r"<tr><td>(\w+)</td>(.*?)</tr>", page.split('<section id="stage-', 1)[0]))
    assert set(rows) == set(KINDS) | {"annotate"}
    assert rows["rm"].startswith(f"<td>done</td><td>12.2 s</td><td>{tmp_path / 'pipe' / 'rm'}</td>")
    assert "test.pairwise_accuracy=0.8125" in rows["rm"] and "final.reward_mean=0.5, final.kl=0.1" in rows["ppo"]
    assert "policies." not in page.split('<section id="stage-', 1)[0]  # per-policy figures live in the result table
    assert rows["annotate"] == "<td>running</td><td></td><td></td><td></td>"
    # the first section answers "did it work?": gold and proxy per policy with intervals, curves, three prompts
    result = page.split('<section id="result">', 1)[1].split("</section>", 1)[0]
    assert page.index('<section id="result">') < page.index('<section id="overview">')
    assert "<td>dpo</td><td>0.875 [0.75, 1]</td><td>0.9 [0.8, 1]</td><td>0.8125 [nan, nan]</td>" in result
    assert "gold judge: runs/clf#positive" in result and XSS not in result and html.escape(XSS) in result
    expected = {"overview", "result", "environment", "stage-annotate"}
    for name, (_, sections, _) in KINDS.items():
        expected |= {f"stage-{name}"} | {f"{name}-{s}" for s in sections}
    assert section_ids(page) == expected
    assert "No report files in" in page.split('<section id="stage-annotate"')[1]
    assert_figures_embedded(report, {"overoptimisation"} | {f"{name}-{f}" for name, (_, _, figures) in KINDS.items() for f in figures})


def test_missing_empty_and_broken_run_folders_are_named(tmp_path):
    with pytest.raises(AlignmentError, match="no such run folder"):
        build_report(tmp_path / "nope")
    with pytest.raises(AlignmentError, match="is not a run folder: expected one of manifest.json"):
        build_report(tmp_path)
    (tmp_path / "metrics.json").write_text('{"test":\n  {"accuracy": 0.5,}}')
    with pytest.raises(DataError, match=r"metrics.json line 2: not valid JSON"):
        build_report(tmp_path)


def test_jsonl_names_bad_lines_and_skips_a_line_being_written(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n\n{"step": 2}\n{"step": 3, "kl"')
    assert read_jsonl(path) == [{"step": 1}, {"step": 2}]
    path.write_text('{"step": 1}\n{"step": \n{"step": 3}\n')
    with pytest.raises(DataError, match="metrics.jsonl line 2: not valid JSON"):
        read_jsonl(path)
    path.write_text('{"step": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match="metrics.jsonl line 2: expected a JSON object, got list"):
        read_jsonl(path)


def test_cli_writes_report_and_reports_errors_without_traceback(tmp_path, capsys):
    rm_run(tmp_path / "run")
    out = tmp_path / "site" / "rm.html"
    proc = subprocess.run(
        [sys.executable, "-m", "alignment.report", str(tmp_path / "run"), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == str(out) and "accuracy-by-strength" in out.read_text()
    assert main([str(tmp_path / "site")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "is not a run folder" in err and "Traceback" not in err


class ImageSources(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        self.sources += [v for k, v in attrs if tag == "img" and k == "src"]
        self.scripts += tag == "script"


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1200,2000",
    ]
    return subprocess.run([str(CHROMIUM), *flags, *args], capture_output=True, text=True, timeout=90, cwd=tmp_path)


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install -y chromium)")
def test_chromium_renders_pipeline_report_with_embedded_images(tmp_path):
    pipeline_run(tmp_path / "pipe")
    report = build_report(tmp_path / "pipe", tmp_path / "out" / "report.html")
    dom = chromium(tmp_path, "--dump-dom", report.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    parsed = ImageSources()
    parsed.feed(dom.stdout)
    assert len(parsed.sources) == len(list(report.parent.glob("*.png"))) == 10
    assert all(src.startswith("data:image/png;base64,") for src in parsed.sources)
    assert parsed.scripts == 0 and html.escape(XSS, quote=False) in dom.stdout
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report-pipeline.png"
    shot.unlink(missing_ok=True)
    proc = chromium(tmp_path, f"--screenshot={shot}", report.as_uri())
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    pixels = imread(shot)
    assert pixels.shape[:2] == (2000, 1200) and pixels.std() > 0.05


@pytest.mark.slow
def test_report_of_a_real_rm_run(tmp_path):
    run = tmp_path / "rm"
    proc = run_stage(
        "rm", "recipes/rm/demo.yaml", output_dir=run, model_name_or_path="builtin:minilm-l6", method="full",
        max_samples=24, num_train_epochs=1, logging_steps=1, eval_strategy="epoch", save_strategy="no",
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = build_report(run, tmp_path / "report" / "report.html")
    page = report.read_text()
    assert section_ids(page) == {"loss", "eval-history", "metrics", "accuracy-by-strength", "run-files"}
    assert_figures_embedded(report, {"loss", "accuracy-by-strength"})
    accuracy = metrics(run)["validation"]["pairwise_accuracy"]
    assert f"<td>pairwise_accuracy</td><td>{accuracy:.4g}</td>" in page
