"""What nc's learned codecs share for rate control, and the learned video codecs for packets.

`largest_that_fits`: a codec whose payload grows with a quality step finds the largest step whose
payload fits a byte budget (image/hvae per image, video/wfvae and video/bsqvit per GOP);
`filtered_within` does it for a payload that may carry a post-filter (nc/codecs/postfilter.py), and
`refined_filtered_within` for one whose latents are refined at `--effort 1` (nc/models/refine.py).

`GopEncoder`: frames arrive in blocks of any size; every GOP frames (the last GOP: the rest) become
one packet, a seek point, coded by the subclass's `code_gop` from the GOP's frames, padded by
repeating the last one to a multiple of the network's frames per latent frame (on small frames,
several GOPs at once on as many threads). Frames are copied as they arrive (a caller may refill one
buffer), so the encoder holds the GOP it collects and those it codes.
`GopDecoder` decodes each packet alone, several GOPs at once on as many threads. `GopModel` lends
networks, each with causal caches for one GOP, and the threads both run GOPs on; `LearnedVideoCodec`
is the codec shell (one weights file, a quality or a bitrate).
"""
from __future__ import annotations

import copy
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np

from nc.codecs.base import Codec, CodecDescriptor, Decoder, Encoder, Packet, RatePoint, RateRange, check_effort
from nc.errors import PluginError, UsageError, one_line
from nc.media.facts import VideoFacts

BPS = RateRange("bps", 1_000, 50_000_000)  # a target for each packet's payload, per second of its frames
#: GOPs synthesized (decoders) or coded (encoders) at once, by all of one model (and by one decoder or
#: encoder at most torch's thread count): each holds a network and a GOP of frames, so this bounds
#: memory as well as threads
MAX_DECODE_WORKERS = 4
#: frame area one decoder's GOPs in flight may add up to: a video/wfvae synthesis holds about 1 GB of
#: activations at 854x480 (bench/results/video_memory.md), so 480p decodes two GOPs at once, 240p
#: four, and 720p and up one at a time
PARALLEL_DECODE_PIXELS = 2 * 854 * 480
#: the same for an encoder's GOPs: two at once gave 1.25 times the speed on 320x240 frames (192 of
#: samples/clip.mp4, video/wfvae, 2 threads) but none on 854x480 (3.5 fps either way) for 700 MiB
#: more, the cores' memory bandwidth spent (by hand); so 416x312 codes two GOPs at once, 640x360 one
PARALLEL_ENCODE_PIXELS = 2 * 416 * 312


def largest_that_fits(code: Callable[[int], bytes], steps: int, budget: float) -> bytes:
    """code(step)'s payload for the largest step in [0, steps) whose payload is at most `budget` bytes
    (payload sizes rise with the step); step 0's when none fits, the smallest the codec makes."""
    lo, hi = 0, steps - 1
    best = code(0)
    if len(best) > budget:
        return best
    while lo < hi:  # invariant: step lo fits
        mid = (lo + hi + 1) // 2
        data = code(mid)
        if len(data) <= budget:
            lo, best = mid, data
        else:
            hi = mid - 1
    return best


def filtered_within(search: Callable[[float], bytes], budget: float, filtered: Callable[[bytes], bytes]) -> bytes:
    """The best payload within `budget` bytes of a codec with a post-filter (image/hvae, video/wfvae):
    `search(b)` gives its largest payload within b bytes without a filter, `filtered(p)` adds the
    filter to p where it pays (p itself where none does). The filter's bytes are set aside as
    measured on search(budget)'s payload, and the search runs again below them; where the filter
    then no longer fits (or no longer pays), search(budget)'s payload without one."""
    plain = search(budget)
    first = filtered(plain)
    if first is plain or len(first) <= budget:
        return first
    below = search(budget - (len(first) - len(plain)))
    second = filtered(below)
    return second if second is not below and len(second) <= budget else plain


