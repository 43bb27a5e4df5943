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
"""

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


def make_atari(game_id: str, **kwargs) -> gym.Env:
    """The preprocessed game `game_id` (an `ALE/<Game>-v5` id)."""
    env = gym.make(game_id, frameskip=1, repeat_action_probability=0.0, **kwargs)
    env = gym.wrappers.AtariPreprocessing(env, noop_max=30, frame_skip=4, screen_size=84, grayscale_obs=True,
                                          terminal_on_life_loss=False, scale_obs=False)
    return FramesLast(gym.wrappers.FrameStackObservation(env, 4))


for _game_id in [env_id for env_id in gym.registry if env_id.startswith("ALE/") and env_id.endswith("-v5")]:
    _name = f"{NAMESPACE}/{_game_id.removeprefix('ALE/')}"
    if _name not in gym.registry:
        gym.register(_name, entry_point=make_atari, kwargs={"game_id": _game_id})
