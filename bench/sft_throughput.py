"""SFT throughput: our stage vs a plain trl ``SFTTrainer`` script, same model, data, batch and sequence length.

    .venv/bin/python bench/sft_throughput.py [DATA.jsonl] [--steps 12] [--batch 8] [--method lora]

Each variant runs in its own process (so peak RSS is its own) for ``--steps`` optimizer steps. Printed per variant:
real (non-pad) tokens/s over the training run, peak RSS, weight memory, final train loss, and the ratio to the plain
trl fp32 run. Variants: plain trl as a user would write it (``use_cpu=True, bf16=False``, trl's other defaults incl.
gradient checkpointing), plain trl tuned (checkpointing off), and our stage with its defaults (length-grouped
batches, no checkpointing, bf16 autocast only where the CPU has native bf16) with the same LoRA settings
(r=16, alpha 32, dropout 0, q/k/v/o); ``ours-packed`` adds padding-free packing, ``ours-qlora`` and ``ours-full``
the other methods (for memory). Then a projection of peak memory to 1B and 7B models (see ``project``).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]

PLAIN_TRL = r"""
import json, sys, time
from datasets import load_dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer
from alignment.models.builtin import resolve
cfg = json.loads(sys.argv[1])
path = resolve("builtin:smollm2-135m-instruct")
tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path)
data = load_dataset("json", data_files=cfg["data"], split="train")
args = SFTConfig(output_dir=cfg["out"], max_steps=cfg["steps"], per_device_train_batch_size=cfg["batch"],
                 max_length=cfg["max_length"], use_cpu=True, bf16=False, report_to="none", save_strategy="no",
                 logging_steps=1, gradient_checkpointing=cfg["gradient_checkpointing"])
peft = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM")
trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok, peft_config=peft)
result = trainer.train()
json.dump({"train_runtime": result.metrics["train_runtime"], "train_loss": result.metrics["train_loss"],
           "weight_mib": trainer.model.get_memory_footprint() / 2**20,
           "log": trainer.state.log_history}, open(cfg["out"] + "/bench.json", "w"))
"""


OUR_VARIANTS = {
    "ours": [],
    "ours-packed": ["--packing", "true", "--padding_free", "true"],
    "ours-qlora": ["--method", "qlora"],
    "ours-full": ["--method", "full", "--learning_rate", "2e-5"],
}


def run(cmd: list[str]) -> float:
    """Run a variant; return its peak RSS in MiB (sampled every 0.1 s)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    watched, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.1)
    err = proc.stderr.read()
    if proc.wait() != 0:
        sys.exit(f"variant failed: {' '.join(cmd)}\n{err[-3000:]}")
    return peak / 2**20


def real_tokens(log_history: list[dict]) -> int | None:
    """Non-pad tokens trained on: trl logs the running count as num_tokens."""
    counts = [row["num_tokens"] for row in log_history if "num_tokens" in row and "loss" in row]
    return int(float(counts[-1])) if counts else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", nargs="?", default=str(ROOT / "data/sft/chat.jsonl"))
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--out", default=None, help="Also write the figures as JSON here.")
    ap.add_argument("--variants", default="trl,trl-tuned,ours,ours-qlora,ours-full")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sft-bench-"))
    results = {}
    for name in a.variants.split(","):
        out = tmp / name
        out.mkdir()
        if name.startswith("trl"):
            cfg = dict(data=a.data, out=str(out), steps=a.steps, batch=a.batch, max_length=a.max_length,
                       gradient_checkpointing=name == "trl")
            rss = run([sys.executable, "-c", PLAIN_TRL, json.dumps(cfg)])
            bench = json.loads((out / "bench.json").read_text())
            runtime, loss, log, weights = bench["train_runtime"], bench["train_loss"], bench["log"], bench["weight_mib"]
        else:
            extra = OUR_VARIANTS[name]
            rss = run([sys.executable, "-m", "alignment.sft", "recipes/sft/demo.yaml", "--dataset_path", a.data,
                       "--output_dir", str(out), "--max_steps", str(a.steps), "--per_device_train_batch_size", str(a.batch),
                       "--max_length", str(a.max_length), "--eval_strategy", "no", "--save_strategy", "no",
                       "--num_samples", "0", "--logging_steps", "1", "--resume", "false", "--lora_dropout", "0", *extra])
            m = json.loads((out / "metrics.json").read_text())
            runtime, loss = m["train_runtime"], m["train_loss"]
            log = json.loads((out / "log_history.json").read_text())
            weights = float(re.search(r"weights ([0-9.]+) MiB", (out / "log.txt").read_text()).group(1))
        tokens = real_tokens(log)
        results[name] = {"tokens_per_s": tokens / runtime if tokens else None, "peak_rss_mib": rss, "weight_mib": weights,
                         "train_loss": loss, "runtime_s": runtime}
    base = results.get("trl", {}).get("tokens_per_s")
    print(f"{'variant':<12} {'tokens/s':>9} {'x trl':>6} {'peak RSS MiB':>13} {'weights MiB':>12} {'train loss':>10}")
    for name, r in results.items():
        ratio = r["tokens_per_s"] / base if base and r["tokens_per_s"] else float("nan")
        print(f"{name:<12} {r['tokens_per_s'] or float('nan'):>9.1f} {ratio:>6.2f} {r['peak_rss_mib']:>13.0f} "
              f"{r['weight_mib']:>12.0f} {r['train_loss']:>10.3f}")
    project(results, a.batch)
    if a.out:
        Path(a.out).write_text(json.dumps(results, indent=2))


# What each method holds per parameter while training, in bytes: fp32 weights, plus for full fine-tuning fp32 grads
# and AdamW's two moments; NF4 weights with one fp32 absmax per 64 (the LoRA parameters are negligible).
BYTES_PER_PARAM = {"ours": 4, "ours-full": 16, "ours-qlora": 0.5 + 4 / 64}
# Llama-shaped targets: (parameters, hidden size, layers). Activations kept for backward grow with hidden x layers.
TARGETS = {"1B (Llama-3.2-1B)": (1.24e9, 2048, 16), "7B (Llama-2-7B)": (6.74e9, 4096, 32)}
MEASURED = (135e6, 576, 30)  # SmolLM2-135M


def project(results: dict, batch: int) -> None:
    """Peak RSS at 1B/7B ~ weights/optimizer (bytes/param x params) + the rest of the measured peak (activations and
    runtime) scaled by hidden x layers. A rough first-order estimate: fp32 compute, same batch and sequence length."""
    measured = [name for name in BYTES_PER_PARAM if name in results]
    if not measured:
        return
    print(f"\nprojected peak memory, GiB (batch {batch}, fp32 compute; weights/optimizer + scaled activations):")
    print(f"{'method':<12}" + "".join(f"{t:>20}" for t in TARGETS))
    params, hidden, layers = MEASURED
    for name in measured:
        rest = results[name]["peak_rss_mib"] - BYTES_PER_PARAM[name] * params / 2**20
        row = [(BYTES_PER_PARAM[name] * p / 2**20 + rest * (h * n) / (hidden * layers)) / 1024 for p, h, n in TARGETS.values()]
        print(f"{name:<12}" + "".join(f"{v:>20.1f}" for v in row))


if __name__ == "__main__":
    main()
