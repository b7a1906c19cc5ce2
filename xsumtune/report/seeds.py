"""Seed variance: the spread of ROUGE over experiments that differ only in their training seed, read from
`dvc exp show --json`."""
from __future__ import annotations

import statistics

ROUGE = ("rouge1", "rouge2", "rougeL")
METRICS_FILE = "metrics/headline.json"  # the fine-tuned model's ROUGE, under fine_tuned


def experiments_from_show(shown: list[dict], names: list[str] | None = None) -> dict[str, dict]:
    """{name: {"params": params.yaml as a dict, "metrics": the headline's fine_tuned figures}} for the named experiments
    of `dvc exp show --json` (every experiment that has the metrics when names is empty)."""
    found = {}
    for baseline in shown:
        for experiment in baseline.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                data = rev.get("data") or {}
                metrics = (((data.get("metrics") or {}).get(METRICS_FILE) or {}).get("data") or {}).get("fine_tuned")
                if rev.get("name") and metrics:
                    found[rev["name"]] = {"params": data["params"]["params.yaml"]["data"], "metrics": metrics}
    if not names:
        return found
    missing = [name for name in names if name not in found]
    if missing:
        raise ValueError(f"experiment {missing[0]!r}: not in `dvc exp show` with {METRICS_FILE} "
                         f"(experiments there: {sorted(found) or 'none'})")
    return {name: found[name] for name in names}


def spread(experiments: dict[str, dict]) -> dict:
    """Mean, sample standard deviation, min and max of each ROUGE score over the experiments, their seeds,
    and the params other than seed in which they differ (then the spread is not seed variance alone)."""
    if len(experiments) < 2:
        raise ValueError(f"{len(experiments)} experiment(s) with {METRICS_FILE}: a spread needs at least 2")
    params = [_flat(e["params"]) for e in experiments.values()]
    differing = sorted(key for key in set().union(*params) if key != "seed"
                       and len({repr(p.get(key)) for p in params}) > 1)
    result = {"experiments": list(experiments), "seeds": [p.get("seed") for p in params],
              "differing_params": differing}
    for key in ROUGE:
        values = [e["metrics"][key] for e in experiments.values()]
        result[key] = {"mean": round(statistics.fmean(values), 4), "std": round(statistics.stdev(values), 4),
                       "min": min(values), "max": max(values)}
    return result


def _flat(params: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in params.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat
