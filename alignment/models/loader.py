"""One way to load, quantise, adapt, save and reload every model the stages use.

``kind`` says what head the model needs: ``causal`` (generation: SFT, DPO, PPO policy), ``seq_cls`` (classifiers,
and reward models with ``num_labels=1``) or ``encoder`` (bare backbone). Paths may be ``builtin:`` names, local
folders, hub ids, or run folders written by :func:`save_model` (full checkpoints or peft adapters).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Literal

from dataclasses import dataclass

import torch
from filelock import FileLock

from alignment.errors import ModelError
from alignment.models import builtin
from alignment.models.args import PEFT_METHODS, ModelArguments
from alignment.models.card import base_chain, model_card
from alignment.models.pooling import apply_pooling, resolve_pooling

logger = logging.getLogger(__name__)

Kind = Literal["causal", "seq_cls", "encoder"]
META_FILE = "alignment_model.json"
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ModelOrigin:
    """What :func:`load_model` loaded, for :func:`save_model` to record: the base an adapter sits on (a ``builtin:``
    name stays a name), the adapter merged into that base when there was one, and a classifier's pooling."""

    base_model: str | None = None
    base_merged_from: str | None = None
    pooling: str | None = None


def torch_dtype(name: str | None) -> torch.dtype | str:
    if name in (None, "auto"):
        return "auto"
    if name not in _DTYPES:
        raise ModelError(f"dtype must be one of auto, {', '.join(_DTYPES)}; got {name!r}")
    return _DTYPES[name]


# ----------------------------------------------------------------------------------------------- paths and metadata
def read_meta(path: str | Path) -> dict[str, Any]:
    """The ``alignment_model.json`` a run folder carries (empty for plain checkpoints)."""
    f = Path(path) / META_FILE
    return json.loads(f.read_text()) if f.is_file() else {}


def is_adapter(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def _resolve(name: str) -> str:
    try:
        return builtin.resolve(name)
    except ModelError:
        raise
    except Exception as exc:  # conversion failures surface as one clear error
        raise ModelError(f"Could not prepare builtin model {name}: {exc}") from exc


def _adapter_base(path: str | Path) -> str:
    """The base an adapter sits on; a merged base missing from this machine's cache is rebuilt from its source."""
    meta = read_meta(path)
    if meta.get("base_merged_from") and not Path(meta["base_model"]).exists():
        return merged_checkpoint(meta["base_merged_from"])
    if "base_model" in meta:
        return meta["base_model"]
    return json.loads((Path(path) / "adapter_config.json").read_text())["base_model_name_or_path"]


# ----------------------------------------------------------------------------------------------------- tokenizer
def load_tokenizer(name_or_path: str, *, trust_remote_code: bool = False, padding_side: str = "right"):
    """Tokenizer with a pad token distinct from EOS (so models learn to stop) and a chat template (ChatML fallback)."""
    from transformers import AutoTokenizer

    path = _resolve(name_or_path)
    if is_adapter(path) and not (Path(path) / "tokenizer_config.json").is_file():
        path = _resolve(_adapter_base(path))
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        if not Path(path).exists():
            raise builtin.hub_failure(name_or_path, exc) from None
        if not isinstance(exc, OSError):
            raise
        raise ModelError(f"Could not load a tokenizer from '{name_or_path}': {exc}") from None
    ensure_pad_token(tok)
    if tok.chat_template is None and tok.eos_token is not None:
        tok.chat_template = CHATML_TEMPLATE
    tok.padding_side = padding_side
    return tok


def ensure_pad_token(tok) -> None:
    """Give the tokenizer a pad token that is not EOS: reuse unk/endoftext if present, else add ``<|pad|>``."""
    if tok.pad_token is not None and tok.pad_token_id != tok.eos_token_id:
        return
    for candidate in (tok.unk_token, "<|endoftext|>", "<|finetune_right_pad_id|>"):
        if candidate and candidate != tok.eos_token and candidate in tok.get_vocab():
            tok.pad_token = candidate
            return
    tok.add_special_tokens({"pad_token": "<|pad|>"})


# ----------------------------------------------------------------------------------------------------- loading
def quantization_config(args: ModelArguments):
    from transformers import BitsAndBytesConfig

    if args.load_in_4bit:
        compute = torch_dtype(args.bnb_4bit_compute_dtype)
        if compute == "auto":  # bf16 where a GPU does it natively; on CPU the trainers' bf16 autocast covers it
            bf16_gpu = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
            compute = torch.bfloat16 if bf16_gpu else torch_dtype(args.dtype)
            compute = torch.float32 if compute == "auto" else compute
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=args.bnb_4bit_quant_type,
            bnb_4bit_compute_dtype=compute,
            bnb_4bit_use_double_quant=args.use_bnb_nested_quant,
            bnb_4bit_quant_storage=args.bnb_4bit_quant_storage or "uint8",
        )
    if args.load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    return None


