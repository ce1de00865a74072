"""Sampling completions from an HF model in this process (CPU and small GPU runs; vLLM rollouts live in
`rollout_vllm.py`).

Two decoders sample the same distribution (tests/test_rollout.py pins the same tokens for the same seed):
- "kit" (default): `decode`, a plain loop over the model's forward with a KV cache, under `inference_kernels`:
  - on CPU in float32, every linear layer multiplies by a weight pre-packed once per call for oneDNN
    (`prepacked_linears`): a decode step multiplies an 8-row activation by every weight matrix, and an unpacked
    matmul re-packs the whole weight at each of those steps;
  - grouped-query attention in one SDPA call (`enable_gqa`), where transformers' sdpa path copies every key and
    value head group-many times at every step whenever there is a padding mask.
  Faster than `generate` on the embedded model (benchmarks/rollout_speed.py).
- "generate": transformers' `generate`, the fallback; always used for FSDP-sharded models, whose forwards must stay
  in step across processes (`synced_gpus`).

A batch of prompts is left-padded so all completions start at the same column. The completion mask ends at the
first end-of-sequence token (included: stopping is a decision the student learns too). For SmolLM2 the pad and
EOS ids are the same, so padding is recognised by position, never by id.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor
from transformers import (AttentionInterface, AttentionMaskInterface, DynamicCache, PreTrainedModel,
                          PreTrainedTokenizerBase)
from transformers.masking_utils import sdpa_mask

DECODERS = ("kit", "generate")
GQA_ATTENTION = "sdft_kit_gqa_sdpa"


@dataclass
class Batch:
    """Prompts (left-padded) followed by completions (right-padded) as one tensor each."""

    prompt_ids: torch.Tensor  # [B, P]
    prompt_mask: torch.Tensor  # [B, P] 1 for real prompt tokens
    completion_ids: torch.Tensor  # [B, T]
    completion_mask: torch.Tensor  # [B, T] 1 up to and including the first EOS
    sampler_logprobs: torch.Tensor | None = None  # [B, T] log q(y_t) of the distribution actually sampled from

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.completion_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask, self.completion_mask], dim=1)


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        if sequence:
            ids[row, width - len(sequence):] = torch.tensor(sequence)
            mask[row, width - len(sequence):] = 1
    return ids, mask


def right_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(1, max(len(s) for s in sequences))
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        mask[row, : len(sequence)] = 1
    return ids, mask


def completion_mask(completion_ids: torch.Tensor, eos_ids: list[int]) -> torch.Tensor:
    """1 for every token up to and including the first EOS of each row, 0 after it."""
    is_eos = torch.isin(completion_ids, torch.tensor(eos_ids, device=completion_ids.device))
    eos_seen_before = (is_eos.cumsum(1) - is_eos.long()) > 0
    return (~eos_seen_before).long()


def eos_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    configured = model.generation_config.eos_token_id
    ids = configured if isinstance(configured, list) else [configured]
    return sorted({i for i in ids + [tokenizer.eos_token_id] if i is not None})


def is_sharded(model: torch.nn.Module) -> bool:
    """An FSDP-sharded model: every process must run the same number of forwards (generation keeps stepping until
    all processes are done), because each forward gathers the shards from all of them."""
    return isinstance(model, FSDPModule)


def full_named_parameters(model: torch.nn.Module):
    """(name, full tensor) per parameter; a sharded parameter is gathered from all processes, one at a time (a
    collective: every process must iterate, in the same order)."""
    for name, parameter in model.named_parameters():
        yield name, parameter.full_tensor() if isinstance(parameter, DTensor) else parameter.data


def processed_scores(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """The scores a token is sampled from: float32 logits divided by the temperature, then the nucleus (the smallest
    set of most likely tokens whose probability exceeds top_p; the rest at -inf), as transformers' warpers do."""
    scores = logits.float()
    if temperature > 0 and temperature != 1.0:
        scores = scores / temperature
    if temperature > 0 and top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=False)
        outside = sorted_scores.softmax(-1).cumsum(-1) <= 1 - top_p
        outside[..., -1:] = False  # the most likely token always stays
        scores = scores.masked_fill(outside.scatter(-1, order, outside), -float("inf"))
    return scores


