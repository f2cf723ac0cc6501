"""ddsp's ``RnnFcDecoder`` for inference, as pure functions over numpy arrays.

The same maths as :class:`ddsp_pd.decoder.Decoder` (the TensorFlow one used for training):
per input key an Fc stack (``layers_per_stack`` x Dense -> LayerNorm(eps 1e-3) -> leaky
ReLU 0.2); a Keras GRU (reset_after; gates z, r, h) over the concatenated stacks; stacks
and GRU output through the output stack and a final Dense, split by ``output_splits``.

Everything is float32. Frames are decoded in blocks of :data:`DECODE_BLOCK_FRAMES`, the GRU
state carried from one block to the next, so memory is bounded whatever the clip's length
and a clip decoded in pieces (:func:`decode` with ``state``) equals the clip decoded whole.

Each input's stack enters the GRU and the output stack only through its product with its
rows of the fused kernel; a :class:`StackCache` keeps those products, so a re-render in
which one input changed (a loudness shift leaves f0 alone, an octave leaves loudness)
computes only the changed input's stack. ``precision="fast"`` reads those products from
tables over the scalar input (:mod:`ddsp_pd.inference.stack_table`) instead of computing
them, runs the GRU's recurrent kernel in 8 bits where that pays
(:class:`ddsp_pd.inference.kernels.QuantizedKernel`,
:func:`~ddsp_pd.inference.kernels.quantized_recurrent_pays`) and, in calls of a few frames
(a live stream's steps), the other kernels in 16 bits; everything else is the same
float32. Calls of a few frames on the compiled backend read each kernel once for all their
rows (:class:`FewRowsForms`).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ddsp_pd.config import ModelConfig
from ddsp_pd.errors import CheckpointError
from ddsp_pd.inference import kernels
from ddsp_pd.inference.stack_table import ScalarTable

__all__ = [
    "DECODE_BLOCK_FRAMES",
    "PRECISIONS",
    "DecoderWeights",
    "FcLayer",
    "FewRowsForms",
    "StackCache",
    "decode",
    "decoder_variable_shapes",
    "fc_stack",
    "fc_variable_names",
]

# Frames decoded at a time (16 s at 250 frames/s): a block's activations of the solo model
# are ~100 MB, whatever the length of the clip.
DECODE_BLOCK_FRAMES = 4000

#: ``"exact"``: float32 throughout (what the parity tests check); ``"fast"``: tabulated
#: input stacks, the GRU's recurrent kernel in 8 bits where it pays (and, in steps of a few
#: frames, the other kernels in 16), within the bound tests/test_precision.py states.
PRECISIONS = ("exact", "fast")

LN_EPS = 1e-3
LEAK = 0.2
OUT_STACK = "decoder/out_stack"
DENSE_OUT = "decoder/dense_out"

# The thread that takes the second half of a long block's row-wise work (made on first use).
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def fc_variable_names(prefix: str, layers: int) -> list[tuple[str, str, str, str]]:
    """ddsp names ``(kernel, bias, gamma, beta)`` of each Fc layer of a stack."""
    names = []
    for i in range(layers):
        base = f"{prefix}/layer_with_weights-{i}"
        names.append(
            (
                f"{base}/layer_with_weights-0/kernel",
                f"{base}/layer_with_weights-0/bias",
                f"{base}/layer_with_weights-1/gamma",
                f"{base}/layer_with_weights-1/beta",
            )
        )
    return names


def decoder_variable_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """ddsp name -> shape of every decoder variable of a model with this config."""
    ch, units, n_in = config.ch, config.rnn_channels, len(config.input_keys)
    shapes: dict[str, tuple[int, ...]] = {}

    def stack(prefix: str, first_in: int) -> None:
        for i, (k, b, g, beta) in enumerate(fc_variable_names(prefix, config.layers_per_stack)):
            shapes[k] = (first_in if i == 0 else ch, ch)
            shapes[b] = shapes[g] = shapes[beta] = (ch,)

    for prefix in config.stack_names:
        stack(prefix, 1)
    shapes[f"{config.rnn_name}/kernel"] = (n_in * ch, 3 * units)
    shapes[f"{config.rnn_name}/recurrent_kernel"] = (units, 3 * units)
    shapes[f"{config.rnn_name}/bias"] = (2, 3 * units)
    stack(OUT_STACK, n_in * ch + units)
    shapes[f"{DENSE_OUT}/kernel"] = (ch, config.n_outputs)
    shapes[f"{DENSE_OUT}/bias"] = (config.n_outputs,)
    return shapes


@dataclass(frozen=True)
class FcLayer:
    """Dense -> LayerNorm -> leaky ReLU: ``kernel [in, out]``, the rest ``[out]``."""

    kernel: np.ndarray
    bias: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray


@dataclass(frozen=True)
class DecoderWeights:
    """The decoder's weights as contiguous float32 arrays, arranged for inference.

    ``fused_kernel`` is ``[n * ch, 3U + ch]``: the GRU input kernel beside the rows of the
    output stack's first kernel that read the input stacks, so that both products over the
    stacks are one matrix product. ``out_first_rnn`` holds that first kernel's other rows
    (those reading the GRU output). ``recurrent_kernel_t`` is the recurrent kernel
    transposed, the layout the compiled GRU reads.
    """

    config: ModelConfig
    stacks: tuple[tuple[FcLayer, ...], ...]
    fused_kernel: np.ndarray
    fused_bias: np.ndarray
    recurrent_kernel: np.ndarray
    recurrent_kernel_t: np.ndarray
    recurrent_bias: np.ndarray
    out_first_rnn: np.ndarray
    out_first: FcLayer
    out_rest: tuple[FcLayer, ...]
    dense_kernel: np.ndarray
    dense_bias: np.ndarray

    @classmethod
    def from_variables(
        cls, config: ModelConfig, variables: Mapping[str, np.ndarray]
    ) -> DecoderWeights:
        """Check every decoder variable's presence and shape; arrange them for inference."""
        shapes = decoder_variable_shapes(config)
        v: dict[str, np.ndarray] = {}
        for name, shape in shapes.items():
            if name not in variables:
                raise CheckpointError(f"checkpoint lacks decoder variable {name}")
            value = np.asarray(variables[name], dtype=np.float32)
            if value.shape != shape:
                raise CheckpointError(
                    f"decoder variable {name} has shape {list(value.shape)}, expected {list(shape)}"
                )
            v[name] = np.ascontiguousarray(value)

        def layers(prefix: str) -> tuple[FcLayer, ...]:
            return tuple(
                FcLayer(*(v[n] for n in names))
                for names in fc_variable_names(prefix, config.layers_per_stack)
            )

        stacks = tuple(layers(prefix) for prefix in config.stack_names)
        out = layers(OUT_STACK)
        n_stack = len(config.input_keys) * config.ch
        rnn = config.rnn_name
        bias = v[f"{rnn}/bias"]
        first = out[0]
        fused = np.concatenate([v[f"{rnn}/kernel"], first.kernel[:n_stack]], axis=1)
        return cls(
            config=config,
            stacks=stacks,
            fused_kernel=np.ascontiguousarray(fused),
            fused_bias=np.concatenate([bias[0], first.bias]),
            recurrent_kernel=v[f"{rnn}/recurrent_kernel"],
            recurrent_kernel_t=np.ascontiguousarray(v[f"{rnn}/recurrent_kernel"].T),
            recurrent_bias=np.ascontiguousarray(bias[1]),
            out_first_rnn=np.ascontiguousarray(first.kernel[n_stack:]),
            out_first=first,
            out_rest=out[1:],
            dense_kernel=v[f"{DENSE_OUT}/kernel"],
            dense_bias=v[f"{DENSE_OUT}/bias"],
        )

    @cached_property
    def quantized_recurrent(self) -> kernels.QuantizedKernel:
        """The recurrent kernel in 8 bits (``precision="fast"``), made on first use."""
        return kernels.QuantizedKernel.of(self.recurrent_kernel_t)

    @cached_property
    def stack_tables(self) -> tuple[ScalarTable, ...]:
        """Each input's stack times its rows of the fused kernel, tabulated over the scaled
        input (``precision="fast"``, see :mod:`ddsp_pd.inference.stack_table`)."""
        ch = self.config.ch
        width = self.fused_kernel.shape[1]

        def table(i: int) -> ScalarTable:
            layers = self.stacks[i]
            rows = self.fused_kernel[i * ch : (i + 1) * ch]

            def products(points: np.ndarray) -> np.ndarray:
                # Always the numpy kernels: an entry must not depend on who filled it.
                return np.matmul(fc_stack(points, layers, "numpy"), rows)

            return ScalarTable(products, width)

        return tuple(table(i) for i in range(len(self.stacks)))

    @cached_property
    def few_rows_exact(self) -> FewRowsForms:
        """The kernels in 32 bits for few-row calls, made on first use."""
        return FewRowsForms.of(self, 32)

    @cached_property
    def few_rows_fast(self) -> FewRowsForms:
        """The kernels in 16 bits for few-row calls of ``precision="fast"`` (not the input
        stacks' nor the fused kernel's: fast reads those products from tables)."""
        return FewRowsForms.of(self, 16, inputs=False)

    @cached_property
    def few_rows_pack(self) -> FewRowsPack | None:
        """Every weight packed for one compiled call per few-row step of ``"exact"``
        (:class:`FewRowsPack`), made on first use; None for a decoder whose input stacks do
        not start from a scalar."""
        return FewRowsPack.of(self)

    def few_rows(self, precision: str) -> FewRowsForms:
        """:attr:`few_rows_fast` for ``"fast"``, else :attr:`few_rows_exact`."""
        return self.few_rows_fast if precision == "fast" else self.few_rows_exact

    @cached_property
    def parameter_count(self) -> int:
        """Number of scalars in the decoder (as stored in the checkpoint)."""
        return int(sum(int(np.prod(s)) for s in decoder_variable_shapes(self.config).values()))