def _auto_class(kind: Kind):
    import transformers

    return {
        "causal": transformers.AutoModelForCausalLM,
        "seq_cls": transformers.AutoModelForSequenceClassification,
        "encoder": transformers.AutoModel,
    }[kind]


def no_head_for(kind: Kind, path: str, name: str) -> str:
    """The one-line error for an architecture transformers has no ``kind`` class for (e.g. Granite or Cohere as a
    reward model: no ``...ForSequenceClassification``)."""
    from transformers import AutoConfig

    model_type = AutoConfig.from_pretrained(path).model_type
    what = {"seq_cls": "sequence-classification (reward model / classifier)", "causal": "causal-LM", "encoder": "encoder"}[kind]
    return (f"'{name}' is a {model_type} model, and transformers has no {what} class for {model_type}; "
            f"use a {kind} stage on an architecture that has one (e.g. llama, qwen2, mistral, gemma2, bert)")


def _from_pretrained(path: str, kind: Kind, args: ModelArguments, label_kwargs: dict[str, Any], meta: dict[str, Any]):
    """``(model, pooling)``: the checkpoint at ``path`` (quantised as ``args`` says), a classifier pooling as
    ``args.pooling`` resolves with ``meta``, the run folder's record (None for other kinds)."""
    kwargs: dict[str, Any] = dict(
        dtype=torch_dtype(args.dtype),
        trust_remote_code=args.trust_remote_code,
        revision=args.model_revision,
        **label_kwargs,
    )
    if args.attn_implementation:
        kwargs["attn_implementation"] = args.attn_implementation
    q = quantization_config(args)
    if q is not None:
        kwargs["quantization_config"] = q
    report = logging.getLogger("transformers.modeling_utils")
    report.addFilter(HOLD_LOAD_REPORT)  # replaced by report_unexplained_keys
    try:
        model, loading = _auto_class(kind).from_pretrained(path, output_loading_info=True, **kwargs)
    except (OSError, ValueError) as exc:
        if "Unrecognized configuration class" in str(exc):
            raise ModelError(no_head_for(kind, path, args.model_name_or_path)) from None
        raise ModelError(f"Could not load a {kind} model from '{args.model_name_or_path}': {exc}") from None
    finally:
        report.removeFilter(HOLD_LOAD_REPORT)
    if q is not None:
        release_checkpoint_mapping(model)
        use_one_4bit_kernel(model)
    pooling = resolve_pooling(args.pooling, path, meta) if kind == "seq_cls" else None
    fresh_head = kind == "seq_cls" and read_meta(path).get("kind") != "seq_cls"  # the checkpoint's own, not an adapter's
    report_unexplained_keys(model, args.model_name_or_path, loading, fresh_head=fresh_head, mean_pooled=pooling == "mean")
    if pooling:
        apply_pooling(model, pooling)
    return model, pooling


