import gzip
import json
import math
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sdft_core.data import DatasetError
from sdft_core.eval.offline_humaneval import (STOP_SEQUENCES, complete_code, first_code_block, generation_finished,
                                         humaneval_path, load_humaneval, program_for, subsample_humaneval,
                                         truncate_at_stop)
from sdft_core.eval.offline_ifeval import install_offline_punkt, load_ifeval_prompts, score_ifeval
from sdft_core.eval.offline_mmlu import load_mmlu, run_mmlu, subsample_mmlu
from sdft_core.eval.prior_capabilities import (PAPER_TASKS, compare_models, evaluate_prior_capabilities, item_scores,
                                          paired_differences_table, paper_benchmark_result, prior_capabilities_table)
from sdft_core.eval.sandbox import run_python


@pytest.fixture(scope="module")
def nltk_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("nltk_data")


# --- IFEval offline -------------------------------------------------------------------------------------------------

def test_ifeval_import_does_not_try_to_download_punkt(nltk_dir):
    """lm-eval's IFEval module downloads punkt_tab at import unless a model is found: ours must be found."""
    program = (f"import nltk\nfrom sdft_core.eval.offline_ifeval import install_offline_punkt\n"
               f"install_offline_punkt({str(nltk_dir)!r})\n"
               "def refuse(*args, **kwargs): raise SystemExit('nltk.download was called')\n"
               "nltk.download = refuse\n"
               "from lm_eval.tasks.ifeval import instructions_util\n"
               "print(instructions_util.count_sentences('One. Two.'))\n")
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("2")


def test_punkt_dependent_checkers_work_offline(nltk_dir):
    install_offline_punkt(nltk_dir)
    from lm_eval.tasks.ifeval import instructions_util
    from lm_eval.tasks.ifeval.instructions_registry import INSTRUCTION_DICT

    text = "Dr. Smith came home at 5 p.m. today. Was it late? NO! He said it was FINE, e.g. for dinner."
    assert instructions_util.count_sentences(text) == 4
    sentences = INSTRUCTION_DICT["length_constraints:number_sentences"]("s")
    sentences.build_description(num_sentences=5, relation="less than")
    assert sentences.check_following(text)
    sentences.build_description(num_sentences=5, relation="at least")
    assert not sentences.check_following(text)
    capitals = INSTRUCTION_DICT["change_case:capital_word_frequency"]("c")
    capitals.build_description(capital_frequency=2, capital_relation="at least")
    assert capitals.check_following(text)  # NO, FINE
    capitals.build_description(capital_frequency=3, capital_relation="at least")
    assert not capitals.check_following(text)


def test_offline_ifeval_prompts_are_valid_and_scored_like_lm_eval(nltk_dir):
    prompts = load_ifeval_prompts(nltk_dir)
    assert len(prompts) >= 40 and len({p.id for p in prompts}) == len(prompts)
    used = {instruction for p in prompts for instruction in p.instruction_id_list}
    assert {"length_constraints:number_sentences", "change_case:capital_word_frequency"} <= used
    lowercase_and_bullets = [p for p in prompts if set(p.instruction_id_list) == {
        "detectable_format:number_bullet_lists", "change_case:english_lowercase"}][0]
    sentences = [p for p in prompts if p.instruction_id_list == ("length_constraints:number_sentences",)
                 and p.kwargs[0] == {"num_sentences": 4, "relation": "less than"}][0]
    responses = ["* the fox\n* the deer\n* the bear", "The sun rises. The sky turns orange. Birds sing. It is calm."]
    summary, records = score_ifeval([lowercase_and_bullets, sentences], responses, nltk_dir)
    assert records[0]["inst_level_loose"] == [True, True]
    assert records[1]["inst_level_loose"] == [False]  # four sentences, fewer than 4 required
    assert summary["inst_level_loose_acc"] == pytest.approx(2 / 3)
    assert summary["prompt_level_loose_acc"] == pytest.approx(1 / 2)


