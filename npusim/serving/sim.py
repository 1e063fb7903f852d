"""Request-level serving on the SimPy engine: arrivals, per-instance schedulers, KV transfers.

Each instance is a SimPy process that runs one step at a time. A collocated instance runs
continuous batching with chunked prefill: every step decodes one token for each running sequence
and prefills up to ``prefill_chunk_tokens`` prompt tokens of waiting requests (first come, first
served), admitting a request only while the KV cache has room for its whole sequence. A request's
first token comes at the end of the step that finishes its prompt. Disaggregated: prefill
instances only prefill; a finished prompt's KV cache then moves to the least-loaded decode
instance over the prefill instance's scale-out links (a SimPy resource, so transfers queue), and
decode instances only decode. Requests go to the instance with the fewest outstanding requests
(ties: the lowest index). Step times: ``npusim.serving.steps.StepModel``.
"""
from __future__ import annotations

from collections import deque

import simpy

from npusim.serving.requests import Request
from npusim.serving.spec import ServeSpec
from npusim.serving.steps import StepModel
from npusim.workload.serving import kv_bytes, kv_elems_per_token


class Instance:
    """One model instance and its scheduler (mode: 'mixed', 'prefill' or 'decode')."""

    def __init__(self, env: simpy.Environment, steps: StepModel, spec: ServeSpec, mode: str, tracker: "Tracker",
                 handoff=None):
        self.env, self.steps, self.spec, self.mode, self.handoff = env, steps, spec, mode, handoff
        self.tracker = tracker
        self.waiting: deque[Request] = deque()
        """Requests whose prompt is not fully prefilled (mixed, prefill) or whose KV waits (decode)."""
        self.running: list[Request] = []
        self.kv_tokens = 0
        """KV-cache tokens reserved by admitted requests."""
        self.kv_capacity = steps.max_sequences(1024) * 1024
        self.admitted: set[int] = set()
        self.wake = env.event()
        self.link = simpy.Resource(env, capacity=1)
        """This instance's scale-out links, for outgoing KV transfers."""
        self.busy_s = 0.0
        env.process(self.loop())

    @property
    def outstanding(self) -> int:
        """Requests queued or running here."""
        return len(self.waiting) + len(self.running)

    def submit(self, req: Request) -> None:
        """Queue a request (a prompt, or on a decode instance a request whose KV has arrived)."""
        self.waiting.append(req)
        if not self.wake.triggered:
            self.wake.succeed()

    def _admit(self, req: Request) -> bool:
        """Reserve KV room for ``req`` when there is room (a request already admitted stays)."""
        if req.id in self.admitted:
            return True
        need = req.input_len + req.output_len
        cap = self.spec.max_batch
        if self.kv_tokens + need > self.kv_capacity and self.admitted or cap and len(self.admitted) >= cap:
            return False
        self.admitted.add(req.id)
        self.kv_tokens += need
        return True

    def _release(self, req: Request) -> None:
        self.admitted.discard(req.id)
        self.kv_tokens -= req.input_len + req.output_len

    def _plan_step(self) -> tuple[list[Request], list[tuple[Request, int]]]:
        """(sequences decoding, (request, prompt tokens) prefilled) in the next step."""
        decode = list(self.running)
        chunks: list[tuple[Request, int]] = []
        if self.mode == "decode":
            while self.waiting and self._admit(self.waiting[0]):
                decode.append(self.waiting.popleft())
                self.running.append(decode[-1])
            return decode, chunks
        budget = self.spec.prefill_chunk_tokens
        for req in self.waiting:
            if budget <= 0 or not self._admit(req):
                break
            n = min(budget, req.input_len - req.prefilled)
            chunks.append((req, n))
            budget -= n
        return decode, chunks

    def loop(self):
        """The scheduler: plan a step, run it for its step time, account its tokens."""
        while True:
            decode, chunks = self._plan_step()
            if not decode and not chunks:
                self.wake = self.env.event()
                yield self.wake
                continue
            ctx = sum(r.input_len + r.generated for r in decode) / len(decode) if decode else 0.0
            dt = self.steps.mixed_s(len(decode), ctx, sum(n for _, n in chunks))
            yield self.env.timeout(dt)
            self.busy_s += dt
            self._finish_step(decode, chunks)

    def _finish_step(self, decode: list[Request], chunks: list[tuple[Request, int]]) -> None:
        now = self.env.now
        firsts = sum(1 for r, n in chunks if r.prefilled + n >= r.input_len)
        self.tracker.tokens(len(decode) + firsts, sum(n for _, n in chunks))
        for req in decode:
            req.generated += 1
            if req.generated >= req.output_len:
                self._done(req, now)
        for req, n in chunks:
            req.prefilled += n
            if req.prefilled < req.input_len:
                continue
            self.waiting.remove(req)
            req.generated, req.first_token_s = 1, now
            if req.output_len <= 1:
                self._done(req, now)
            elif self.mode == "prefill":
                self._release(req)
                self.env.process(self.handoff(self, req))
            else:
                self.running.append(req)

    def _done(self, req: Request, now: float) -> None:
        req.done_s = now
        if req in self.running:
            self.running.remove(req)
        self._release(req)
        self.tracker.finished()


