"""Actor-critic networks: observation [B, *obs_shape] -> (policy params, value [B, 1]).

The policy params are logits [B, A] for a `Discrete(A)` action space, concat(mean, log_std)
[B, 2D] for a `Box((D,))` one, logits [B, sum(nvec)] for `MultiDiscrete(nvec)` and [B, n] for
`MultiBinary(n)` (see `keras_a3c.distributions`).
"""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import keras
import numpy as np
import tensorflow as tf

from keras_a3c.distributions import for_action_space
from keras_a3c.envs import check_spaces
from keras_a3c.normalization import ObservationNormalization
from keras_a3c.observations import MASK_KEY, ObservationCodec, leaves_of
from keras_a3c.recurrent import check_recurrent, network_input, state_sizes, zero_state

STD_PARAMETERISATIONS = ("state_independent", "softplus")
# Below this, log(softplus(z)) = z to float32 precision, and softplus(z) itself heads for 0.
LOG_SOFTPLUS_LINEAR_BELOW = -20.0


def log_softplus(z: tf.Tensor) -> tf.Tensor:
    """log(softplus(z)) = log(log(1 + e^z)), finite with a finite gradient for every float32 z."""
    safe = tf.maximum(z, LOG_SOFTPLUS_LINEAR_BELOW)
    return tf.where(z > LOG_SOFTPLUS_LINEAR_BELOW, tf.math.log(tf.nn.softplus(safe)), z)


