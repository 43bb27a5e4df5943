"""How a worker turns observations into actions, cheaply.

In A3C (Algorithm S3) each worker acts with its own copy theta' of the shared
parameters and refreshes it after each of its updates. For a chain of Dense, Conv2D and
LayerNormalization layers, with at most one LSTMCell before the heads (the builders'
networks, recurrent or not, and user networks like them) that copy is a list of numpy
arrays and the forward pass runs in numpy: on a small MLP this costs ~10 us per batch,
against ~0.5 ms for one `tf.function` call, and acting happens once per environment step.
Any other network acts through one compiled TensorFlow call on the shared variables. The
twin covers the categorical head (Dense logits) and the Gaussian head (`GaussianHead`: mean
and log std).

Actions are then sampled in numpy (`ActionSampler`): Gumbel-max for a categorical,
mean + std * eps for a Gaussian, whose samples are clipped to the Box bounds only
when the env is stepped (the learner sees the unclipped sample).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import gymnasium as gym
import keras
import numpy as np
import tensorflow as tf

from keras_a3c.distributions import check_action_mask, for_action_space, mask_parts, np_masked_params
from keras_a3c.networks import LOG_SOFTPLUS_LINEAR_BELOW, GaussianHead
from keras_a3c.normalization import ObservationNormalization
from keras_a3c.observations import MASK_KEY, ObservationCodec
from keras_a3c.recurrent import begin_episodes, network_input, split_state, state_sizes, zero_state

_NUMPY_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda x: x,
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    "sigmoid": lambda x: 0.5 + 0.5 * np.tanh(0.5 * x),  # = 1 / (1 + e^-x), without overflow
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
}

State = Sequence[np.ndarray]  # a recurrent network's state, parts [B, S_i]; () for a feedforward one
Forward = Callable[..., tuple[np.ndarray, np.ndarray, list[np.ndarray]]]
Head = Callable[[Sequence[np.ndarray], np.ndarray], np.ndarray]
Cell = Callable[[Sequence[np.ndarray], np.ndarray, State], tuple[np.ndarray, list[np.ndarray]]]
RowsToParams = Callable[[Sequence[np.ndarray], State], tuple[np.ndarray, list[np.ndarray]]]


def weights_of(network: keras.Model) -> list[np.ndarray]:
    """The values of `network.weights` (trainable and not, e.g. observation statistics) as float32
    numpy arrays, in the order a numpy twin and a worker's copy theta' hold them."""
    return [np.asarray(v.numpy(), np.float32) for v in network.weights]


def _np_log_softplus(z: np.ndarray) -> np.ndarray:
    """numpy twin of `networks.log_softplus`."""
    safe = np.maximum(z, LOG_SOFTPLUS_LINEAR_BELOW)
    return np.where(z > LOG_SOFTPLUS_LINEAR_BELOW, np.log(np.logaddexp(0.0, safe)), z)


def _dense_twin(layer: keras.layers.Dense, index: dict[int, int]) -> Head:
    kernel = index[id(layer.kernel)]
    bias = index[id(layer.bias)] if layer.use_bias else None
    activation = _NUMPY_ACTIVATIONS[layer.activation.__name__]

    def dense(weights: Sequence[np.ndarray], x: np.ndarray) -> np.ndarray:
        y = x @ weights[kernel]
        return activation(y if bias is None else y + weights[bias])

    return dense


def _gaussian_twin(layer: GaussianHead, index: dict[int, int]) -> Head:
    mean_kernel, mean_bias = index[id(layer.mean_kernel)], index[id(layer.mean_bias)]
    if layer.std == "state_independent":
        log_std = index[id(layer.log_std)]

        def head(weights: Sequence[np.ndarray], x: np.ndarray) -> np.ndarray:
            mean = x @ weights[mean_kernel] + weights[mean_bias]
            return np.concatenate([mean, np.broadcast_to(weights[log_std], mean.shape)], axis=-1)

        return head
    variance_kernel, variance_bias = index[id(layer.variance_kernel)], index[id(layer.variance_bias)]

    def softplus_head(weights: Sequence[np.ndarray], x: np.ndarray) -> np.ndarray:
        mean = x @ weights[mean_kernel] + weights[mean_bias]
        log_std = 0.5 * _np_log_softplus(x @ weights[variance_kernel] + weights[variance_bias])
        return np.concatenate([mean, log_std], axis=-1)

    return softplus_head


def _normalization_twin(layer: ObservationNormalization, index: dict[int, int]) -> Head:
    mean, variance = index[id(layer.mean)], index[id(layer.variance)]

    def normalize(weights: Sequence[np.ndarray], x: np.ndarray) -> np.ndarray:
        shape = x.shape[1:]
        y = (x - weights[mean].reshape(shape)) / np.sqrt(weights[variance].reshape(shape) + layer.epsilon)
        return y if layer.clip is None else np.clip(y, -layer.clip, layer.clip)

    return normalize


def _conv_twin(layer: keras.layers.Conv2D, index: dict[int, int]) -> Head | None:
    """An im2col Conv2D (valid padding, channels last, no dilation or groups), or None for any other."""
    if (layer.padding != "valid" or layer.data_format != "channels_last" or tuple(layer.dilation_rate) != (1, 1)
            or layer.groups != 1):
        return None
    (kh, kw), (sh, sw) = layer.kernel_size, layer.strides
    kernel = index[id(layer.kernel)]
    bias = index[id(layer.bias)] if layer.use_bias else None
    activation = _NUMPY_ACTIVATIONS[layer.activation.__name__]

    def conv(weights: Sequence[np.ndarray], x: np.ndarray) -> np.ndarray:
        windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))[:, ::sh, ::sw]
        # [B, OH, OW, C, kh, kw] -> patches [B, OH, OW, kh * kw * C], the order of the kernel's [kh, kw, C, F]
        patches = windows.transpose(0, 1, 2, 4, 5, 3).reshape(*windows.shape[:3], -1)
        y = patches @ weights[kernel].reshape(-1, weights[kernel].shape[-1])
        return activation(y if bias is None else y + weights[bias])

    return conv


def _layer_normalization_twin(layer: keras.layers.LayerNormalization, index: dict[int, int]) -> Head | None:
    """Normalisation over the last axis (the default), with its scale and offset; None for any other."""
    if list(layer.axis) not in ([-1], [len(layer.input.shape) - 1]) or getattr(layer, "rms_scaling", False):
        return None
    gamma = index[id(layer.gamma)] if layer.scale else None
    beta = index[id(layer.beta)] if layer.center else None

    def normalize(weights: Sequence[np.ndarray], x: np.ndarray) -> np.ndarray:
        y = (x - x.mean(axis=-1, keepdims=True)) / np.sqrt(x.var(axis=-1, keepdims=True) + layer.epsilon)
        y = y if gamma is None else y * weights[gamma]
        return y if beta is None else y + weights[beta]

    return normalize


def _lstm_twin(layer: keras.layers.Layer, index: dict[int, int]) -> Cell | None:
    """A Keras `LSTMCell` (gates i, f, c, o), or None for any other cell."""
    if (type(layer) is not keras.layers.LSTMCell or not layer.use_bias
            or getattr(layer.activation, "__name__", None) not in _NUMPY_ACTIVATIONS
            or getattr(layer.recurrent_activation, "__name__", None) not in _NUMPY_ACTIVATIONS):
        return None
    kernel, recurrent_kernel, bias = (index[id(layer.kernel)], index[id(layer.recurrent_kernel)],
                                      index[id(layer.bias)])
    activation = _NUMPY_ACTIVATIONS[layer.activation.__name__]
    gate = _NUMPY_ACTIVATIONS[layer.recurrent_activation.__name__]

    def lstm(weights: Sequence[np.ndarray], x: np.ndarray, state: State) -> tuple[np.ndarray, list[np.ndarray]]:
        h, c = state
        z = x @ weights[kernel] + h @ weights[recurrent_kernel] + weights[bias]
        i, f, candidate, o = np.split(z, 4, axis=1)
        c = gate(f) * c + gate(i) * activation(candidate)
        h = gate(o) * activation(c)
        return h, [h, c]

    return lstm


def _shape_twin(layer: keras.layers.Layer) -> Head:
    """Rescaling, Reshape and Flatten, which hold no weights."""
    if isinstance(layer, keras.layers.Rescaling):
        scale, offset = np.float32(layer.scale), np.float32(layer.offset)
        return lambda weights, x: x * scale + offset
    if isinstance(layer, keras.layers.Reshape):
        return lambda weights, x: x.reshape(x.shape[0], *layer.target_shape)
    return lambda weights, x: x.reshape(x.shape[0], -1)


def _probe(network: keras.Model, rng: np.random.Generator) -> np.ndarray:
    """8 random observations in the dtype of the network's input (0 / 1 for bool, 0..255 for uint8)."""
    shape, dtype = (8, *network.inputs[0].shape[1:]), np.dtype(network.inputs[0].dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    if dtype.kind in "ui":
        return rng.integers(0, min(np.iinfo(dtype).max, 255) + 1, shape).astype(dtype)
    return rng.normal(size=shape).astype(np.float32)


def numpy_forward(network: keras.Model) -> Forward | None:
    """A numpy twin of `network`, or None when the network is not a chain of the layers it knows with
    a policy head (Dense logits or `GaussianHead`) and a Dense value head (then the caller acts through
    TensorFlow). It knows Dense, Conv2D (valid padding), LayerNormalization (over the last axis),
    `ObservationNormalization` (of the raw observations), Rescaling, Reshape, Flatten, and one
    `LSTMCell` before the heads (a recurrent network, see `keras_a3c.recurrent`).

    The twin takes the list of `network.weights` values (see `weights_of`), observations
    [B, *obs_shape] (in the input's dtype, or float32) and, for a recurrent network, the state (parts
    [B, S_i]), and returns (policy params [B, P], values [B], new state: its parts, or [] for a
    feedforward network). It is checked against the Keras forward pass on random inputs before it is used.
    """
    index = {id(v): i for i, v in enumerate(network.weights)}
    sizes = state_sizes(network)
    weighted, trunk = [], []  # weighted: the Dense / GaussianHead layers; trunk: twins in order
    cell_at = None  # where in the trunk the LSTM cell is, for a recurrent network
    spatial = False  # with a Conv2D or a Reshape, observations keep their shape until a Flatten
    for layer in network.layers:
        if any(id(v) not in index for v in layer.weights):
            return None
        if isinstance(layer, ObservationNormalization):
            if trunk:
                return None  # the twin normalises the raw observations only
            trunk.append(_normalization_twin(layer, index))
        elif isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D)):
            if getattr(layer.activation, "__name__", None) not in _NUMPY_ACTIVATIONS:
                return None
            if isinstance(layer, keras.layers.Dense):
                weighted.append(layer)
                trunk.append(_dense_twin(layer, index))
            else:
                spatial = True
                if weighted or (twin := _conv_twin(layer, index)) is None:
                    return None
                trunk.append(twin)
        elif isinstance(layer, GaussianHead):
            weighted.append(layer)
            trunk.append(_gaussian_twin(layer, index))
        elif isinstance(layer, keras.layers.LayerNormalization):
            if (twin := _layer_normalization_twin(layer, index)) is None:
                return None
            trunk.append(twin)
        elif isinstance(layer, (keras.layers.Rescaling, keras.layers.Reshape, keras.layers.Flatten)):
            spatial = spatial or isinstance(layer, keras.layers.Reshape)
            trunk.append(_shape_twin(layer))
        elif cell_at is None and len(sizes) == 2 and (twin := _lstm_twin(layer, index)) is not None:
            cell_at = len(trunk)
            trunk.append(twin)
        elif not isinstance(layer, keras.layers.InputLayer):
            return None
    if len(weighted) < 2 or len(network.inputs) != 1 + len(sizes) or (sizes and cell_at is None):
        return None
    # The last two weighted layers are the heads. Only the policy head may be a GaussianHead, the value
    # head is a Dense; Keras lists the two heads in either order, and the numerical check below decides
    # which is which.
    if not isinstance(weighted[-2], keras.layers.Dense) and not isinstance(weighted[-1], keras.layers.Dense):
        return None
    if any(isinstance(layer, GaussianHead) for layer in weighted[:-2]):
        return None
    heads, trunk = trunk[-2:], trunk[:-2]
    if cell_at is not None and cell_at >= len(trunk):
        return None

    # The layer walk above assumes a chain; the numbers decide whether it is one.
    if any(d is None for d in network.inputs[0].shape[1:]):
        return None
    rng = np.random.default_rng(0)
    probe = _probe(network, rng)
    probe_state = [rng.normal(size=(len(probe), size)).astype(np.float32) for size in sizes]
    try:
        outputs = [np.asarray(y) for y in network(network_input(probe, probe_state))]
    except Exception:
        return None
    params, values, new_state = outputs[0], outputs[1], outputs[2:]
    weights = weights_of(network)
    for policy_head, value_head in (heads, heads[::-1]):

        def forward(weights: Sequence[np.ndarray], obs: np.ndarray, state: State = (), policy_head=policy_head,
                    value_head=value_head) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
            x = obs.astype(np.float32, copy=False)
            if not spatial:  # a Dense chain takes flat observations
                x = x.reshape(x.shape[0], -1)
            new_state: list[np.ndarray] = []
            for i, layer in enumerate(trunk):
                if i == cell_at:
                    x, new_state = layer(weights, x, state)
                else:
                    x = layer(weights, x)
            return policy_head(weights, x), value_head(weights, x)[:, 0], new_state

        try:
            twin_params, twin_values, twin_state = forward(weights, probe, probe_state)
        except Exception:
            continue
        if (
            twin_params.shape == params.shape
            and twin_values.size == values.size
            and np.allclose(twin_params, params, atol=1e-4)
            and np.allclose(twin_values, np.ravel(values), atol=1e-4)
            and len(twin_state) == len(new_state)
            and all(np.allclose(a, b, atol=1e-4) for a, b in zip(twin_state, new_state, strict=True))
        ):
            return forward
    return None


