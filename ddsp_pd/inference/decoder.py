"""ddsp's ``RnnFcDecoder`` for inference, as pure functions over numpy arrays.

The same maths as :class:`ddsp_pd.decoder.Decoder` (the TensorFlow one used for training):
per input key an Fc stack (``layers_per_stack`` x Dense -> LayerNorm(eps 1e-3) -> leaky
ReLU 0.2); a Keras GRU (reset_after; gates z, r, h) over the concatenated stacks; stacks
and GRU output through the output stack and a final Dense, split by ``output_splits``.

Everything is float32. Frames are decoded in blocks of :data:`DECODE_BLOCK_FRAMES`, the GRU
state carried from one block to the next, so memory is bounded whatever the clip's length
and a clip decoded in pieces (:func:`decode` with ``state``) equals the clip decoded whole.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ddsp_pd.config import ModelConfig
from ddsp_pd.errors import CheckpointError
from ddsp_pd.inference import kernels

__all__ = [
    "DECODE_BLOCK_FRAMES",
    "DecoderWeights",
    "FcLayer",
    "decode",
    "decoder_variable_shapes",
    "fc_stack",
    "fc_variable_names",
]

# Frames decoded at a time (16 s at 250 frames/s): a block's activations of the solo model
# are ~100 MB, whatever the length of the clip.
DECODE_BLOCK_FRAMES = 4000

LN_EPS = 1e-3
LEAK = 0.2
OUT_STACK = "decoder/out_stack"
DENSE_OUT = "decoder/dense_out"


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

    @property
    def parameter_count(self) -> int:
        """Number of scalars in the decoder (as stored in the checkpoint)."""
        return int(sum(int(np.prod(s)) for s in decoder_variable_shapes(self.config).values()))


# ------------------------------------------------------------------ maths


def _norm_act(y: np.ndarray, layer: FcLayer, backend: str) -> np.ndarray:
    """LayerNorm then leaky ReLU over the last axis of ``y`` ``[R, C]``, in place."""
    kernels.layer_norm_leaky(y, layer.gamma, layer.beta, LN_EPS, LEAK, backend)
    return y


def fc_stack(x: np.ndarray, layers: Sequence[FcLayer], backend: str = "numpy") -> np.ndarray:
    """An Fc stack over ``x`` ``[R]`` (a scalar input per row) or ``[R, in]`` -> ``[R, ch]``."""
    for i, layer in enumerate(layers):
        if i == 0 and x.ndim == 1:
            # A scalar input times a [1, ch] kernel is a broadcast, not a matrix product.
            y = x[:, None] * layer.kernel[0] + layer.bias
        else:
            y = x @ layer.kernel
            y += layer.bias
        x = _norm_act(y, layer, backend)
    return x


def _decode_block(
    weights: DecoderWeights,
    inputs: Sequence[np.ndarray],
    h: np.ndarray,
    backend: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Raw outputs ``[B, T, n_outputs]`` of one block of frames and the last GRU state."""
    config = weights.config
    batch, n_frames = inputs[0].shape
    units = config.rnn_channels
    rows = batch * n_frames
    stacks = [
        fc_stack(x.reshape(rows), layers, backend)
        for x, layers in zip(inputs, weights.stacks, strict=True)
    ]
    x = stacks[0] if len(stacks) == 1 else np.concatenate(stacks, axis=1)
    fused = x @ weights.fused_kernel
    fused += weights.fused_bias
    gates = fused.reshape(batch, n_frames, -1)  # the GRU reads the first 3U columns
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
        )
    # A contiguous result (not a view into ``fused``) keeps the row kernels fast.
    y = rnn_out.reshape(rows, units) @ weights.out_first_rnn
    y += fused[:, 3 * units :]
    y = _norm_act(y, weights.out_first, backend)
    y = fc_stack(y, weights.out_rest, backend)
    out = y @ weights.dense_kernel
    out += weights.dense_bias
    return out.reshape(batch, n_frames, -1), h_last


def decode(
    weights: DecoderWeights,
    inputs: Mapping[str, np.ndarray],
    state: np.ndarray | None = None,
    backend: str = "numpy",
    block_frames: int | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Decode scaled features: ``inputs`` maps each of ``config.input_keys`` to ``[B, T]``.

    Returns the raw outputs ``{name: [B, T, size]}`` (``config.output_splits``) and the
    GRU state after the last frame, ``[B, U]``. ``state`` is the state before the first
    frame (zeros when None): passing one call's state to the next decodes a long clip in
    pieces exactly as in one piece. ``backend`` names the kernels (``"numpy"`` or
    ``"compiled"``, see :mod:`ddsp_pd.inference.kernels`).
    """
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
        out[:, start : start + block], h = _decode_block(weights, piece, h, backend)
    result = {}
    offset = 0
    for name, size in config.output_splits:
        result[name] = out[..., offset : offset + size]
        offset += size
    return result, h
