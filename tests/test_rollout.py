"""The kit's decoder (`rollout.decode` under `inference_kernels`) samples exactly what transformers' `generate` samples:
the same tokens for the same seed, greedy and sampled, the same masks, and per-token log-probs of the distribution it
drew from. Against a brute-force reference (no KV cache, every prefix re-run, transformers' own warpers) and against
`generate` itself."""

import pytest
import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

from sdft_core import rollout
from sdft_core.model import EMBEDDED_MODEL, load_model
from sdft_core.prompts import student_prompt_ids
from sdft_core.rollout import completion_mask, eos_token_ids, generate, prepacked_linears, processed_scores
from tasks.registry import load_task

PROMPTS = [[1, 100, 200, 300, 2], [1, 400, 2], [1, 500, 600, 700, 800, 900, 2]]
SETTINGS = [(0.0, 1.0), (1.0, 1.0), (0.7, 0.9)]  # (temperature, top_p): greedy, the paper's sampling, warped


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir).eval()


@pytest.fixture(scope="module")
def embedded():
    return load_model(EMBEDDED_MODEL).eval()


@pytest.fixture
def no_kernels(monkeypatch):
    """The kit's loop alone, on the model's own kernels."""
    monkeypatch.setattr(rollout, "can_prepack", lambda model: False)
    monkeypatch.setattr(rollout, "GQA_ATTENTION", "sdpa")


def hf_warpers(temperature: float, top_p: float) -> list:
    """transformers' logits warpers for a sampling setting, as `generate` builds them (none when greedy)."""
    if temperature == 0:
        return []
    return ([TemperatureLogitsWarper(temperature)] if temperature != 1.0 else []) + (
        [TopPLogitsWarper(top_p)] if top_p < 1.0 else [])


def reference_sample(model, tokenizer, prompts, max_new_tokens, temperature, top_p, seed):
    """Brute force: every step re-runs each row's whole sequence without a cache or padding, warps the last logits
    with transformers' warpers and draws from them with torch.multinomial (greedy: argmax), one draw per step for the
    batch as a sampling loop does; a row that has finished appends pad tokens."""
    warpers = hf_warpers(temperature, top_p)
    eos = eos_token_ids(model, tokenizer)
    sequences, finished, logprobs = [list(p) for p in prompts], [False] * len(prompts), []
    torch.manual_seed(seed)
    for _ in range(max_new_tokens):
        with torch.no_grad():
            logits = torch.cat([model(torch.tensor([s])).logits[:, -1].float() for s in sequences])
        for warper in warpers:
            logits = warper(None, logits)
        tokens = torch.multinomial(logits.softmax(-1), 1).squeeze(1) if temperature > 0 else logits.argmax(-1)
        tokens = torch.where(torch.tensor(finished), tokenizer.pad_token_id, tokens)
        logprobs.append(logits.log_softmax(-1).gather(-1, tokens[:, None]).squeeze(1))
        for row, token in enumerate(tokens.tolist()):
            sequences[row].append(token)
            finished[row] = finished[row] or token in eos
        if all(finished):
            break
    completions = torch.tensor([s[len(p):] for s, p in zip(sequences, prompts)])
    return completions, torch.stack(logprobs, 1)


@pytest.mark.parametrize("temperature,top_p", SETTINGS)
def test_processed_scores_are_transformers_warpers(temperature, top_p):
    logits = torch.randn(4, 50) * 3
    expected = logits
    for warper in hf_warpers(temperature, top_p):
        expected = warper(None, expected)
    assert torch.equal(processed_scores(logits, temperature, top_p), expected)


@pytest.mark.parametrize("temperature,top_p", SETTINGS)
def test_kit_decoder_matches_the_brute_force_reference(tiny, embedded_tokenizer, temperature, top_p):
    torch.manual_seed(5)
    batch = generate(tiny, embedded_tokenizer, PROMPTS, 8, temperature, top_p, return_logprobs=True)
    tokens, logprobs = reference_sample(tiny, embedded_tokenizer, PROMPTS, 8, temperature, top_p, seed=5)
    assert torch.equal(batch.completion_ids, tokens)
    mask = batch.completion_mask.bool()
    assert torch.equal(batch.completion_mask, completion_mask(tokens, eos_token_ids(tiny, embedded_tokenizer)))
    torch.testing.assert_close(batch.sampler_logprobs[mask], logprobs[mask], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("temperature,top_p", SETTINGS)
def test_kit_loop_is_bit_identical_to_generate(embedded, embedded_tokenizer, no_kernels, temperature, top_p):
    # The loop alone (the model's own kernels): the same tokens, masks and log-probs, to the bit.
    prompts = [embedded_tokenizer.encode(q) for q in ("The capital of France is", "Name three colours:", "2 + 2 =")]
    batches = {}
    for decoder in ("generate", "kit"):
        torch.manual_seed(11)
        batches[decoder] = generate(embedded, embedded_tokenizer, prompts, 12, temperature, top_p,
                                    return_logprobs=True, decoder=decoder)
    kit, hf = batches["kit"], batches["generate"]
    assert torch.equal(kit.completion_ids, hf.completion_ids) and torch.equal(kit.completion_mask, hf.completion_mask)
    mask = hf.completion_mask.bool()
    assert torch.equal(kit.sampler_logprobs[mask], hf.sampler_logprobs[mask])


def test_kit_decoder_with_its_kernels_samples_what_generate_samples(embedded, embedded_tokenizer):
    # Packed matmuls reassociate sums (~1e-5 in the logits): same tokens, log-probs within float noise, on the demo's
    # own prompts (knowledge questions), where rows stop at different lengths.
    prompts = [student_prompt_ids(embedded_tokenizer, e, 512) for e in load_task("knowledge").train[:8]]
    lengths = set()
    for temperature in (0.0, 1.0):
        batches = {}
        for decoder in ("generate", "kit"):
            torch.manual_seed(2)
            batches[decoder] = generate(embedded, embedded_tokenizer, prompts, 48, temperature,
                                        return_logprobs=True, decoder=decoder)
        kit, hf = batches["kit"], batches["generate"]
        lengths |= set(hf.completion_mask.sum(1).tolist())
        assert torch.equal(kit.completion_ids, hf.completion_ids)
        assert torch.equal(kit.completion_mask, hf.completion_mask)
        mask = hf.completion_mask.bool()
        torch.testing.assert_close(kit.sampler_logprobs[mask], hf.sampler_logprobs[mask], rtol=1e-4, atol=1e-4)
    assert len(lengths) > 1  # rows that stop early and rows that run on


def test_generate_restores_the_model(tiny, embedded_tokenizer):
    tiny.train()
    attention = tiny.config._attn_implementation
    generate(tiny, embedded_tokenizer, PROMPTS, 4, 1.0)
    assert tiny.training and tiny.config._attn_implementation == attention
    assert all("forward" not in vars(m) for m in tiny.modules())  # no packed forward left behind
    tiny.eval()


@pytest.mark.skipif(not rollout.can_prepack(torch.nn.Linear(2, 2)), reason="needs a CPU build with oneDNN")
def test_prepacked_linears_compute_the_same_product_and_are_removed_on_exit():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.Linear(96, 32, bias=False))
    x = torch.randn(8, 5, 64)
    expected = model(x)
    with pytest.raises(RuntimeError, match="inside"):
        with prepacked_linears(model, rows=8):
            torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(model(x[:3]), expected[:3], rtol=1e-5, atol=1e-5)  # another row count
            raise RuntimeError("inside")
    assert all("forward" not in vars(m) for m in model) and torch.equal(model(x), expected)