class Tracker:
    """Counts finished requests; ``all_done`` fires when the last one finishes or at the horizon."""

    def __init__(self, env: simpy.Environment, total: int, horizon_s: float, window_s: float):
        self.env, self.window_s = env, window_s
        self.output_tokens = 0
        """Output tokens produced by the end of the arrival window."""
        self.input_tokens = 0
        """Prompt tokens prefilled by the end of the arrival window."""
        self.left = total
        self.all_done = env.event()
        if total == 0:
            self.all_done.succeed()
        env.process(self._deadline(env, horizon_s))

    def tokens(self, output: int, prompt: int) -> None:
        """Count the tokens of a step that ended now."""
        if self.env.now <= self.window_s:
            self.output_tokens += output
            self.input_tokens += prompt

    def finished(self) -> None:
        """One request is done."""
        self.left -= 1
        if self.left == 0 and not self.all_done.triggered:
            self.all_done.succeed()

    def _deadline(self, env: simpy.Environment, horizon_s: float):
        yield env.timeout(horizon_s)
        if not self.all_done.triggered:
            self.all_done.succeed()


def kv_transfer_s(model, hw, plan, devices: int, tokens: int) -> float:
    """Seconds to move one sequence's KV cache of ``tokens`` tokens from a prefill instance of
    ``devices`` devices to a decode instance: every device sends its share over its own NICs at the
    profile's scale-out rate and efficiency, after one scale-out latency (plan dependent)."""
    nbytes = tokens * model.layers * kv_elems_per_token(model, 1) * kv_bytes(plan)
    c = hw.cluster
    rate = devices * c.nics_per_device * c.nic_bandwidth_GBps * 1e9 * hw.derating.scale_out_fraction
    return c.latency_us * 1e-6 + nbytes / rate


def run_requests(requests: list[Request], spec: ServeSpec, decode_steps: StepModel, window_s: float,
                 prefill_steps: StepModel | None = None) -> tuple[list[Instance], "Tracker", float]:
    """Simulate ``requests`` on the layout of ``spec``; return (instances, tracker, end time).
    ``prefill_steps`` is the prefill pool's step model (disaggregated; default: ``decode_steps``);
    tokens are counted up to ``window_s``."""
    env = simpy.Environment()
    last = requests[-1].arrival_s if requests else 0.0
    tracker = Tracker(env, len(requests), last + spec.drain_s, window_s)
    prefill_steps = prefill_steps or decode_steps
    if spec.disaggregated:
        decoders = [Instance(env, decode_steps, spec, "decode", tracker) for _ in range(spec.decode_instances)]
        m = prefill_steps

        def handoff(src: Instance, req: Request):
            """Move the KV cache over ``src``'s links, then queue the request on a decode instance."""
            with src.link.request() as slot:
                yield slot
                yield env.timeout(kv_transfer_s(m.model, m.hw, m.plan, m.devices, req.input_len))
            _least_loaded(decoders).submit(req)

        entry = [Instance(env, prefill_steps, spec, "prefill", tracker, handoff) for _ in range(spec.prefill_instances)]
        pools = entry + decoders
    else:
        entry = pools = [Instance(env, decode_steps, spec, "mixed", tracker) for _ in range(spec.instances)]

    def arrivals():
        """Release each request at its arrival time to the least-loaded entry instance."""
        for req in requests:
            if req.arrival_s > env.now:
                yield env.timeout(req.arrival_s - env.now)
            _least_loaded(entry).submit(req)

    env.process(arrivals())
    env.run(until=tracker.all_done)
    return pools, tracker, env.now


def _least_loaded(pool: list[Instance]) -> Instance:
    """The instance with the fewest outstanding requests (ties: the first)."""
    return min(pool, key=lambda i: i.outstanding)
