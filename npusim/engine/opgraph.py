"""Data dependencies of one pipeline unit's ops and collectives (what may run at the same time).

A pass lists its kernels and collectives in program order (``Pass.items``). Its graph:

- **main chain**: each item waits for the previous main item (activations or their gradients flow
  through the layer in order);
- **weight gradients** (``*_wgrad``) need only the output gradient that their dgrad also reads.
  When the plan overlaps TP or EP communication (``tp_comm_overlap``, ``ep_overlap``: Megatron
  runs the weight gradient beside the collective, userbuffers' bulk overlap and the delayed
  weight-gradient of EP overlap) they hang off the main chain, and nothing waits for them except
  the end of the unit and the next *blocking* collective; otherwise kernels run in program order
  on one stream and weight gradients stay on the main chain;
- a collective is **blocking** unless the plan overlaps its class (``tp_comm_overlap`` for TP,
  ``ep_overlap`` for EP; CP's ring exchange and ZeRO / DP traffic always run on their own stream):
  a blocking collective is issued on the compute stream, so it waits for every earlier item,
  weight gradients included, and everything after it waits for it;
- **shared experts** (``shared_*``, ``tp_shared_out``) run beside the routed path when
  ``ep_overlap`` is on: they need only the block's input (``post_norm``; ``residual_dropout_bwd``
  in the backward) and join the main chain at the block's end (``residual_dropout`` /
  ``post_norm_bwd``);
- **ZeRO-3 parameter gathers** (``zero3_param_gather*``, one per layer) run in their own lane in
  order, each at most ``prefetch`` layers ahead of the layer that needs it; that layer's first item
  waits for it. **DP gradient buckets** (``dp_grad_bucket*``, one per layer and group) start when
  the layer's weight gradients are done and the group's previous bucket has finished (one stream
  per DP group), and nothing waits for them.
- **activation swaps** (``offload_swap_out`` / ``offload_swap_in``, activation offload): a layer's
  swap-out starts when its forward is done and runs in order on the device-to-host lane; nothing
  waits for it but the end of the unit. Its swap-in runs on the host-to-device lane one layer
  ahead (as ZeRO-3 gathers) and the layer's first backward item waits for it.

Two passes in one unit (an overlapped forward + backward pair) are two independent graphs.
``ping_pong`` ties two identical passes to one compute stream the way two-batch overlap issues
them (serving's TBO): the halves' kernels alternate segment by segment between all-to-alls.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from npusim.workload.ops import Comm, Op

SHARED_PREFIXES = ("shared_", "tp_shared_out")
FORKS = ("post_norm", "residual_dropout_bwd")
JOINS = ("residual_dropout", "post_norm_bwd")
ZERO3 = "zero3_param_gather"
DP_BUCKET = "dp_grad_bucket"
SWAP_OUT = "offload_swap_out"
"""A layer's activations swapped to host after its forward (own lane, in order; nothing waits)."""
SWAP_IN = "offload_swap_in"
"""A layer's activations swapped back before its backward (own lane, prefetched like ZeRO-3 gathers)."""
LAYER_START = "layer_start"
"""Name of the ``Marker`` at the start of each layer in a pass; ZeRO-3 gathers key on it."""


@dataclass(frozen=True)
class Node:
    """One item of a unit with the indices (into the unit's node list) it waits for."""

    item: Op | Comm
    deps: tuple[int, ...]
    lane: str
    """'main', 'wgrad', 'shared', 'zero3', 'swap' (activation offload) or 'dp'."""
    chain: int
    """Which pass of the unit (0, or 1 for the second pass of an overlapped pair)."""


@dataclass(frozen=True)
class Overlap:
    """Which collectives run on their own stream (plan dependent)."""

    tp: bool = False
    ep: bool = False
    zero3_prefetch: int = 1
    """ZeRO-3 parameter gathers in flight ahead of the layer that needs them."""

    def blocking(self, c: Comm) -> bool:
        """True when ``c`` is issued on the compute stream (waits for all earlier work)."""
        if c.name.startswith((ZERO3, DP_BUCKET)) or c.kind in ("cp", "dp", "pp", "offload"):
            return False
        if c.kind == "tp":
            return not self.tp
        if c.kind == "ep":
            return not self.ep
        return True