@dataclass(frozen=True)
class FewRowsForms:
    """Every product kernel of a decoder as :class:`~ddsp_pd.inference.kernels.RowsKernel`
    (for calls of at most :data:`~ddsp_pd.inference.kernels.FEW_ROWS_MAX` rows on the
    compiled backend): ``stacks[i][k]`` (None for a first layer with a scalar input),
    ``fused[i]`` (input i's rows of the fused kernel), ``out_first_rnn``, ``out_rest``,
    ``dense``. 32 bits for ``"exact"``, 16 for ``"fast"``, whose ``stacks`` and ``fused``
    are empty: its input stacks come from tables (:attr:`DecoderWeights.stack_tables`)."""

    stacks: tuple[tuple[kernels.RowsKernel | None, ...], ...]
    fused: tuple[kernels.RowsKernel, ...]
    out_first_rnn: kernels.RowsKernel
    out_rest: tuple[kernels.RowsKernel, ...]
    dense: kernels.RowsKernel

    @classmethod
    def of(cls, weights: DecoderWeights, bits: int, inputs: bool = True) -> FewRowsForms:
        """The forms of ``weights``' kernels in ``bits`` (32 or 16); without the input
        stacks' and the fused kernel's when ``inputs`` is False."""

        def form(matrix: np.ndarray) -> kernels.RowsKernel:
            return kernels.RowsKernel.of(matrix, bits)

        def stack_forms(layers: Sequence[FcLayer]) -> tuple[kernels.RowsKernel | None, ...]:
            # A first layer with a scalar input is a broadcast in fc_stack, not a product.
            return tuple(
                None if k == 0 and layer.kernel.shape[0] == 1 else form(layer.kernel)
                for k, layer in enumerate(layers)
            )

        ch = weights.config.ch
        n = len(weights.stacks) if inputs else 0
        stacks = tuple(stack_forms(layers) for layers in weights.stacks[:n])
        fused = tuple(form(weights.fused_kernel[i * ch : (i + 1) * ch]) for i in range(n))
        return cls(
            stacks=stacks,
            fused=fused,
            out_first_rnn=form(weights.out_first_rnn),
            out_rest=tuple(form(layer.kernel) for layer in weights.out_rest),
            dense=form(weights.dense_kernel),
        )


