"""experiments/paper_scale.py: the memory arithmetic, the placement rule, the FLOP formula and the per-figure totals
of the paper plan, checked against numbers worked out by hand."""

import math
import sys
from pathlib import Path

import pytest
import torch

from experiments import paper_scale as ps
from experiments.paper_scale import GB, Placement, TaskShape, Throughput, memory_per_gpu
from experiments.plans import Step, paper_plan, steps_needed_for

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def bytes_of(parts: dict[str, float]) -> dict[str, float]:
    """GB parts of a 1000-parameter model → bytes, so that bytes per parameter read as multiples of 1000."""
    return {part: round(gb * GB, 6) for part, gb in parts.items()}


# ---- memory_per_gpu ---------------------------------------------------------------------------------------------


def test_full_mixed_precision_on_one_gpu_is_22_bytes_per_parameter_plus_the_vllm_copy():
    parts = bytes_of(memory_per_gpu(1000, 10, "full", 1, "bfloat16", vllm=True))
    # float32 master weights, float32 gradients, two float32 AdamW moments, float32 EMA teacher, autocast's cached
    # bf16 cast of every weight, and the engine's bf16 copy.
    assert parts == {"weights": 4000, "gradients": 4000, "AdamW moments": 8000, "EMA teacher": 4000,
                     "autocast cache": 2000, "vLLM copy": 2000}
    assert sum(parts.values()) == 24000


def test_fsdp_divides_the_full_state_by_the_processes_but_not_the_vllm_copy():
    parts = bytes_of(memory_per_gpu(1000, 10, "full", 4, "bfloat16", vllm=True))
    assert parts == {"weights": 1000, "gradients": 1000, "AdamW moments": 2000, "EMA teacher": 1000,
                     "autocast cache": 0, "vLLM copy": 2000}


def test_pure_bf16_and_float32_policies():
    assert bytes_of(memory_per_gpu(1000, 10, "full", 1, "bfloat16_pure")) == {
        "weights": 2000, "gradients": 2000, "AdamW moments": 4000, "EMA teacher": 4000, "autocast cache": 0,
        "vLLM copy": 2000}
    # float32 runs the engine in float32 too (train.make_sampler), and nothing is cast.
    assert bytes_of(memory_per_gpu(1000, 10, "full", 2, "float32")) == {
        "weights": 2000, "gradients": 2000, "AdamW moments": 4000, "EMA teacher": 2000, "autocast cache": 0,
        "vLLM copy": 4000}


def test_lora_holds_the_base_once_and_float32_adapters_and_is_not_divided():
    mixed = bytes_of(memory_per_gpu(1000, 10, "lora", 4, "bfloat16", vllm=True))
    assert mixed == {"weights": 2 * 1000 + 4 * 10, "gradients": 40, "AdamW moments": 80, "EMA teacher": 40,
                     "autocast cache": 20, "vLLM copy": 2000}
    assert bytes_of(memory_per_gpu(1000, 10, "lora", 1, "bfloat16", vllm=True)) == mixed  # replicated
    pure = bytes_of(memory_per_gpu(1000, 10, "lora", 1, "bfloat16_pure", vllm=False))
    assert pure == {"weights": 2040, "gradients": 40, "AdamW moments": 80, "EMA teacher": 40, "autocast cache": 0,
                    "vLLM copy": 0}
    assert bytes_of(memory_per_gpu(1000, 10, "lora", 1, "float32"))["weights"] == 4040


def test_memory_per_gpu_refuses_unknown_setups():
    with pytest.raises(ValueError, match="method_setup"):
        memory_per_gpu(1000, 10, "qlora", 1)
    with pytest.raises(ValueError, match="dtype"):
        memory_per_gpu(1000, 10, "full", 1, "float16")
    with pytest.raises(ValueError, match="processes"):
        memory_per_gpu(1000, 10, "full", 0)


def test_peft_keeps_adapters_in_float32_on_a_bf16_base():
    """Why LoRA's adapter bytes do not change under bfloat16_pure: peft upcasts the adapter of a bf16 base."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from sdft_core.lora import add_ema_adapter, apply_lora

    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)
    wrapped = apply_lora(LlamaForCausalLM(config).to(torch.bfloat16), 2, 4.0, 0.0, ["q_proj", "up_proj"])
    assert {p.dtype for p in wrapped.parameters() if p.requires_grad} == {torch.float32}
    assert {teacher.dtype for teacher, _ in add_ema_adapter(wrapped)} == {torch.float32}


def test_the_kits_autocast_holds_the_bf16_casts_of_the_weights_until_it_exits():
    """Why the "autocast cache" part exists: within one autocast block the casts of leaf weights are cached (a second
    forward casts nothing), so a bf16 copy of the student lives until the block ends."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from sdft_core.config import TrainConfig
    from sdft_core.train import _autocast

    class CountWeightCasts(TorchDispatchMode):
        casts = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._to_copy.default and args[0].shape == (16, 16):
                self.casts += 1
            return func(*args, **(kwargs or {}))

    model = torch.nn.Sequential(*[torch.nn.Linear(16, 16, bias=False) for _ in range(3)])
    with _autocast(TrainConfig(dtype="bfloat16", device="cpu")):
        with CountWeightCasts() as first:
            model(torch.randn(2, 16))
        with CountWeightCasts() as second:
            model(torch.randn(2, 16))
    assert (first.casts, second.casts) == (3, 0)