def _is_wgrad(it) -> bool:
    return isinstance(it, Op) and "_wgrad" in it.name


def _is_shared(it) -> bool:
    return it.name.startswith(SHARED_PREFIXES)


def build_graph(passes: list[list], ov: Overlap) -> list[Node]:
    """Nodes of a unit made of ``passes`` (each a list of items in program order)."""
    nodes: list[Node] = []
    for chain, items in enumerate(passes):
        _chain_nodes(items, ov, chain, nodes)
    return nodes


PIPELINE_BEFORE = ("all_gather",)
"""Collectives whose output feeds the next kernel (pipelined chunk by chunk when overlapped)."""
PIPELINE_AFTER = ("reduce_scatter", "all_reduce")
"""Collectives that consume the previous kernel's output (pipelined chunk by chunk)."""


def pipeline_chunks(c: Comm, ov: Overlap) -> int:
    """Chunks a collective is split into to overlap the kernel next to it: TP collectives with
    ``tp_comm_overlap`` (Megatron's userbuffer ring exchange, one chunk per TP rank) and CP's KV
    exchange (ring attention, one block per CP rank); 1 (not pipelined) otherwise."""
    if c.kind == "tp" and ov.tp and c.group == "tp":
        return c.size
    if c.kind == "cp":
        return c.size
    return 1


