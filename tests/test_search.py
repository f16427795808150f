"""app.search: the space as Optuna sees it, the next params, the median pruner's verdict and a
trial's value, without a database."""

from __future__ import annotations

import math

import pytest

from app import search
from app.search import Plan, Record


def plan(space: dict, *, trials: int = 10, direction: str = "minimize", sampler: str = "auto",
         pruner: dict | None = None) -> Plan:
    return Plan(space=search.normalise(space, ["k"]), direction=direction, sampler=sampler,
                seed=0, trials=trials, pruner=pruner)


@pytest.mark.parametrize(("space", "key", "words"), [
    ({"lr": {"low": 0, "high": 1, "log": True}}, "lr", "low > 0"),
    ({"k": {"low": 1.5, "high": 4}}, "k", "whole-number"),
    ({"lr": {"low": 1, "high": 1}}, "lr", "below high"),
    ({"lr": {"low": 0, "high": 1, "step": 2}}, "lr", "unknown: step"),
    ({"lr": {"choices": [1, 1]}}, "lr", "distinct"),
    ({"lr": [1, 2]}, "lr", "expected"),
])
def test_bad_entries_name_their_param(space, key, words):
    with pytest.raises(search.SpaceError) as err:
        search.normalise(space, ["k"])
    assert err.value.key == key and words in err.value.message


def test_ranges_are_sampled_within_bounds_integers_as_integers():
    p = plan({"lr": {"low": 1e-4, "high": 1e-1, "log": True}, "k": {"low": 2, "high": 9}},
             sampler="random")
    records: list[Record] = []
    for _ in range(30):
        params = search.ask(p, records, 1)[0]
        records.append(Record(params=params, state="succeeded", value=params["lr"]))
    assert all(1e-4 <= r.params["lr"] <= 1e-1 for r in records)
    assert all(isinstance(r.params["k"], int) and 2 <= r.params["k"] <= 9 for r in records)
    # log scale: about as many draws below the geometric middle (~3.2e-3) as above it
    below = sum(r.params["lr"] < math.sqrt(1e-4 * 1e-1) for r in records)
    assert 8 <= below <= 22


def test_a_grid_gives_each_combination_once_even_to_trials_asked_together():
    p = plan({"k": {"choices": [2, 3]}, "act": {"choices": ["relu", "gelu"]}}, trials=4)
    first = search.ask(p, [], 2)
    running = [Record(params=x, state=None) for x in first]
    rest = search.ask(p, running, 2)
    combos = {(x["k"], x["act"]) for x in first + rest}
    assert len(combos) == 4


def test_the_median_rule_prunes_a_lagging_trial_only_after_startup_and_warmup():
    p = plan({"lr": {"choices": [0.1, 0.2, 1e-7]}}, pruner={"n_startup_trials": 2,
                                                            "n_warmup_steps": 2})
    done = [Record(params={"lr": 0.1}, state="succeeded", value=0.3,
                   steps={1: 0.9, 2: 0.6, 3: 0.3}),
            Record(params={"lr": 0.2}, state="succeeded", value=0.4,
                   steps={1: 0.95, 2: 0.7, 3: 0.4})]
    lagging = {1: 1.0, 2: 1.0}
    assert search.should_prune(p, done, {"lr": 1e-7}, lagging)
    assert not search.should_prune(p, done, {"lr": 1e-7}, {1: 1.0})  # warmup
    assert not search.should_prune(p, done[:1], {"lr": 1e-7}, lagging)  # startup
    assert not search.should_prune(p, done, {"lr": 0.1}, {1: 0.9, 2: 0.5})  # ahead
    up = Plan(**{**p.__dict__, "direction": "maximize"})
    assert not search.should_prune(up, done, {"lr": 1e-7}, lagging)  # higher is better there
    assert not search.should_prune(Plan(**{**p.__dict__, "pruner": None}), done,
                                   {"lr": 1e-7}, lagging)


def test_a_trials_value_is_its_final_metric_else_its_best_epoch():
    history = [{"epoch": 1, "val_loss": 0.9}, {"epoch": 2, "val_loss": 0.5},
               {"epoch": 3, "val_loss": 0.7}]
    assert search.trial_value("silhouette", "maximize", {"silhouette": 0.8}, history) == 0.8
    assert search.trial_value("val_loss", "minimize", {}, history) == 0.5
    assert search.trial_value("val_loss", "maximize", {}, history) == 0.9
    assert search.trial_value("val_loss", "minimize", {"val_loss": None}, []) is None
    assert search.epoch_values("val_loss", history) == {1: 0.9, 2: 0.5, 3: 0.7}