class _HoldLoadReport(logging.Filter):
    """Holds back transformers' table of missing and unexpected weights: most rows are expected in our loads."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in str(record.msg)


HOLD_LOAD_REPORT = _HoldLoadReport()


def report_unexplained_keys(model, name: str, loading: dict[str, Any], *, fresh_head: bool, mean_pooled: bool) -> list[str]:
    """Warn about the checkpoint keys a load did not explain, and return them.

    Expected, so not reported: a new classifier head (``score``, ``classifier``) missing from a checkpoint without
    one, and the checkpoint's own other head (an LM head) left unused; BERT's ``pooler`` missing under mean pooling,
    which replaces it. Anything else (a backbone weight missing, a shape mismatch) is a real problem."""
    heads = tuple(f"{n}." for n in head_module_names(model)) if fresh_head else ()
    prefix = model.base_model_prefix
    pooler = (f"{prefix}.pooler.", "pooler.") if mean_pooled else ()
    missing = [k for k in sorted(loading["missing_keys"]) if not k.startswith(heads + pooler)]
    unexpected = [] if fresh_head else [k for k in sorted(loading["unexpected_keys"]) if not k.startswith(pooler)]
    mismatched = [f"{k} (checkpoint {tuple(a)}, model {tuple(b)})" for k, a, b in sorted(loading["mismatched_keys"])]
    lines = [f"{what}: {', '.join(keys)}" for what, keys in (
        ("missing from the checkpoint, newly initialised", missing), ("in the checkpoint but unused", unexpected),
        ("of another shape, newly initialised", mismatched)) if keys]
    if lines:
        logger.warning("Loading %s: weights %s", name, "; ".join(lines))
    return missing + unexpected + mismatched


def use_one_4bit_kernel(model) -> None:
    """Make every 4-bit layer compute the same way in training and in inference.

    bitsandbytes (0.50) on CPUs with avx512_bf16 repacks a 4-bit weight the first time its layer runs in eval mode
    without grad, and from then on runs that layer through a fused bf16 inference kernel, training steps included.
    Sampling and scoring then disagree (PPO: log-probs of the sampled tokens off by up to 0.13 nats) and a model's
    outputs depend on whether it was evaluated before. Turned off here: 4-bit layers always dequantise and compute
    in their compute dtype."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def release_checkpoint_mapping(model) -> None:
    """Copy a quantised model's unquantised tensors (embeddings, norms, heads) into memory of their own.

    They are loaded as views into the memory-mapped safetensors file, which keeps the mapping, and with it every page
    quantisation read (the whole fp32 checkpoint), resident for the model's lifetime. Quantised (bitsandbytes)
    parameters are already copies and are left alone."""
    for tensor in [*model.parameters(), *model.buffers()]:  # each once: tied weights are yielded once
        if type(tensor) in (torch.nn.Parameter, torch.Tensor):
            tensor.data = tensor.data.clone()


def load_model(
    args: ModelArguments,
    kind: Kind,
    tokenizer,
    *,
    label_names: list[str] | None = None,
    num_labels: int | None = None,
    training: bool = True,
    init_head: Callable[[Any], None] | None = None,
    continue_adapter: bool = True,
) -> tuple[Any, ModelOrigin]:
    """Load ``args.model_name_or_path`` with the head for ``kind``, quantised and adapted as ``args`` says; return
    the model and its :class:`ModelOrigin` (what :func:`save_model` records).

    ``init_head(model)`` initialises a freshly created head (not one restored from a classifier run folder) before
    adapters wrap it.
    A run folder holding an adapter of the same kind is used as is for inference, and its adapter continues training
    with a peft method when ``continue_adapter``; otherwise (another kind, full fine-tuning, or
    ``continue_adapter=False`` as DPO/PPO need, whose reference must be the starting policy itself) the adapter is
    merged into a de-quantised copy of its base (cached) and the recipe's method is applied on top.
    """
    path = _resolve(args.model_name_or_path)
    label_kwargs = _label_kwargs(kind, label_names, num_labels)
    base_name = args.model_name_or_path
    if is_adapter(path):
        meta = read_meta(path)
        same_kind = meta.get("kind", kind) == kind
        if same_kind and (not training or (continue_adapter and args.method in PEFT_METHODS)):
            return _load_with_adapter(path, kind, args, tokenizer, label_kwargs, training)
        merged_from, path = str(Path(path).resolve()), merged_checkpoint(path)
        base_name = path
    else:
        merged_from = None
    meta = read_meta(path)
    fresh_head = kind == "seq_cls" and meta.get("kind") != "seq_cls"
    model, pooling = _from_pretrained(path, kind, args, label_kwargs, meta)
    _sync_special_tokens(model, tokenizer)
    if init_head is not None and fresh_head:
        init_head(model)
    if training:
        model = apply_method(model, args, kind)
    log_footprint(model, args.model_name_or_path)
    return model, ModelOrigin(base_name, merged_from, pooling)


def _label_kwargs(kind: Kind, label_names: list[str] | None, num_labels: int | None) -> dict[str, Any]:
    if kind != "seq_cls":
        return {}
    if label_names:
        return {
            "num_labels": len(label_names),
            "id2label": dict(enumerate(label_names)),
            "label2id": {n: i for i, n in enumerate(label_names)},
        }
    return {"num_labels": num_labels or 1}


def _load_with_adapter(path: str, kind: Kind, args: ModelArguments, tokenizer, label_kwargs, training: bool):
    from peft import PeftModel

    meta = read_meta(path)
    if kind == "seq_cls" and meta.get("label_names"):
        label_kwargs = _label_kwargs(kind, meta["label_names"], None)
    elif kind == "seq_cls" and meta.get("num_labels"):
        label_kwargs = _label_kwargs(kind, None, meta["num_labels"])
    base_args = _with(args, model_name_or_path=_adapter_base(path))
    base, pooling = _from_pretrained(_resolve(base_args.model_name_or_path), kind, base_args, label_kwargs, meta)
    _sync_special_tokens(base, tokenizer)
    if training and (args.load_in_4bit or args.load_in_8bit):
        from peft import prepare_model_for_kbit_training

        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
    model = PeftModel.from_pretrained(base, path, is_trainable=training)
    log_footprint(model, args.model_name_or_path)
    return model, ModelOrigin(base_args.model_name_or_path, meta.get("base_merged_from"), pooling)


