"""Recipe fuzzing: whatever a recipe file and its --key flags hold, parse_stage either parses it or raises one
RecipeError naming the recipe file; never another exception type. The stage CLIs turn that into one `error:` line."""

from __future__ import annotations

import dataclasses
import re
import typing
from collections import Counter
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alignment.config import unused_key
from alignment.errors import RecipeError
from alignment.training import parse_stage
from reliability.support import error_lines, record, stage_classes

from helpers import run_stage

STAGES = ("sft", "rm", "dpo", "classify", "ppo")
EXAMPLES_PER_STAGE = 250
PATH_KEYS = ("dataset_path", "validation_path", "test_path")
TRICKY_STRINGS = (
    "1e-4", "nan", "-.inf", "1e999", "yes", "no", "~", "null", "2001-02-30", "2001-12-14", "[", "{a: 1", "*x",
    "!!python/object:os.system", "!!int x", "0x" + "f" * 5000, "1" + "0" * 400, "a" * 5000, "--", "é\u202e\x00",
)
BROKEN_YAML = (
    "learning_rate: [1, 2\n", "\tlearning_rate: 1\n", "a: 1\n---\nb: 2\n", "a: *missing\n", "? [a]\n: 1\n",
    "a: " + "[" * 3000 + "]" * 3000 + "\n", "max_steps: 1" + "0" * 5000 + "\n", "run_name: 2001-02-30\n",
    "seed: !!int x\n", "a: b\x00\n", "learning_rate: !!timestamp x\n", "- just\n- a list\n", "plain words\n",
    "{learning_rate: 1, learning_rate: 2}\n", "dataset_path: !!binary aGVsbG8=\n",
)

counts: Counter[tuple[str, str]] = Counter()  # (stage, outcome) -> cases

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**64, max_value=10**1000),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20), st.sampled_from(TRICKY_STRINGS),
)
garbage = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)


def plausible(hint: typing.Any) -> st.SearchStrategy:
    """Values of the right type for a field (so some recipes parse and reach the dataclasses' own checks)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return st.sampled_from(args)
    if args and type(None) in args:
        return st.none() | st.one_of([plausible(a) for a in args if a is not type(None)])
    simple = {bool: st.booleans(), int: st.integers(-2, 1000), float: st.floats(-1, 10), str: st.text(max_size=12)}
    if hint in simple:
        return simple[hint]
    if origin is list:
        return st.lists(plausible(args[0]) if args else scalars, max_size=3)
    return garbage


def field_hints(classes: tuple[type, ...]) -> dict[str, typing.Any]:
    """The recipe keys of ``classes`` and their types (not the inherited keys a class refuses, as PPO's config does
    the Trainer keys its loop never reads)."""
    hints = {}
    for cls in classes:
        types = typing.get_type_hints(cls)
        hints.update({f.name: types.get(f.name, typing.Any) for f in dataclasses.fields(cls)
                      if f.init and not unused_key(classes, f.name)})
    return hints


@st.composite
def misspelt(draw, keys: list[str]) -> str:
    """A real key with one character deleted, doubled or replaced."""
    key = draw(st.sampled_from(keys))
    i = draw(st.integers(0, len(key) - 1))
    op = draw(st.sampled_from(("delete", "double", "replace")))
    return {
        "delete": key[:i] + key[i + 1:],
        "double": key[:i] + key[i] + key[i:],
        "replace": key[:i] + draw(st.sampled_from("aeiou_xz")) + key[i + 1:],
    }[op]


@st.composite
def entry(draw, hints: dict[str, typing.Any]) -> tuple[typing.Any, typing.Any]:
    """One key: value pair: a real key with a plausible or wrong value, a missing data path, or an unknown key."""
    keys = sorted(hints)
    kind = draw(st.sampled_from(("real", "real", "real", "path", "misspelt", "random", "non-string")))
    if kind == "real":
        key = draw(st.sampled_from(keys))
        return key, draw(plausible(hints[key]) | garbage)
    if kind == "path":
        name = draw(st.text(st.characters(categories=("L", "N")), min_size=1, max_size=10))
        return draw(st.sampled_from(PATH_KEYS)), f"/nonexistent/{name}.jsonl"
    if kind == "misspelt":
        return draw(misspelt(keys)), draw(garbage)
    if kind == "random":
        return draw(st.text(min_size=1, max_size=20)), draw(garbage)
    return draw(st.integers() | st.none() | st.booleans() | st.floats(allow_nan=False)), draw(garbage)


@st.composite
def recipe(draw, hints: dict[str, typing.Any]) -> tuple[bytes, list[str]]:
    """Recipe file bytes and command-line flags."""
    shape = draw(st.sampled_from(("mapping", "mapping", "mapping", "non-mapping", "broken", "text", "bytes")))
    if shape == "mapping":
        doc = yaml.safe_dump(dict(draw(st.lists(entry(hints), max_size=6))), sort_keys=False, allow_unicode=True)
    elif shape == "non-mapping":
        doc = yaml.safe_dump(draw(garbage.filter(lambda v: not isinstance(v, dict))), allow_unicode=True)
    elif shape == "broken":
        doc = draw(st.sampled_from(BROKEN_YAML))
    elif shape == "text":
        doc = draw(st.text(max_size=80))
    else:
        return draw(st.binary(max_size=80)), []
    flag_keys = st.sampled_from(sorted(hints)) | misspelt(sorted(hints)) | st.text(max_size=8)
    flags = draw(st.lists(st.tuples(flag_keys, st.text(max_size=10) | st.sampled_from(TRICKY_STRINGS)), max_size=3))
    argv = [part for key, value in flags for part in (f"--{key}", value)]
    if draw(st.booleans()):
        argv.append(draw(st.sampled_from(("positional", "--bare-flag", "--x=[1,"))))
    return doc.encode(), argv


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "recipe.yaml"


def check_one(stage: str, path: Path, content: bytes, argv: list[str]) -> None:
    """The contract: parse_stage returns the stage's dataclasses or raises RecipeError naming the file."""
    classes, defaults = stage_classes(stage)
    path.write_bytes(content)
    try:
        parsed = parse_stage([str(path), *argv], stage, classes, defaults)
    except RecipeError as exc:
        counts[stage, "recipe_errors"] += 1
        message = str(exc)
        assert str(path) in message or message.startswith("Unexpected argument"), message
        return
    counts[stage, "parsed"] += 1
    assert [type(p) for p in parsed] == list(classes)