# ---- parameter counts ---------------------------------------------------------------------------------------------


def test_qwen_7b_counts_from_its_config():
    hidden, mlp, layers, vocab, kv = 3584, 18944, 28, 152064, 4 * 128
    base, adapter = ps.parameter_counts("7B", 16)
    assert base == 7_615_616_512
    # rank 16 on q, k, v, o, gate, up, down: r·(in + out) each.
    per_layer = 16 * (2 * (hidden + hidden) + 2 * (hidden + kv) + 3 * (hidden + mlp))
    assert adapter == layers * per_layer == 40_370_176
    # matmul parameters: all but the (untied) input embedding, the norms and the q/k/v biases.
    norms_and_biases = layers * (2 * hidden + hidden + 2 * kv) + hidden
    assert ps.matmul_parameters("7B") == base - vocab * hidden - norms_and_biases
    assert ps.matmul_parameters("Qwen/Qwen2.5-7B-Instruct") == ps.matmul_parameters("7B")


# ---- placement ----------------------------------------------------------------------------------------------------


def total_gb(model: str, setup: str, processes: int, vllm: bool = True, dtype: str = "bfloat16") -> float:
    base, adapter = ps.parameter_counts(model, 16)
    return sum(memory_per_gpu(base, adapter, setup, processes, dtype, vllm).values())


def test_full_on_one_gpu_exactly_when_a_quarter_is_left():
    one = total_gb("0.5B", "full", 1)
    at = ps.placement("0.5B", one / 0.75 + 1e-9)
    assert at == Placement("full", 1, "replicate", None, pytest.approx(one), "vllm_colocate")
    below = ps.placement("0.5B", one / 0.75 - 1e-6)
    assert (below.setup, below.processes, below.sharding) == ("full", 2, "fsdp")


def test_fsdp_takes_the_fewest_processes_that_fit_then_lora():
    four = total_gb("7B", "full", 4)
    assert total_gb("7B", "full", 2) > four  # two processes do not fit where four just do
    at = ps.placement("7B", four / 0.75 + 1e-9)
    assert (at.setup, at.processes, at.sharding, at.gb_per_gpu) == ("full", 4, "fsdp", pytest.approx(four))
    assert ps.placement("7B", four / 0.75 - 1e-6).processes == 8
    # Not allowed 8 GPUs: LoRA on one GPU, with the engine (31 GB fits in 75% of 71 GB).
    lora = ps.placement("7B", four / 0.75 - 1e-6, max_gpus=4)
    assert lora == Placement("lora", 1, "replicate", 16, pytest.approx(total_gb("7B", "lora", 1)), "vllm_colocate")


def test_lora_drops_the_vllm_copy_before_giving_up():
    with_engine, without = total_gb("7B", "lora", 1), total_gb("7B", "lora", 1, vllm=False)
    gpu = (with_engine + without) / 2 / 0.75  # the engine's copy does not fit, HF rollouts do
    hf = ps.placement("7B", gpu, max_gpus=1)
    assert (hf.setup, hf.rollout_engine, hf.lora_rank) == ("lora", "hf", 16)
    assert ps.placement("7B", without / 0.75 - 1e-6, max_gpus=1).setup == "does not fit"
    assert ps.placement("7B", 24).setup == "lora"  # FSDP × 8 needs 34 GB per GPU with the engine


def test_placement_table_has_every_model_and_gpu():
    table = ps.placement_table()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "B (" in line]
    assert [row.split(" ")[1] for row in rows] == ["0.5B", "1.5B", "7B"]
    assert all(len(row.split(" | ")) == 1 + len(ps.GPU_SIZES_GB) for row in rows)
    assert "full, FSDP × 4: 53.3 GB/GPU" in rows[2]  # 7B on 80 GB


# ---- FLOPs and GPU-hours ------------------------------------------------------------------------------------------

TASK = {"t": TaskShape(train_examples=10, prompt_tokens=20, demonstration_tokens=30, max_new_tokens=100,
                       eval_items={"train": 10, "val": 4, "test": 5}, context_tokens=500)}
