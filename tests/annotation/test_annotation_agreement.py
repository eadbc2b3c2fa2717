"""Agreement rate, Krippendorff's alpha (nominal), gold accuracy and Bradley-Terry on hand-computed cases."""

from __future__ import annotations

import math

import pytest

from alignment.annotations.agreement import bradley_terry, krippendorff_alpha_nominal, pairwise_agreement

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", the 4 observers x 12 units example
# with missing values; the published nominal alpha is 0.743. Unit 12 has one value and is not pairable.
KRIPPENDORFF_2011 = [
    [1, 1, 1], [2, 2, 3, 2], [3, 3, 3, 3], [3, 3, 3, 3], [2, 2, 2, 2], [1, 2, 3, 4],
    [4, 4, 4, 4], [1, 1, 2, 1], [2, 2, 2, 2], [5, 5, 5], [1, 1], [3],
]  # fmt: skip


def test_alpha_matches_the_published_example():
    assert round(krippendorff_alpha_nominal(KRIPPENDORFF_2011), 3) == 0.743


def test_alpha_and_agreement_on_a_small_hand_case():
    # coincidences: o11 = 2, o00 = 4, o01 = o10 = 1; n1 = 3, n0 = 5, n = 8
    # alpha = 1 - (n - 1) * (o01 + o10) / (2 * n0 * n1) = 1 - 7 * 2 / 30
    units = [[1, 1], [0, 0], [1, 0], [0, 0]]
    assert krippendorff_alpha_nominal(units) == pytest.approx(1 - 14 / 30)
    assert pairwise_agreement(units) == 0.75
    assert krippendorff_alpha_nominal([[1, 1], [0, 0]]) == 1.0
    assert krippendorff_alpha_nominal([[1, 1], [1, 1]]) is None  # no variation: undefined
    assert pairwise_agreement([[1]]) is None


def test_bradley_terry_two_items_is_the_log_odds():
    # MLE: sigmoid(s_a - s_b) = 3 / 4, so s_a - s_b = ln 3, centred at 0
    strengths = bradley_terry([("a", "b")] * 3 + [("b", "a")], l2=0.0)
    assert strengths["a"] - strengths["b"] == pytest.approx(math.log(3), abs=1e-5)
    assert strengths["a"] + strengths["b"] == pytest.approx(0.0, abs=1e-9)
    even = bradley_terry([("a", "b"), ("b", "a")], l2=0.0)
    assert even["a"] == pytest.approx(0.0, abs=1e-6)


def test_bradley_terry_orders_a_chain_and_stays_finite_for_unbeaten_items():
    strengths = bradley_terry([("a", "b")] * 3 + [("b", "c")] * 3 + [("a", "c")] * 2 + [("c", "a")])
    assert strengths["a"] > strengths["b"] > strengths["c"]
    assert all(math.isfinite(s) for s in strengths.values())
    assert bradley_terry([]) == {}


def test_report_from_the_store(prompt_with, judge):
    raters = ("r1", "r2", "r3")
    store, ids = prompt_with(3, raters=raters, gold_rate=1.0)
    store.create_tasks("ranking", k=3, judgements_per_task=2)
    store.create_tasks("ranking", k=3, tasks_per_prompt=0, gold=[[ids[0], ids[1], ids[2]]])
    # gold first for everyone: exact, last two swapped (2 of 3 pairs right), all tied (0 of 3)
    judge(store, "r1", rank_of={ids[0]: 1, ids[1]: 2, ids[2]: 3})
    judge(store, "r2", rank_of={ids[0]: 1, ids[1]: 3, ids[2]: 2})
    judge(store, "r3", rank_of={ids[0]: 1, ids[1]: 1, ids[2]: 1})
    # the regular task: r1 [1, 2, 3], r2 [1, 3, 2] -> units agree, agree, disagree
    judge(store, "r1", rank_of={ids[0]: 1, ids[1]: 2, ids[2]: 3})
    judge(store, "r2", rank_of={ids[0]: 1, ids[1]: 3, ids[2]: 2})
    report = store.agreement_report()
    assert report["gold_accuracy"] == {
        "r1": {"items": 1, "accuracy": 1.0},
        "r2": {"items": 1, "accuracy": pytest.approx(2 / 3)},
        "r3": {"items": 1, "accuracy": 0.0},
    }
    # 3 gold units with 3 raters (3 rater pairs each) + 3 regular units with 2 raters:
    # gold (0,1): +1 +1 0 -> 1 of 3 pairs agree; (0,2): +1 +1 0 -> 1 of 3; (1,2): +1 -1 0 -> 0 of 3
    # regular: (0,1) agree, (0,2) agree, (1,2) disagree -> 2 of 3; total 4 of 12
    assert report["pairwise_agreement"] == pytest.approx(4 / 12)
    assert report["krippendorff_alpha_level"] == "nominal"
    assert report["judgements"] == 5
    by_candidate = {row["candidate_id"]: row["strength"] for row in report["bradley_terry_candidate"]}
    assert by_candidate[ids[0]] > max(by_candidate[ids[1]], by_candidate[ids[2]])
    # policy0 holds answers 0 and 2, policy1 answer 1; cross-policy wins: 0>1 (4x), 1 vs 2 split 2:2
    assert report["bradley_terry_policy"]["policy0"] > report["bradley_terry_policy"]["policy1"]
