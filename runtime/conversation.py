"""Conversations longer than the context: keep the system prompt and the newest turns.

    prompt, dropped = fit_messages(messages, render, budget, limit, length=len)

`render(messages)` renders a conversation to its prompt (token ids through the chat template, or a
server's plan of them with the tools), and `length(prompt)` counts its tokens. When the whole
conversation is over `budget` tokens, the oldest messages after the leading system messages are
dropped, whole turns at a time: what is left starts with a user message, which every template accepts.
The last message is always kept, and a conversation that cannot be brought under the budget is still
taken when it is under `limit` (the reply gets what is left). The server reports the number dropped
as `dropped_messages`; the terminal chat forgets them with a one-line notice.

How much goes: the tokens to drop are rounded up to a multiple of a quarter of the budget, then the
fewest oldest turns that hold that many go. A chat client sends the whole history every turn, so the
cut must not move with every new turn: with this rounding it stays where it is while the conversation
grows by a quarter of the context, the kept prefix stays the same, and the server's KV cache serves it
(a cut that dropped just enough would move every turn and make the server read the whole context
again each time). The price: up to a quarter of the context dropped beyond what was needed.

The budget leaves room for the reply: `reply_room(n_ctx, max_tokens)` positions of the context (the
request's max_tokens up to half the context, else a quarter of it), as ollama keeps its chats going by
truncating them before the prompt fills the context.
"""
from __future__ import annotations

from typing import Callable


class ConversationTooLong(ValueError):
    """Even the system prompt and the last message alone do not fit the context."""

    def __init__(self, n_tokens: int, limit: int):
        super().__init__(f"the prompt is {n_tokens} tokens even with only the system prompt and the last "
                         f"message, but the context holds {limit}")
        self.n_tokens = n_tokens
        self.limit = limit


def reply_room(n_ctx: int, max_tokens: int | None) -> int:
    """Positions of the context kept free for the reply when older turns have to go."""
    if max_tokens is not None and max_tokens > 0:
        return min(max_tokens, n_ctx // 2)
    return n_ctx // 4


def fit_messages(messages: list[dict], render: Callable[[list[dict]], object], budget: int, limit: int,
                 length: Callable[[object], int] = len) -> tuple[object, int]:
    """-> (the kept conversation rendered, number of messages dropped). `budget`: the prompt's size
    with room for the reply; `limit`: the context size, which the prompt must stay under (a prompt that
    cannot be brought under the budget is still taken when it is under the limit, its reply gets what
    is left). Raises ConversationTooLong."""
    whole = render(messages)
    n_whole = length(whole)
    if n_whole <= budget:
        return whole, 0
    step = max(1, budget // 4)
    target = -(-(n_whole - budget) // step) * step          # tokens to drop, rounded up to a step
    head = _system_head(messages)
    # cut points: drop messages[head:head + k], where the kept part starts at a user message (or is
    # the last message alone); dropping more never leaves more, so the first cut that drops `target`
    # tokens (or fits, at the last cut) is found by bisection
    cuts = [k for k in range(1, len(messages) - head)
            if messages[head + k]["role"] == "user" or head + k == len(messages) - 1]
    best = None
    lo, hi = 0, len(cuts) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        attempt = render(drop_oldest(messages, cuts[mid]))
        n = length(attempt)
        if n_whole - n >= target or (mid == len(cuts) - 1 and n <= budget):
            best = (attempt, cuts[mid])
            hi = mid - 1
        else:
            lo = mid + 1
    if best is None:
        shortest = (render(drop_oldest(messages, cuts[-1])), cuts[-1]) if cuts else (whole, 0)
        if length(shortest[0]) >= limit:
            raise ConversationTooLong(length(shortest[0]), limit)
        return shortest
    return best


def drop_oldest(messages: list[dict], n: int) -> list[dict]:
    """messages without the n oldest after the leading system messages."""
    head = _system_head(messages)
    return messages[:head] + messages[head + n:]


def _system_head(messages: list[dict]) -> int:
    # how many messages at the start are system messages (the last message is never one of them)
    head = 0
    while head < len(messages) - 1 and messages[head]["role"] == "system":
        head += 1
    return head