@dataclass(frozen=True)
class FewRowsPack:
    """A decoder's weights in two flat float32 arrays for
    :func:`~ddsp_pd.inference.kernels.decode_few_rows`: ``mats`` holds the kernels
    transposed (``mat_table[j] = (offset, rows, cols)``), ``vecs`` the vectors
    (``vec_table[j] = (offset, length)``).

    Matrices: each input stack's layers (input-major, ``n_layers`` each, the first
    ``[ch, 1]``), each input's rows of the fused kernel, the output stack's first kernel's
    GRU rows, the output stack's other layers, the dense kernel. Vectors: bias, gamma, beta
    of each stack layer; the fused bias and the output stack's first gamma and beta; bias,
    gamma, beta of its other layers; the dense bias.
    """

    n_layers: int
    mats: np.ndarray
    mat_table: np.ndarray
    vecs: np.ndarray
    vec_table: np.ndarray

    @classmethod
    def of(cls, weights: DecoderWeights) -> FewRowsPack | None:
        """The pack of ``weights`` (None unless every input stack starts from a scalar)."""
        n_layers = weights.config.layers_per_stack
        if n_layers < 1 or any(layers[0].kernel.shape[0] != 1 for layers in weights.stacks):
            return None
        ch, n_in = weights.config.ch, len(weights.stacks)
        matrices = [layer.kernel for layers in weights.stacks for layer in layers]
        matrices += [weights.fused_kernel[i * ch : (i + 1) * ch] for i in range(n_in)]
        matrices += [weights.out_first_rnn, *(layer.kernel for layer in weights.out_rest)]
        matrices.append(weights.dense_kernel)
        vectors = [v for layers in weights.stacks for layer in layers
                   for v in (layer.bias, layer.gamma, layer.beta)]  # fmt: skip
        vectors += [weights.fused_bias, weights.out_first.gamma, weights.out_first.beta]
        vectors += [v for layer in weights.out_rest for v in (layer.bias, layer.gamma, layer.beta)]
        vectors.append(weights.dense_bias)
        mats, mat_table = _flatten([np.ascontiguousarray(m.T) for m in matrices])
        vecs, vec_table = _flatten(vectors)
        return cls(n_layers, mats, mat_table, vecs, vec_table)