def _split(it, n: int, j: int):
    """Chunk ``j`` of ``n`` of an op (rows split) or a collective (bytes split)."""
    from dataclasses import replace

    if isinstance(it, Comm):
        return replace(it, name=f"{it.name}#{j}", bytes=it.bytes / n)
    return replace(it, name=f"{it.name}#{j}", flops=it.flops / n, bytes=it.bytes / n, m=max(1, it.m // n))


def _pipelined(items: list, ov: Overlap) -> list:
    """Items with each pipelined (collective, kernel) pair replaced by one ('pipe', comm, op, n, first)
    entry, where ``first`` is 'comm' (the collective feeds the kernel) or 'op'."""
    out, i = [], 0
    while i < len(items):
        it = items[i]
        nxt = items[i + 1] if i + 1 < len(items) else None
        if (isinstance(it, Comm) and isinstance(nxt, Op) and it.collective in PIPELINE_BEFORE
                and nxt.kind in ("gemm", "attention") and pipeline_chunks(it, ov) > 1):
            out.append(("pipe", it, nxt, pipeline_chunks(it, ov), "comm"))
            i += 2
            continue
        if (isinstance(it, Op) and isinstance(nxt, Comm) and it.kind in ("gemm", "attention") and "_wgrad" not in it.name
                and nxt.collective in PIPELINE_AFTER and pipeline_chunks(nxt, ov) > 1):
            out.append(("pipe", nxt, it, pipeline_chunks(nxt, ov), "op"))
            i += 2
            continue
        out.append(it)
        i += 1
    return out


def _chain_nodes(items: list, ov: Overlap, chain: int, nodes: list[Node]) -> None:
    """Append the nodes of one pass."""
    last_main: int | None = None
    fork: int | None = None
    side: list[int] = []          # wgrads and other side items issued since the last blocking collective
    shared_tail: int | None = None
    shared_all: list[int] = []
    gathers: list[int] = []       # zero3 gather nodes, in order
    starts: list[int | None] = [] # main item before each layer start (where a gather may begin)
    pending: list[int] = []        # this layer's ZeRO-3 gather / swap-in, waited for by its first item
    swaps_in: list[int] = []
    last_swap_out: int | None = None
    wgrads_since_layer: list[int] = []
    last_bucket: dict[str, int] = {}

    def add(item, deps, lane) -> int:
        nodes.append(Node(item, tuple(sorted(set(d for d in deps if d is not None))), lane, chain))
        return len(nodes) - 1

    for it in _pipelined(items, ov):
        if isinstance(it, tuple):
            _, c, op, n, first = it
            prev_c = prev_o = None
            for j in range(n):
                if first == "comm":
                    prev_c = add(_split(c, n, j), [prev_c if j else last_main, *pending], "main")
                    prev_o = add(_split(op, n, j), [prev_c, prev_o], "main")
                else:
                    prev_o = add(_split(op, n, j), [prev_o if j else last_main, *pending], "main")
                    prev_c = add(_split(c, n, j), [prev_o, prev_c], "main")
            last_main = prev_o if first == "comm" else prev_c
            pending = []
            continue
        name = it.name
        if name == LAYER_START:
            starts.append(last_main)
            wgrads_since_layer = []
            continue
        if isinstance(it, Comm) and name.startswith(ZERO3):
            i = len(gathers)
            layer = len(starts) - 1
            prev_gather = gathers[-1] if gathers else None
            # may start once the main chain reached the start of layer (layer - prefetch)
            gate_layer = layer - ov.zero3_prefetch
            gate = starts[gate_layer] if 0 <= gate_layer < len(starts) else None
            gathers.append(add(it, [prev_gather, gate], "zero3"))
            pending.append(gathers[i])
            continue
        if isinstance(it, Comm) and name.startswith(SWAP_IN):
            # prefetched one layer ahead on the host-to-device lane, in order
            gate_layer = len(starts) - 1 - ov.zero3_prefetch
            gate = starts[gate_layer] if 0 <= gate_layer < len(starts) else None
            swaps_in.append(add(it, [swaps_in[-1] if swaps_in else None, gate], "swap"))
            pending.append(swaps_in[-1])
            continue
        if isinstance(it, Comm) and name.startswith(SWAP_OUT):
            last_swap_out = add(it, [last_main, last_swap_out], "swap")
            continue
        if isinstance(it, Comm) and name.startswith(DP_BUCKET):
            # buckets of one group run in order on that group's stream
            last_bucket[it.group] = add(it, list(wgrads_since_layer) + [last_main, last_bucket.get(it.group)], "dp")
            continue
        if ov.ep and _is_shared(it):
            dep = shared_tail if shared_tail is not None else fork
            shared_tail = add(it, [dep, *pending], "shared")
            shared_all.append(shared_tail)
            continue
        if _is_wgrad(it) and (ov.tp or ov.ep):
            w = add(it, [last_main, *pending], "wgrad")
            side.append(w)
            wgrads_since_layer.append(w)
            continue
        deps = [last_main, *pending]
        if isinstance(it, Comm) and ov.blocking(it):
            deps += side + shared_all
            side = []
        if name in JOINS and shared_tail is not None:
            deps.append(shared_tail)
            shared_tail = None
            shared_all = []
        last_main = add(it, deps, "main")
        pending = []
        if name in FORKS:
            fork = last_main


def tbo_segments(nodes: list[Node], chain: int) -> list[list[int]]:
    """Indices of ``chain``'s kernels, split at its EP collectives (stages of a two-batch overlap)."""
    segs: list[list[int]] = [[]]
    for i, n in enumerate(nodes):
        if n.chain != chain:
            continue
        if isinstance(n.item, Comm) and n.item.kind == "ep":
            if segs[-1]:
                segs.append([])
        elif isinstance(n.item, Op):
            segs[-1].append(i)
    return [s for s in segs if s]


def ping_pong(nodes: list[Node]) -> list[Node]:
    """Chains 0 and 1 on one compute stream in two-batch-overlap order: half A's kernels up to its
    next all-to-all, then half B's, then A's next segment, and so on (SGLang / DeepEP two-batch
    overlap), so each half's all-to-all runs while the other half computes. Adds the stream-order
    dependencies: B's segment k waits for A's segment k, A's segment k + 1 for B's segment k."""
    a, b = tbo_segments(nodes, 0), tbo_segments(nodes, 1)
    extra: dict[int, set[int]] = {}
    for k in range(min(len(a), len(b))):
        extra.setdefault(b[k][0], set()).add(a[k][-1])
        if k + 1 < len(a):
            extra.setdefault(a[k + 1][0], set()).add(b[k][-1])
    return [replace(n, deps=tuple(sorted(set(n.deps) | extra[i]))) if i in extra else n
            for i, n in enumerate(nodes)]
