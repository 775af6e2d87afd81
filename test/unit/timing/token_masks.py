"""Shared hypothesis helper of the timing tests: satisfiable random pop/push token masks."""

from hypothesis import strategies as st

QUEUE_COUNT = 6


def draw_token_masks(draw, available: dict[tuple[int, int], int], queue: int,
                     push_odds: int) -> tuple[int, int]:
    """(pop, push) masks for one instruction on `queue`, drawn so that program order satisfies
    them: a queue pops a token only if an earlier instruction pushed it. `available` counts the
    tokens pushed and not yet popped per (source, destination) queue pair and is updated; each
    destination gets a push with probability 1 / `push_odds`."""
    pop = 0
    for src in range(QUEUE_COUNT):
        if available.get((src, queue), 0) and draw(st.booleans()):
            pop |= 1 << src
            available[(src, queue)] -= 1
    push = 0
    for dst in range(QUEUE_COUNT):
        if draw(st.integers(0, push_odds - 1)) == 0:
            push |= 1 << dst
            available[(queue, dst)] = available.get((queue, dst), 0) + 1
    return pop, push
