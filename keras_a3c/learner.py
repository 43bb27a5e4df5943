"""The learning side: the A3C update of the shared network and optimizer, and its compiled form.

`Learner.update` is the update of one worker's segment (the loss of `keras_a3c.losses`, one
`tf.GradientTape`, the optimizer); `Learner.compile` traces it once, on the main thread, for the
packed segments of one `fit` (see `keras_a3c.segment`). Workers call the compiled function
under `Learner.lock` (none when `hogwild`), which is also what `A3C.paused_updates` takes.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Callable, Sequence

import gymnasium as gym
import keras
import numpy as np
import tensorflow as tf

from keras_a3c import losses
from keras_a3c.acting import ActionSampler
from keras_a3c.config import A3CConfig, decay_to_a_tenth
from keras_a3c.distributions import DiagGaussian, for_action_space, masked_params
from keras_a3c.metrics import RunningMeans
from keras_a3c.normalization import merge_samples, observation_normalizers
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
        # What the entropy schedule counts: the shared optimizer's updates; a replica without an optimizer
        # (a Ray actor's) is told the learner's count with each set of weights (`set_updates`).
        self.updates = optimizer.iterations if optimizer is not None else tf.Variable(0, dtype=tf.int64,
                                                                                        trainable=False)
        self._entropy_schedule = (decay_to_a_tenth(config.entropy_coef, config.entropy_decay_updates)
                                  if config.entropy_decay_updates else None)
        self._function: tf.types.experimental.PolymorphicFunction | None = None

    def update(self, segment: dict[str, tf.Tensor], action_space: gym.Space,
               codec: ObservationCodec | None = None) -> None:
        """One A3C update from one worker's segment: `gradients`, then `apply` (arguments as `gradients`)."""
        grads, logs, moments = self.gradients(segment, action_space, codec)
        self.apply(grads, logs, moments, logs["grad_norm"])

    def gradients(self, segment: dict[str, tf.Tensor], action_space: gym.Space, codec: ObservationCodec | None = None
                  ) -> tuple[list[tf.Tensor], dict[str, tf.Tensor], list[tuple[tf.Tensor, tf.Tensor, tf.Tensor]]]:
        """The A3C gradients of one worker's segment with respect to the network's trainable variables.

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
            initial_state, a list of [B, S_i] (see `keras_a3c.recurrent`); with `config.importance_clip`
            also behaviour_params [T, B, P], the params each action was sampled from.
          action_space: the env's action space.
          codec: given, the observations are rows (a list of [T+1, B, F_g], one per storage dtype, see
            `keras_a3c.observations`) that it gives back to the network in the observation space's
            structure; None: they are the network's input [T+1, B, *obs] as they are.

        Returns:
          (gradients, one per trainable variable; logs {name: scalar} of UPDATE_LOGS; for each
          `ObservationNormalization` layer the (mean, variance, count) of the segment's valid observations it
          sees). A non-finite loss or gradient fails the checks every returned tensor depends on.
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
        mask = tf.reshape(segment["valid"], [n])

        def loss_and_gradients():
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
                taken = tf.reshape(actions, [n, *actions.shape[2:]])
                log_pi = pi.log_prob(taken)
                values, returns = tf.reshape(values[:horizon], [n]), tf.reshape(returns, [n])
                policy_advantages = losses.advantages(returns, values)
                if config.normalize_advantages:
                    policy_advantages = losses.normalized(policy_advantages, mask)
                if config.importance_clip is not None:  # the workers acted with mu, a policy some updates old
                    mu = distribution.from_params(tf.reshape(segment["behaviour_params"], [n, -1]))
                    policy_advantages *= losses.truncated_importance_weights(log_pi, mu.log_prob(taken),
                                                                             config.importance_clip)
                terms = losses.actor_critic_loss(
                    log_pi=log_pi,
                    entropies=pi.entropy(),
                    values=values,
                    returns=returns,
                    mask=mask,
                    value_coef=config.value_coef,
                    entropy_coef=self.entropy_coef(),
                    policy_advantages=policy_advantages,
                )
                if distribution is DiagGaussian and config.action_bound_coef > 0:
                    low, high = (tf.constant(bound, pi.mean.dtype) for bound in (action_space.low, action_space.high))
                    terms["loss"] += config.action_bound_coef * losses.action_bound_loss(pi.mean, low, high, mask)
            return tape.gradient(terms["loss"], variables), terms, values, returns

        if config.jit_compile:  # XLA compiles the forward and backward pass; the finite checks below stay
            # outside it, where they can raise (XLA drops check_numerics)
            loss_and_gradients = tf.function(loss_and_gradients, jit_compile=True, autograph=False)
        grads, terms, values, returns = loss_and_gradients()
        grad_norm = tf.linalg.global_norm(grads)
        # A non-finite loss or gradient raises here, before anything is written: every op that uses what
        # this returns waits for the checks (graph ops are otherwise unordered).
        checks = [
            tf.debugging.check_numerics(terms["loss"], _NOT_FINITE + "loss"),
            tf.debugging.check_numerics(grad_norm, _NOT_FINITE + "gradient norm"),
        ]
        with tf.control_dependencies(checks):
            grads = [tf.identity(g) for g in grads]
            logs = {name: tf.identity(value) for name, value in terms.items()}
            logs["grad_norm"] = tf.identity(grad_norm)
            logs["explained_variance"] = losses.explained_variance(values, returns, mask)
            # Each observation statistic's sample: this segment's valid observations.
            moments = [layer.moments((inputs if layer.observation_key is None else inputs[layer.observation_key])[:n],
                                     mask) for layer in self.normalizers]
        return grads, logs, moments

    def entropy_coef(self) -> tf.Tensor:
        """beta for the next update: `config.entropy_coef`, or with `config.entropy_decay_updates` its linear
        decay to a tenth over that many updates (float32 scalar)."""
        if self._entropy_schedule is None:
            return tf.constant(self.config.entropy_coef, tf.float32)
        return tf.cast(self._entropy_schedule(self.updates), tf.float32)

    def set_updates(self, updates: int) -> None:
        """A replica's count of the learner's updates (what `entropy_coef` decays with)."""
        self.updates.assign(updates)

    def apply(self, grads: list[tf.Tensor], logs: dict[str, tf.Tensor],
              moments: list[tuple[tf.Tensor, tf.Tensor, tf.Tensor]], grad_norm: tf.Tensor | None = None) -> None:
        """Apply `gradients`' results to the shared model: clip the gradients by their global norm
        (`grad_norm`, if known), one optimizer step, the observation samples merged into the statistics of
        the `ObservationNormalization` layers (after the forward pass, so an update that is refused leaves
        them as they were too), the logs into the running means."""
        # Every write waits for the logs, which wait for `gradients`' finite checks: without this the
        # optimizer's step counter (which reads no gradient) could move on for an update that is refused.
        with tf.control_dependencies(list(logs.values())):
            if self.config.max_grad_norm is not None:
                grads, _ = tf.clip_by_global_norm(grads, self.config.max_grad_norm, use_norm=grad_norm)
            self.optimizer.apply(grads, self.network.trainable_variables)
            for layer, sample in zip(self.normalizers, moments, strict=True):
                layer.merge_statistics(*sample)
            self.logs.update_state(logs)

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

    def segment_layout(self, codec: ObservationCodec, sampler: ActionSampler) -> SegmentLayout:
        """The layout of the segments this learner takes from workers that act with `sampler` on the
        observation rows of `codec`: with the behaviour policy's params where `config.importance_clip`
        needs them."""
        return SegmentLayout(codec.row_layout, sampler.shape, sampler.dtype, state_sizes(self.network),
                             sampler.num_params if self.config.importance_clip is not None else 0)

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
        def packed_update(*segment):
            self.update(layout.unpack(segment), action_space, codec)
            return _flat(self.network.weights)

        self._function = tf.function(
            packed_update, input_signature=layout.specs(self.config.n_steps, batch), autograph=False
        )
        concrete = self._function.get_concrete_function()
        split = splitter(self.network.weights)
        return lambda segment: split(_call_checked(concrete, segment))

    def compile_gradients(self, layout: SegmentLayout, batch: int, action_space: gym.Space,
                          codec: ObservationCodec) -> Callable[[list[np.ndarray]], Gradients]:
        """Trace `gradients` once for the segments of `layout` with `batch` envs, as `compile` does, for
        a worker whose update is applied elsewhere (the Ray backend). The returned function takes one
        segment and returns its `Gradients` at the network's weights as they are (theta').
        A non-finite loss or gradient is a `FloatingPointError`."""
        def packed_gradients(*segment):
            grads, logs, moments = self.gradients(layout.unpack(segment), action_space, codec)
            return [_flat(grads), tf.stack([logs[name] for name in UPDATE_LOGS]), *_flat_moments(moments)]

        function = tf.function(packed_gradients, input_signature=layout.specs(self.config.n_steps, batch),
                               autograph=False).get_concrete_function()
        shapes = [tuple(layer.mean.shape) for layer in self.normalizers]

        def gradients(segment: list[np.ndarray]) -> Gradients:
            flat_grads, logs, *moments = _call_checked(function, segment, many=True)
            return Gradients(flat_grads[None], logs[None], [(m.reshape(shape), v.reshape(shape), c) for (m, v, c), shape
                                                            in zip(_triples(moments), shapes, strict=True)])

        return gradients

    def compile_apply(self) -> Callable[[Gradients], np.ndarray]:
        """Trace `apply` once, on this thread: the returned function applies `Gradients` to the shared model
        and optimizer, one update per segment (each clipped), and returns the network's weights after them
        (trainable or not, in the order of `acting.weights_of`) as one flat float32 vector."""
        variables = self.network.trainable_variables
        moment_specs = []
        for layer in self.normalizers:
            moment_specs += [tf.TensorSpec(layer.mean.shape, tf.float32)] * 2 + [tf.TensorSpec([], tf.float32)]
        specs = [tf.TensorSpec([sum(math.prod(v.shape) for v in variables)], tf.float32),
                 tf.TensorSpec([len(UPDATE_LOGS)], tf.float32)]
        splits = [math.prod(v.shape) for v in variables]

        def packed_apply(flat_grads, logs, *moments):
            grads = [tf.reshape(g, v.shape) for g, v in zip(tf.split(flat_grads, splits), variables, strict=True)]
            self.apply(grads, dict(zip(UPDATE_LOGS, tf.unstack(logs), strict=True)), _triples(moments))
            return _flat(self.network.weights)

        # The observation samples go with the first update, none (count 0) with the others.
        function = tf.function(packed_apply, input_signature=specs + moment_specs,
                               autograph=False).get_concrete_function()

        def apply(gradients: Gradients) -> np.ndarray:
            moments = [tf.constant(np.asarray(x, np.float32)) for x in _flat_moments(gradients.moments)]
            nothing = [tf.zeros_like(x) for x in moments]
            for i in range(gradients.segments):
                flat = function(tf.constant(gradients.flat[i]), tf.constant(gradients.logs[i]),
                                *(moments if i == 0 else nothing))
            return flat.numpy()

        return apply

    @property
    def trace_count(self) -> int:
        """How often the compiled update was traced (stays 1 during `fit`); 0 before `compile`."""
        return 0 if self._function is None else self._function.experimental_get_tracing_count()


@dataclasses.dataclass
class Gradients:
    """The A3C gradients of one or more segments, to be applied by a learner in another process, one
    update per segment.

    Attributes:
      flat: each segment's gradient, all trainable variables as one float32 vector: [segments, N].
      logs: each segment's UPDATE_LOGS, float32 [segments, len(UPDATE_LOGS)].
      moments: for each `ObservationNormalization` layer, (mean, variance, count) of the observations of
        all the segments (merged into its statistics with the first update).
    """

    flat: np.ndarray
    logs: np.ndarray
    moments: list[tuple[np.ndarray, np.ndarray, float]]

    @property
    def segments(self) -> int:
        return len(self.flat)

    def add(self, other: Gradients) -> None:
        """Append `other`'s segments to these."""
        self.flat = np.concatenate([self.flat, other.flat])
        self.logs = np.concatenate([self.logs, other.logs])
        self.moments = [merge_samples(mine, theirs) for mine, theirs in zip(self.moments, other.moments, strict=True)]