def test_bad_ifeval_rows_name_the_row_and_field(nltk_dir, tmp_path):
    good = {"id": "a", "prompt": "Hi.", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
    cases = [({"instruction_id_list": ["format:unknown"]}, "instruction_id_list"),
             ({"instruction_id_list": ["length_constraints:number_words"], "kwargs": [{"num_words": 5}]}, "relation"),
             ({"kwargs": [{}, {}]}, "2 entries")]
    for change, message in cases:
        path = tmp_path / "bad.jsonl"
        path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "b", **change}) + "\n")
        with pytest.raises(DatasetError, match=message) as caught:
            load_ifeval_prompts(nltk_dir, path)
        assert caught.value.row == 2


# --- HumanEval sandbox ----------------------------------------------------------------------------------------------

def test_sandbox_passes_fails_and_kills():
    assert run_python("def f(x):\n    return x + 1\nassert f(1) == 2\n", timeout_s=10, memory_mb=512).passed
    wrong = run_python("def f(x):\n    return x\nassert f(1) == 2\n", timeout_s=10, memory_mb=512)
    assert wrong.status == "failed" and "AssertionError" in wrong.stderr_tail
    assert run_python("while True:\n    pass\n", timeout_s=1, memory_mb=512).status == "timeout"
    hog = "blocks = []\nwhile True:\n    blocks.append(bytearray(10 ** 7))\n"
    assert run_python(hog, timeout_s=20, memory_mb=256).status == "memory_limit"


def test_sandbox_kills_background_children():
    program = "import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    assert run_python(program, timeout_s=10, memory_mb=512).passed  # the sleeper is killed with the group


def test_humaneval_canonical_solutions_pass_and_wrong_ones_fail():
    with gzip.open(humaneval_path(), "rt") as handle:
        rows = [json.loads(line) for line in handle][:3]
    problems = {p.task_id: p for p in load_humaneval()}
    assert len(problems) == 164
    for row in rows:
        problem = problems[row["task_id"]]
        assert run_python(program_for(problem, row["canonical_solution"]), 10, 1024).passed, row["task_id"]
        assert not run_python(program_for(problem, "    return None\n"), 10, 1024).passed
        # The chat protocol: a whole function from a code block replaces the prompt's stub.
        answer = f"Sure!\n```python\n{problem.prompt}{row['canonical_solution']}```\nThis works because…"
        assert run_python(program_for(problem, first_code_block(answer), "chat"), 10, 1024).passed
        assert not run_python(program_for(problem, "print('no solution')", "chat"), 10, 1024).passed


def test_completion_cuts_and_code_blocks_follow_lm_eval_and_the_chat_protocol():
    assert truncate_at_stop("    return x\n\ndef other():\n    pass") == "    return x\n"
    assert truncate_at_stop("    return x\nif __name__ == '__main__':\n") == "    return x"
    assert truncate_at_stop("    y = 1  # note\n    return y") == "    y = 1  # note\n    return y"
    assert "\nprint" in STOP_SEQUENCES
    assert first_code_block("Here:\n```python\ndef f():\n    return 1\n```\nDone.") == "def f():\n    return 1\n"
    assert first_code_block("```\ndef f():\n    return") == "def f():\n    return"  # cut before the fence
    assert first_code_block("def f(): return 1") == "def f(): return 1"
    assert generation_finished("    return 1\ndef", "completion") and not generation_finished("def f", "completion")
    assert generation_finished("```python\nx = 1\n```", "chat") and not generation_finished("```python\n", "chat")


def test_humaneval_generation_runs_on_a_tiny_model(tiny_model_dir):
    from sdft_core.model import load_model, load_tokenizer

    problems = subsample_humaneval(load_humaneval(), 2, seed=0)
    assert [p.task_id for p in problems] == [p.task_id for p in subsample_humaneval(load_humaneval(), 2, seed=0)]
    model, tokenizer = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    for style in ("completion", "chat"):
        codes = complete_code(model, tokenizer, problems, max_new_tokens=6, batch_size=2, style=style)
        assert len(codes) == 2 and all(isinstance(c, str) for c in codes)
    assert not any(stop in c for c in complete_code(model, tokenizer, problems, 6, 2, "completion")
                   for stop in STOP_SEQUENCES)


# --- MMLU through lm-eval -------------------------------------------------------------------------------------------