@pytest.mark.parametrize("stage", STAGES)
def test_any_recipe_parses_or_raises_recipe_error(stage, recipe_file):
    hints = field_hints(stage_classes(stage)[0])

    @settings(max_examples=EXAMPLES_PER_STAGE, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(case=recipe(hints))
    def fuzz(case):
        check_one(stage, recipe_file, *case)

    fuzz()
    tried = {outcome: counts[stage, outcome] for outcome in ("parsed", "recipe_errors")}
    assert tried["parsed"] > 0 and tried["recipe_errors"] > 0, tried  # the generator reaches both outcomes
    record("recipe_fuzz", **{stage: {"cases": sum(tried.values()), **tried}},
           total_cases=sum(n for (s, _), n in counts.items()))


@pytest.mark.parametrize("stage", STAGES)
def test_misspelt_key_gets_a_closest_key_hint(stage, recipe_file):
    classes, defaults = stage_classes(stage)
    keys = sorted(field_hints(classes))

    @settings(max_examples=60, deadline=None, database=None)
    @given(key=misspelt(keys))
    def fuzz(key):
        if key in keys:
            return
        recipe_file.write_text(yaml.safe_dump({key: 1}))
        with pytest.raises(RecipeError, match=rf"unknown key '{re.escape(key)}'\. Did you mean '\w+'\?"):
            parse_stage([str(recipe_file)], stage, classes, defaults)

    fuzz()


BAD_CLI_RECIPES = {
    "misspelt-key": ("learnig_rate: 0.1\n", {}, "unknown key 'learnig_rate'. Did you mean 'learning_rate'?"),
    "deep-nesting": ("a: " + "[" * 3000 + "]" * 3000 + "\n", {}, "invalid YAML: nested too deeply"),
    "huge-number": ("learning_rate: 1" + "0" * 400 + "\n", {}, "key 'learning_rate': expected a number"),
    "list-document": ("- a\n- b\n", {}, "a recipe must be a mapping"),
    "impossible-date-flag": ("max_steps: 1\n", {"run_name": "2001-02-30", "seed": "x"}, "key 'seed': expected an integer"),
}


@pytest.mark.parametrize("name", list(BAD_CLI_RECIPES))
def test_stage_cli_prints_one_error_line(tmp_path, name):
    text, flags, expected = BAD_CLI_RECIPES[name]
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    proc = run_stage("sft", str(bad), timeout=300, **flags)
    errors = error_lines(proc.stderr)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(errors) == 1 and expected in errors[0] and str(bad) in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
