"""Answer-level metrics against hand-computed values (no model involved)."""

from __future__ import annotations

import pytest

from worker.recipe.metrics import (
    answer_scores,
    answer_tokens,
    exact_match,
    lcs_length,
    normalise_answer,
    rouge_l,
)


def test_normalise_drops_case_punctuation_and_extra_space() -> None:
    assert normalise_answer("  The Bulging capacitor,  TOP right. ") == (
        "the bulging capacitor top right"
    )
    assert normalise_answer("右上角的电容鼓包。") == "右上角的电容鼓包"
    assert normalise_answer("\uff21\uff22\uff23") == "abc"  # NFKC folds full-width letters


def test_exact_match_is_on_normalised_text() -> None:
    assert exact_match("the burnt chip, bottom left.", "The burnt chip bottom left")
    assert not exact_match("the burnt chip, bottom", "the burnt chip, bottom left")
    assert exact_match("", "  ")


def test_answer_tokens_split_cjk_into_characters() -> None:
    assert answer_tokens("The chip, top-left") == ["the", "chip", "top", "left"]
    assert answer_tokens("右上角的电容") == ["右", "上", "角", "的", "电", "容"]
    assert answer_tokens("R12电阻 cracked") == ["r12", "电", "阻", "cracked"]


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("", "", 0),
        ("abc", "", 0),
        ("abcde", "ace", 3),
        ("abcbdab", "bdcaba", 4),  # the textbook example: "bcba"
        ("abc", "xyz", 0),
        ("aaaa", "aa", 2),
    ],
)
def test_lcs_length(a: str, b: str, expected: int) -> None:
    assert lcs_length(list(a), list(b)) == expected
    assert lcs_length(list(b), list(a)) == expected


def test_rouge_l_hand_computed() -> None:
    # LCS("the cat sat on the mat", "the cat on the mat") = 5 tokens:
    # P = 5/6, R = 5/5, F1 = 2PR / (P + R) = (50/30) / (11/6) = 10/11.
    assert rouge_l("the cat sat on the mat", "the cat on the mat") == pytest.approx(10 / 11)
    # Symmetric for beta = 1: P and R swap.
    assert rouge_l("the cat on the mat", "the cat sat on the mat") == pytest.approx(10 / 11)
    # "the bulging capacitor, top left" vs "the burnt chip, top left": LCS = the, top, left = 3
    # of 5 tokens each, so P = R = F1 = 3/5.
    assert rouge_l("the bulging capacitor, top left", "the burnt chip, top left") == (
        pytest.approx(0.6)
    )
    # Chinese by character: 右上角的电容鼓包 (8) vs 左上角的电阻烧毁 (8): 上角的电 = 4, F1 = 1/2.
    assert rouge_l("右上角的电容鼓包", "左上角的电阻烧毁") == pytest.approx(0.5)


def test_rouge_l_edge_cases() -> None:
    assert rouge_l("Top Left.", "top left") == 1.0
    assert rouge_l("", "") == 1.0
    assert rouge_l("", "top left") == 0.0
    assert rouge_l("top left", "") == 0.0
    assert rouge_l("bottom right", "top left") == 0.0


def test_answer_scores_average_over_pairs() -> None:
    scores = answer_scores(
        ["top left", "the cat on the mat"], ["Top left.", "the cat sat on the mat"]
    )
    assert scores["exact_match"] == pytest.approx(0.5)
    assert scores["rouge_l"] == pytest.approx((1.0 + 10 / 11) / 2)
    assert answer_scores([], []) == {"exact_match": 0.0, "rouge_l": 0.0}
    with pytest.raises(ValueError):
        answer_scores(["a"], [])
