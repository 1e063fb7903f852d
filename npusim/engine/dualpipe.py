"""DualPipe and DualPipeV as fixed per-rank unit orders (DeepSeek-V3 report, section 3.2.1 and
Table 2; the public DualPipe repository describes the same eight steps).

Both run one *program* per rank over two phases (two local chunks). For DualPipe the n = pp/2 ranks
of each half mirror the other half (``half_rank`` = min(r, pp-1-r)) and each direction carries m/2
micro-batches; DualPipeV runs the same program on all pp ranks of a V-shaped pipeline with m
micro-batches per chunk. The steps, for a rank at half-position h:

1. 2(n-h-1) forwards of phase 0
2. h+1 x (F0, F1)
3. n-h-1 x (B1 input-gradient only, a deferred W, F1)          zero-bubble warm-up
4. N-2n+h+1 x (F0&B1, F1&B0)                                    overlapped pairs (the main step)
5. n-h-1 x (B1, F1&B0)
6. h+1 x (B1, B0); the second half of these defer their W
7. n-h-1 x (W, B0 input-gradient only)
8. h+1 x W

A 'B' is a full backward unless its weight gradient is deferred; deferred W units run first-in
first-out. The middle ranks (h = n-1) run their first step-4 pair as F0 then B1, not overlapped.
"""
from __future__ import annotations

from collections import deque

Op = tuple
"""One program step: ('F', phase), ('B', phase, split), ('W',) or ('FB', forward phase, backward phase)."""


def dual_program(n: int, chunks: int, h: int) -> list[Op]:
    """The eight-step program of one rank at half-position ``h`` of ``n``, ``chunks`` micro-batches
    per phase (needs chunks >= 2n)."""
    if chunks < 2 * n:
        raise ValueError(f"DualPipe needs at least {2 * n} micro-batches per direction, got {chunks}")
    prog: list[Op] = [("F", 0)] * (2 * (n - h - 1))
    prog += [("F", 0), ("F", 1)] * (h + 1)
    prog += [("B", 1, True), ("W",), ("F", 1)] * (n - h - 1)
    for i in range(chunks - 2 * n + h + 1):
        prog += [("F", 0), ("B", 1, False)] if i == 0 and h == n - 1 else [("FB", 0, 1)]
        prog.append(("FB", 1, 0))
    prog += [("B", 1, False), ("FB", 1, 0)] * (n - h - 1)
    split = False
    for i in range(h + 1):
        if i == (h + 1) // 2 and h % 2 == 1:
            split = True
        prog.append(("B", 1, split))
        if i == (h + 1) // 2 and h % 2 == 0:
            split = True
        prog.append(("B", 0, split))
    prog += [("W",), ("B", 0, True)] * (n - h - 1)
    prog += [("W",)] * (h + 1)
    return prog


def program_units(prog: list[Op], chunk: tuple[int, int], first_mb: tuple[int, int]) -> list[tuple]:
    """Units (kind, local chunk, micro-batch[, chunk, micro-batch]) of a program whose phase k runs
    local chunk ``chunk[k]`` on micro-batches ``first_mb[k]``, ``first_mb[k] + 1``, ..."""
    nf, nb = list(first_mb), list(first_mb)
    deferred: deque = deque()
    out: list[tuple] = []
    for op in prog:
        if op[0] == "F":
            out.append(("F", chunk[op[1]], nf[op[1]]))
            nf[op[1]] += 1
        elif op[0] == "B":
            ph = op[1]
            out.append(("B", chunk[ph], nb[ph]))
            if op[2]:
                deferred.append((chunk[ph], nb[ph]))
            nb[ph] += 1
        elif op[0] == "W":
            out.append(("W", *deferred.popleft()))
        else:
            f, b = op[1], op[2]
            out.append(("FB", chunk[f], nf[f], chunk[b], nb[b]))
            nf[f] += 1
            nb[b] += 1
    return out


def dualpipe(rank: int, pp: int, m: int) -> list[tuple]:
    """DualPipe order of ``rank``: local chunk 0 = its stage of the pipeline fed at rank 0 (micro-batches
    0..m/2-1), chunk 1 = its stage of the pipeline fed at rank pp-1 (micro-batches m/2..m-1)."""
    n, half = pp // 2, m // 2
    second = rank >= n
    h = pp - 1 - rank if second else rank
    # Phase 0 is the direction whose input enters at this rank's own end of the pipeline.
    chunk = (1, 0) if second else (0, 1)
    first = (half, 0) if second else (0, half)
    return program_units(dual_program(n, half, h), chunk, first)


def dualpipev(rank: int, pp: int, m: int) -> list[tuple]:
    """DualPipeV order of ``rank``: chunk 0 = stage ``rank``, chunk 1 = stage 2 pp - 1 - rank."""
    return program_units(dual_program(pp, m, rank), (0, 1), (0, 0))
