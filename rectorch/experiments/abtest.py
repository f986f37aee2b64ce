"""A/B analysis of impression logs, per user (the unit of randomisation).

The primary metric is **user conversion**: the share of an arm's users with at least one click. Its 95 %
interval is Wilson's (scipy ``binomtest``); the lift against the control is the difference of conversions
with a Wald interval, its p-value the pooled two-proportion z-test (scipy ``norm``). The per-shown-item CTR
(clicks / shown items) is reported as a point value only: its rows are not independent within a user.
"""

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats


def two_proportion_test(x_control: int, n_control: int, x_treat: int, n_treat: int, alpha: float = 0.05) -> dict:
    """Difference ``p_treat - p_control``, its two-sided (1 - alpha) Wald interval, and the pooled z-test p-value."""
    if min(n_control, n_treat) <= 0:
        raise ValueError("two_proportion_test: both groups need at least one user")
    p_c, p_t = x_control / n_control, x_treat / n_treat
    diff = p_t - p_c
    pooled = (x_control + x_treat) / (n_control + n_treat)
    se_null = math.sqrt(pooled * (1 - pooled) * (1 / n_control + 1 / n_treat))
    z = diff / se_null if se_null > 0 else 0.0
    p_value = float(2 * stats.norm.sf(abs(z)))
    se = math.sqrt(p_c * (1 - p_c) / n_control + p_t * (1 - p_t) / n_treat)
    half = float(stats.norm.ppf(1 - alpha / 2)) * se
    return {"diff": diff, "ci": (diff - half, diff + half), "z": z, "p_value": p_value}


def sample_size_per_arm(p_control: float, mde: float, power: float = 0.8, alpha: float = 0.05) -> int:
    """Users per arm to detect ``p_control + mde`` (two-sided, pooled-variance closed form, as in Fleiss)."""
    p_treat = p_control + mde
    if not (0 < p_control < 1 and 0 < p_treat < 1) or mde == 0:
        raise ValueError(f"sample size: need 0 < p_control ({p_control}) and p_control + mde ({p_treat}) < 1, mde != 0")
    if not (0 < power < 1 and 0 < alpha < 1):
        raise ValueError(f"sample size: power ({power}) and alpha ({alpha}) must lie in (0, 1)")
    z_a, z_b = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(power)
    p_bar = (p_control + p_treat) / 2
    spread = z_a * math.sqrt(2 * p_bar * (1 - p_bar)) + z_b * math.sqrt(
        p_control * (1 - p_control) + p_treat * (1 - p_treat)
    )
    return math.ceil(spread**2 / mde**2)


def _percentiles(items: np.ndarray, popularity: np.ndarray) -> np.ndarray:
    """Each row's item popularity as a percentile (0-100) among the log's distinct items."""
    unique, first = np.unique(items, return_index=True)
    ranks = stats.rankdata(popularity[first], method="average")
    pct = 100.0 * (ranks - 0.5) / len(unique)
    return pct[np.searchsorted(unique, items)]


def _diversity(impressions: np.ndarray, categories: np.ndarray) -> float:
    """Mean over impressions of distinct categories / shown items."""
    _, imp = np.unique(impressions, return_inverse=True)
    _, cat = np.unique(categories.astype(str), return_inverse=True)
    pairs = np.unique(np.stack([imp, cat], axis=1), axis=0)
    distinct = np.bincount(pairs[:, 0], minlength=imp.max() + 1)
    shown = np.bincount(imp)
    return float(np.mean(distinct / shown))