def refined_filtered_within(search: Callable[[float], bytes], budget: float, filtered: Callable[[bytes], bytes],
                            code: Callable[[int], bytes], refined: Callable[[int], bytes], steps: int,
                            step_of: Callable[[bytes], int]) -> bytes:
    """`filtered_within` at `--effort 1` (image/hvae, video/wfvae): `refined(step)` is step's payload
    with refined latents, without a filter, and takes far longer than `code(step)`, the plain one.
    The filter's bytes are set aside as a filter fitted to the plain payload measures them;
    refinement at the step found spends fewer bits, so the step is raised by what it saved (judged
    from the plain sizes) and refined once more. The refined payload is kept without its filter if
    the filter outgrows what was set aside."""
    plain = search(budget)
    within = budget - (len(filtered(plain)) - len(plain))
    payload = _refined_within(search(within), within, code, refined, steps, step_of)
    best = filtered(payload)
    return best if len(best) <= budget else payload


def _refined_within(plain: bytes, budget: float, code, refined, steps: int, step_of) -> bytes:
    """The best refined payload within `budget` bytes, from `plain`, the largest plain one within it;
    `plain` if none fits."""
    step = step_of(plain)
    first = refined(step)
    if len(first) > budget:  # refinement spent more (rare), or the target lies below the smallest step's size
        return min(first, plain, key=len)
    higher = step_of(largest_that_fits(code, steps, budget * len(plain) / len(first)))
    if higher > step:
        second = refined(higher)
        if len(second) <= budget:
            return second
    return first


def checked_frames(block, facts: VideoFacts) -> np.ndarray:
    """A video encoder's input as uint8 (n, height, width, 3) (one frame may come without the n axis);
    UsageError for anything else."""
    block = np.asarray(block)
    if block.ndim == 3:
        block = block[None]
    if block.shape[1:] != (facts.height, facts.width, 3) or block.dtype != np.uint8:
        raise UsageError(f"expected uint8 frames of shape (n, {facts.height}, {facts.width}, 3), "
                         f"got {block.dtype} {block.shape}")
    return block


class GopEncoder(Encoder):
    """Cuts the stream into GOPs of `gop` frames and hands each, padded to a multiple of `multiple`
    frames, to `code_gop(frames, duration)`; packet start and duration count the real frames.

    Given its `model`, it codes up to `model.encode_workers(facts)` consecutive GOPs at once on the
    model's pool (as `GopDecoder` synthesizes them), each on one thread, so the bytes do not depend on
    the thread count; packets come out in order, lagging by up to workers - 1 GOPs. With one worker
    (frames larger than PARALLEL_ENCODE_PIXELS / 2, or one torch thread), no model, or `parallel`
    False (an encoder whose GOPs want every thread), each GOP is coded on the caller's threads as it
    completes. After a GOP fails to code, the encoder refuses to go on: the
    GOPs after it are lost, and a file must not close with a hole."""

    def __init__(self, facts: VideoFacts, gop: int, multiple: int, model: "GopModel | None" = None,
                 parallel: bool = True):
        self.facts, self.gop, self.multiple = facts, gop, multiple
        self.params: dict = {}
        self.pending: list[np.ndarray] = []  # frames of the GOP being collected
        self.frames = 0  # frames coded so far
        self.model = model
        self.workers = model.encode_workers(facts) if model is not None and parallel else 1
        self.threads = None if model is None else model.torch.get_num_threads()  # the caller's
        self.coding: deque = deque()  # (start, duration, future) of the GOPs handed to the pool, in order
        self.failure: str | None = None

    def code_gop(self, frames: np.ndarray, duration: int) -> bytes:
        raise NotImplementedError

    def encode(self, block) -> list[Packet]:
        self._check_not_failed()
        out = []
        for frame in checked_frames(block, self.facts):
            self.pending.append(frame.copy())  # the caller may reuse its buffer
            if len(self.pending) == self.gop:
                out += self._start()
        return out

    def flush(self) -> list[Packet]:
        self._check_not_failed()
        out = self._start() if self.pending else []
        return out + self._take(len(self.coding))

    def _check_not_failed(self) -> None:
        if self.failure is not None:
            raise UsageError(f"this encoder stopped at a GOP it could not code ({self.failure})")

    def _start(self) -> list[Packet]:
        """Code the collected GOP (on the pool with several workers: then the packets due now)."""
        frames, self.pending = self.pending, []
        duration = len(frames)
        frames += [frames[-1]] * (-duration % self.multiple)
        start, self.frames = self.frames, self.frames + duration
        if self.workers == 1:
            return [Packet(self._guarded(self.code_gop, np.stack(frames), duration), start, duration, keyframe=True)]
        self.coding.append((start, duration, self.model.pool.submit(self._on_one_thread, np.stack(frames), duration)))
        return self._take(len(self.coding) - self.workers + 1)

    def _on_one_thread(self, frames: np.ndarray, duration: int) -> bytes:
        """code_gop on a pool thread, with one torch thread (and the caller's count set back after:
        see GopDecoder._synthesize)."""
        torch = self.model.torch
        try:
            torch.set_num_threads(1)
            return self.code_gop(frames, duration)
        finally:
            torch.set_num_threads(self.threads)

    def _take(self, count: int) -> list[Packet]:
        """The packets of the `count` oldest GOPs being coded."""
        out = []
        for _ in range(max(0, count)):
            start, duration, future = self.coding.popleft()
            out.append(Packet(self._guarded(future.result), start, duration, keyframe=True))
        return out

    def _guarded(self, code, *args) -> bytes:
        """code(*args); where it raises, the encoder is marked failed and the GOPs in flight dropped."""
        try:
            return code(*args)
        except BaseException as e:
            self.failure = one_line(e)
            for _, _, later in self.coding:
                later.cancel()  # one already running finishes on its own network; its bytes are dropped
            self.coding.clear()
            raise


