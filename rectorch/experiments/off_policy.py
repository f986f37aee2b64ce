"""Off-policy estimates of an arm's CTR from logged bandit feedback (the Open Bandit Pipeline's definitions).

One logged round ``i`` is an answer: the arm ``a_i`` the logging policy played, its reward ``r_i`` (1 when
any shown item was clicked) and its propensity ``p_i`` (the probability the logging policy gave ``a_i``).
For the target policy "always play arm ``a``" the importance weight is ``w_i = 1[a_i = a] / p_i``:

- IPS: ``V = mean(w_i r_i)``; interval: normal, from the sample variance of ``w_i r_i``.
- SNIPS: ``V = sum(w_i r_i) / sum(w_i)``; interval: delta method, ``var = sum(w_i^2 (r_i - V)^2) / sum(w_i)^2``.

Both are unbiased (SNIPS consistent) when every arm has a positive logging probability.
"""

import numpy as np
from scipy import stats


def rounds_from_log(log: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per answer (``impression_id``) of an impression log: its arm, reward (any click) and propensity."""
    ids = np.asarray(log["impression_id"]).astype(str)
    impressions, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    rewards = np.bincount(inverse, weights=np.asarray(log["clicked"], bool), minlength=len(impressions)) > 0
    return np.asarray(log["arm"]).astype(str)[first], rewards.astype(np.float64), np.asarray(log["propensity"])[first]


def estimate(
    arms: np.ndarray, rewards: np.ndarray, propensities: np.ndarray, target: str, alpha: float = 0.05
) -> dict[str, float | list[float]]:
    """IPS and SNIPS estimates of ``target``'s reward per answer, each with its (1 - alpha) interval."""
    if not len(arms) or not len(arms) == len(rewards) == len(propensities):
        raise ValueError("off-policy estimate: arms, rewards and propensities must be non-empty and of one length")
    propensities = np.asarray(propensities, np.float64)
    if not ((propensities > 0) & (propensities <= 1)).all():
        raise ValueError("off-policy estimate: propensities must lie in (0, 1]")
    weights = (np.asarray(arms) == target) / propensities
    terms = weights * np.asarray(rewards, np.float64)
    z = float(stats.norm.ppf(1 - alpha / 2))
    ips = float(terms.mean())
    ips_half = z * float(terms.std(ddof=1)) / np.sqrt(len(terms)) if len(terms) > 1 else float("inf")
    total = float(weights.sum())
    if total == 0:
        return {"ips": ips, "ips_ci": [ips - ips_half, ips + ips_half], "snips": None, "snips_ci": None}
    snips = float(terms.sum() / total)
    snips_half = z * float(np.sqrt(np.sum(weights**2 * (rewards - snips) ** 2))) / total
    return {
        "ips": ips,
        "ips_ci": [ips - ips_half, ips + ips_half],
        "snips": snips,
        "snips_ci": [snips - snips_half, snips + snips_half],
    }