@keras.saving.register_keras_serializable(package="keras_a3c")
class GaussianHead(keras.layers.Layer):
    """The policy head of a diagonal Gaussian policy: features [B, F] -> [B, 2D] = concat(mean, log_std).

    The mean is a linear layer, as in A3C (Mnih et al. 2016, supplementary section 9). The std is
      - "state_independent": one learned log std per action dimension (as in SB3 and PPO), or
      - "softplus": the paper's sigma^2 = softplus(linear(features)), returned as
        log_std = log(softplus(z)) / 2 computed in log space.
    `DiagGaussian` clamps the log std to [LOG_STD_MIN, LOG_STD_MAX].

    Args:
      action_dim: D.
      std: "state_independent" or "softplus".
      log_std_init: the initial log std (for "softplus", that of a zero pre-activation).
      mean_initializer: initializer of the mean's kernel.
    """

    def __init__(
        self,
        action_dim: int,
        std: str = "state_independent",
        log_std_init: float = 0.0,
        mean_initializer: str | keras.initializers.Initializer = "glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if std not in STD_PARAMETERISATIONS:
            raise ValueError(f"std must be one of {STD_PARAMETERISATIONS}, got {std!r}")
        if not (isinstance(action_dim, (int, np.integer)) and action_dim >= 1):
            raise ValueError(f"action_dim must be an integer >= 1, got {action_dim!r}")
        self.action_dim = int(action_dim)
        self.std = std
        self.log_std_init = float(log_std_init)
        self.mean_initializer = keras.initializers.get(mean_initializer)

    def build(self, input_shape):
        features = int(input_shape[-1])
        self.mean_kernel = self.add_weight(
            name="mean_kernel", shape=(features, self.action_dim), initializer=self.mean_initializer
        )
        self.mean_bias = self.add_weight(name="mean_bias", shape=(self.action_dim,), initializer="zeros")
        if self.std == "state_independent":
            self.log_std = self.add_weight(
                name="log_std", shape=(self.action_dim,), initializer=keras.initializers.Constant(self.log_std_init)
            )
        else:
            # softplus(bias) = exp(2 * log_std_init): the initial variance when the kernel term is 0.
            bias = float(np.log(np.expm1(np.exp(2.0 * self.log_std_init))))
            self.variance_kernel = self.add_weight(
                name="variance_kernel",
                shape=(features, self.action_dim),
                initializer=keras.initializers.Orthogonal(0.01),
            )
            self.variance_bias = self.add_weight(
                name="variance_bias", shape=(self.action_dim,), initializer=keras.initializers.Constant(bias)
            )

    def call(self, features):
        mean = tf.matmul(features, self.mean_kernel) + self.mean_bias
        if self.std == "state_independent":
            log_std = tf.zeros_like(mean) + self.log_std
        else:
            log_std = 0.5 * log_softplus(tf.matmul(features, self.variance_kernel) + self.variance_bias)
        return tf.concat([mean, log_std], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 2 * self.action_dim)

    def get_config(self):
        return {
            **super().get_config(),
            "action_dim": self.action_dim,
            "std": self.std,
            "log_std_init": self.log_std_init,
            "mean_initializer": keras.initializers.serialize(self.mean_initializer),
        }


def actor_critic_mlp(
    observation_space: gym.spaces.Box,
    action_space: gym.Space,
    hidden_units: Sequence[int] = (64, 64),
    activation: str = "tanh",
    name: str = "actor_critic",
    std: str = "state_independent",
    log_std_init: float = 0.0,
    normalize_observations: bool = True,
    lstm_units: int = 0,
    cell: keras.layers.Layer | None = None,
) -> keras.Model:
    """A shared-trunk MLP with a policy head and a value head (A3C, section 5.1), recurrent with
    `lstm_units` or `cell` (A3C LSTM, section 5.1: a recurrent cell between the trunk and the heads).

    Args:
      observation_space: a `Box` (its shape is the model's input shape), or a `Dict` / `Tuple` of `Box`
        and `Discrete` spaces: one input per entry, named by its key (`observation_<i>` for a Tuple;
        Box entries normalised and flattened, Discrete ones one-hot encoded), their features
        concatenated before the trunk.
      action_space: `Discrete(A)`: the policy head is a Dense layer of A logits;
        `Box((D,))`: a `GaussianHead` with D means and D log stds; `MultiDiscrete(nvec)`: a Dense
        layer of sum(nvec) logits (the parts side by side); `MultiBinary(n)`: a Dense layer of n logits.
      hidden_units: widths of the shared Dense trunk.
      activation: the trunk's activation.
      name: the model's name.
      std: the Gaussian head's std parameterisation, "state_independent" or "softplus"
        (Box actions only); see `GaussianHead`.
      log_std_init: the Gaussian head's initial log std (Box actions only).
      normalize_observations: start with an `ObservationNormalization` layer, whose running
        statistics `fit` updates from the workers' observations (so the exported policy takes raw
        observations).

    Returns:
      A functional `keras.Model` mapping float32 [B, *obs_shape] to
      (policy params [B, P] as above, value [B, 1]).
    """
    check_spaces(observation_space, action_space)
    if isinstance(observation_space, gym.spaces.Box):
        inputs = keras.Input(observation_space.shape, name="observation")
        x = ObservationNormalization(name="observation_normalization")(inputs) if normalize_observations else inputs
        x = keras.layers.Flatten(name="flatten")(x) if len(observation_space.shape) > 1 else x
    else:
        inputs, x = _structured_inputs(observation_space, normalize_observations)
    for i, units in enumerate(hidden_units):
        x = keras.layers.Dense(
            units,
            activation=activation,
            kernel_initializer=keras.initializers.Orthogonal(np.sqrt(2.0)),
            name=f"trunk_{i}",
        )(x)
    return _model(inputs, x, action_space, std, log_std_init, name, _cell(lstm_units, cell))


def _cell(lstm_units: int, cell: keras.layers.Layer | None) -> keras.layers.Layer | None:
    """The recurrent cell the builders' arguments ask for, or None."""
    if not (isinstance(lstm_units, (int, np.integer)) and lstm_units >= 0):
        raise ValueError(f"lstm_units must be an integer >= 0, got {lstm_units!r}")
    if lstm_units and cell is not None:
        raise ValueError("give lstm_units or cell, not both")
    if cell is not None and not hasattr(cell, "state_size"):
        raise ValueError(f"cell must be a Keras RNN cell (a layer with state_size), got {type(cell).__name__}")
    return keras.layers.LSTMCell(int(lstm_units), name="lstm") if lstm_units else cell


def _model(inputs, x, action_space: gym.Space, std: str, log_std_init: float, name: str,
           cell: keras.layers.Layer | None) -> keras.Model:
    """The model of the trunk's features x with the heads; with a cell, the cell between trunk and heads,
    its state taken as inputs `state_<i>` and returned after the value (see `keras_a3c.recurrent`)."""
    if cell is None:
        return keras.Model(inputs, _heads(x, action_space, std, log_std_init), name=name)
    sizes = [cell.state_size] if isinstance(cell.state_size, (int, np.integer)) else list(cell.state_size)
    state = [keras.Input((int(size),), name=f"state_{i}") for i, size in enumerate(sizes)]
    x, new_state = cell(x, state if len(state) > 1 else state[0])
    new_state = list(new_state) if isinstance(new_state, (list, tuple)) else [new_state]
    return keras.Model([inputs, *state], [*_heads(x, action_space, std, log_std_init), *new_state], name=name)


def _heads(x, action_space: gym.Space, std: str, log_std_init: float) -> list:
    """[policy params, value] on the trunk's features x: a Dense of logits (a `GaussianHead` for Box
    actions) and a Dense value. Small initial logits (means) keep the first policy close to uniform
    (zero-mean), as in SB3 / Baselines."""
    if isinstance(action_space, gym.spaces.Box):
        policy = GaussianHead(
            int(action_space.shape[0]), std=std, log_std_init=log_std_init,
            mean_initializer=keras.initializers.Orthogonal(0.01), name="gaussian",
        )(x)
    else:
        policy = keras.layers.Dense(
            for_action_space(action_space).num_params(action_space),
            kernel_initializer=keras.initializers.Orthogonal(0.01), name="logits",
        )(x)
    value = keras.layers.Dense(1, kernel_initializer=keras.initializers.Orthogonal(1.0), name="value")(x)
    return [policy, value]


# (filters, kernel size, stride) of each Conv2D layer and the width of the Dense layer after them.
CNN_ARCHITECTURES: dict[str, tuple[tuple[tuple[int, int, int], ...], int]] = {
    # Mnih et al. 2016 (A3C), section 8: the network of Mnih et al. 2013 (DQN) for 84x84 Atari frames.
    "atari": (((16, 8, 4), (32, 4, 2)), 256),
    # Young & Tian 2019 (MinAtar), section 5: one small convolution for 10x10 inputs.
    "minatar": (((16, 3, 1),), 128),
}


def actor_critic_cnn(
    observation_space: gym.spaces.Box,
    action_space: gym.Space,
    architecture: str = "atari",
    name: str = "actor_critic_cnn",
    std: str = "state_independent",
    log_std_init: float = 0.0,
    lstm_units: int = 0,
    cell: keras.layers.Layer | None = None,
) -> keras.Model:
    """A shared convolutional trunk with a policy head and a value head, for image observations.

    The input takes the env's observations as they are, in their own dtype (the exported policy's
    signature says which): a uint8 image is scaled by 1/255 inside the network, a bool one (MinAtar)
    becomes 0 / 1, a float one is taken as it is. Every layer of the trunk is followed by a ReLU.

    Args:
      observation_space: a `Box` of shape [H, W, C] (or [H, W], one channel).
      action_space: as `actor_critic_mlp`.
      architecture: "atari", the A3C paper's network (Conv 16 8x8 stride 4, Conv 32 4x4 stride 2,
        Dense 256), or "minatar", the MinAtar paper's (Conv 16 3x3 stride 1, Dense 128); see
        `CNN_ARCHITECTURES`.
      name, std, log_std_init, lstm_units, cell: as `actor_critic_mlp` (the cell after the Dense layer, as
        in the paper's A3C LSTM).

    Returns:
      A functional `keras.Model` mapping [B, *obs_shape] in the space's dtype (or float32) to
      (policy params [B, P], value [B, 1]); with a cell, as `actor_critic_mlp`'s.
    """
    check_spaces(observation_space, action_space)
    if architecture not in CNN_ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; expected one of {sorted(CNN_ARCHITECTURES)}")
    if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) not in (2, 3):
        raise ValueError(f"actor_critic_cnn needs a Box observation space of shape [H, W, C] or [H, W], got "
                         f"{observation_space} (use actor_critic_mlp for vectors)")
    dtype = np.dtype(observation_space.dtype)
    inputs = keras.Input(observation_space.shape, dtype=dtype.name, name="observation")
    x = keras.layers.Rescaling(1.0 / 255.0 if dtype == np.uint8 else 1.0, name="scale")(inputs)
    if len(observation_space.shape) == 2:
        x = keras.layers.Reshape((*observation_space.shape, 1), name="channel")(x)
    convolutions, units = CNN_ARCHITECTURES[architecture]
    for i, (filters, kernel, stride) in enumerate(convolutions):
        x = keras.layers.Conv2D(filters, kernel, strides=stride, activation="relu",
                                kernel_initializer=keras.initializers.Orthogonal(np.sqrt(2.0)), name=f"conv_{i}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(units, activation="relu", kernel_initializer=keras.initializers.Orthogonal(np.sqrt(2.0)),
                           name="trunk_0")(x)
    return _model(inputs, x, action_space, std, log_std_init, name, _cell(lstm_units, cell))