class GopDecoder(Decoder):
    """Every GOP decodes alone: `model.read` (entropy decoding, which checks the payload), then
    `model.pixels` (the float synthesis).

    With workers > 1 the syntheses of up to `workers` consecutive GOPs run at once on the model's
    pool, one thread each. A synthesis runs on one thread whatever the worker count, so the pixels
    are those of one worker. `read` stays on the caller's thread, so a damaged packet fails at its
    own chunk and the GOPs before it are still handed out (by `flush`, which the reader calls
    before `reset`). Output lags by up to workers - 1 GOPs.
    """

    def __init__(self, model: "GopModel", facts: VideoFacts, workers: int | None = None):
        self.m, self.facts = model, facts
        self.workers = workers or model.decode_workers(facts)
        self.threads = model.torch.get_num_threads()  # the caller's (see _synthesize)
        self.pending: deque = deque()  # (first frame, future) of the GOPs being synthesized, in order

    def decode(self, packet: Packet) -> np.ndarray:
        latents = self.m.read(packet.payload, self.facts.height, self.facts.width, packet.duration)
        if self.workers == 1:
            return self._pixels(latents, packet.duration)
        future = self.m.pool.submit(self._synthesize, latents, packet.duration)
        self.pending.append((packet.start, future))
        return self._take(len(self.pending) - self.workers + 1)

    def flush(self) -> np.ndarray:
        return self._take(len(self.pending))

    def reset(self) -> None:
        for _, future in self.pending:
            future.cancel()  # a synthesis already running finishes on its own network; its frames are dropped
        self.pending.clear()

    def _pixels(self, latents, duration: int) -> np.ndarray:
        return self.m.pixels(latents, self.facts.height, self.facts.width)[:duration]

    def _synthesize(self, latents, duration: int) -> np.ndarray:
        """_pixels on a pool thread. Its one_thread sets this thread's torch threads to 1 and back,
        and torch.set_num_threads also sets the count that threads starting torch later take:
        set that back to the caller's count, or it could be left at 1."""
        try:
            return self._pixels(latents, duration)
        finally:
            self.m.torch.set_num_threads(self.threads)

    def _take(self, count: int) -> np.ndarray:
        """The frames of the `count` oldest pending GOPs. If one failed, every pending GOP is dropped
        (the reader pads the gap from the last frame it handed out) and the error names the GOP."""
        out = [np.zeros((0, self.facts.height, self.facts.width, 3), np.uint8)]
        for _ in range(max(0, count)):
            start, future = self.pending[0]
            try:
                out.append(future.result())
            except MemoryError:  # no fault of the file: said as it is, not as this GOP's damage
                self.reset()
                raise
            except Exception as e:
                self.reset()
                raise RuntimeError(f"the GOP at frame {start} could not be synthesized: {one_line(e)}") from e
            self.pending.popleft()
        return np.concatenate(out)