def _flatten(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``arrays`` end to end in one float32 array, and a table ``(offset, *shape)`` each."""
    flat = np.concatenate([np.asarray(a, np.float32).ravel() for a in arrays])
    offsets = np.cumsum([0] + [a.size for a in arrays[:-1]])
    table = np.array([(o, *a.shape) for o, a in zip(offsets, arrays, strict=True)], np.int64)
    return flat, table


class StackCache:
    """Recent products of an input's stack with its rows of the fused kernel, by the
    input's name, the block's first frame and a digest of its values; least recently used
    first out past ``max_bytes``. Safe to share between threads; entries are read-only."""

    #: Blocks shorter than this are not worth a digest (a live stream's steps).
    MIN_FRAMES = 256

    def __init__(self, max_bytes: int = 80 * 2**20) -> None:
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(name: str, start: int, values: np.ndarray) -> tuple:
        """The key of one input's block."""
        values = np.ascontiguousarray(values, np.float32)
        digest = hashlib.blake2b(values.tobytes(), digest_size=16)
        digest.update(str(values.shape).encode())
        return (name, int(start), digest.hexdigest())

    def get(self, key: tuple) -> np.ndarray | None:
        """The product stored under ``key``, or None."""
        with self._lock:
            hit = self._entries.get(key)
            if hit is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return hit

    def put(self, key: tuple, value: np.ndarray) -> None:
        """Keep ``value`` (unless it alone exceeds the budget), dropping the oldest."""
        if value.nbytes > self.max_bytes:
            return
        value.flags.writeable = False
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            total = sum(v.nbytes for v in self._entries.values())
            while total > self.max_bytes and len(self._entries) > 1:
                _, dropped = self._entries.popitem(last=False)
                total -= dropped.nbytes

    @property
    def nbytes(self) -> int:
        """Bytes held."""
        with self._lock:
            return sum(v.nbytes for v in self._entries.values())

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._entries.clear()


# ------------------------------------------------------------------ maths


# OpenBLAS packs the weights for a product with a few rows, which costs more than the
# arithmetic: a [4, 512] x [512, 2048] product took 480 us, four row-by-vector products 250 us
# (a live step of a large model). Up to this many rows, and from this many weights, rows go
# one at a time.
_ROWWISE_MAX_ROWS = 4
_ROWWISE_MIN_WEIGHTS = 1 << 18


def _product(
    x: np.ndarray,
    w: np.ndarray,
    out: np.ndarray | None = None,
    form: kernels.RowsKernel | None = None,
) -> np.ndarray:
    """``x @ w`` (float32, ``x`` ``[R, K]``), into ``out`` if given; from ``form`` (``w``
    arranged for :func:`~ddsp_pd.inference.kernels.few_rows_product`) when given."""
    if form is not None:
        return kernels.few_rows_product(x, form, out)
    rows = x.shape[0]
    if 1 < rows <= _ROWWISE_MAX_ROWS and w.size >= _ROWWISE_MIN_WEIGHTS:
        if out is None:
            out = np.empty((rows, w.shape[1]), np.float32)
        for r in range(rows):
            np.matmul(x[r], w, out=out[r])
        return out
    return np.matmul(x, w, out=out)


def _norm_act(y: np.ndarray, layer: FcLayer, backend: str) -> np.ndarray:
    """LayerNorm then leaky ReLU over the last axis of ``y`` ``[R, C]``, in place."""
    kernels.layer_norm_leaky(y, layer.gamma, layer.beta, LN_EPS, LEAK, backend)
    return y


def fc_stack(
    x: np.ndarray,
    layers: Sequence[FcLayer],
    backend: str = "numpy",
    forms: Sequence[kernels.RowsKernel | None] | None = None,
) -> np.ndarray:
    """An Fc stack over ``x`` ``[R]`` (a scalar input per row) or ``[R, in]`` -> ``[R, ch]``
    (its products from ``forms``, one per layer, where given: see :class:`FewRowsForms`)."""
    for i, layer in enumerate(layers):
        if i == 0 and x.ndim == 1:
            # A scalar input times a [1, ch] kernel is a broadcast, not a matrix product.
            y = x[:, None] * layer.kernel[0] + layer.bias
        else:
            y = _product(x, layer.kernel, form=forms[i] if forms is not None else None)
            y += layer.bias
        x = _norm_act(y, layer, backend)
    return x


def _forget_pool() -> None:
    """In a forked child: the parent's pool thread does not exist there."""
    global _pool, _pool_lock
    _pool = None
    _pool_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_pool)


