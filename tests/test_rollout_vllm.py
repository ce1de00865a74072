"""The vLLM path's parts that need no engine: turning vLLM-shaped outputs into the kit's Batch, a seed per request,
server mode's calls, and never importing vLLM on the "hf" path. The real engine (CPU build) is exercised in
tests/test_vllm_engine.py."""

import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from sdft_core.rollout import completion_mask, generate
from sdft_core.rollout_vllm import batch_from_completions, sampled_token_logprobs


def test_sampled_token_logprobs_reads_vllm_logprob_dicts():
    logprob = lambda value: SimpleNamespace(logprob=value, rank=1)
    positions = [{5: logprob(-0.1), 9: logprob(-2.0)}, {2: logprob(-0.5)}]
    assert sampled_token_logprobs([5, 2], positions) == [-0.1, -0.5]
    with pytest.raises(ValueError, match="position 1: the sampled token 7 has no log-prob"):
        sampled_token_logprobs([5, 7], positions)
    with pytest.raises(ValueError, match="2 sampled tokens but 1"):
        sampled_token_logprobs([5, 2], positions[:1])


def test_batch_from_completions_matches_the_hf_layout(tiny_model_dir, embedded_tokenizer):
    from sdft_core.model import load_model

    model = load_model(tiny_model_dir).eval()
    prompts = [[1, 100, 200, 2], [1, 300, 2]]
    torch.manual_seed(0)
    hf = generate(model, embedded_tokenizer, prompts, max_new_tokens=5, temperature=1.0, return_logprobs=True)
    # What vLLM returns: token lists that stop at (and include) EOS, and one log-prob per generated token.
    completions = [row[mask.bool()].tolist() for row, mask in zip(hf.completion_ids, hf.completion_mask)]
    logprobs = [row[mask.bool()].tolist() for row, mask in zip(hf.sampler_logprobs, hf.completion_mask)]
    batch = batch_from_completions(prompts, completions, logprobs, pad_id=2, eos_ids=[2])
    assert torch.equal(batch.prompt_ids, hf.prompt_ids) and torch.equal(batch.prompt_mask, hf.prompt_mask)
    assert torch.equal(batch.completion_mask, hf.completion_mask[:, : batch.completion_mask.shape[1]])
    mask = batch.completion_mask.bool()
    torch.testing.assert_close(batch.sampler_logprobs[mask], hf.sampler_logprobs[:, : mask.shape[1]][mask])


def test_a_completion_without_eos_is_masked_to_its_own_length():
    batch = batch_from_completions([[1, 2]], [[7, 8, 9], ], [[-1.0, -1.0, -1.0]], pad_id=0, eos_ids=[2])
    assert batch.completion_mask.tolist() == [[1, 1, 1]]
    short = batch_from_completions([[1], [1]], [[7], [7, 8, 2]], [[-1.0], [-1.0, -1.0, -1.0]], pad_id=2,
                                   eos_ids=[2])
    assert short.completion_mask.tolist() == [[1, 0, 0], [1, 1, 1]]
    assert torch.equal(completion_mask(short.completion_ids, [2]) * short.completion_mask, short.completion_mask)


def test_cpu_path_never_imports_vllm():
    code = ("import sys; import sdft_core.train, sdft_core.eval.evaluate, experiments.pipeline, experiments.train_run, "
            "sdft_core.rollout_vllm; assert 'vllm' not in sys.modules, 'vllm imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_vllm_server_needs_cuda_and_colocate_runs_on_cpu():
    from sdft_core.config import TrainConfig

    with pytest.raises(ValueError, match="needs device='cuda'"):
        TrainConfig(rollout_engine="vllm_server")
    assert TrainConfig(rollout_engine="vllm_colocate").device == "cpu"


def test_every_request_gets_its_own_reproducible_seed():
    from sdft_core.rollout_vllm import request_seeds

    assert len(set(request_seeds(7, 16))) == 16
    assert request_seeds(7, 16) == request_seeds(7, 16) and request_seeds(8, 4) != request_seeds(7, 4)


def test_server_mode_never_sends_two_copies_of_a_prompt_with_one_seed():
    from sdft_core.rollout_vllm import VLLMSampler

    calls = []

    class Client:  # TRL's VLLMClient.generate: one seed for the whole call
        def generate(self, prompts, generation_kwargs, **_):
            calls.append((prompts, generation_kwargs["seed"]))
            tokens = [[len(calls), 2] for _ in prompts]
            return {"completion_ids": tokens, "logprobs": [[[-0.5], [-0.1]] for _ in prompts]}

    sampler = VLLMSampler.__new__(VLLMSampler)
    sampler.mode, sampler.pad_id, sampler.eos_ids, sampler.device, sampler.client = "server", 2, [2], "cpu", Client()
    a, b = [1, 5], [1, 6]
    batch = sampler.sample([a, a, b, a, b], 4, 1.0, 1.0, seed=9)
    assert [sorted(map(tuple, prompts)) for prompts, _ in calls] == [[(1, 5), (1, 6)], [(1, 5), (1, 6)], [(1, 5)]]
    assert len({seed for _, seed in calls}) == 3  # each call its own seed
    assert batch.completion_ids[:, 0].tolist() == [1, 2, 1, 3, 2]  # rows back in their order, each copy from its call