def can_prepack(model: torch.nn.Module) -> bool:
    """oneDNN pre-packing applies to whole float32 weights on a CPU build with oneDNN (not to GPUs, bfloat16 or FSDP
    shards), outside bf16 autocast (a weight packed for float32 refuses the bf16 activations autocast gives it)."""
    weight = next(model.parameters())
    return (weight.device.type == "cpu" and weight.dtype == torch.float32 and not isinstance(weight, DTensor)
            and not torch.is_autocast_enabled("cpu")
            and torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))


@contextmanager
def prepacked_linears(model: torch.nn.Module, rows: int):
    """Within the context every nn.Linear of `model` multiplies by a copy of its weight packed once for oneDNN (for
    activations of `rows` rows; other row counts work too). Inference only: the packed copy has no gradient, and it
    is a snapshot, so the context must not outlive a weight update. Costs one extra copy of the linear weights."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    for module in linears:
        packed = torch.ops.mkldnn._reorder_linear_weight(module.weight.detach(), rows)
        bias = None if module.bias is None else module.bias.detach()
        module.forward = _packed_forward(packed, bias)
    try:
        yield
    finally:
        for module in linears:
            del module.forward


def _gqa_sdpa_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
                        **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' sdpa attention (same kernel, same mask), with the key/value head groups left to SDPA."""
    causal = query.shape[2] > 1 and attention_mask is None and (module.is_causal if is_causal is None else is_causal)
    output = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout,
                                            scale=scaling, is_causal=causal, enable_gqa=key.shape[1] != query.shape[1])
    return output.transpose(1, 2).contiguous(), None


AttentionInterface.register(GQA_ATTENTION, _gqa_sdpa_attention)
AttentionMaskInterface.register(GQA_ATTENTION, sdpa_mask)


@contextmanager
def inference_kernels(model: torch.nn.Module, rows: int):
    """Faster kernels for a no-grad forward of `rows` rows (see the module docstring): pre-packed linear weights where
    `can_prepack`, and grouped-query SDPA where the model uses transformers' sdpa attention."""
    config = getattr(model, "config", None)
    swap_attention = config is not None and config._attn_implementation == "sdpa"
    if swap_attention:
        config._attn_implementation = GQA_ATTENTION
    try:
        with prepacked_linears(model, rows) if can_prepack(model) else nullcontext():
            yield
    finally:
        if swap_attention:
            config._attn_implementation = "sdpa"


def _packed_forward(packed: torch.Tensor, bias: torch.Tensor | None):
    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
    return forward


