"""ddsp's ``RnnFcDecoder`` in plain TensorFlow, holding its weights under ddsp's names.

Per input key, an Fc stack (``layers_per_stack`` x Dense -> LayerNorm(eps 1e-3) ->
leaky ReLU 0.2); a Keras-style GRU (reset_after, gates z, r, h) over the concatenated
stacks from a zero state; the stacks and the GRU output concatenated through the output
stack and a final Dense, split by ``output_splits``.

The weights are ``tf.Variable``s in a ``tf.Module`` so that the same object serves
training (``__call__`` is differentiable; ``ddsp_variables`` gives the ddsp checkpoint
names) and the tests that compare it with the numpy inference path
(:mod:`ddsp_pd.inference.decoder`, which renders use; the variable names and shapes are
defined there once for both).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf
from scipy.special import expit as _expit

from ddsp_pd.config import ModelConfig
from ddsp_pd.errors import CheckpointError
from ddsp_pd.inference.decoder import decoder_variable_shapes
from ddsp_pd.inference.decoder import fc_variable_names as _fc_names

try:
    from threadpoolctl import threadpool_limits as _threadpool_limits
except ImportError:  # pragma: no cover - optional
    _threadpool_limits = None


def _single_blas_thread() -> contextlib.AbstractContextManager:
    """Numpy's BLAS limited to one thread.

    The products and the QR done here are small; with few cores, idle BLAS threads
    spinning against TensorFlow's own pool make them many times slower, not faster.
    """
    if _threadpool_limits is None:
        return contextlib.nullcontext()
    return _threadpool_limits(limits=1, user_api="blas")


__all__ = ["DECODE_BLOCK_FRAMES", "Decoder", "decoder_variable_shapes"]

# Inference decodes this many frames at a time (16 s at 250 frames/s): the activations
# of a block are ~100 MB, whatever the length of the clip.
DECODE_BLOCK_FRAMES = 4000

_LN_EPS = 1e-3
_LEAK = 0.2


def _glorot_uniform(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    fan_in, fan_out = shape[0], shape[-1]
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape).astype(np.float32)


def _orthogonal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    rows, cols = shape
    flat = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(flat)
    q *= np.sign(np.diag(r))  # makes the decomposition unique, as Keras does
    if rows < cols:
        q = q.T
    return q.astype(np.float32)


def _initial_value(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Keras defaults: glorot_uniform kernels, orthogonal recurrent kernel, zero biases,
    LayerNorm gamma 1 and beta 0."""
    leaf = name.rsplit("/", 1)[-1]
    if leaf == "recurrent_kernel":
        return _orthogonal(rng, shape)
    if leaf == "kernel":
        return _glorot_uniform(rng, shape)
    if leaf == "gamma":
        return np.ones(shape, np.float32)
    return np.zeros(shape, np.float32)


