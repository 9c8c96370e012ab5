"""Input budgets: page content beyond what a kind needs is cut before it is sent.

A meta title needs the page's topic, not its 40th paragraph; a 50,000-character page should
cost about what a typical one does. Content is cut to a per-kind token budget (settings),
at the last paragraph break inside the budget, else the last sentence end, else the last
space: never inside a word. Tokens are estimated from characters, conservatively for the
newer tokenizer (Claude Haiku 5.5 counts about 30% more tokens than Haiku 4.5's ~4
characters per token), so a cut text never exceeds its budget by the model's count."""

import re

CHARS_PER_TOKEN = 3
"""About 4 characters per token on Haiku 4.5, 30% more tokens on Haiku 5.5: ~3.1."""
MIN_KEPT_SHARE = 0.5
"""A boundary is used only if it keeps at least half the budget; else a finer one."""

_SENTENCE_END = re.compile(r"[.!?…][\"')\]»”’]*\s")


def estimate_tokens(text: str) -> int:
    return -(-len(text) // CHARS_PER_TOKEN)


def trim_to_budget(text: str, budget_tokens: int) -> str:
    """`text` itself if it fits `budget_tokens`, else its start cut at a boundary."""
    limit = budget_tokens * CHARS_PER_TOKEN
    if len(text) <= limit:
        return text
    window = text[:limit]
    floor = int(limit * MIN_KEPT_SHARE)
    paragraph = window.rfind("\n\n")
    if paragraph >= floor:
        return window[:paragraph].rstrip()
    sentence_ends = [match.end() for match in _SENTENCE_END.finditer(window)]
    if sentence_ends and sentence_ends[-1] >= floor:
        return window[: sentence_ends[-1]].rstrip()
    if len(text) > limit and text[limit].isspace():
        return window.rstrip()
    space = max(window.rfind(" "), window.rfind("\n"))
    if space >= floor:
        return window[:space].rstrip()
    return window