@torch.no_grad()
def decode(model: PreTrainedModel, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, max_new_tokens: int,
           eos_ids: list[int], pad_id: int, temperature: float, top_p: float
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample up to max_new_tokens per left-padded prompt row, one forward per token over a KV cache: the steps of
    transformers' sampling loop, without its per-step machinery. A finished row (its EOS sampled) continues with
    pad tokens; the loop stops when every row has finished. Returns the completion ids [B, T] and the log-probability
    of each under the distribution it was drawn from (processed_scores) [B, T]."""
    cache = DynamicCache(config=model.config)
    attention_mask = prompt_mask
    positions = (prompt_mask.cumsum(1) - 1).clamp(min=0)  # left padding: every row's first real token at position 0
    eos = torch.tensor(eos_ids, device=prompt_ids.device)
    unfinished = torch.ones(len(prompt_ids), dtype=torch.bool, device=prompt_ids.device)
    tokens, logprobs = [], []
    logits = model(input_ids=prompt_ids, attention_mask=attention_mask, position_ids=positions, past_key_values=cache,
                   use_cache=True, logits_to_keep=1).logits[:, -1]
    for _ in range(max_new_tokens):
        scores = processed_scores(logits, temperature, top_p)
        sampled = (torch.multinomial(scores.softmax(-1), num_samples=1).squeeze(1) if temperature > 0
                   else scores.argmax(-1))
        sampled = torch.where(unfinished, sampled, pad_id)
        tokens.append(sampled)
        logprobs.append(scores.log_softmax(-1).gather(-1, sampled[:, None]).squeeze(1))
        unfinished &= ~torch.isin(sampled, eos)
        if len(tokens) == max_new_tokens or not unfinished.any():
            break
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(attention_mask), 1)], dim=1)
        positions = positions[:, -1:] + 1
        logits = model(input_ids=sampled[:, None], attention_mask=attention_mask, position_ids=positions,
                       past_key_values=cache, use_cache=True).logits[:, -1]
    return torch.stack(tokens, dim=1), torch.stack(logprobs, dim=1)


@torch.no_grad()
def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[int]],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    return_logprobs: bool = False,
    decoder: str = "kit",
) -> Batch:
    """Sample one completion per prompt (temperature 0 = greedy). Uses the global torch RNG, so seeding is external.

    return_logprobs: also return the log-probability of each sampled token under the sampling distribution (after
    temperature and top-p), for importance-sampling correction.
    decoder: "kit" (`decode`) or "generate" (transformers); see the module docstring. A sharded model always uses
    "generate".
    """
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
    device = next(model.parameters()).device
    prompt_ids, prompt_mask = left_pad(prompts, tokenizer.pad_token_id)
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    eos_ids = eos_token_ids(model, tokenizer)
    was_training = model.training
    model.eval()
    if max_new_tokens < 1:
        completion_ids, logprobs = torch.empty((len(prompts), 0), dtype=torch.long, device=device), None
    elif decoder == "kit" and not is_sharded(model):
        with inference_kernels(model, len(prompts)):
            completion_ids, logprobs = decode(model, prompt_ids, prompt_mask, max_new_tokens, eos_ids,
                                              tokenizer.pad_token_id, temperature, top_p)
    else:
        completion_ids, logprobs = _hf_generate(model, tokenizer, prompt_ids, prompt_mask, max_new_tokens, eos_ids,
                                                temperature, top_p, return_logprobs)
    model.train(was_training)
    if completion_ids.shape[1] == 0:
        completion_ids = torch.full((len(prompts), 1), tokenizer.pad_token_id, dtype=torch.long, device=device)
        logprobs = None
    return Batch(prompt_ids, prompt_mask, completion_ids, completion_mask(completion_ids, eos_ids),
                 logprobs if return_logprobs else None)


def _hf_generate(model, tokenizer, prompt_ids, prompt_mask, max_new_tokens, eos_ids, temperature, top_p,
                 return_logprobs) -> tuple[torch.Tensor, torch.Tensor | None]:
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0} if temperature > 0 else {
        "do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    output = model.generate(
        input_ids=prompt_ids, attention_mask=prompt_mask, max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=eos_ids, output_scores=return_logprobs,
        return_dict_in_generate=True, synced_gpus=is_sharded(model), **sampling,
    )
    completion_ids = output.sequences[:, prompt_ids.shape[1]:]
    if not (return_logprobs and output.scores):
        return completion_ids, None
    scores = torch.stack(output.scores, dim=1).float()  # processed logits: what was sampled from
    return completion_ids, torch.log_softmax(scores, -1).gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)


class HFSampler:
    """Rollouts from the live student in this process (`generate`): always on-policy, nothing to synchronise."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, return_logprobs: bool = False,
                 decoder: str = "kit"):
        self.model, self.tokenizer, self.return_logprobs, self.decoder = model, tokenizer, return_logprobs, decoder

    def sync_weights(self, model: torch.nn.Module) -> None:
        pass

    def sample(self, prompts: list[list[int]], max_new_tokens: int, temperature: float, top_p: float,
               seed: int) -> Batch:
        torch.manual_seed(seed)
        return generate(self.model, self.tokenizer, prompts, max_new_tokens, temperature, top_p,
                        return_logprobs=self.return_logprobs, decoder=self.decoder)