class Decoder(tf.Module):
    """RnnFcDecoder with ddsp-named variables.

    Build from checkpoint variables (``Checkpoint.variables``) or, with ``variables=None``,
    freshly initialised like Keras would (``seed`` makes that reproducible).
    Inputs are the scaled features in ``config.input_keys`` order, each ``[B, T]``;
    outputs are raw (unscaled) ``{name: [B, T, size]}`` per ``config.output_splits``.
    """

    def __init__(
        self,
        config: ModelConfig,
        variables: Mapping[str, np.ndarray] | None = None,
        seed: int | None = None,
        name: str = "decoder",
    ) -> None:
        super().__init__(name=name)
        self.config = config
        shapes = decoder_variable_shapes(config)
        rng = np.random.default_rng(seed)
        self._variables: dict[str, tf.Variable] = {}
        for var_name, shape in shapes.items():
            if variables is None:
                with _single_blas_thread():
                    value = _initial_value(var_name, shape, rng)
            else:
                if var_name not in variables:
                    raise CheckpointError(f"checkpoint lacks decoder variable {var_name}")
                value = np.asarray(variables[var_name], dtype=np.float32)
                if value.shape != shape:
                    raise CheckpointError(
                        f"decoder variable {var_name} has shape {list(value.shape)}, "
                        f"expected {list(shape)}"
                    )
            self._variables[var_name] = tf.Variable(
                value, trainable=True, name=var_name.replace("/", "_").replace("-", "_")
            )
        v = self._variables
        self._stacks = [
            [tuple(v[n] for n in layer) for layer in _fc_names(prefix, config.layers_per_stack)]
            for prefix in config.stack_names
        ]
        self._out_stack = [
            tuple(v[n] for n in layer)
            for layer in _fc_names("decoder/out_stack", config.layers_per_stack)
        ]
        self._gru = (
            v[f"{config.rnn_name}/kernel"],
            v[f"{config.rnn_name}/recurrent_kernel"],
            v[f"{config.rnn_name}/bias"],
        )
        self._dense_out = (v["decoder/dense_out/kernel"], v["decoder/dense_out/bias"])
        spec = [tf.TensorSpec([None, None], tf.float32) for _ in config.input_keys]
        self._stage_a = tf.function(self._stacks_and_gates, input_signature=spec)
        n_stack = len(config.input_keys) * config.ch
        self._stage_b = tf.function(
            self._head,
            input_signature=[
                tf.TensorSpec([None, None, n_stack], tf.float32),
                tf.TensorSpec([None, None, config.rnn_channels], tf.float32),
            ],
        )

    # ---------------------------------------------------------------- variables
    def ddsp_variables(self) -> dict[str, tf.Variable]:
        """``{ddsp name: tf.Variable}``, e.g. ``decoder/rnn/rnn/cell/kernel``."""
        return dict(self._variables)

    def numpy_variables(self) -> dict[str, np.ndarray]:
        """Current values as numpy arrays under their ddsp names."""
        return {name: var.numpy() for name, var in self._variables.items()}

    # ---------------------------------------------------------------- maths
    @staticmethod
    def _dense(x: tf.Tensor, kernel: tf.Variable, bias: tf.Variable) -> tf.Tensor:
        # A 2-D matmul over all frames is much faster than a broadcast batch matmul.
        shape = tf.shape(x)
        y = tf.matmul(tf.reshape(x, [-1, x.shape[-1]]), kernel) + bias
        return tf.reshape(y, [shape[0], shape[1], kernel.shape[-1]])

    def _fc_layer(
        self, x: tf.Tensor, layer: Sequence[tf.Variable], scalar_input: bool
    ) -> tf.Tensor:
        kernel, bias, gamma, beta = layer
        # A scalar input times a [1, ch] kernel is a broadcast, not a matmul.
        y = x[..., tf.newaxis] * kernel[0] + bias if scalar_input else self._dense(x, kernel, bias)
        return self._norm_act(y, gamma, beta)

    @staticmethod
    def _norm_act(y: tf.Tensor, gamma: tf.Variable, beta: tf.Variable) -> tf.Tensor:
        """LayerNorm over the last axis, then leaky ReLU."""
        mean, var = tf.nn.moments(y, axes=[-1], keepdims=True)
        y = (y - mean) * tf.math.rsqrt(var + _LN_EPS) * gamma + beta
        return tf.nn.leaky_relu(y, alpha=_LEAK)

    def _fc_stack(self, x: tf.Tensor, stack: Sequence, scalar_input: bool) -> tf.Tensor:
        for i, layer in enumerate(stack):
            x = self._fc_layer(x, layer, scalar_input and i == 0)
        return x

    def _stacks_and_gates(self, *inputs: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Input stacks concatenated ``[B, T, n * ch]`` and the GRU's input projection
        ``x W + b_input`` ``[B, T, 3U]`` (it does not depend on the state)."""
        stacks = [
            self._fc_stack(tf.cast(x, tf.float32), s, True)
            for x, s in zip(inputs, self._stacks, strict=True)
        ]
        x = tf.concat(stacks, axis=-1)
        kernel, _, bias = self._gru
        return x, self._dense(x, kernel, bias[0])

    def _gru_cell(self, h: tf.Tensor, xp: tf.Tensor) -> tf.Tensor:
        """One Keras GRU step (reset_after=True): state ``[B, U]``, input projection
        ``[B, 3U]`` -> the next state."""
        _, recurrent, bias = self._gru
        hp = tf.matmul(h, recurrent) + bias[1]
        x_z, x_r, x_h = tf.split(xp, 3, axis=-1)
        h_z, h_r, h_h = tf.split(hp, 3, axis=-1)
        z = tf.sigmoid(x_z + h_z)
        r = tf.sigmoid(x_r + h_r)
        n = tf.tanh(x_h + r * h_h)
        return z * h + (1.0 - z) * n

    def _gru_scan(self, x_proj: tf.Tensor) -> tf.Tensor:
        """Keras GRU (reset_after=True) from a zero state over ``x_proj`` ``[B, T, 3U]``."""
        units = self.config.rnn_channels
        h0 = tf.zeros([tf.shape(x_proj)[0], units], dtype=x_proj.dtype)
        out = tf.scan(self._gru_cell, tf.transpose(x_proj, [1, 0, 2]), initializer=h0)
        return tf.transpose(out, [1, 0, 2])

    def step(self, state: tf.Tensor, *inputs: tf.Tensor) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
        """One frame from GRU state ``state`` ``[B, U]``: inputs ``[B, 1]`` per input key (in
        order) -> raw outputs ``{name: [B, 1, size]}`` and the state after the frame.

        No loop and no dynamic shapes: what a streaming export (one call per frame, the
        state carried by the caller, as ddsp's ``stateless`` decoder) needs.
        """
        if len(inputs) != len(self.config.input_keys):
            raise ValueError(
                f"expected {len(self.config.input_keys)} inputs {self.config.input_keys}"
            )
        stacks = []
        for x, stack in zip(inputs, self._stacks, strict=True):
            y = tf.reshape(tf.cast(x, tf.float32), [-1, 1])
            for i, (layer_kernel, layer_bias, gamma, beta) in enumerate(stack):
                # The first layer's [1, ch] kernel times a scalar is a broadcast.
                y = y * layer_kernel[0] if i == 0 else tf.matmul(y, layer_kernel)
                y = self._norm_act(y + layer_bias, gamma, beta)
            stacks.append(y)
        x = tf.concat(stacks, axis=-1)  # [B, n * ch]
        kernel, _, bias = self._gru
        h = self._gru_cell(tf.convert_to_tensor(state, tf.float32), tf.matmul(x, kernel) + bias[0])
        y = tf.concat([x, h], axis=-1)
        for layer_kernel, layer_bias, gamma, beta in self._out_stack:
            y = self._norm_act(tf.matmul(y, layer_kernel) + layer_bias, gamma, beta)
        y = tf.matmul(y, self._dense_out[0]) + self._dense_out[1]
        sizes = [size for _, size in self.config.output_splits]
        parts = tf.split(y[:, tf.newaxis], sizes, axis=-1)
        outputs = {
            name: part for (name, _), part in zip(self.config.output_splits, parts, strict=True)
        }
        return outputs, h

    def _gru_numpy(self, x_proj: np.ndarray, h0: np.ndarray | None = None) -> np.ndarray:
        """The same recurrence as :meth:`_gru_scan` in numpy, for inference.

        A TensorFlow while-loop costs ~150 us per step in op dispatch; this loop costs
        ~50 us, most of it the [B, U] x [U, 3U] product.
        """
        with _single_blas_thread():
            return self._gru_loop(x_proj, h0)

    def _gru_loop(self, x_proj: np.ndarray, h0: np.ndarray | None) -> np.ndarray:
        _, recurrent, bias = self._gru
        rec = recurrent.numpy()
        b_rec = bias.numpy()[1]
        u = self.config.rnn_channels
        batch, n_frames, _ = x_proj.shape
        xs = np.ascontiguousarray(np.transpose(x_proj, (1, 0, 2)))
        out = np.empty((n_frames, batch, u), np.float32)
        # Preallocated buffers and in-place ufuncs: Python overhead is half the cost here.
        h = np.zeros((batch, u), np.float32) if h0 is None else h0
        hp = np.empty((batch, 3 * u), np.float32)
        zr = np.empty((batch, 2 * u), np.float32)
        n = np.empty((batch, u), np.float32)
        tmp = np.empty((batch, u), np.float32)
        for t in range(n_frames):
            np.matmul(h, rec, out=hp)
            hp += b_rec
            xt = xs[t]
            np.add(xt[:, : 2 * u], hp[:, : 2 * u], out=zr)
            _expit(zr, out=zr)  # z and r
            np.multiply(zr[:, u:], hp[:, 2 * u :], out=n)
            n += xt[:, 2 * u :]
            np.tanh(n, out=n)
            # z * h + (1 - z) * n, written as n + z * (h - n)
            np.subtract(h, n, out=tmp)
            tmp *= zr[:, :u]
            np.add(n, tmp, out=out[t])
            h = out[t]
        return np.transpose(out, (1, 0, 2))

    def _head(self, stacks: tf.Tensor, rnn_out: tf.Tensor) -> dict[str, tf.Tensor]:
        x = self._fc_stack(tf.concat([stacks, rnn_out], axis=-1), self._out_stack, False)
        x = self._dense(x, *self._dense_out)
        sizes = [size for _, size in self.config.output_splits]
        parts = tf.split(x, sizes, axis=-1)
        return {
            name: part for (name, _), part in zip(self.config.output_splits, parts, strict=True)
        }

    def _forward(self, *inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        stacks, x_proj = self._stacks_and_gates(*inputs)
        return self._head(stacks, self._gru_scan(x_proj))

    def __call__(self, *inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        """Differentiable forward pass: inputs ``[B, T]`` per input key, in order."""
        if len(inputs) != len(self.config.input_keys):
            raise ValueError(
                f"expected {len(self.config.input_keys)} inputs {self.config.input_keys}"
            )
        return self._forward(*inputs)

    def decode(self, features: Mapping[str, np.ndarray | tf.Tensor]) -> dict[str, tf.Tensor]:
        """Inference: ``features`` maps each input key to ``[T]`` or ``[B, T]`` values.

        The feed-forward parts run as graphs traced once for any batch size and length;
        the recurrence runs in numpy, carrying its state across blocks of frames so that
        long clips need bounded memory. Outputs are ``[B, T, size]`` tensors.
        """
        args = []
        for key in self.config.input_keys:
            value = tf.convert_to_tensor(features[key], dtype=tf.float32)
            if value.shape.rank == 1:
                value = value[tf.newaxis]
            args.append(value)
        n_frames = int(args[0].shape[1])
        pieces: list[dict[str, tf.Tensor]] = []
        h = None
        for start in range(0, max(n_frames, 1), DECODE_BLOCK_FRAMES):
            block = [x[:, start : start + DECODE_BLOCK_FRAMES] for x in args]
            stacks, x_proj = self._stage_a(*block)
            rnn_out = self._gru_numpy(x_proj.numpy(), h)
            h = rnn_out[:, -1].copy() if rnn_out.shape[1] else h
            pieces.append(self._stage_b(stacks, tf.convert_to_tensor(rnn_out)))
        if len(pieces) == 1:
            return pieces[0]
        return {name: tf.concat([p[name] for p in pieces], axis=1) for name in pieces[0]}