@dataclass
class ABReport:
    """Per-arm rows (control first) and the settings they were computed with."""

    control: str
    settings: dict[str, Any]
    arms: list[dict[str, Any]] = field(default_factory=list)

    def table(self) -> str:
        head = f"{'arm':<12}{'users':>9}{'imps':>9}{'CTR':>8}{'conv':>8}  {'95% CI':<17}{'lift':>8}  "
        head += f"{'lift 95% CI':<19}{'p':>8}{'cover':>8}{'divers':>8}{'pop%':>7}"
        lines = [head]
        for a in self.arms:
            lift = a.get("lift")
            lift_ci = f"[{lift['ci'][0]:+.4f}, {lift['ci'][1]:+.4f}]" if lift else "-"
            fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
            lines.append(
                f"{a['arm']:<12}{a['users']:>9}{a['impressions']:>9}{a['ctr']:>8.4f}{a['conversion']:>8.4f}  "
                f"[{a['conversion_ci'][0]:.4f}, {a['conversion_ci'][1]:.4f}] "
                f"{fmt(lift and lift['diff'], '+.4f'):>8}  "
                f"{lift_ci:<19}"
                f"{fmt(lift and lift['p_value'], '.2g'):>8}"
                f"{a['coverage']:>8.3g}{fmt(a['diversity'], '.3f'):>8}{fmt(a['popularity_percentile'], '.1f'):>7}"
            )
        n = self.settings["sample_size_per_arm"]
        lines.append(
            f"users per arm to detect {self.settings['mde']:+g} on the control's conversion "
            f"(power {self.settings['power']}, alpha {self.settings['alpha']}): {'-' if n is None else n}"
        )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"control": self.control, "settings": self.settings, "arms": self.arms}


def analyse(
    log: dict[str, np.ndarray],
    control: str = "control",
    mde: float = 0.01,
    power: float = 0.8,
    alpha: float = 0.05,
    catalog_size: int | None = None,
) -> ABReport:
    """Per-arm users, CTR, conversion + CI, lift vs ``control`` + CI + p-value, sample size, guardrails."""
    arms = np.asarray(log["arm"]).astype(str)
    users = np.asarray(log["user_id"]).astype(str)
    clicked = np.asarray(log["clicked"], dtype=bool)
    names = sorted(set(arms.tolist()))
    if control not in names:
        raise ValueError(f"control arm {control!r} not in the log (arms: {', '.join(names)})")
    user_arms = np.unique(np.stack([users, arms], axis=1), axis=0)
    shared, counts = np.unique(user_arms[:, 0], return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"user {str(shared[counts > 1][0])!r} appears in more than one arm: users must be randomised")
    if catalog_size is not None and catalog_size <= 0:
        raise ValueError(f"catalog_size must be positive, got {catalog_size}")
    pct = _percentiles(np.asarray(log["item_id"]).astype(str), log["popularity"]) if "popularity" in log else None
    settings = {"mde": mde, "power": power, "alpha": alpha, "catalog_size": catalog_size, "metric": "user_conversion"}
    report = ABReport(control, settings)
    per_arm = {}
    for name in [control, *(n for n in names if n != control)]:
        rows = arms == name
        arm_users, inverse = np.unique(users[rows], return_inverse=True)
        converted = int((np.bincount(inverse, weights=clicked[rows]) > 0).sum())
        ci = stats.binomtest(converted, len(arm_users)).proportion_ci(1 - alpha, method="wilson")
        items = np.unique(np.asarray(log["item_id"])[rows].astype(str))
        per_arm[name] = (converted, len(arm_users))
        report.arms.append(
            {
                "arm": name,
                "users": len(arm_users),
                "impressions": len(np.unique(np.asarray(log["impression_id"])[rows])),
                "shown": int(rows.sum()),
                "clicks": int(clicked[rows].sum()),
                "ctr": float(clicked[rows].mean()),
                "conversion": converted / len(arm_users),
                "conversion_ci": [float(ci.low), float(ci.high)],
                "coverage": len(items) / catalog_size if catalog_size else len(items),
                "diversity": _diversity(log["impression_id"][rows], log["category"][rows])
                if "category" in log
                else None,
                "popularity_percentile": float(pct[rows].mean()) if pct is not None else None,
            }
        )
    x_c, n_c = per_arm[control]
    for row in report.arms:
        row["lift"] = None
        if row["arm"] != control:
            test = two_proportion_test(x_c, n_c, *per_arm[row["arm"]], alpha=alpha)
            test["ci"] = list(test["ci"])
            test["relative"] = test["diff"] / (x_c / n_c) if x_c else None
            row["lift"] = test
    p_c = x_c / n_c
    feasible = 0 < p_c < 1 and 0 < p_c + mde < 1 and mde != 0
    report.settings["sample_size_per_arm"] = sample_size_per_arm(p_c, mde, power, alpha) if feasible else None
    return report
