"""The learning side: the A3C update of the shared network and optimizer, and its compiled form.

`Learner.update` is the update of one worker's segment (the loss of `keras_a3c.losses`, one
`tf.GradientTape`, the optimizer); `Learner.compile` traces it once, on the main thread, for the
packed segments of one `fit` (see `keras_a3c.segment`). Workers call the compiled function
under `Learner.lock` (none when `hogwild`), which is also what `A3C.paused_updates` takes.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

import gymnasium as gym
import keras
import numpy as np
import tensorflow as tf

from keras_a3c import losses
from keras_a3c.config import A3CConfig
from keras_a3c.distributions import DiagGaussian, for_action_space, masked_params
from keras_a3c.metrics import RunningMeans
from keras_a3c.normalization import observation_normalizers
from keras_a3c.observations import MASK_KEY, ObservationCodec
from keras_a3c.recurrent import state_sizes
from keras_a3c.segment import SegmentLayout

# What each update logs (averaged per epoch): the loss terms, the gradient norm, the critic's fit.
UPDATE_LOGS = ("loss", "policy_loss", "value_loss", "entropy", "grad_norm", "explained_variance")
_NOT_FINITE = "not finite: A3C "

TrainFunction = Callable[[list[np.ndarray]], list[np.ndarray]]


class Learner:
    """Applies A3C updates to `network` with `optimizer`, as `config` says, and logs them in `logs`.

    Args:
      network: the shared actor-critic (see `keras_a3c.networks`).
      optimizer: shared by all workers (one set of slots, as the paper's shared RMSProp).
      config: the update's settings.
      logs: the running means of UPDATE_LOGS, updated by every update.
    """

    def __init__(self, network: keras.Model, optimizer: keras.optimizers.Optimizer, config: A3CConfig,
                 logs: RunningMeans):
        self.network = network
        self.optimizer = optimizer
        self.config = config
        self.logs = logs
        # Held by an update (unless hogwild) and by whoever must read the weights, the optimizer
        # and the counters between two updates (a save). Lock order: this lock, then TrainingState.lock.
        self.lock: threading.Lock | None = None if config.hogwild else threading.Lock()
        self.normalizers = observation_normalizers(network)
        self._function: tf.types.experimental.PolymorphicFunction | None = None

    def update(self, segment: dict[str, tf.Tensor], action_space: gym.Space,
               codec: ObservationCodec | None = None) -> None:
        """One A3C update from one worker's segment.

        The same loss serves every policy: the action space's distribution (`Categorical` or
        `DiagGaussian`) supplies log pi(a_t|s_t) and H(pi(.|s_t)); a Gaussian policy over a bounded
        Box adds `config.action_bound_coef` times `losses.action_bound_loss`.

        A recurrent network replays the segment step by step from `initial_state`, the state the worker
        took its first step with; the state is zeroed where an episode begins (row t + 1 after a step t
        that reset its env, the rows that are not `valid`), as the worker zeroed it while acting, and the
        gradient flows back through the segment only (truncated backpropagation through time over
        `n_steps`). The bootstrap value V(s_{t+T}) is taken with the state after the segment's last step.

        Args:
          segment: observations [T+1, B, *obs] (row T is the bootstrap observation), actions
            [T, B] (Discrete) or [T, B, D] (Box), rewards [T, B], terminated [T, B], truncated
            [T, B] and valid [T, B] (see `keras_a3c.segment`); for a recurrent network also
            initial_state, a list of [B, S_i] (see `keras_a3c.recurrent`).
          action_space: the env's action space.
          codec: given, the observations are rows (a list of [T+1, B, F_g], one per storage dtype, see
            `keras_a3c.observations`) that it gives back to the network in the observation space's
            structure; None: they are the network's input [T+1, B, *obs] as they are.
        """
        config = self.config
        distribution = for_action_space(action_space)
        observations, actions = segment["observations"], segment["actions"]
        horizon, batch = segment["rewards"].shape
        n = horizon * batch
        variables = self.network.trainable_variables
        if codec is None:
            inputs = tf.reshape(observations, [(horizon + 1) * batch, *observations.shape[2:]])
        else:
            inputs = codec.structure([tf.reshape(row, [(horizon + 1) * batch, row.shape[-1]]) for row in observations])
        with tf.GradientTape() as tape:
            if state_sizes(self.network):
                params, values = self._replay(observations, segment["initial_state"], segment["valid"], codec)
            else:
                params, values = self.network(inputs, training=True)
            values = tf.reshape(values, [horizon + 1, batch])
            if isinstance(inputs, dict) and MASK_KEY in inputs:  # the actions the env allowed at each step
                params = masked_params(params, inputs[MASK_KEY])
            params = tf.reshape(params, [horizon + 1, batch, -1])[:horizon]
            # V(s_{t+1}) of the next observation bootstraps the return; it is a constant.
            rewards = config.reward_scale * segment["rewards"]
            terminated, truncated = segment["terminated"], segment["truncated"]
            if config.gae_lambda == 1.0:
                returns = losses.n_step_returns(rewards, terminated, truncated, values[1:], config.gamma)
            else:
                returns = losses.lambda_returns(rewards, terminated, truncated, values[:horizon], values[1:],
                                                config.gamma, config.gae_lambda)
            pi = distribution.from_params(tf.reshape(params, [n, -1]))
            values, returns = tf.reshape(values[:horizon], [n]), tf.reshape(returns, [n])
            mask = tf.reshape(segment["valid"], [n])
            policy_advantages = None
            if config.normalize_advantages:
                policy_advantages = losses.normalized(losses.advantages(returns, values), mask)
            terms = losses.actor_critic_loss(
                log_pi=pi.log_prob(tf.reshape(actions, [n, *actions.shape[2:]])),
                entropies=pi.entropy(),
                values=values,
                returns=returns,
                mask=mask,
                value_coef=config.value_coef,
                entropy_coef=config.entropy_coef,
                policy_advantages=policy_advantages,
            )
            if distribution is DiagGaussian and config.action_bound_coef > 0:
                low, high = (tf.constant(bound, pi.mean.dtype) for bound in (action_space.low, action_space.high))
                terms["loss"] += config.action_bound_coef * losses.action_bound_loss(pi.mean, low, high, mask)
        grads = tape.gradient(terms["loss"], variables)
        grad_norm = tf.linalg.global_norm(grads)
        # A non-finite loss or gradient raises here, before the update touches the weights, the
        # optimizer or the metrics: every op after waits for the checks (graph ops are otherwise unordered).
        checks = [
            tf.debugging.check_numerics(terms["loss"], _NOT_FINITE + "loss"),
            tf.debugging.check_numerics(grad_norm, _NOT_FINITE + "gradient norm"),
        ]
        with tf.control_dependencies(checks):
            if config.max_grad_norm is not None:
                grads, _ = tf.clip_by_global_norm(grads, config.max_grad_norm, use_norm=grad_norm)
            self.optimizer.apply(grads, variables)
            # The observation statistics take in this segment's (valid) observations after the
            # forward pass, so an update that is refused leaves them as they were too.
            for layer in self.normalizers:
                seen = inputs if layer.observation_key is None else inputs[layer.observation_key]
                layer.update_statistics(seen[:n], tf.reshape(segment["valid"], [n]))
            explained_variance = losses.explained_variance(values, returns, mask)
            self.logs.update_state({**terms, "grad_norm": grad_norm, "explained_variance": explained_variance})

    def _replay(self, observations, state: list[tf.Tensor], valid: tf.Tensor,
                codec: ObservationCodec | None) -> tuple[tf.Tensor, tf.Tensor]:
        """A recurrent network over a segment, one step at a time from `state`: (params [(T+1) * B, P],
        values [(T+1) * B]), row-major in time as the feedforward pass over the flattened segment."""
        horizon = valid.shape[0]
        params, values = [], []
        for t in range(horizon + 1):
            if codec is None:
                step = observations[t]
            else:
                step = codec.structure([row[t] for row in observations])
            p, v, *state = self.network([step, *state], training=True)
            params.append(p)
            values.append(tf.reshape(v, [-1]))
            if t < horizon:  # step t reset these envs: row t + 1 begins an episode, from a zero state
                keep = tf.cast(valid[t], state[0].dtype)[:, None]
                state = [part * keep for part in state]
        return tf.concat(params, axis=0), tf.concat(values, axis=0)

    def compile(self, layout: SegmentLayout, batch: int, action_space: gym.Space,
                codec: ObservationCodec) -> TrainFunction:
        """Trace `update` once, on this thread, for the segments of `layout` with `batch` envs (their
        observation rows are those of `codec`).

        The returned function takes one segment (the arrays of `SegmentLayout.empty`) and returns the
        network's weights after the update (trainable or not, in the order of `acting.weights_of`) as
        float32 numpy arrays (views of one flat copy), for the worker's own copy theta': one tensor per
        segment array crosses the TF boundary, one comes back, which keeps the per-update Python overhead
        small. A non-finite loss or gradient is a `FloatingPointError`; the update is then not applied.
        """
        variables = self.network.weights

        def packed_update(*segment):
            self.update(layout.unpack(segment), action_space, codec)
            return tf.concat([tf.reshape(tf.cast(v, tf.float32), [-1]) for v in variables], axis=0)

        self._function = tf.function(
            packed_update, input_signature=layout.specs(self.config.n_steps, batch), autograph=False
        )
        concrete = self._function.get_concrete_function()
        shapes = [tuple(v.shape) for v in variables]
        splits = np.cumsum([math.prod(shape) for shape in shapes])[:-1]

        def train(segment: list[np.ndarray]) -> list[np.ndarray]:
            try:
                flat = concrete(*(tf.constant(array) for array in segment)).numpy()
            except tf.errors.InvalidArgumentError as error:
                if _NOT_FINITE not in error.message:
                    raise
                what = error.message.split(_NOT_FINITE)[1].split(" :")[0]
                raise FloatingPointError(
                    f"the A3C {what} is not finite (rewards too large, or a diverging network?); the update "
                    "was not applied, the shared weights are those from before it"
                ) from error
            return [part.reshape(shape) for part, shape in zip(np.split(flat, splits), shapes, strict=True)]

        return train

    @property
    def trace_count(self) -> int:
        """How often the compiled update was traced (stays 1 during `fit`); 0 before `compile`."""
        return 0 if self._function is None else self._function.experimental_get_tracing_count()
