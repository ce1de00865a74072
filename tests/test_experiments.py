"""The profiles' step graphs: every step names an existing notebook with parameters that notebook declares, every
dependency exists and comes first, and shared runs are defined once."""

import papermill
import pytest

from sdft_core.experiments import PROFILES, Plan
from sdft_core.pipeline import notebook_path, only

DECLARED: dict[str, set[str]] = {}


def declared(notebook: str) -> set[str]:
    if notebook not in DECLARED:
        DECLARED[notebook] = set(papermill.inspect_notebook(str(notebook_path(notebook))))
    return DECLARED[notebook]


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_step_is_runnable_in_order(profile):
    steps = PROFILES[profile]("results/check")
    seen = set()
    for step in steps:
        assert notebook_path(step.notebook).exists(), step.notebook
        unknown = set(step.parameters) - declared(step.notebook)
        assert not unknown, f"{step.name}: {step.notebook} has no parameters {sorted(unknown)}"
        assert set(step.after) <= seen, f"{step.name} runs before {set(step.after) - seen}"
        seen.add(step.name)
    assert len(seen) == len(steps)


def test_a_step_cannot_be_defined_twice_differently():
    plan = Plan("results/check")
    plan.train("run", "knowledge", learning_rate=1e-4)
    plan.train("run", "knowledge", learning_rate=1e-4)  # the same definition: shared, fine
    with pytest.raises(ValueError, match="defined twice"):
        plan.train("run", "knowledge", learning_rate=3e-4)


def test_demo_is_the_knowledge_table_of_the_tiny_profile():
    tiny = {step.name: step for step in PROFILES["tiny"]("results/tiny")}
    demo = PROFILES["demo"]("results/tiny")
    assert [s.name for s in demo] == [s.name for s in only(list(tiny.values()), ["knowledge_report"])]
    assert all(tiny[s.name] == s for s in demo)  # identical steps: the demo's runs are the tiny profile's runs
