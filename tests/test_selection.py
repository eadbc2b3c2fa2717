"""Active preference selection (fast): offers, the budget, seeded determinism, never re-asking a judged set, the
acquisition functions, the head ensemble's disagreement, and the reward model's features that the heads read."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alignment.models import ModelArguments, load_model, load_tokenizer, save_model
from alignment.rewards import init_reward_head, load_reward_model
from alignment.selection import Offer, acquisition, fit_heads, offers, select

ROWS = [{"prompt": f"prompt {n}", "candidates": [{"text": f"{n}-{c}", "policy": "sft"} for c in "abcd"]} for n in range(6)]


def by_length_gap(flat: list[Offer]) -> list[np.ndarray]:
    """A stand-in reward model: prompt n's candidates differ by n + 1 per step, so prompt 0's are the closest."""
    gap = lambda o: int(o.prompt.split()[-1]) + 1  # noqa: E731
    return [np.array([[gap(o) * "abcd".index(c["text"][-1]) for c in o.candidates]], dtype=float) for o in flat]


def test_offers_are_every_unjudged_set_of_one_prompt():
    per_prompt = offers(ROWS[:1], "pairwise", 2, taken={("prompt 0", frozenset({"0-a", "0-b"}))})
    assert len(per_prompt[0]) == 5 and all(len(o.candidates) == 2 for o in per_prompt[0])  # C(4,2) less the judged one
    assert ("prompt 0", frozenset({"0-a", "0-b"})) not in {o.key for o in per_prompt[0]}
    (ranking,) = offers(ROWS[:1], "ranking", 4)
    assert len(ranking) == 1 and ranking[0].as_row() == {"prompt": "prompt 0", "candidates": ROWS[0]["candidates"]}


@pytest.mark.parametrize("strategy", ["random", "uncertainty", "disagreement"])
def test_selection_respects_the_budget_is_seeded_and_asks_one_task_per_prompt(strategy):
    scorer = by_length_gap if strategy == "uncertainty" else lambda flat: [np.random.default_rng(len(o.prompt)).normal(size=(4, 2)) for o in flat]
    pool = offers(ROWS, "pairwise", 2)
    first = select(pool, 3, strategy, seed=7, scorer=scorer)
    assert len(first) == 3 and len({o.prompt for o in first}) == 3
    assert select(pool, 3, strategy, seed=7, scorer=scorer) == first
    assert len(select(pool, 100, strategy, seed=7, scorer=scorer)) == len(ROWS)  # one per prompt at most
    if strategy == "random":
        seeds = {tuple(o.key for o in select(pool, 3, "random", seed=s)) for s in range(5)}
        assert len(seeds) > 1


def test_uncertainty_asks_about_the_pairs_the_reward_model_finds_closest():
    chosen = select(offers(ROWS, "pairwise", 2), 2, "uncertainty", scorer=by_length_gap)
    assert [o.prompt for o in chosen] == ["prompt 0", "prompt 1"]
    assert all({c["text"][-1] for c in o.candidates} in ({"a", "b"}, {"b", "c"}, {"c", "d"}) for o in chosen)  # adjacent


def test_acquisitions_against_hand_computed_values():
    rewards = np.array([[0.0, 1.0, 3.0], [0.0, 3.0, 3.0]])  # two members, three candidates: pairs (0,1) (0,2) (1,2)
    # disagreement: std over members of each difference: (|-1 - -3| / 2, 0, |-2 - 0| / 2) -> mean 2/3
    assert acquisition("disagreement", rewards) == pytest.approx(2 / 3)
    p = 1 / (1 + np.exp(-np.array([-2.0, -3.0, -1.0])))  # sigmoid of the members' mean differences
    assert acquisition("uncertainty", rewards) == pytest.approx(float(np.mean(-(p * np.log(p) + (1 - p) * np.log(1 - p)))))
    with pytest.raises(ValueError, match="needs a reward model"):
        select(offers(ROWS, "pairwise", 2), 2, "uncertainty")
    with pytest.raises(ValueError, match="selection must be one of random, uncertainty, disagreement"):
        select(offers(ROWS, "pairwise", 2), 2, "entropy")


def test_the_head_ensemble_disagrees_more_on_pairs_its_judgements_leave_open():
    """Every judged pair differs in feature 0 (the better answer has more of it); feature 2 never varies in them.
    The heads agree that feature 0 is better and disagree on a pair that differs only in feature 2: an ambiguous
    pair by construction, since no judgement says anything about it."""
    g = torch.Generator().manual_seed(0)
    n, d = 200, 3
    chosen = torch.zeros(n, d)
    chosen[:, 0] = torch.randn(n, generator=g).abs() + 0.2
    chosen[:, 1] = torch.randn(n, generator=g)  # noise the labels do not follow
    ensemble = fit_heads(chosen, torch.zeros(n, d), torch.tensor([1.0, 0.0, 0.0]), members=8, seed=0)
    clear, open_ = (ensemble.rewards(torch.eye(d)[i][None])[:, 0] for i in (0, 2))
    assert (clear > 0).all()
    assert np.std(open_) > 2 * np.std(clear), (np.std(open_), np.std(clear))
    assert acquisition("disagreement", np.stack([np.zeros(8), open_], 1)) > acquisition("disagreement", np.stack([np.zeros(8), clear], 1))
    again = fit_heads(chosen, torch.zeros(n, d), torch.tensor([1.0, 0.0, 0.0]), members=8, seed=0)
    torch.testing.assert_close(again.weight, ensemble.weight)


@pytest.mark.parametrize("model", ["bert-full", "llama-lora"])
def test_the_features_a_reward_model_hands_its_head_reproduce_its_scores(model, tiny_bert_dir, tiny_llama_dir, tmp_path):
    path = tiny_bert_dir if model == "bert-full" else tiny_llama_dir
    tok = load_tokenizer(path)
    args = ModelArguments(model_name_or_path=path, method="full" if model == "bert-full" else "lora", lora_r=4)
    torch.manual_seed(0)
    rm, origin = load_model(args, "seq_cls", tok, num_labels=1, init_head=init_reward_head)
    save_model(rm, tok, tmp_path / "rm", kind="seq_cls", origin=origin, num_labels=1, stage="rm", max_length=64)
    reward = load_reward_model(tmp_path / "rm")
    prompts, answers = ["Is it good?", "Why?"] * 2, ["Yes, very.", "Because the plot holds.", "No", "I do not know at all."]
    features = reward.features(prompts, answers, batch_size=3)
    weight, bias = reward.head()
    torch.testing.assert_close(features @ weight + bias, torch.tensor(reward.score(prompts, answers)), atol=1e-4, rtol=0)
