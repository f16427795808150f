"""A sweep's search, with Optuna: the space as Optuna distributions, the next params to try,
and whether a lagging trial should be pruned. No database here: app.services.sweeps hands in
the trials it recorded.

The study lives in memory and is rebuilt from the sweep's own rows on every question (finished
trials added with optuna.trial.create_trial). The rows are the truth, so a crashed worker, a
retried trial or an API replica answering instead of a worker never leaves a second store
(Optuna's own tables) to reconcile, and it works alike on SQLite and PostgreSQL.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState, create_trial

optuna.logging.set_verbosity(optuna.logging.WARNING)  # its INFO line per trial is noise here

MAXIMIZE, MINIMIZE = "maximize", "minimize"
# Trial states of a sweep's leaderboard (an active trial's state is its job's status).
SUCCEEDED, PRUNED, FAILED, CANCELLED = "succeeded", "pruned", "failed", "cancelled"
_STATES = {SUCCEEDED: TrialState.COMPLETE, PRUNED: TrialState.PRUNED, FAILED: TrialState.FAIL,
           CANCELLED: TrialState.FAIL}


class SpaceError(ValueError):
    """A search-space entry that cannot be searched; key names the param."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


@dataclass(frozen=True)
class Plan:
    """How a sweep searches: what it optimises, with which sampler and pruner."""

    space: dict[str, dict[str, Any]]
    direction: str
    sampler: str
    seed: int
    trials: int
    pruner: dict[str, int] | None  # {"n_startup_trials", "n_warmup_steps"}; None: no pruning


@dataclass(frozen=True)
class Record:
    """One trial as the sweep recorded it; state None while its job is queued or running."""

    params: dict[str, Any]
    state: str | None
    value: float | None = None
    steps: dict[int, float] = field(default_factory=dict)


def normalise(space: Mapping[str, Any], integer: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The space with every entry checked and spelled out; integer: the params whose type is
    an integer (a range over one of them samples integers unless it says "int": false)."""
    ints = set(integer)
    if not space:
        raise SpaceError("", "give at least one param to search")
    return {key: _entry(key, value, key in ints) for key, value in space.items()}


def _entry(key: str, value: Any, integer: bool) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SpaceError(key, 'expected {"choices": [...]} or {"low": .., "high": ..}')
    if "choices" in value:
        return _choices(key, value)
    return _range(key, value, integer)


def _choices(key: str, value: dict[str, Any]) -> dict[str, Any]:
    choices = value["choices"]
    if set(value) != {"choices"}:
        raise SpaceError(key, "choices take no other key (low, high, log, int)")
    if not isinstance(choices, list) or not choices:
        raise SpaceError(key, "choices must be a non-empty list")
    if not all(c is None or isinstance(c, (bool, int, float, str)) for c in choices):
        raise SpaceError(key, "each choice must be a number, a string, a boolean or null")
    if len({repr(c) for c in choices}) != len(choices):
        raise SpaceError(key, "choices must be distinct")
    return {"choices": choices}


def _range(key: str, value: dict[str, Any], integer: bool) -> dict[str, Any]:
    unknown = set(value) - {"low", "high", "log", "int"}
    if unknown or not {"low", "high"} <= set(value):
        raise SpaceError(key, 'a range is {"low", "high", "log"?, "int"?}'
                         + (f"; unknown: {', '.join(sorted(unknown))}" if unknown else ""))
    low, high = value["low"], value["high"]
    if not all(_number(v) for v in (low, high)):
        raise SpaceError(key, "low and high must be finite numbers")
    log, is_int = value.get("log", False), value.get("int", integer)
    if not isinstance(log, bool) or not isinstance(is_int, bool):
        raise SpaceError(key, "log and int must be true or false")
    if low >= high:
        raise SpaceError(key, f"low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise SpaceError(key, f"a log scale needs low > 0, got {low}")
    if is_int and not (float(low).is_integer() and float(high).is_integer()):
        raise SpaceError(key, "an integer range needs whole-number low and high")
    if is_int:
        low, high = int(low), int(high)
    return {"low": low, "high": high, "log": log, "int": is_int}


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def samples(entry: dict[str, Any]) -> list[Any]:
    """Values of an entry to check a job with: every choice, or a range's ends and middle."""
    if "choices" in entry:
        return list(entry["choices"])
    low, high = entry["low"], entry["high"]
    middle = math.sqrt(low * high) if entry["log"] else (low + high) / 2
    return [low, high, round(middle) if entry["int"] else float(middle)]


def grid_size(space: dict[str, dict[str, Any]]) -> int | None:
    """How many combinations a space of choices only has; None when it has a range."""
    if any("choices" not in e for e in space.values()):
        return None
    return math.prod(len(e["choices"]) for e in space.values())


def _distribution(entry: dict[str, Any]) -> BaseDistribution:
    if "choices" in entry:
        return CategoricalDistribution(entry["choices"])
    if entry["int"]:
        return IntDistribution(entry["low"], entry["high"], log=entry["log"])
    return FloatDistribution(float(entry["low"]), float(entry["high"]), log=entry["log"])


def _kind(plan: Plan) -> str:
    """The sampler a plan uses; auto: grid when every param is choices and the budget fits in
    the grid (each combination once), else TPE."""
    size = grid_size(plan.space)
    if plan.sampler == "auto":
        return "grid" if size is not None and plan.trials <= size else "tpe"
    return plan.sampler


def _sampler(plan: Plan, number: int) -> optuna.samplers.BaseSampler:
    """The plan's sampler, seeded by the number of trials made before: a study is rebuilt for
    every question, and the same seed on the same history would propose the same params."""
    seed = plan.seed + number
    kind = _kind(plan)
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    # A grid is walked by enqueueing its untried combinations (see ask); past the grid, and
    # for "random", draws are uniform.
    return optuna.samplers.RandomSampler(seed=seed)


def _untried(plan: Plan, records: list[Record]) -> list[dict[str, Any]]:
    """The grid's combinations no trial has had yet, in an order shuffled by the seed."""
    keys = sorted(plan.space)
    tried = {_key(r.params) for r in records}
    combos = [dict(zip(keys, values, strict=True))
              for values in itertools.product(*(plan.space[k]["choices"] for k in keys))]
    untried = [c for c in combos if _key(c) not in tried]
    random.Random(plan.seed + len(records)).shuffle(untried)
    return untried


def _key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)