def _flat(tensors: list[tf.Tensor]) -> tf.Tensor:
    """The tensors as one float32 vector."""
    return tf.concat([tf.reshape(tf.cast(t, tf.float32), [-1]) for t in tensors], axis=0)


def _flat_moments(moments: list[tuple[tf.Tensor, tf.Tensor, tf.Tensor]]) -> list[tf.Tensor]:
    return [x for sample in moments for x in sample]


def _triples(items: Sequence) -> list[tuple]:
    return [tuple(items[i:i + 3]) for i in range(0, len(items), 3)]


def splitter(variables: list[tf.Variable]) -> Callable[[np.ndarray], list[np.ndarray]]:
    """A function from one flat float32 vector to views of it in the variables' shapes."""
    shapes = [tuple(v.shape) for v in variables]
    splits = np.cumsum([math.prod(shape) for shape in shapes])[:-1]
    return lambda flat: [part.reshape(shape) for part, shape in zip(np.split(flat, splits), shapes, strict=True)]


def _call_checked(function, segment: list[np.ndarray], many: bool = False):
    """function(*segment) as numpy, its failed finite checks as a `FloatingPointError`."""
    try:
        result = function(*(tf.constant(array) for array in segment))
    except tf.errors.InvalidArgumentError as error:
        if _NOT_FINITE not in error.message:
            raise
        what = error.message.split(_NOT_FINITE)[1].split(" :")[0]
        raise FloatingPointError(
            f"the A3C {what} is not finite (rewards too large, or a diverging network?); the update "
            "was not applied, the shared weights are those from before it"
        ) from error
    return [x.numpy() for x in result] if many else result.numpy()