P = 1000
SLOW = Throughput(peak_flops=1e6, train_mfu=0.5, rollout_mfu=0.25, eval_generation_mfu=0.1)


def train_step(name: str, **config) -> Step:
    return Step(f"train_{name}", "train", {"task": "t", "run_name": name, "config": config},
                outputs=(f"runs/{name}/model",))


def test_sdft_flops_of_one_training_step_by_hand():
    step = train_step("x", method="sdft", epochs=2.0, batch_size=4, max_new_tokens=100, gradient_checkpointing=True,
                      teacher_context="demonstration", max_teacher_prompt_tokens=1000)
    # 20 samples (10 × 2 epochs, 5 steps of 4); rollout of 50 tokens; teacher prompt 20 + 48 + 30 = 98 tokens.
    # compute per sample: prefill 2P·20 + teacher 2P·(98 + 50) + student (6 + 2)P·(20 + 50) = 896P; decoding 2P·50.
    cost = ps.step_costs([step], TASK, P, SLOW)["train_x"]
    assert cost.flops == 20 * 896 * P + 20 * 100 * P
    assert cost.training_h == pytest.approx((20 * 896 * P / 0.5e6 + 20 * 100 * P / 0.25e6) / 3600)
    assert (cost.retraining_h, cost.evaluation_h) == (0.0, 0.0)


def test_training_flops_variants_by_hand():
    shape = TASK["t"]
    # batch 3 over 10 examples: 4 steps, the last one filled up to 12 samples; SFT on prompt + demonstration.
    sft = ps.training_flops({"method": "sft", "epochs": 1.0, "batch_size": 3}, shape, P)
    assert sft == {"compute": 12 * 6 * P * 50, "rollout": 0.0}
    assert ps.training_flops({"method": "cpt", "epochs": 1.0, "batch_size": 5, "gradient_checkpointing": True},
                             shape, P)["compute"] == 10 * 8 * P * (1 + 30)
    assert ps.training_flops({"method": "sft", "epochs": 1.0, "batch_size": 5, "lora_rank": 8}, shape,
                             P)["compute"] == 10 * 4 * P * 50  # no weight gradients of the frozen base
    # a "context…" teacher sees the source text, capped at max_teacher_prompt_tokens
    capped = ps.training_flops({"method": "sdft", "epochs": 1.0, "batch_size": 10, "max_new_tokens": 100,
                                "teacher_context": "context_and_demonstration", "max_teacher_prompt_tokens": 300},
                               shape, P)
    assert capped["compute"] == 10 * P * (2 * 20 + 2 * (300 + 50) + 6 * (20 + 50))
    assert ps.training_flops({"method": "sft", "epochs": 1.0, "batch_size": 2}, shape, P, max_train_examples=4) == \
        {"compute": 4 * 6 * P * 50, "rollout": 0.0}


def test_evaluation_and_selection_costs_by_hand():
    candidates = [train_step(f"c{i}", method="sft", epochs=float(i), batch_size=10) for i in (1, 2)]
    select = Step("best", "select_best", {"task": "t", "candidates": ["c1", "c2"], "seeds": [0, 1, 2],
                                          "test_splits": ["test"], "prior": {}}, ("train_c1", "train_c2"))
    evaluate = Step("eval_c1", "evaluate", {"task": "t", "splits": ["val", "test"], "oracle_context": True},
                    ("train_c1",))
    costs = ps.step_costs([*candidates, select, evaluate], TASK, P, SLOW)
    # two more seeds of the mean candidate: (10 + 20 samples) / 2 × 6P × 50 tokens each
    assert costs["best"].retraining_h == pytest.approx(2 * 15 * 6 * P * 50 / 0.5e6 / 3600)
    # three seeds × 5 test items: prefill 2P·20, greedy answer of half the budget decoded at the eval rate
    assert costs["best"].evaluation_h == pytest.approx(3 * 5 * (2 * P * 20 / 0.5e6 + 2 * P * 50 / 0.1e6) / 3600)
    # oracle context: the source text is part of the prompt
    assert costs["eval_c1"].evaluation_h == pytest.approx(9 * (2 * P * 520 / 0.5e6 + 2 * P * 50 / 0.1e6) / 3600)