def _structured_inputs(space: gym.spaces.Dict | gym.spaces.Tuple, normalize: bool) -> tuple:
    """One named input per entry of a Dict / Tuple observation (a Box entry normalised and flattened, a
    Discrete one one-hot encoded, a MultiBinary one or the action mask as it is), and their features side
    by side: (inputs as a dict or list, [B, F])."""
    inputs, features = [], []
    for key, leaf in leaves_of(space):
        name = key if isinstance(space, gym.spaces.Dict) else f"observation_{key}"  # Keras names dict inputs by key
        if isinstance(leaf, gym.spaces.Discrete):
            tensor = keras.Input((), dtype="int32", name=name)
            x = keras.layers.CategoryEncoding(int(leaf.n), output_mode="one_hot", name=f"one_hot_{key}")(tensor)
        else:
            tensor = keras.Input(leaf.shape, name=name)
            # Box entries are normalised; 0/1 flags (MultiBinary entries, the action mask) go in as they are.
            flags = isinstance(leaf, gym.spaces.MultiBinary) or key == MASK_KEY
            x = tensor if flags or not normalize else \
                ObservationNormalization(observation_key=key, name=f"normalization_{key}")(tensor)
            x = keras.layers.Flatten(name=f"flatten_{key}")(x) if len(leaf.shape) != 1 else x
        inputs.append((key, tensor))
        features.append(x)
    x = keras.layers.Concatenate(name="observation_features")(features) if len(features) > 1 else features[0]
    if isinstance(space, gym.spaces.Dict):
        return dict(inputs), x
    return [tensor for _, tensor in inputs], x


