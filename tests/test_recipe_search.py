"""The recipe search (experiments/recipe_search.py): it never sees test data, halving promotes by validation strict
accuracy then fact log-probability, controls are never promoted, and the tiny profile's SDFT recipe is the search's
recorded choice."""

import json
from pathlib import Path

from experiments import recipe_search
from experiments.plans import KNOWLEDGE_LORA, TINY_KNOWLEDGE
from tasks.registry import load_task

REPO = Path(__file__).resolve().parent.parent


def test_article_subset_keeps_train_and_val_of_the_first_articles_only():
    task = load_task("knowledge")
    subset = recipe_search.article_subset(task, 2)
    assert list(subset.eval_splits) == ["val"]  # test and OOD are gone
    assert {e.id.split("-")[0] for e in subset.train} == {i.id.split("-")[0] for i in subset.eval_splits["val"]} \
        == {"a01", "a02"}
    assert len(subset.train) == 20 and len(subset.eval_splits["val"]) == 10
    full = recipe_search.article_subset(task, 0)
    assert len(full.train) == 80 and len(full.eval_splits["val"]) == 40


def test_halving_promotes_by_strict_then_fact_logprob_and_never_a_control(tmp_path, monkeypatch):
    scores = {("a", 1): (0.0, -3.0), ("b", 1): (0.1, -5.0), ("c", 1): (0.0, -1.0), ("sft", 1): (0.9, 0.0),
              ("probe", 1): (0.8, 0.0), ("b", 2): (0.2, -2.0), ("c", 2): (0.3, -4.0), ("sft", 2): (0.9, 0.0)}
    calls = []

    def fake(results_dir, name, overrides, rung, task, base_overrides=None, base=recipe_search.SEARCH_BASE,
             opening=False):
        calls.append((name, rung, len(task.train)))
        strict, logprob = scores[(name, rung)]
        return {"candidate": name, "rung": rung, "val_strict": strict, "val_lenient": strict,
                "val_fact_logprob": logprob, "config": overrides}

    monkeypatch.setattr(recipe_search, "run_candidate", fake)
    monkeypatch.setattr(recipe_search, "reference_logprobs", lambda results_dir, rung, task: [{"rung": rung}])
    table = recipe_search.search(tmp_path, {"a": {}, "b": {}, "c": {}},
                                 (recipe_search.Rung(2, 2), recipe_search.Rung(0, 1)), {"sft": {"method": "sft"}},
                                 probes={"probe": {"epochs": 8.0}})
    # Rung 1: b (strict 0.1) and c (best log-prob among the ties at 0) go on; a, the control and the budget probe
    # (rung 1 only) do not, though the last two score higher.
    assert calls == [("a", 1, 20), ("b", 1, 20), ("c", 1, 20), ("sft", 1, 20), ("probe", 1, 20), ("b", 2, 80),
                     ("c", 2, 80), ("sft", 2, 80)]
    chosen = table[table.chosen]
    assert list(chosen.candidate) == ["c"] and list(chosen.rung) == [2]
    assert list(table.control) == [False, False, False, True, True, False, False, True]
    assert json.loads((tmp_path / "summary.json").read_text())[-1]["candidate"] == "sft"


def test_the_tiny_recipe_is_the_search_s_recorded_choice():
    rows = json.loads((REPO / "results" / "tiny" / "recipe_search" / "summary.json").read_text())
    last_rung = max(row["rung"] for row in rows)
    finalists = [row for row in rows if row["rung"] == last_rung and row["candidate"] in recipe_search.CANDIDATES]
    best = max(finalists, key=lambda r: (r["val_strict"], r["val_fact_logprob"]))
    assert TINY_KNOWLEDGE["sdft"] == {**recipe_search.SEARCH_BASE, **recipe_search.CANDIDATES[best["candidate"]]}
    assert best["config"] == recipe_search.CANDIDATES[best["candidate"]]  # recorded with today's candidate fields


def test_the_lora_settings_are_the_lora_search_s_recorded_choice():
    rows = json.loads((REPO / "results" / "tiny" / "recipe_search_lora" / "summary.json").read_text())
    best = max(rows, key=lambda r: (r["val_strict"], r["val_fact_logprob"]))
    chosen = recipe_search.LORA_CANDIDATES[best["candidate"]]
    assert best["config"] == chosen
    assert {**TINY_KNOWLEDGE["sdft"], **KNOWLEDGE_LORA} == {**recipe_search.SEARCH_BASE, **chosen}


def test_skill_tasks_break_ties_on_the_answer_logprob_since_they_mark_no_facts(tmp_path, monkeypatch):
    # Extraction marks no fact tokens (fact log-prob NaN): at equal validation accuracy the answer's log-prob decides,
    # and the skill search trains on top of its own shared settings, not the knowledge search's.
    nan = float("nan")
    scores = {"a": (0.0, -2.0), "b": (0.0, -0.5), "c": (0.0, -1.0)}
    bases = []

    def fake(results_dir, name, overrides, rung, task, base_overrides=None, base=recipe_search.SEARCH_BASE,
             opening=False):
        bases.append((base, opening))
        strict, answer = scores[name]
        return {"candidate": name, "rung": rung, "val_strict": strict, "val_fact_logprob": nan,
                "val_answer_logprob": answer, "config": overrides}

    monkeypatch.setattr(recipe_search, "run_candidate", fake)
    monkeypatch.setattr(recipe_search, "reference_logprobs", lambda results_dir, rung, task: [{"rung": rung}])
    openings = []
    monkeypatch.setattr(recipe_search, "reference_openings",
                        lambda results_dir, rung, task, templates: openings.append(templates) or [{"rung": rung}])
    table = recipe_search.search(tmp_path, {name: {} for name in scores}, recipe_search.SKILL_RUNGS, {},
                                 task_name="extraction", probes={}, base=recipe_search.SKILL_SEARCH_BASE,
                                 opening_templates=recipe_search.SKILL_REFERENCE_TEMPLATES)
    assert list(table[table.chosen].candidate) == ["b"]
    # Every candidate on the skill search's own settings, with its opening measured; the base model's openings once
    # per rung, under every reference template.
    assert bases == [(recipe_search.SKILL_SEARCH_BASE, True)] * 3
    assert openings == [list(recipe_search.SKILL_REFERENCE_TEMPLATES)]

