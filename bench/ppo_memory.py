"""Peak memory of one PPO step (rollout + update): our single-base design against a naive four-model design.

    nice -n 19 .venv/bin/python bench/ppo_memory.py [--batch-size 16] [--response-length 24] [--out DIR] [--json FILE]

Each variant runs in its own process, on the same model (SmolLM2-135M-Instruct), prompts, batch and LoRA settings:

* ``single``: ``alignment.ppo.PPOTrainer`` (QLoRA): one 4-bit base holding the policy adapter, the reference (adapters
  disabled), a value adapter + head, and a LoRA reward model as a third adapter; ``single-head``: the same with
  ``value_model: head`` (the value head reads the policy's hidden states, as in recipes/ppo/demo.yaml);
* ``naive``: written here with plain transformers/peft, as a first PPO script would be: a QLoRA policy, a separate
  4-bit reference copy, a separate QLoRA value model (sequence-classification head) and a separate 4-bit reward model
  with its LoRA adapter; the same PPO math (alignment.ppo.core) and the same epochs/mini-batches;
* ``sft``: one QLoRA SFT training step (forward, backward, AdamW) on a batch of the same size and length, as a
  yardstick; ``sft-micro``: on the PPO update's micro-batch (batch / mini-batches rows).

The reward model is a LoRA reward adapter on the same base, written once by a ``prepare`` process (an untrained head:
memory does not depend on its weights). Per variant: the bytes of weights held, RSS after imports, after loading
(and how much of it is the mmap'd safetensors file: plain transformers leaves a 4-bit model's fp32 parameters as
views into it; the model layer copies them out), the peak during the step
(Linux VmHWM, reset through /proc/self/clear_refs just before the step; sampled every 5 ms where that is not
available), the peak of private (anonymous) memory during the step, and the process's lifetime peak (ru_maxrss,
loading included). Prints the figures and the ratios single / naive; writes them to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL = "builtin:smollm2-135m-instruct"
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
ANON_AT_IMPORTS = 0.0  # set by each variant once its imports are done


# ------------------------------------------------------------------------------------------------------ measuring
def rss_mib(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


class StepPeak:
    """Peak memory inside a ``with`` block. ``peak``: RSS, from VmHWM after resetting it (clear_refs 5) where Linux
    allows, else sampled; ``anon_peak``: anonymous (private) RSS, sampled every 5 ms. RSS also counts file pages
    mapped from the safetensors file (clean, shared, reclaimable), which the anonymous figure leaves out."""

    def __enter__(self) -> StepPeak:
        self.peak, self.anon_peak, self._stop = 0.0, 0.0, threading.Event()
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.exact = rss_mib("VmHWM") <= rss_mib("VmRSS") + 1
        except OSError:
            self.exact = False
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mib())
            self.anon_peak = max(self.anon_peak, rss_mib("RssAnon"))
            time.sleep(0.005)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mib())
        self.anon_peak = max(self.anon_peak, rss_mib("RssAnon"))
        if self.exact:
            self.peak = max(self.peak, rss_mib("VmHWM"))

    def figures(self) -> dict:
        return {"step_peak": self.peak, "step_anon_peak": self.anon_peak, "exact_peak": self.exact}


def weights_mib(*modules) -> float:
    """Bytes of the parameters and buffers the modules hold (each storage counted once), in MiB."""
    seen, total = set(), 0
    for module in modules:
        for t in list(module.parameters()) + list(module.buffers()):
            if t.data_ptr() not in seen:
                seen.add(t.data_ptr())
                total += t.numel() * t.element_size()
    return total / 2**20


def loaded_figures(rss_imports: float, load_seconds: float, *modules) -> dict:
    return {"rss_imports": rss_imports, "anon_imports": ANON_AT_IMPORTS, "load_seconds": load_seconds,
            "rss_loaded": rss_mib(), "anon_loaded": rss_mib("RssAnon"), "file_loaded": rss_mib("RssFile"),
            "weights": weights_mib(*modules)}


def trim() -> None:
    """Return freed heap to the OS (same for every variant), so the step's peak is measured from live memory."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


# ------------------------------------------------------------------------------------------------------ variants
def prompts(n: int) -> list[str]:
    rows = (ROOT / "data" / "prompts" / "movie_reviews.jsonl").read_text().splitlines()
    return [json.loads(r)["prompt"] for r in rows[:n]]


def imported() -> float:
    """RSS once a variant's imports are done (the anonymous part is kept for the figures)."""
    global ANON_AT_IMPORTS
    ANON_AT_IMPORTS = rss_mib("RssAnon")
    return rss_mib()