class GopModel:
    """Loaded video weights, and networks (each with `streaming(on)`) whose causal caches hold one
    GOP's state: `fresh_network` lends one to a GOP, copying `net` (kept unused, so it is never copied
    mid-call) when all are busy, so GOPs can be coded on several threads at once. Decoders and
    encoders share one pool of MAX_DECODE_WORKERS threads, which bounds the networks and GOPs in flight. Subclasses add
    `read(payload, height, width, duration)` -> latents and `pixels(latents, height, width)` -> uint8
    frames for `GopDecoder`."""

    def __init__(self, net):
        import torch

        self.net, self.torch = net, torch
        self.lock = threading.Lock()
        self.idle: list = []  # copies of net not lent out

    def decode_workers(self, facts: VideoFacts) -> int:
        """GOPs a decoder of these frames synthesizes at once: as many as torch's threads, at most
        MAX_DECODE_WORKERS, and as many as PARALLEL_DECODE_PIXELS holds (at least one)."""
        return self._workers(facts, PARALLEL_DECODE_PIXELS)

    def encode_workers(self, facts: VideoFacts) -> int:
        """GOPs an encoder of these frames codes at once: `decode_workers` within PARALLEL_ENCODE_PIXELS."""
        return self._workers(facts, PARALLEL_ENCODE_PIXELS)

    def _workers(self, facts: VideoFacts, pixels: int) -> int:
        by_area = pixels // (facts.width * facts.height)
        return max(1, min(MAX_DECODE_WORKERS, self.torch.get_num_threads(), by_area))

    @cached_property
    def pool(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(MAX_DECODE_WORKERS, thread_name_prefix="nc-gop")

    @contextmanager
    def fresh_network(self):
        """A network with empty caches, for one GOP, under inference mode."""
        with self._borrowed() as net, self.torch.inference_mode():
            net.streaming(True)
            try:
                yield net
            finally:
                net.streaming(False)

    @contextmanager
    def gradient_network(self):
        """A network for an encoder's gradients with respect to its inputs (`--effort 1`): whole
        GOPs at once (not streaming), autograd on, its weights frozen."""
        with self._borrowed() as net, self.torch.enable_grad():
            net.requires_grad_(False)
            yield net

    @contextmanager
    def _borrowed(self):
        with self.lock:
            net = self.idle.pop() if self.idle else copy.deepcopy(self.net)  # weights and all: a few MB
        try:
            yield net
        finally:
            with self.lock:
                self.idle.append(net)


class LearnedVideoCodec(Codec):
    """Subclasses name the codec and its quality range, and the classes that load the weights
    (`model_class(path)`) and code (`encoder_class(model, facts, rate)`; packets decode with `GopDecoder`)."""

    codec_id = ""
    bitstream_version = 1  # the track header's codec_version: raised when the payload changes
    efforts = 0  # the highest --effort; encoder_class takes `effort` when above 0
    quality: RateRange
    model_class: type
    encoder_class: type[Encoder]

    def __init__(self, weights: Path, summary: str, default: RatePoint, rank: int):
        from nc.models.weights import sha256_of

        if not Path(weights).is_file():
            raise PluginError(f"{self.codec_id} has no weights at {weights}")
        self.weights = weights
        self.descriptor = CodecDescriptor(
            id=self.codec_id, version=self.bitstream_version, modality="video", summary=summary,
            ranges=(self.quality, BPS),
            default=default, streaming=True, deterministic=True, weights_sha256=sha256_of(weights), rank=rank,
            efforts=self.efforts)

    @cached_property
    def model(self):
        return self.model_class(self.weights)

    def encoder(self, facts: VideoFacts, rate: RatePoint, effort: int = 0) -> Encoder:
        self.check(facts)
        check_effort(self.descriptor, effort)
        if rate.unit not in ("quality", "bps"):
            q = self.quality
            raise UsageError(f"{self.codec_id} takes a quality ({q.low:g}-{q.high:g}) or a bitrate, not {rate.unit}")
        return self.encoder_class(self.model, facts, rate, **({"effort": effort} if effort else {}))

    def decoder(self, facts: VideoFacts, rate: RatePoint, params: dict) -> Decoder:
        self.check(facts)
        return GopDecoder(self.model, facts)
