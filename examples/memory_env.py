"""CartPole-v1 with the velocities hidden: a task that needs memory.

The observation keeps the cart position x and the pole angle theta and drops their velocities, so
one observation does not say where the pole is going: a feedforward policy cannot balance it, a
recurrent one infers the velocities from the observations it has seen. Importing this module
registers the gymnasium id `CartPoleNoVelocity-v1` (gymnasium and numpy only, so an exported policy
can be played with `examples/play.py --env memory_env:CartPoleNoVelocity-v1`).
"""

import gymnasium as gym
import numpy as np

ENV_ID = "CartPoleNoVelocity-v1"
VISIBLE = [0, 2]  # x and theta of CartPole's (x, x_dot, theta, theta_dot)


class HideVelocities(gym.ObservationWrapper):
    """Keeps the entries VISIBLE of CartPole's observation."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        space = env.observation_space
        self.observation_space = gym.spaces.Box(space.low[VISIBLE], space.high[VISIBLE], dtype=np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation[VISIBLE]


def make_cartpole_no_velocity(**kwargs) -> gym.Env:
    return HideVelocities(gym.make("CartPole-v1", **kwargs))


if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point=make_cartpole_no_velocity)