def test_a_step_two_figures_need_counts_in_each_figure_and_once_in_the_total():
    shared = train_step("shared", method="sft", epochs=1.0, batch_size=10)
    own = train_step("own", method="sft", epochs=1.0, batch_size=10)
    figures = [Step("fig_a", "compare_runs", {}, ("train_shared",)),
               Step("fig_b", "compare_runs", {}, ("train_shared", "train_own"))]
    per_figure, total = ps.gpu_hours_per_figure([shared, own, *figures], TASK, P, SLOW)
    one = 10 * 6 * P * 50 / 0.5e6 / 3600
    assert per_figure["fig_a"]["training"] == pytest.approx(one) and per_figure["fig_a"]["training runs"] == 1
    assert per_figure["fig_b"]["training"] == pytest.approx(2 * one) and per_figure["fig_b"]["training runs"] == 2
    assert total["training"] == pytest.approx(2 * one) and total["training runs"] == 2


def test_unknown_tasks_and_models_are_named():
    with pytest.raises(KeyError, match="no TaskShape for task 'other'"):
        ps.step_costs([Step("train_y", "train", {"task": "other", "config": {}})], TASK, P)
    with pytest.raises(KeyError, match="no config for model"):
        ps.step_costs([Step("train_y", "train", {"task": "t", "config": {"model": "gpt2"}})], TASK)


@pytest.fixture(scope="module")
def paper_steps():
    return paper_plan("results/paper")


def test_the_paper_plan_total_counts_every_training_step_once(paper_steps):
    costs = ps.step_costs(paper_steps)
    per_figure, total = ps.gpu_hours_per_figure(paper_steps)
    train = [step.name for step in paper_steps if step.notebook == "train"]
    assert len(train) == len(set(train)) and total["training runs"] == len(train) > 0
    assert all(costs[name].training_h > 0 for name in train)
    assert total["training"] == pytest.approx(sum(costs[name].training_h for name in train))
    assert total["total"] == pytest.approx(sum(c.total_h for c in costs.values()))
    # Figures: each step counted once per figure that needs it (prior_base feeds the three Fig. 4 panels).
    feeds = {step.name: 0 for step in paper_steps}
    for figure in per_figure:
        for step in steps_needed_for(paper_steps, [figure]):
            feeds[step.name] += 1
    assert set(per_figure) == set(ps.figure_targets(paper_steps)) and "results_report" not in per_figure
    assert min(n for name, n in feeds.items() if name != "results_report") >= 1  # the report lists the figures
    for column in ("training", "selection retraining", "evaluation", "total"):
        key = {"training": "training_h", "selection retraining": "retraining_h", "evaluation": "evaluation_h",
               "total": "total_h"}[column]
        assert sum(f[column] for f in per_figure.values()) == pytest.approx(
            sum(getattr(costs[name], key) * n for name, n in feeds.items()))
    assert sum(f["training runs"] for f in per_figure.values()) == sum(feeds[name] for name in train)
    assert any(name.startswith("fig4_pareto") for name in per_figure) and "table1" in per_figure


def test_paper_sdft_run_costs_what_the_formula_says(paper_steps):
    """One paper SDFT run recomputed from the stated assumptions, independently of step_costs."""
    step = next(s for s in paper_steps if s.notebook == "train" and s.parameters["config"].get("method") == "sdft"
                and s.parameters["task"] == "paper_medical")
    config, shape = step.parameters["config"], ps.PAPER_TASKS["paper_medical"]
    P7 = ps.matmul_parameters("7B")
    batch = config["batch_size"]
    samples = math.ceil(round(shape.train_examples * config["epochs"]) / batch) * batch
    completion = config.get("max_new_tokens", 2048) / 2
    teacher = shape.prompt_tokens + ps.TEACHER_TEMPLATE_TOKENS + shape.demonstration_tokens
    student = 6 + 2 * bool(config.get("gradient_checkpointing"))
    compute = samples * P7 * (2 * shape.prompt_tokens + 2 * (teacher + completion)
                              + student * (shape.prompt_tokens + completion))
    hours = (compute / (989e12 * 0.35) + samples * 2 * P7 * completion / (989e12 * 0.10)) / 3600
    assert ps.step_costs([step])[step.name].training_h == pytest.approx(hours)


def test_the_benchmark_prints_both_policies_placements_and_gpu_hours(monkeypatch, capsys):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import lora_memory
    finally:
        sys.path.remove(str(BENCHMARKS))
    monkeypatch.setattr(sys, "argv", ["lora_memory.py"])
    lora_memory.main()
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("| GB per GPU"))
    assert "(mixed)" in header and "(pure bf16)" in header
    totals = next(line for line in out.splitlines() if line.startswith("| **total before activations**"))
    assert totals.split(" | ")[1] == f"**{24 * 7_615_616_512 / GB:.1f}**"  # 7B, full, 1 GPU, mixed + vLLM
    assert out.count("| 7B (7.62 B) |") == 2 and "**plan total (each step once)**" in out
    assert lora_memory.parameter_counts is ps.parameter_counts