def make_reward_adapter(cfg: dict) -> dict:
    """A LoRA reward model on the policy's base, saved as alignment.rm saves one."""
    from alignment.models import ModelArguments, load_model, load_tokenizer, save_model
    from alignment.rewards import init_reward_head

    tok = load_tokenizer(MODEL)
    args = ModelArguments(model_name_or_path=MODEL, method="lora", lora_r=LORA["r"], lora_alpha=LORA["lora_alpha"],
                          lora_target_modules=LORA["target_modules"])
    model, origin = load_model(args, "seq_cls", tok, num_labels=1, init_head=init_reward_head)
    save_model(model, tok, cfg["rm"], kind="seq_cls", origin=origin, num_labels=1, stage="rm", max_length=128, reward_stats={"mean": 0.0, "std": 1.0})
    return {}


def single(cfg: dict) -> dict:
    """Our PPOTrainer: one 4-bit base, policy/value/reward adapters, reference = adapters off."""
    from alignment.ppo.trainer import PPOTrainer

    rss_imports = imported()
    prompt_file = Path(cfg["work"]) / "prompts.jsonl"
    prompt_file.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts(cfg["batch_size"] * 2)))
    start = time.perf_counter()
    trainer = PPOTrainer.from_recipe([
        "--model_name_or_path", MODEL, "--method", "qlora", "--lora_r", str(LORA["r"]), "--lora_alpha", str(LORA["lora_alpha"]),
        "--lora_dropout", "0", "--lora_target_modules", json.dumps(LORA["target_modules"]), "--dataset_path", str(prompt_file),
        "--reward_model", cfg["rm"], "--value_model", cfg["value_model"], "--batch_size", str(cfg["batch_size"]),
        "--num_mini_batches", str(cfg["num_mini_batches"]), "--ppo_epochs", str(cfg["ppo_epochs"]),
        "--response_length", str(cfg["response_length"]), "--use_chat_template", "false", "--output_dir",
        str(Path(cfg["work"]) / f"single-{cfg['value_model']}"), "--use_cpu", "true", "--bf16", "false", "--resume", "false",
    ])
    assert "shared base" in trainer.reward.description, trainer.reward.description
    load_seconds = time.perf_counter() - start
    trim()
    loaded = loaded_figures(rss_imports, load_seconds, trainer.actor_critic)
    start = time.perf_counter()
    with StepPeak() as peak:
        metrics = trainer.ppo_step()
    return {**loaded, **peak.figures(), "step_seconds": time.perf_counter() - start, "reward_mean": metrics["reward_mean"]}