def _row_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ddsp-pd-rows")
        return _pool


def _in_halves(work: Callable[[slice], None], rows: int, threads: int) -> None:
    """``work(rows_slice)`` over ``0:rows``: in two halves on two threads when ``threads``
    is 2 (numpy, BLAS and the compiled kernels let go of the GIL), else in one call."""
    if threads < 2:
        work(slice(0, rows))
        return
    mid = rows // 2
    other = _row_pool().submit(work, slice(mid, rows))
    try:
        work(slice(0, mid))
    finally:
        other.result()


def _fused_products(
    weights: DecoderWeights,
    inputs: Sequence[np.ndarray],
    backend: str,
    cache: StackCache | None,
    start: int,
    threads: int,
    few: FewRowsForms | None = None,
    tables: Sequence[ScalarTable] | None = None,
) -> np.ndarray:
    """``concat(stacks) @ fused_kernel + fused_bias`` as the sum of each input's product
    with its rows (always summed so, in input order, whether a product comes from
    ``cache`` or not, so that a cached re-render equals a fresh one to the bit); from
    ``tables`` (one per input, interpolated) where given."""
    config = weights.config
    ch = config.ch
    rows = inputs[0].size
    width = weights.fused_kernel.shape[1]
    flat = [x.reshape(rows) for x in inputs]
    if tables is not None:
        for table, x in zip(tables, flat, strict=True):
            table.fill(x)  # before the halves split: each chunk is computed once
        cache = None  # the tables are the cache
    keys: list[tuple | None] = []
    hits: list[np.ndarray | None] = []
    for name, x in zip(config.input_keys, inputs, strict=True):
        key = None
        if cache is not None and x.shape[-1] >= StackCache.MIN_FRAMES:
            key = StackCache.key(name, start, x)
        keys.append(key)
        hits.append(cache.get(key) if cache is not None and key is not None else None)
    # A product to keep is computed into a full array of its own; one not kept is not.
    kept = [
        np.empty((rows, width), np.float32) if key is not None and hit is None else None
        for key, hit in zip(keys, hits, strict=True)
    ]
    fused = np.empty((rows, width), np.float32)

    def work(sl: slice) -> None:
        acc = fused[sl]
        scratch = None
        for i, layers in enumerate(weights.stacks):
            hit, keep = hits[i], kept[i]
            if hit is not None:
                part = hit[sl]
            else:
                if keep is not None:
                    part = keep[sl]
                elif i == 0:
                    part = acc
                else:
                    if scratch is None:
                        scratch = np.empty_like(acc)
                    part = scratch
                if tables is not None:
                    tables[i].interpolate(flat[i][sl], part)
                else:
                    stack = fc_stack(flat[i][sl], layers, backend, few.stacks[i] if few else None)
                    rows_i = weights.fused_kernel[i * ch : (i + 1) * ch]
                    _product(stack, rows_i, part, few.fused[i] if few else None)
            if i == 0:
                if part is not acc:
                    acc[...] = part
            else:
                acc += part
        acc += weights.fused_bias

    _in_halves(work, rows, threads)
    for key, keep in zip(keys, kept, strict=True):
        if cache is not None and key is not None and keep is not None:
            cache.put(key, keep)
    return fused