def test_mmlu_loads_all_subjects_and_subsamples_by_subject():
    questions = load_mmlu()
    assert len(questions) == 14042 and len({q.subject for q in questions}) == 57
    sample = subsample_mmlu(questions, 100, seed=0)
    assert len(sample) == 100 and sample == subsample_mmlu(questions, 100, seed=0)
    assert {q.id for q in sample} <= {q.id for q in subsample_mmlu(questions, 500, seed=0)}
    share = sum(q.subject == "professional law" for q in sample)
    assert share == round(100 * 1534 / 14042)  # the largest subject keeps its proportion


def test_bad_mmlu_row_is_named(tmp_path):
    row = {"question": "q?", "answer_a": "1", "answer_b": "2", "answer_c": "3", "answer_d": "4",
           "correct_answer": "E", "topic": "t"}
    path = tmp_path / "mmlu.jsonl"
    path.write_text(json.dumps({**row, "correct_answer": "A"}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DatasetError, match="row 2, field 'correct_answer'"):
        load_mmlu(path)


def test_offline_mmlu_task_runs_through_lm_eval(tiny_model_dir, tmp_path):
    from lm_eval.models.huggingface import HFLM

    from sdft_core.model import load_model, load_tokenizer

    questions = subsample_mmlu(load_mmlu(), 4, seed=0)
    lm = HFLM(pretrained=load_model(tiny_model_dir), tokenizer=load_tokenizer(tiny_model_dir), batch_size=4,
              device="cpu")
    summary, records = run_mmlu(lm, questions, tmp_path / "tasks", batch_size=4)
    assert summary["n"] == 4 and [r["id"] for r in records] == [q.id for q in questions]
    assert summary["acc"] == pytest.approx(sum(r["correct"] for r in records) / 4)
    task_yaml = next((tmp_path / "tasks").glob("mmlu-*/mmlu.yaml"))
    assert Path(yaml.safe_load(task_yaml.read_text())["dataset_kwargs"]["data_files"]["test"]).is_absolute()


# --- The whole offline suite, its cache and its reports -------------------------------------------------------------

def test_offline_suite_end_to_end_caches_and_compares(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SDFT_CACHE_DIR", str(tmp_path / "cache"))
    output = tmp_path / "prior.json"
    settings = dict(mmlu_questions=4, humaneval_problems=2, ifeval_max_new_tokens=4, humaneval_max_new_tokens=4,
                    batch_size=8)
    result = evaluate_prior_capabilities(tiny_model_dir, output, **settings)
    assert set(result["scores"]) == {"mmlu", "ifeval", "humaneval"}
    assert result["average"] == pytest.approx(sum(result["scores"].values()) / 3)
    assert len(item_scores(result, "mmlu")) == 4 and len(item_scores(result, "humaneval")) == 2
    assert len(item_scores(result, "ifeval")) == sum(len(r["score"]) for r in result["benchmarks"]["ifeval"]["items"])
    assert result["benchmarks"]["ifeval"]["details"]["sentence_model"].startswith("sdft_core.eval.offline_ifeval")

    import sdft_core.eval.prior_capabilities as prior

    def refuse(*args, **kwargs):
        raise AssertionError("a cached benchmark was run again")

    monkeypatch.setattr(prior._OfflineRunner, "run", refuse)
    assert evaluate_prior_capabilities(tiny_model_dir, output, **settings)["scores"] == result["scores"]

    comparison = compare_models(result, result)
    assert comparison["mmlu"]["difference_b_minus_a"]["mean"] == 0.0
    table = prior_capabilities_table({"base": result, "seeds": [result, result]})
    assert list(table.columns) == ["Humaneval", "IFeval", "MMLU", "Avg."]
    assert table.loc["seeds", "MMLU"].endswith("± 0.0")


def _result(ifeval: list[list[int]], mmlu: list[float]) -> dict:
    return {"benchmarks": {"ifeval": {"items": [{"id": f"p{i}", "score": s} for i, s in enumerate(ifeval)]},
                           "mmlu": {"items": [{"id": f"q{i}", "score": s} for i, s in enumerate(mmlu)]}}}


def test_paired_differences_match_a_hand_computation():
    # IFEval: 5 instructions in 3 prompts (one item each); the model loses 3 the base kept and gains none.
    base = _result(ifeval=[[1, 1], [1, 0], [1]], mmlu=[0.0, 1.0, 0.5, 1.0])
    model = _result(ifeval=[[0, 1], [0, 0], [0]], mmlu=[1.0, 1.0, 0.5, 0.0])
    table = paired_differences_table(base, {"tuned": model})
    ifeval, mmlu = table.loc[("tuned", "IFeval")], table.loc[("tuned", "MMLU")]
    assert ifeval["items"] == 5 and ifeval["reference (%)"] == 80.0 and ifeval["model (%)"] == 20.0
    assert ifeval["difference (points)"] == -60.0
    differences = [-1.0, 0.0, -1.0, 0.0, -1.0]  # per-item model − base, by brute force
    half = 2.7764451051977987 * statistics.stdev(differences) / 5 ** 0.5  # t(0.975, 4 df), from a t table
    assert ifeval["95% CI"] == f"[{100 * (-0.6 - half):.1f}, {100 * (-0.6 + half):.1f}]"
    assert ifeval["McNemar p"] == 0.25  # exact two-sided: 3 discordant pairs all one way, 2 · 0.5³
    assert mmlu["difference (points)"] == 0.0 and math.isnan(mmlu["McNemar p"])  # 0.5 is not a binary score
    assert paired_differences_table(base, {}).empty


# --- The paper suite: task and metric mapping (no network) ----------------------------------------------------------

def test_paper_tasks_exist_in_lm_eval_with_their_metrics():
    import lm_eval

    class _Tolerant(yaml.SafeLoader):
        pass

    _Tolerant.add_multi_constructor("!", lambda loader, suffix, node: suffix)
    configs = {}
    for path in (Path(lm_eval.__file__).parent / "tasks").rglob("*.yaml"):
        text = path.read_text(encoding="utf-8", errors="replace")
        for task, _ in PAPER_TASKS.values():
            if re.search(rf"^(task|group): {task}$", text, flags=re.MULTILINE):  # top level: the defining file
                configs.setdefault(task, yaml.load(text, Loader=_Tolerant))
    for benchmark, (task, key) in PAPER_TASKS.items():
        assert task in configs, f"lm-eval has no task {task!r}"
        metric, filter_name = key.split(",")
        config = configs[task]
        metrics = [m["metric"] for m in config.get("metric_list", []) + config.get("aggregate_metric_list", [])]
        if benchmark == "humaneval":  # code_eval's pass_at_k with k=[1] reports "pass@1" under the create_test filter
            assert config["metric_list"][0]["k"] == [1] and config["filter_list"][0]["name"] == filter_name
        else:
            assert metric in metrics and filter_name == "none", (benchmark, metrics)


def test_paper_results_are_read_from_lm_eval_output_including_groups():
    output = {"results": {"mmlu": {"acc,none": 0.5}, "mmlu_stem": {"acc,none": 0.5},
                          "mmlu_anatomy": {"acc,none": 1.0}, "mmlu_virology": {"acc,none": 0.0}},
              "group_subtasks": {"mmlu": ["mmlu_stem"], "mmlu_stem": ["mmlu_anatomy", "mmlu_virology"]},
              "samples": {"mmlu_anatomy": [{"doc_id": 0, "acc": 1.0}],
                          "mmlu_virology": [{"doc_id": 0, "acc": 0.0}]}}
    summary, records = paper_benchmark_result("mmlu", output)
    assert summary == {"acc": 0.5, "n": 2}
    assert records == [{"id": "mmlu_anatomy/0", "score": 1.0}, {"id": "mmlu_virology/0", "score": 0.0}]
    ifeval = {"results": {"ifeval": {"inst_level_loose_acc,none": 0.75}},
              "samples": {"ifeval": [{"doc_id": 3, "inst_level_loose_acc": [True, False]}]}}
    assert paper_benchmark_result("ifeval", ifeval)[0]["inst_level_loose_acc"] == 0.75
    with pytest.raises(KeyError, match="pass@1,create_test"):
        paper_benchmark_result("humaneval", {"results": {"humaneval": {"pass_at_k,none": 0.1}}})