def check_network(network: keras.Model, observation_space: gym.spaces.Box, action_space: gym.Space) -> None:
    """Raise a `ValueError` that names the problem unless `network` maps a batch of
    observations to (policy params, value [B] or [B, 1]): logits [B, A] for `Discrete(A)`,
    concat(mean, log_std) [B, 2D] for `Box((D,))`, logits [B, sum(nvec)] for `MultiDiscrete(nvec)`,
    logits [B, n] for `MultiBinary(n)`; a recurrent network maps [observations, *state] to
    [params, value, *new_state] with each new state shaped as its state (see `keras_a3c.recurrent`)."""
    distribution = for_action_space(action_space)
    if not isinstance(network, keras.Model):
        raise TypeError(f"the network must be a keras.Model, got {type(network).__name__}")
    check_recurrent(network)
    sizes = state_sizes(network)
    batch = ObservationCodec.for_space(observation_space, network).zeros(2)
    try:
        outputs = network(network_input(batch, zero_state(sizes, 2)))
    except Exception as exc:
        what = f"of shape {batch.shape}" if isinstance(batch, np.ndarray) else "(a batch of 2, as a dict or tuple)"
        raise ValueError(
            f"the network could not be called on observations {what} (observation space {observation_space}"
            f"{f', and its state {sizes}' if sizes else ''}): {exc}"
        ) from exc
    if not isinstance(outputs, (list, tuple)) or len(outputs) != 2 + len(sizes):
        raise ValueError(
            "the network must return two outputs (policy params [B, num_actions or 2 * action_dim], value [B, 1]), "
            "and a recurrent one its new state after them; "
            f"got {type(outputs).__name__} of length {len(outputs) if isinstance(outputs, (list, tuple)) else 1}"
        )
    params, value = outputs[:2]
    width = distribution.num_params(action_space)
    if tuple(params.shape) != (2, width):
        what = "Gaussian mean and log std" if isinstance(action_space, gym.spaces.Box) else "logits"
        raise ValueError(
            f"the network's first output ({what}) must have shape [B, {width}] for the action "
            f"space {action_space}; for a batch of 2 it returned {tuple(params.shape)}"
        )
    if tuple(value.shape) not in ((2,), (2, 1)):
        raise ValueError(
            f"the network's second output (value) must have shape [B] or [B, 1]; "
            f"for a batch of 2 it returned {tuple(value.shape)}"
        )
    for i, (new, size) in enumerate(zip(outputs[2:], sizes, strict=True)):
        if tuple(new.shape) != (2, size):
            raise ValueError(f"the recurrent network's new state {i} must have shape [B, {size}] like its state; "
                             f"for a batch of 2 it returned {tuple(new.shape)}")
