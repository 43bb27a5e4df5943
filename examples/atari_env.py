"""Atari 2600 games as the A3C paper played them (Mnih et al. 2016, section 8, which takes the preprocessing of
Mnih et al. 2015): 84x84 greyscale frames, the max of the last two frames of each action repeated 4 times, the
last 4 such frames stacked, up to 30 no-op actions at the start of an episode.

Importing this module registers, for every `ALE/<Game>-v5` id of ale-py (`pip install ale-py==0.12.1`, which
bundles the ROMs), the id `AtariA3C/<Game>-v5`: the v5 game without its own frame skipping and sticky actions,
then gymnasium's `AtariPreprocessing` and `FrameStackObservation`, the stack moved last, so an observation is
a uint8 [84, 84, 4] image (what `keras_a3c.actor_critic_cnn(..., "atari")` takes). Episodes end with the game,
not at each lost life: gymnasium's `terminal_on_life_loss` would reset the whole game at a lost life, which
changes the task (Baselines' EpisodicLifeEnv continues it instead); Pong has no lives. Rewards are the game's:
the paper's clipping to [-1, 1] is done for learning by `A3CConfig(clip_raw_rewards=1.0)`, so the logged
returns stay the game's score. gymnasium, numpy and ale-py only: `examples/play.py --env
atari_env:AtariA3C/Pong-v5` plays an exported policy without keras_a3c.

A batch of these envs (`gym.make_vec(id, num_envs, vectorization_mode="vector_entry_point")`, which keras_a3c's
`fit` and `evaluate` use) is ale-py's `AtariVectorEnv` with the same preprocessing, moved frames-last: it steps the
emulators in C++ threads outside Python's global lock, where gymnasium's wrappers hold it for ~0.5 ms a step.
Both give the same frames and rewards for the same actions (tests/test_examples.py checks it); the stack starts
from zero frames in both.
"""

import os

import ale_py
import gymnasium as gym
import numpy as np

gym.register_envs(ale_py)

NAMESPACE = "AtariA3C"


class FramesLast(gym.ObservationWrapper):
    """[4, 84, 84] stacked frames -> [84, 84, 4], channels last as Keras's Conv2D takes them."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        space = env.observation_space
        self.observation_space = gym.spaces.Box(0, 255, (*space.shape[1:], space.shape[0]), np.uint8)

    def observation(self, observation) -> np.ndarray:
        return np.moveaxis(np.asarray(observation), 0, -1)


class VectorFramesLast(gym.vector.VectorObservationWrapper):
    """A batch of [4, 84, 84] stacked frames -> [B, 84, 84, 4]."""

    def __init__(self, env: gym.vector.VectorEnv):
        super().__init__(env)
        space = env.single_observation_space
        self.single_observation_space = gym.spaces.Box(0, 255, (*space.shape[1:], space.shape[0]), np.uint8)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, env.num_envs)

    def observations(self, observations: np.ndarray) -> np.ndarray:
        return np.moveaxis(observations, 1, -1)


def make_atari(game_id: str, noop_max: int = 30, **kwargs) -> gym.Env:
    """The preprocessed game `game_id` (an `ALE/<Game>-v5` id)."""
    env = gym.make(game_id, frameskip=1, repeat_action_probability=0.0, **kwargs)
    env = gym.wrappers.AtariPreprocessing(env, noop_max=noop_max, frame_skip=4, screen_size=84, grayscale_obs=True,
                                          terminal_on_life_loss=False, scale_obs=False)
    return FramesLast(gym.wrappers.FrameStackObservation(env, 4, padding_type="zero"))


def make_atari_vector(game_id: str, num_envs: int, noop_max: int = 30) -> gym.vector.VectorEnv:
    """`num_envs` copies of `make_atari(game_id)` stepped by ale-py's vector env (next-step autoreset, as
    gymnasium's vector envs)."""
    from ale_py.vector_env import AtariVectorEnv

    env = AtariVectorEnv(gym.spec(game_id).kwargs["game"], num_envs, num_threads=min(num_envs, os.cpu_count() or 1),
                         repeat_action_probability=0.0, frameskip=4, maxpool=True, noop_max=noop_max,
                         img_height=84, img_width=84, grayscale=True, stack_num=4, episodic_life=False,
                         reward_clipping=False, use_fire_reset=False,
                         max_num_frames_per_episode=gym.spec(game_id).kwargs["max_num_frames_per_episode"])
    return VectorFramesLast(env)


for _game_id in [env_id for env_id in gym.registry if env_id.startswith("ALE/") and env_id.endswith("-v5")]:
    _name = f"{NAMESPACE}/{_game_id.removeprefix('ALE/')}"
    if _name not in gym.registry:
        gym.register(_name, entry_point=make_atari, vector_entry_point=make_atari_vector,
                     kwargs={"game_id": _game_id})
