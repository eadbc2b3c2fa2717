"""Built-in reward functions, named in recipes by their name alone (``reward_function: keyword``, or
``rewards: [{spec: exact_match, weight: 1}]``).

Every reward function is called as ``function(prompts, responses, **reward_kwargs, **columns) -> list[float]``:
``columns`` are the prompt data's ``extra_columns`` (one value per prompt) that the function names as parameters,
e.g. the ``answer`` a verifiable reward checks. A function of your own (``package.module:function``) follows the
same contract.
"""

from __future__ import annotations

import re
from typing import Any, Callable

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def length(prompts: list[Any], responses: list[str], target_words: int = 0) -> list[float]:
    """-|words - target_words| per response: with the default target 0, the shorter the better."""
    return [-float(abs(len(r.split()) - target_words)) for r in responses]


def keyword(
    prompts: list[Any], responses: list[str], keywords: list[str] | str = "great", case_sensitive: bool = False
) -> list[float]:
    """How many times the response uses any of ``keywords`` (whole words)."""
    words = [keywords] if isinstance(keywords, str) else list(keywords)
    pattern = re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b", 0 if case_sensitive else re.IGNORECASE)
    return [float(len(pattern.findall(r))) for r in responses]


def final_answer(response: str, extract: str = "last_number") -> str | None:
    """The answer a response gives: ``last_number`` (the last number written, commas dropped), ``boxed`` (the
    content of the last ``\\boxed{...}``) or ``full`` (the whole stripped response); None when there is none."""
    if extract == "last_number":
        numbers = NUMBER.findall(response)
        return numbers[-1].replace(",", "") if numbers else None
    if extract == "boxed":
        boxed = re.findall(r"\\boxed\{([^{}]*)\}", response)
        return boxed[-1].strip() if boxed else None
    if extract == "full":
        return response.strip() or None
    raise ValueError(f"extract must be 'last_number', 'boxed' or 'full', got {extract!r}")


def same_answer(given: str, expected: str) -> bool:
    """Equal as numbers when both are numbers (``14.0`` is ``14``), else equal as case-folded, stripped text."""
    try:
        return float(given) == float(str(expected).replace(",", ""))
    except ValueError:
        return given.strip().casefold() == str(expected).strip().casefold()


def exact_match(prompts: list[Any], responses: list[str], answer: list[Any], extract: str = "last_number") -> list[float]:
    """1.0 when the response's final answer (see :func:`final_answer`) is the prompt's ``answer``, else 0.0: the
    verifiable reward of RLVR. ``answer`` is a data column (``extra_columns: [answer]``)."""
    final_answer("", extract)  # a bad ``extract`` fails here, before any response is judged
    out = []
    for response, expected in zip(responses, answer, strict=True):
        given = final_answer(response, extract)
        out.append(float(given is not None and same_answer(given, expected)))
    return out


def format_match(prompts: list[Any], responses: list[str], pattern: str = r"-?\d+") -> list[float]:
    """1.0 when the whole stripped response matches the regular expression ``pattern`` (default: a bare integer),
    else 0.0: a format reward to pair with :func:`exact_match`."""
    compiled = re.compile(pattern, re.DOTALL)
    return [float(compiled.fullmatch(r.strip()) is not None) for r in responses]


BUILTIN: dict[str, Callable[..., list[float]]] = {
    "length": length, "keyword": keyword, "exact_match": exact_match, "format_match": format_match,
}
