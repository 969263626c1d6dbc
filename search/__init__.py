"""Hardware-aware architecture search: strategies (RNN controller, evolution, random) as Ray Tune searchers,
reward, trial and run driver.

The light modules (:mod:`search.reward`, :mod:`search.pareto`) import no torch or Ray; the
controller needs torch and the searcher/driver need Ray, so import them from their modules.
"""

from search.reward import Reward, reward

__all__ = ["Reward", "reward"]
