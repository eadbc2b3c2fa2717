"""KTO from binary feedback: end to end with real SmolLM2 weights on a QLoRA policy (finite loss, KL and implicit
rewards logged, the adapter saved without trl's reference copy); the feedback data task's row checks and the
recipe checks, which fail before any model loads; the label-weight advice."""

from __future__ import annotations

import json
import math

import pytest
from safetensors.torch import load_file

import alignment.kto as kto
from alignment.data import DataArguments, load_data
from alignment.errors import DataError
from alignment.models import read_meta

from helpers import ROOT, metrics, read_jsonl, write_jsonl

FEEDBACK = ROOT / "data" / "feedback"


def balanced(rows: list[dict], per_label: int) -> list[dict]:
    """The first ``per_label`` desirable and undesirable rows, alternating."""
    good, bad = ([r for r in rows if r["label"] is label][:per_label] for label in (True, False))
    return [row for pair in zip(good, bad) for row in pair]


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if the stage gets as far as loading a model."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded although the recipe or data is invalid")

    monkeypatch.setattr(kto, "load_model", refuse)


def finite(row: dict, keys: list[str]) -> bool:
    return all(isinstance(row[k], float) and math.isfinite(row[k]) for k in keys)


@pytest.mark.slow
def test_kto_trains_a_qlora_adapter_and_logs_finite_rewards(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", balanced(read_jsonl(FEEDBACK / "train.jsonl"), 4))
    validation = write_jsonl(tmp_path / "validation.jsonl", balanced(read_jsonl(FEEDBACK / "validation.jsonl"), 2))
    out = tmp_path / "run"
    code = kto.main([
        "recipes/kto/demo.yaml", "--dataset_path", str(train), "--validation_path", str(validation),
        "--output_dir", str(out), "--bf16", "false", "--max_steps", "2", "--per_device_train_batch_size", "4",
        "--per_device_eval_batch_size", "4", "--max_length", "64", "--logging_steps", "1", "--learning_rate", "5e-4",
        "--lr_scheduler_type", "constant", "--warmup_steps", "0", "--save_strategy", "no", "--eval_strategy", "no",
    ])
    assert code == 0
    steps = [row for row in json.loads((out / "log_history.json").read_text()) if "loss" in row]
    assert [row["step"] for row in steps] == [1, 2]
    assert all(finite(row, ["loss", "kl", "grad_norm"]) for row in steps)
    assert all(any(k in row for k in ("rewards/chosen", "rewards/rejected")) for row in steps)
    assert all(finite(row, [k for k in row if k.startswith(("rewards/", "logps/"))]) for row in steps)
    final = metrics(out)
    assert final["global_step"] == 2
    assert finite(final, ["eval_loss", "eval_kl", "eval_rewards/chosen", "eval_rewards/rejected", "eval_rewards/margins"])
    assert final["eval_rewards/chosen"] != 0  # the policy moved away from the reference
    assert final["eval_reward_margin"] == final["eval_rewards/margins"]  # the plain-language name is logged too
    assert "result: train 8, validation 4 rows; training labels: 4 desirable, 4 undesirable" in final["data_report"]
    meta = read_meta(out)
    assert meta["stage"] == "kto" and meta["method"] == "qlora" and meta["base_model"] == "builtin:smollm2-135m-instruct"
    adapter = load_file(str(out / "adapter_model.safetensors"))
    assert any("lora_B" in name and tensor.abs().sum() > 0 for name, tensor in adapter.items())
    assert not (out / kto.REFERENCE_ADAPTER).exists()  # trl's frozen copy of the starting adapter is not the result


@pytest.mark.parametrize(
    "bad,message",
    [
        ({"prompt": "Hi", "completion": "Hello!"}, "line 2: column 'label' is missing (expected: prompt, completion, label)"),
        ({"prompt": "Hi", "completion": "Hello!", "label": "yes"}, "line 2: column 'label' must be true (desirable) or false (undesirable), got string 'yes'"),
        ({"prompt": "Hi", "completion": "Hello!", "label": 5}, "line 2: column 'label' must be true (desirable) or false (undesirable), got int 5"),
        ({"prompt": "Hi", "label": True}, "line 2: column 'completion' is missing"),
        ({"prompt": "Hi", "completion": " ", "label": False}, "line 2: column 'completion' is empty"),
    ],
    ids=["missing-label", "text-label", "rating-as-label", "missing-completion", "empty-completion"],
)
def test_bad_feedback_rows_are_named_before_any_model_loads(tmp_path, capsys, no_model, bad, message):
    good = {"prompt": "Hello", "completion": "Hello! How can I help?", "label": True}
    data = write_jsonl(tmp_path / "feedback.jsonl", [good, bad, good])
    assert kto.main(["recipes/kto/demo.yaml", "--dataset_path", str(data), "--output_dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"{data} {message}" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--desirable_wieght", "2"], "unknown key 'desirable_wieght'. Did you mean 'desirable_weight'?"),
        (["--per_device_train_batch_size", "1"], "per_device_train_batch_size: KTO estimates its KL term"),
        (["--train_sampling_strategy", "random"], "train_sampling_strategy: KTO pairs each row with its neighbour"),
        (["--undesirable_weight", "0"], "undesirable_weight: must be a positive number, got 0.0"),
        (["--loss_type", "sigmoid"], "key 'loss_type': expected one of kto, apo_zero_unpaired"),
    ],
    ids=["misspelt-key", "batch-of-one", "shuffled-sampler", "zero-weight", "dpo-loss"],
)
def test_bad_recipes_fail_before_any_model_loads(tmp_path, capsys, no_model, flags, message):
    out = tmp_path / "run"
    assert kto.main(["recipes/kto/demo.yaml", "--output_dir", str(out), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_batch_of_one_is_fine_for_the_loss_without_a_kl_term():
    (*_, config) = kto.parse_stage(["recipes/kto/demo.yaml", "--per_device_train_batch_size", "1", "--loss_type",
                                    "apo_zero_unpaired"], "kto", kto.CLASSES, kto.DEFAULTS)
    kto.check_config(config)


def test_feedback_task_reads_conversational_rows_and_csv_labels(tmp_path):
    chat = write_jsonl(tmp_path / "chat.jsonl", [
        {"prompt": [{"role": "user", "content": "Hi"}], "completion": [{"role": "assistant", "content": "Hello!"}], "label": True},
        {"prompt": [{"role": "user", "content": "Hi"}], "completion": "Go away.", "label": False, "rating": 1, "rater": "ana"},
    ])
    rows = load_data(DataArguments(dataset_path=str(chat)), "feedback").splits["train"].to_list()
    assert rows[1] == {"prompt": [{"role": "user", "content": "Hi"}], "completion": [{"role": "assistant", "content": "Go away."}], "label": False}
    table = tmp_path / "feedback.csv"
    table.write_text("prompt,completion,label\nHi,Hello!,TRUE\nHi,Go away.,false\n")
    assert load_data(DataArguments(dataset_path=str(table)), "feedback").splits["train"]["label"] == [True, False]


def test_feedback_without_a_label_column_names_the_expected_columns(tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "Hi", "completion": "Hello!"}])
    with pytest.raises(DataError, match=r"pairs.jsonl: cannot tell the row format for task 'feedback'.*"
                                        r"Expected columns: prompt, completion, label \(feedback\)"):
        load_data(DataArguments(dataset_path=str(data)), "feedback")


def test_feedback_validation_split_keeps_the_label_proportions(tmp_path):
    rows = [{"prompt": f"Question {i}?", "completion": f"Answer {i}.", "label": i % 4 != 0} for i in range(20)]
    data = load_data(DataArguments(dataset_path=str(write_jsonl(tmp_path / "f.jsonl", rows)), validation_split=0.2), "feedback")
    assert sorted(data.splits["validation"]["label"]) == [False, True, True, True]
    assert any("stratified by label" in line for line in data.report)


@pytest.mark.parametrize(
    "counts,weights,advice",
    [
        ((100, 100), (1.0, 1.0), None),
        ((30, 90), (1.0, 1.0), "set desirable_weight between 3.00 and 4.00"),
        ((90, 30), (1.0, 1.0), "set undesirable_weight between 2.25 and 3.00"),
        ((30, 90), (3.5, 1.0), None),
        ((40, 0), (1.0, 1.0), "with no undesirable rows KTO learns from one side only"),
    ],
)
def test_weight_advice_follows_the_kto_papers_range(counts, weights, advice):
    got = kto.weight_advice(*counts, *weights)
    assert got is None if advice is None else advice in got