class ActionSampler:
    """Actions from policy params in numpy, for one action space.

    Workers store the sampled action (its log-probability is the one the loss uses)
    and step the env with `to_env(action)`: for a `Box` the sample clipped to the
    bounds (as SB3 does), for the integer spaces the action itself.
    """

    def __init__(self, action_space: gym.Space):
        self.distribution = for_action_space(action_space)
        self.action_space = action_space
        self.num_params = self.distribution.num_params(action_space)  # P of the policy params [B, P]
        self._low = self._high = None
        self._env_dtype = None
        if isinstance(action_space, gym.spaces.Box):
            self.shape: tuple[int, ...] = tuple(action_space.shape)
            self.dtype = np.float32
            self._low = action_space.low.astype(np.float32)
            self._high = action_space.high.astype(np.float32)
        elif isinstance(action_space, gym.spaces.Discrete):
            self.shape, self.dtype = (), np.int32
        else:  # MultiDiscrete, MultiBinary: one integer per part, in the space's own dtype for the env
            self.shape, self.dtype = tuple(action_space.shape), np.int32
            self._env_dtype = action_space.dtype

    def sample(self, params: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """[B, P] params -> [B, *shape] sampled actions."""
        return self.distribution.np_sample(params, rng)

    def mode(self, params: np.ndarray) -> np.ndarray:
        """[B, P] params -> [B, *shape] most likely actions."""
        return self.distribution.np_mode(params)

    def mask(self, params: np.ndarray, mask: np.ndarray, where: str) -> np.ndarray:
        """Logits [B, P] with the actions `mask` [B, P] forbids made impossible; a row that leaves no valid
        action is a `ValueError` naming it."""
        check_action_mask(mask, mask_parts(self.action_space), where)
        return np_masked_params(params, mask)

    def to_env(self, actions: np.ndarray) -> np.ndarray:
        """The action the env is stepped with: clipped to the bounds of a Box; MultiDiscrete and
        MultiBinary actions in the space's dtype."""
        if self._low is not None:
            return np.clip(actions, self._low, self._high)
        if self._env_dtype is not None:
            return actions.astype(self._env_dtype)
        return actions


def compiled_params(network: keras.Model, codec: ObservationCodec, batch: int) -> RowsToParams:
    """The shared network's policy params as one compiled call, traced here: (observation rows of `codec`
    ([batch, F_g] each), a recurrent network's state (parts [batch, S_i]; () for a feedforward one)) ->
    ([batch, P], the new state). Rows of several dtypes cross into TensorFlow as one float32 array (each
    input bound costs ~50 us, several times the numpy concatenation), one row in its own dtype."""
    state_specs = [tf.TensorSpec([batch, size], tf.float32) for size in state_sizes(network)]

    def call(observations, state):
        outputs = network(network_input(observations, state))
        return [outputs[0], *outputs[2:]]

    if len(codec.groups) == 1:
        function = tf.function(lambda row, *state: call(codec.structure([row]), state),
                               input_signature=codec.row_specs(batch) + state_specs)

        def to_input(rows: Sequence[np.ndarray]) -> np.ndarray:
            return rows[0]
    else:
        group_sizes = codec.group_sizes
        function = tf.function(lambda flat, *state: call(codec.structure(tf.split(flat, group_sizes, axis=1)), state),
                               input_signature=[tf.TensorSpec([batch, sum(group_sizes)], tf.float32), *state_specs])

        def to_input(rows: Sequence[np.ndarray]) -> np.ndarray:
            return np.concatenate(rows, axis=1, dtype=np.float32)
    function.get_concrete_function()

    def params(rows: Sequence[np.ndarray], state: State) -> tuple[np.ndarray, list[np.ndarray]]:
        policy_params, *new_state = function(to_input(rows), *state)
        return policy_params.numpy(), [part.numpy() for part in new_state]

    return params


class LocalPolicy:
    """One worker's policy: its own numpy parameters theta', or the shared model. It acts on observation
    rows of `codec` (see `keras_a3c.observations`) and, for a recurrent network, the state of each env;
    with an action mask among the rows, invalid actions are never sampled."""

    def __init__(
        self, forward: Forward | None, tf_params: RowsToParams | None, sampler: ActionSampler,
        codec: ObservationCodec,
    ):
        self._forward = forward
        self._tf_params = tf_params
        self._weights: list[np.ndarray] = []
        self.sampler = sampler
        self.codec = codec

    def sync(self, weights: Sequence[tf.Tensor]) -> None:
        """Copy theta' = theta from the shared parameters (only the numpy path keeps a copy)."""
        if self._forward is not None:
            self._weights = [np.asarray(w) for w in weights]

    def params(self, rows: Sequence[np.ndarray], state: State = ()) -> tuple[np.ndarray, list[np.ndarray]]:
        """Observation rows ([B, F_g] each) and state -> ([B, P] policy params (logits, or Gaussian mean and
        log std), the new state)."""
        if self._forward is not None:
            params, _, new_state = self._forward(self._weights, self.codec.structure_numpy(rows), state)
            return params, new_state
        return self._tf_params(rows, state)

    def sample(self, rows: Sequence[np.ndarray], rng: np.random.Generator, where: str = "acting",
               state: State = ()) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """Observation rows and state -> ([B, *action_shape] actions sampled from pi(.|s), the [B, P] params
        they were sampled from (masked, with a mask), the new state)."""
        params, new_state = self.params(rows, state)
        if self.codec.masked:
            params = self.sampler.mask(params, self.codec.mask(rows), where)
        return self.sampler.sample(params, rng), params, new_state


def _start_episodes(state: np.ndarray | None, sizes: Sequence[int], batch: int,
                    episode_start: np.ndarray | None) -> list[np.ndarray]:
    """The state parts [batch, S_i] of the public state [batch, S] (None: the zero state), zeroed in the rows
    where `episode_start` [batch] is true."""
    if state is None:
        return zero_state(sizes, batch)
    parts = split_state(state, sizes)
    if parts[0].shape[0] != batch:
        raise ValueError(f"the recurrent state has {parts[0].shape[0]} rows for {batch} observations")
    if episode_start is not None:
        parts = begin_episodes(parts, np.asarray(episode_start, bool).reshape(batch))
    return parts


def policy_function(
    network: keras.Model, action_space: gym.Space, deterministic: bool = True, rng: np.random.Generator | None = None
) -> Callable:
    """The network's policy as it is now, as a function observations (a batch [B, *obs_shape], or a dict /
    tuple of batches for a network with several inputs) -> env actions (see `ActionSampler.to_env`):
    the most likely action when `deterministic`, else one sampled with `rng`. For a recurrent network
    it is (observations, state [B, S]) -> (actions, new state) (see `keras_a3c.recurrent`). Acts through
    the numpy twin when the network has one, else through Keras."""
    sampler = ActionSampler(action_space)
    forward = numpy_forward(network)
    weights = weights_of(network)
    codec = ObservationCodec.for_network(network)
    sizes = state_sizes(network)
    rng = rng or np.random.default_rng()

    def step(observations, state: State) -> tuple[np.ndarray, list[np.ndarray]]:
        rows = codec.rows(observations)
        inputs = codec.structure_numpy(rows)
        if forward is not None:
            params, _, new_state = forward(weights, inputs, state)
        else:
            outputs = network(network_input(inputs, state), training=False)
            params, new_state = np.asarray(outputs[0]), [np.asarray(part) for part in outputs[2:]]
        if codec.masked:
            params = sampler.mask(params, codec.mask(rows), "policy")
        return sampler.to_env(sampler.mode(params) if deterministic else sampler.sample(params, rng)), new_state

    if not sizes:
        return lambda observations: step(observations, ())[0]

    def recurrent_step(observations, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        actions, new_state = step(observations, split_state(state, sizes))
        return actions, np.concatenate(new_state, axis=1)

    return recurrent_step


def predict_actions(network: keras.Model, action_space: gym.Space | None, observations, deterministic: bool = True,
                    seed: int | None = None, state: np.ndarray | None = None,
                    episode_start: np.ndarray | None = None):
    """`A3C.predict`: env actions of the network's policy through Keras, for a batch of observations
    [B, *obs_shape] (or a dict / tuple of batches for a network with several inputs) -> [B] or [B, D];
    one observation -> one action. Without an action space the policy params are read as logits (the
    Discrete default). A recurrent network also takes its state [B, S] (None: zeros), zeroed first in
    the rows where `episode_start` [B] is true, and returns (actions, new state [B, S])."""
    codec = ObservationCodec.for_network(network)
    sizes = state_sizes(network)
    if not sizes and (state is not None or episode_start is not None):
        raise ValueError("state and episode_start are for recurrent networks; this network is feedforward")
    observations, single = codec.batch(observations)
    batch = len(codec.parts(observations)[0])
    if sizes:
        if single and state is not None:
            state = np.asarray(state, np.float32).reshape(1, -1)
        parts = _start_episodes(state, sizes, batch, episode_start)
        params, _, *new_state = network([observations, *parts], training=False)
        new_state = np.concatenate([np.asarray(part) for part in new_state], axis=1)
    else:
        params = network(observations, training=False)[0]
    params = np.asarray(params)
    sampler = ActionSampler(action_space or gym.spaces.Discrete(params.shape[1]))
    if codec.masked:
        params = sampler.mask(params, np.asarray(observations[MASK_KEY], np.float32), "predict")
    actions = sampler.mode(params) if deterministic else sampler.sample(params, np.random.default_rng(seed))
    actions = sampler.to_env(actions)
    if single:
        actions = actions[0]
    if sizes:
        return actions, new_state[0] if single else new_state
    return actions