def _pruner(plan: Plan) -> optuna.pruners.BasePruner:
    if plan.pruner is None:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=plan.pruner["n_startup_trials"],
                                       n_warmup_steps=plan.pruner["n_warmup_steps"])


def _study(plan: Plan, records: list[Record], number: int) -> optuna.Study:
    direction = optuna.study.StudyDirection.MAXIMIZE if plan.direction == MAXIMIZE \
        else optuna.study.StudyDirection.MINIMIZE
    study = optuna.create_study(direction=direction, sampler=_sampler(plan, number),
                                pruner=_pruner(plan))
    dists = {k: _distribution(e) for k, e in plan.space.items()}
    for record in records:
        study.add_trial(_frozen(record, dists))
    return study


def _frozen(record: Record, dists: dict[str, BaseDistribution]) -> FrozenTrial:
    state = TrialState.RUNNING if record.state is None else _STATES[record.state]
    value = record.value if state == TrialState.COMPLETE else None
    if state == TrialState.COMPLETE and value is None:
        state = TrialState.FAIL  # succeeded without the metric: nothing to learn from
    return create_trial(state=state, value=value, params=dict(record.params),
                        distributions={k: d for k, d in dists.items() if k in record.params},
                        intermediate_values=dict(record.steps))


def ask(plan: Plan, records: list[Record], n: int) -> list[dict[str, Any]]:
    """The params of the next n trials, given every trial made so far (active ones included:
    a grid does not give them again, and TPE assumes their outcome, constant liar)."""
    study = _study(plan, records, len(records))
    if _kind(plan) == "grid":
        for params in _untried(plan, records)[:n]:
            study.enqueue_trial(params, skip_if_exists=False)
    dists = {k: _distribution(e) for k, e in plan.space.items()}
    return [study.ask(dists).params for _ in range(n)]


def should_prune(plan: Plan, records: list[Record], params: dict[str, Any],
                 steps: dict[int, float]) -> bool:
    """Whether the median pruner stops a running trial whose metric was steps ({epoch: value})
    so far, given the sweep's other trials."""
    if plan.pruner is None or not steps:
        return False
    study = _study(plan, records, len(records))
    study.enqueue_trial(params, skip_if_exists=False)
    trial = study.ask({k: _distribution(e) for k, e in plan.space.items()})
    for step, value in sorted(steps.items()):
        trial.report(value, step)
    return bool(trial.should_prune())


def epoch_values(metric: str, history: list[dict[str, Any]]) -> dict[int, float]:
    """{epoch: value} of metric in a job's per-epoch history (entries without it left out)."""
    out = {}
    for entry in history:
        value, epoch = entry.get(metric), entry.get("epoch")
        if isinstance(value, (int, float)) and _number(value) and isinstance(epoch, int):
            out[epoch] = float(value)
    return out


def trial_value(metric: str, direction: str, metrics: dict[str, Any],
                history: list[dict[str, Any]]) -> float | None:
    """A trial's value: metric in the job's final metrics; else, for a per-epoch metric (e.g.
    val_loss), its best epoch (the model keeps the best epoch's weights); None if neither."""
    final = metrics.get(metric)
    if isinstance(final, (int, float)) and _number(final):
        return float(final)
    values = epoch_values(metric, history).values()
    if not values:
        return None
    return max(values) if direction == MAXIMIZE else min(values)


def better(direction: str, a: float, b: float) -> bool:
    """a is better than b in this direction."""
    return a > b if direction == MAXIMIZE else a < b