def _with(args: ModelArguments, **changes) -> ModelArguments:
    import dataclasses

    return dataclasses.replace(args, **changes)


def _sync_special_tokens(model, tokenizer) -> None:
    """Make the model's config agree with the tokenizer (pad id, grown vocabulary)."""
    if tokenizer is None:
        return
    emb = model.get_input_embeddings()
    if emb is not None and len(tokenizer) > emb.num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        gen.pad_token_id = tokenizer.pad_token_id
        if tokenizer.eos_token_id is not None:
            gen.eos_token_id = tokenizer.eos_token_id


# ------------------------------------------------------------------------------------------------- adaptation
def head_module_names(model) -> list[str]:
    """Top-level modules outside the pretrained backbone (e.g. ``score``, ``classifier``, ``pre_classifier``)."""
    prefix = model.base_model_prefix
    return [n for n, m in model.named_children() if n != prefix and any(True for _ in m.parameters())]


def apply_method(model, args: ModelArguments, kind: Kind):
    """Freeze or wrap ``model`` for ``args.method``; heads of classifiers/reward models are always trained and saved."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    heads = head_module_names(model) if kind == "seq_cls" else []
    if args.method == "full":
        _freeze_bottom(model, args.freeze_layers, args.freeze_embeddings)
        return model
    if args.method == "freeze":
        for name, p in model.named_parameters():
            p.requires_grad = name.split(".")[0] in heads
        if not heads:
            raise ModelError("method: freeze trains only a task head, but this model has none (use kind seq_cls)")
        return model
    if args.load_in_4bit or args.load_in_8bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model = get_peft_model(model, peft_config(args, kind, heads))
    return model


def peft_config(args: ModelArguments, kind: Kind, heads: list[str]):
    import peft

    task = {"causal": peft.TaskType.CAUSAL_LM, "seq_cls": peft.TaskType.SEQ_CLS, "encoder": peft.TaskType.FEATURE_EXTRACTION}[kind]
    save = (args.lora_modules_to_save or []) + heads or None
    if args.method in ("lora", "qlora"):
        return peft.LoraConfig(
            task_type=task,
            r=args.lora_r,
            lora_alpha=args.lora_alpha,
            lora_dropout=args.lora_dropout,
            target_modules=args.lora_target_modules or "all-linear",
            use_rslora=args.use_rslora,
            use_dora=args.use_dora,
            modules_to_save=save,
        )
    if args.method == "ia3":
        return peft.IA3Config(task_type=task, modules_to_save=save)
    prompt_cls = {
        "prompt_tuning": peft.PromptTuningConfig,
        "prefix_tuning": peft.PrefixTuningConfig,
        "p_tuning": peft.PromptEncoderConfig,
    }[args.method]
    return prompt_cls(task_type=task, num_virtual_tokens=args.num_virtual_tokens, modules_to_save=save)


def _freeze_bottom(model, n_layers: int, embeddings: bool) -> None:
    """Freeze the input token embeddings (when ``embeddings`` or ``n_layers`` > 0) and the first ``n_layers``
    transformer layers."""
    if n_layers <= 0 and not embeddings:
        return
    layers = transformer_layers(model)
    if n_layers > len(layers):
        raise ModelError(f"freeze_layers={n_layers} but the model has only {len(layers)} layers")
    for module in [model.get_input_embeddings(), *layers[:n_layers]]:
        for p in module.parameters():
            p.requires_grad = False


def transformer_layers(model) -> list[torch.nn.Module]:
    """The stack of transformer blocks, bottom first: the ModuleList holding the most parameters (not the longest
    one, which in a mixture-of-experts model is a layer's list of experts)."""
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    if not lists:
        raise ModelError(f"could not find the transformer layers (a ModuleList of blocks) in {type(model).__name__}")
    return list(max(lists, key=lambda m: sum(p.numel() for p in m.parameters())))


def parameter_counts(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def log_footprint(model, name: str) -> dict[str, float]:
    trainable, total = parameter_counts(model)
    mem = model.get_memory_footprint() / 2**20
    logger.info(
        "Loaded %s: %s trainable / %s parameters (%.2f%%), weights %.1f MiB",
        name, f"{trainable:,}", f"{total:,}", 100 * trainable / max(total, 1), mem,
    )
    return {"trainable_params": trainable, "total_params": total, "weight_memory_mib": mem}


# ----------------------------------------------------------------------------------------- save / reload / merge
def save_model(model, tokenizer, out_dir: str | Path, *, kind: Kind, origin: ModelOrigin | None = None, **meta: Any) -> None:
    """Save weights (peft adapter or full checkpoint), tokenizer and ``alignment_model.json``: kind, what ``origin``
    (from :func:`load_model`) says — the base an adapter sits on, a classifier's pooling — labels and whatever else
    the stage passes."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    origin = origin or ModelOrigin()
    if origin.base_model and is_adapter(out):
        meta = {"base_model": origin.base_model, "base_merged_from": origin.base_merged_from, **meta}
    meta = {"kind": kind, **({"pooling": origin.pooling} if origin.pooling else {}), **meta}
    (out / META_FILE).write_text(json.dumps(meta, indent=2))
    adapter = is_adapter(out)
    base, merged = base_chain(meta, read_meta) if adapter else (None, [])
    if adapter:
        portable_base(out, base)
    (out / "README.md").write_text(model_card(out, kind, meta, adapter=adapter, base=base, merged=merged))


def portable_base(adapter_dir: Path, base: str | None) -> None:
    """Name, in ``adapter_config.json``, the base a user elsewhere can resolve: the original model (``builtin:``
    name, hub id or the recipe's path, from :func:`base_chain`), not this machine's cache of merged copies; the card
    lists the merges."""
    config_file = adapter_dir / "adapter_config.json"
    config = json.loads(config_file.read_text())
    if base and config.get("base_model_name_or_path") != base:
        config_file.write_text(json.dumps({**config, "base_model_name_or_path": base}, indent=2, sort_keys=True))


def load_trained(path: str | Path, kind: Kind | None = None, *, dtype: str = "float32", **overrides: Any):
    """Load a saved model for inference: returns ``(model, tokenizer, meta)``; ``model`` is in eval mode."""
    path = str(path)
    if not Path(path).exists() and not builtin.is_builtin(path):
        raise ModelError(f"Model folder not found: {path}")
    meta = read_meta(path)
    kind = kind or meta.get("kind", "causal")
    method = "qlora" if overrides.get("load_in_4bit") else "full"  # only decides the quantisation at inference
    args = ModelArguments(model_name_or_path=path, method=method, dtype=dtype, **overrides)
    tokenizer = load_tokenizer(path, padding_side="left" if kind == "causal" else "right")
    model, _ = load_model(args, kind, tokenizer, label_names=meta.get("label_names"), num_labels=meta.get("num_labels"), training=False)
    model.eval()
    return model, tokenizer, meta


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path, *, dtype: str = "float32") -> Path:
    """Merge a peft adapter into a de-quantised ``dtype`` copy of its base and save a plain checkpoint + tokenizer."""
    meta = read_meta(adapter_dir)
    kind = meta.get("kind", "causal")
    model, tokenizer, _ = load_trained(adapter_dir, kind, dtype=dtype)
    merged = model.merge_and_unload()
    out = Path(out_dir)
    merged.save_pretrained(str(out))
    tokenizer.padding_side = "right"
    tokenizer.save_pretrained(str(out))
    plain_meta = {k: v for k, v in meta.items() if k != "base_model"}
    (out / META_FILE).write_text(json.dumps({**plain_meta, "kind": kind, "merged_from": str(adapter_dir)}, indent=2))
    return out


def merged_checkpoint(adapter_dir: str | Path) -> str:
    """A cached merged copy of an adapter (keyed by the adapter's weights), used as the base for further training;
    in the base checkpoint's own dtype (a bf16 7B base merges to ~14 GB, not to a ~28 GB fp32 copy)."""
    adapter_dir = Path(adapter_dir)
    weights = sorted(adapter_dir.glob("adapter_model.*"))
    if not weights:
        raise ModelError(f"{adapter_dir} has adapter_config.json but no adapter weights")
    key = hashlib.sha256(weights[0].read_bytes()).hexdigest()[:16]
    target = builtin.cache_dir() / "merged" / key
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / "config.json").is_file():
            tmp = Path(tempfile.mkdtemp(dir=target.parent))
            try:
                with torch.random.fork_rng():  # building a model draws random numbers: a run that merges (a cache
                    merge_adapter(adapter_dir, tmp, dtype="auto")  # miss) must draw what a cache hit draws
                tmp.rename(target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return str(target)