def _decode_block(
    weights: DecoderWeights,
    inputs: Sequence[np.ndarray],
    h: np.ndarray,
    backend: str,
    precision: str = "exact",
    cache: StackCache | None = None,
    start: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Raw outputs ``[B, T, n_outputs]`` of one block of frames and the last GRU state."""
    batch, n_frames = inputs[0].shape
    rows = batch * n_frames
    threads = kernels.worker_threads(rows)
    if threads < 2:
        return _decode_rows(weights, inputs, h, backend, precision, cache, start, 1)
    # Two threads of ours, one core each: BLAS's own second thread would only compete
    # with them (and its spinning after a product slows the GRU that follows).
    with kernels.single_blas_thread():
        return _decode_rows(weights, inputs, h, backend, precision, cache, start, threads)


def _decode_rows(
    weights: DecoderWeights,
    inputs: Sequence[np.ndarray],
    h: np.ndarray,
    backend: str,
    precision: str,
    cache: StackCache | None,
    start: int,
    threads: int,
) -> tuple[np.ndarray, np.ndarray]:
    config = weights.config
    batch, n_frames = inputs[0].shape
    units = config.rnn_channels
    rows = batch * n_frames
    few = None
    if backend == "compiled" and rows <= kernels.FEW_ROWS_MAX:
        if precision == "exact" and weights.few_rows_pack is not None:
            return _decode_packed(weights, weights.few_rows_pack, inputs, h)
        few = weights.few_rows(precision)
    tables = weights.stack_tables if precision == "fast" else None
    fused = _fused_products(weights, inputs, backend, cache, start, threads, few, tables)
    gates = fused.reshape(batch, n_frames, -1)  # the GRU reads the first 3U columns
    quantized = None
    if precision == "fast" and kernels.quantized_recurrent_pays():
        quantized = weights.quantized_recurrent
    rnn_out = np.empty((batch, n_frames, units), np.float32)
    h_last = np.empty((batch, units), np.float32)
    for b in range(batch):
        h_last[b] = kernels.gru_recurrence(
            gates[b],
            weights.recurrent_kernel,
            weights.recurrent_bias,
            h[b],
            rnn_out[b],
            backend,
            weights.recurrent_kernel_t,
            quantized,
            threads if n_frames >= kernels.GRU_SPLIT_MIN_FRAMES else 1,
        )
    rnn_rows = rnn_out.reshape(rows, units)
    out = np.empty((rows, config.n_outputs), np.float32)

    def head(sl: slice) -> None:
        # A contiguous result (not a view into ``fused``) keeps the row kernels fast.
        y = _product(rnn_rows[sl], weights.out_first_rnn, None, few.out_first_rnn if few else None)
        y += fused[sl, 3 * units :]
        y = _norm_act(y, weights.out_first, backend)
        y = fc_stack(y, weights.out_rest, backend, few.out_rest if few else None)
        _product(y, weights.dense_kernel, out[sl], few.dense if few else None)
        out[sl] += weights.dense_bias

    _in_halves(head, rows, threads)
    return out.reshape(batch, n_frames, -1), h_last


def _decode_packed(
    weights: DecoderWeights,
    pack: FewRowsPack,
    inputs: Sequence[np.ndarray],
    h: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_decode_rows` of a few frames in one compiled call: the same loops on the
    same rows, equal to float32 rounding (the compiler may vectorise the inlined sums
    differently, so not always to the bit)."""
    batch, n_frames = inputs[0].shape
    x = np.stack([np.asarray(a, np.float32).reshape(-1) for a in inputs])  # [n_in, B * T]
    out = np.empty((batch * n_frames, weights.config.n_outputs), np.float32)
    h_last = np.array(h, np.float32, copy=True).reshape(batch, -1)
    kernels.decode_few_rows(
        x, pack, weights.recurrent_kernel_t, weights.recurrent_bias, h_last, out, LN_EPS, LEAK
    )
    return out.reshape(batch, n_frames, -1), h_last


def decode(
    weights: DecoderWeights,
    inputs: Mapping[str, np.ndarray],
    state: np.ndarray | None = None,
    backend: str = "numpy",
    block_frames: int | None = None,
    precision: str = "exact",
    cache: StackCache | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Decode scaled features: ``inputs`` maps each of ``config.input_keys`` to ``[B, T]``.

    Returns the raw outputs ``{name: [B, T, size]}`` (``config.output_splits``) and the
    GRU state after the last frame, ``[B, U]``. ``state`` is the state before the first
    frame (zeros when None): passing one call's state to the next decodes a long clip in
    pieces exactly as in one piece. ``backend`` names the kernels (``"numpy"`` or
    ``"compiled"``, see :mod:`ddsp_pd.inference.kernels`); ``precision`` one of
    :data:`PRECISIONS`. ``cache`` keeps and reuses each input's stack products (only use
    it where the state is the start of a clip: the key is the block's first frame).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    config = weights.config
    args = [np.asarray(inputs[key], dtype=np.float32) for key in config.input_keys]
    batch, n_frames = args[0].shape
    for key, x in zip(config.input_keys, args, strict=True):
        if x.shape != (batch, n_frames):
            raise ValueError(f"decoder input {key} has shape {x.shape}, expected {args[0].shape}")
    units = config.rnn_channels
    h = np.zeros((batch, units), np.float32) if state is None else np.array(state, np.float32)
    block = int(block_frames or DECODE_BLOCK_FRAMES)
    out = np.empty((batch, n_frames, config.n_outputs), np.float32)
    for start in range(0, n_frames, block):
        piece = [x[:, start : start + block] for x in args]
        out[:, start : start + block], h = _decode_block(
            weights, piece, h, backend, precision, cache, start
        )
    result = {}
    offset = 0
    for name, size in config.output_splits:
        result[name] = out[..., offset : offset + size]
        offset += size
    return result, h
