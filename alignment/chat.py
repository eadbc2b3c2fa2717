"""Interactive terminal chat: ``python -m alignment.chat MODEL [--max_new_tokens N --temperature T]``.

Type a message and press Enter; ``/reset`` clears the conversation, ``/quit`` (or Ctrl-D) leaves.
"""

from __future__ import annotations

import sys

from alignment.config import parse_recipe
from alignment.errors import RecipeError
from alignment.generation import SamplingArguments, generate
from alignment.models import load_trained
from alignment.run import stage_main


def chat_loop(model, tokenizer, sampling: SamplingArguments, stdin=sys.stdin, stdout=sys.stdout) -> None:
    history: list[dict[str, str]] = []
    sampling.num_return_sequences, sampling.batch_size = 1, 1
    while True:
        stdout.write("you> ")
        stdout.flush()
        line = stdin.readline()
        if not line or line.strip() == "/quit":
            return
        text = line.strip()
        if text == "/reset":
            history.clear()
            continue
        if not text:
            continue
        history.append({"role": "user", "content": text})
        reply = generate(model, tokenizer, [history], sampling)[0][0]["text"]
        history.append({"role": "assistant", "content": reply})
        stdout.write(f"model> {reply}\n")


@stage_main(keys=lambda: ((SamplingArguments,), {}))
def main(argv: list[str]) -> None:
    """usage: python -m alignment.chat MODEL [--max_new_tokens N] [--temperature T]"""
    if not argv or argv[0].startswith("--"):
        raise RecipeError("usage: python -m alignment.chat MODEL [--max_new_tokens N] [--temperature T]")
    (sampling,) = parse_recipe(argv[1:], (SamplingArguments,))
    model, tokenizer, _ = load_trained(argv[0], "causal")
    chat_loop(model, tokenizer, sampling)


if __name__ == "__main__":
    raise SystemExit(main())