def naive(cfg: dict) -> dict:
    """Four separate models, built with plain transformers/peft; the same PPO step."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, BitsAndBytesConfig

    from alignment.models.builtin import resolve
    from alignment.ppo import core

    rss_imports = imported()
    start = time.perf_counter()
    path = resolve(MODEL)
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(path, padding_side="left")
    if tok.pad_token is None or tok.pad_token_id == tok.eos_token_id:
        tok.pad_token = "<|endoftext|>"

    def quantised(cls, **kw):
        model = cls.from_pretrained(path, quantization_config=bnb, **kw)
        model.config.pad_token_id = tok.pad_token_id
        return model

    policy = get_peft_model(
        prepare_model_for_kbit_training(quantised(AutoModelForCausalLM), use_gradient_checkpointing=False),
        LoraConfig(task_type="CAUSAL_LM", **LORA),
    )
    reference = quantised(AutoModelForCausalLM).eval().requires_grad_(False)
    value = get_peft_model(
        prepare_model_for_kbit_training(quantised(AutoModelForSequenceClassification, num_labels=1), use_gradient_checkpointing=False),
        LoraConfig(task_type="SEQ_CLS", modules_to_save=["score"], **LORA),
    )
    torch.nn.init.zeros_(value.get_base_model().score.modules_to_save["default"].weight)
    reward = PeftModel.from_pretrained(quantised(AutoModelForSequenceClassification, num_labels=1), cfg["rm"]).eval().requires_grad_(False)
    policy.eval(), value.eval()
    params = [p for m in (policy, value) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, eps=1e-5)
    load_seconds = time.perf_counter() - start
    trim()
    loaded = loaded_figures(rss_imports, load_seconds, policy, reference, value, reward)

    temperature, R = 0.7, cfg["response_length"]

    def positions(mask):
        return (mask.long().cumsum(-1) - 1).clamp(min=0)

    def policy_logits(model, ids, mask, P):
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask), use_cache=False)
        return out.logits[:, P - 1 : -1]

    def values_of(ids, mask, P):
        inner = value.get_base_model()
        hidden = inner.model(input_ids=ids, attention_mask=mask, position_ids=positions(mask), use_cache=False).last_hidden_state
        return inner.score(hidden[:, P - 1 : -1]).squeeze(-1)

    start = time.perf_counter()
    with StepPeak() as peak:
        enc = tok(prompts(cfg["batch_size"]), return_tensors="pt", padding=True, add_special_tokens=False)
        P = enc["input_ids"].shape[1]
        with torch.no_grad():
            out = policy.generate(**enc, do_sample=True, temperature=temperature, top_k=0, top_p=1.0, max_new_tokens=R,
                                  pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            response = out[:, P:]
            mask = core.response_mask(response, tok.eos_token_id, tok.pad_token_id)
            ids, attn = out, torch.cat([enc["attention_mask"], mask.long()], 1)
            logp = core.logprobs_from_logits(policy_logits(policy, ids, attn, P), response, temperature)
            ref_logp = core.logprobs_from_logits(policy_logits(reference, ids, attn, P), response, temperature)
            old_values = values_of(ids, attn, P).float()
            scores = reward(input_ids=ids, attention_mask=attn).logits[:, 0].float()
            rewards, _ = core.shape_rewards(scores, logp, ref_logp, mask, 0.05)
            advantages, returns = core.compute_gae(rewards, old_values, mask, 1.0, 0.95)
            advantages = core.masked_whiten(advantages, mask)
        order = torch.Generator().manual_seed(0)
        mini = cfg["batch_size"] // cfg["num_mini_batches"]
        for _ in range(cfg["ppo_epochs"]):
            for rows in torch.randperm(cfg["batch_size"], generator=order).split(mini):
                new_logp = core.logprobs_from_logits(policy_logits(policy, ids[rows], attn[rows], P), response[rows], temperature)
                pg, _ = core.policy_loss(new_logp, logp[rows], advantages[rows], mask[rows], 0.2)
                vf, _ = core.value_loss(values_of(ids[rows], attn[rows], P).float(), old_values[rows], returns[rows], mask[rows], 0.2)
                (pg + 0.1 * vf).backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                optimizer.zero_grad()
    return {**loaded, **peak.figures(), "step_seconds": time.perf_counter() - start, "reward_mean": scores.mean().item()}


def sft(cfg: dict) -> dict:
    """One QLoRA SFT step (the project's model loader, a plain training step) on a batch of the same shape."""
    import torch

    from alignment.models import ModelArguments, load_model, load_tokenizer

    rss_imports = imported()
    start = time.perf_counter()
    tok = load_tokenizer(MODEL)
    args = ModelArguments(model_name_or_path=MODEL, method="qlora", lora_r=LORA["r"], lora_alpha=LORA["lora_alpha"],
                          lora_dropout=0.0, lora_target_modules=LORA["target_modules"])
    model, _ = load_model(args, "causal", tok)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    load_seconds = time.perf_counter() - start
    trim()
    loaded = loaded_figures(rss_imports, load_seconds, model)
    rows = cfg["batch_size"] if cfg["sft_rows"] == "batch" else cfg["batch_size"] // cfg["num_mini_batches"]
    texts = [p + " was one of the best films I have seen this year, with a cast that makes every scene count." for p in prompts(rows)]
    start = time.perf_counter()
    with StepPeak() as peak:
        enc = tok(texts, return_tensors="pt", padding="max_length", truncation=True, max_length=12 + cfg["response_length"])
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        loss = model(**enc, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return {**loaded, **peak.figures(), "step_seconds": time.perf_counter() - start, "loss": loss.item(), "rows": rows}


WORKERS = {"prepare": make_reward_adapter, "single": single, "single-head": single, "naive": naive, "sft": sft, "sft-micro": sft}


def worker(name: str, cfg: dict) -> None:
    import torch

    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    result = WORKERS[name](cfg)
    result["process_peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    Path(cfg["result"]).write_text(json.dumps(result))


# ------------------------------------------------------------------------------------------------------ driver
def run_variant(name: str, cfg: dict, work: Path) -> dict:
    cfg = {**cfg, "result": str(work / f"{name}.json"), "value_model": "head" if name == "single-head" else "adapter",
           "sft_rows": "micro" if name == "sft-micro" else "batch"}
    env = {**os.environ, "OMP_NUM_THREADS": str(cfg["threads"]), "TOKENIZERS_PARALLELISM": "false"}
    print(f"[{name}] running in its own process ...", flush=True)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--worker", name, "--config", json.dumps(cfg)], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        sys.exit(f"[{name}] failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}")
    result = json.loads(Path(cfg["result"]).read_text())
    result["wall_seconds"] = time.perf_counter() - start
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=16, help="prompts rolled out per PPO step (and SFT batch size)")
    p.add_argument("--response-length", type=int, default=24)
    p.add_argument("--num-mini-batches", type=int, default=4)
    p.add_argument("--ppo-epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    p.add_argument("--json", type=Path, default=ROOT / "runs" / "bench-ppo-memory.json")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.worker, json.loads(args.config))
        return 0

    with tempfile.TemporaryDirectory(prefix="ppo-memory-") as tmp:
        work = args.out or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        cfg = {"batch_size": args.batch_size, "response_length": args.response_length, "num_mini_batches": args.num_mini_batches,
               "ppo_epochs": args.ppo_epochs, "threads": args.threads, "rm": str(work / "rm"), "work": str(work)}
        run_variant("prepare", cfg, work)
        results = {name: run_variant(name, cfg, work) for name in ("single", "single-head", "naive", "sft", "sft-micro")}

    s, n = results["single"], results["naive"]
    ratios = {
        "process_peak_rss": s["process_peak"] / n["process_peak"],
        "step_peak_rss": s["step_peak"] / n["step_peak"],
        "step_peak_anon": s["step_anon_peak"] / n["step_anon_peak"],
        "step_peak_anon_above_imports": (s["step_anon_peak"] - s["anon_imports"]) / (n["step_anon_peak"] - n["anon_imports"]),
        "weights": s["weights"] / n["weights"],
    }
    head = results["single-head"]
    ratios_head = {"process_peak_rss": head["process_peak"] / n["process_peak"], "step_peak_anon": head["step_anon_peak"] / n["step_anon_peak"]}
    micro = args.batch_size // args.num_mini_batches
    print(f"\n=== peak memory of one PPO step (rollout of {args.batch_size} prompts x {args.response_length} new tokens + update: "
          f"{args.ppo_epochs} epochs x {args.num_mini_batches} mini-batches of {micro}); SmolLM2-135M 4-bit NF4, LoRA r={LORA['r']} ===")
    print(f"{'variant':<12} {'weights':>8} {'imports':>8} {'loaded':>8} {'(file)':>7} {'step peak':>10} {'process peak':>13} "
          f"{'anon step peak':>15} {'anon above imports':>19} {'step s':>7}")
    for name, r in results.items():
        print(f"{name:<12} {r['weights']:>8.0f} {r['rss_imports']:>8.0f} {r['rss_loaded']:>8.0f} {r['file_loaded']:>7.0f} "
              f"{r['step_peak']:>10.0f} {r['process_peak']:>13.0f} {r['step_anon_peak']:>15.0f} "
              f"{r['step_anon_peak'] - r['anon_imports']:>19.0f} {r['step_seconds']:>7.1f}")
    print("MiB. weights = parameters + buffers held (4-bit packed weights, fp32 embeddings/norms, adapters, heads); RSS = "
          "resident set (ru_maxrss for the process peak; VmHWM for the step); (file) = RSS mapped from the safetensors "
          "file after loading (plain transformers keeps fp32 parameters as views into it); anon = private memory only.")
    print(f"single = PPOTrainer (value adapter + reward adapter on one base), single-head = the same with a value head, "
          f"naive = 4 separate models, sft = one QLoRA SFT step on {args.batch_size} rows, sft-micro = on {micro} rows "
          "(the PPO update's micro-batch)")
    print(f"ratio single / naive: process peak RSS {ratios['process_peak_rss']:.2f}, step peak RSS {ratios['step_peak_rss']:.2f}, "
          f"anon step peak {ratios['step_peak_anon']:.2f}, anon above imports {ratios['step_peak_anon_above_imports']:.2f}; "
          f"weights {ratios['weights']:.2f}")
    print(f"ratio single-head / naive: process peak RSS {ratios_head['process_peak_rss']:.2f}, anon step peak "
          f"{ratios_head['step_peak_anon']:.2f}")
    for sft_name in ("sft", "sft-micro"):
        y = results[sft_name]["step_peak"]
        print(f"step peak RSS / {sft_name} step: single {s['step_peak'] / y:.2f}, single-head "
              f"{results['single-head']['step_peak'] / y:.2f}, naive {n['step_peak'] / y:.2f}")
    out = {"settings": {k: v for k, v in vars(args).items() if k not in ("worker", "config", "out", "json")},
           "lora": LORA, "results_mib": results, "ratios_single_over_naive": ratios,
           "ratios_single_head_over_naive": ratios_head}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2, default=str))
    print(f"figures: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
