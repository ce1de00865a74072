"""Sampling completions with HF `generate` (CPU and small GPU runs; vLLM rollouts live in `rollout_vllm.py`).

A batch of prompts is left-padded so all completions start at the same column. The completion mask ends at the
first end-of-sequence token (included: stopping is a decision the student learns too). For SmolLM2 the pad and
EOS ids are the same, so padding is recognised by position, never by id.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


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
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def full_named_parameters(model: torch.nn.Module):
    """(name, full tensor) per parameter; a sharded parameter is gathered from all processes, one at a time (a
    collective: every process must iterate, in the same order)."""
    from torch.distributed.tensor import DTensor

    for name, parameter in model.named_parameters():
        yield name, parameter.full_tensor() if isinstance(parameter, DTensor) else parameter.data


@torch.no_grad()
def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[int]],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    return_logprobs: bool = False,
) -> Batch:
    """Sample one completion per prompt (temperature 0 = greedy). Uses the global torch RNG, so seeding is external.

    return_logprobs: also return the log-probability of each sampled token under the sampling distribution (after
    temperature and top-p), for importance-sampling correction.
    """
    device = next(model.parameters()).device
    prompt_ids, prompt_mask = left_pad(prompts, tokenizer.pad_token_id)
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    eos_ids = eos_token_ids(model, tokenizer)
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0} if temperature > 0 else {
        "do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    was_training = model.training
    model.eval()
    output = model.generate(
        input_ids=prompt_ids, attention_mask=prompt_mask, max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=eos_ids, output_scores=return_logprobs,
        return_dict_in_generate=True, synced_gpus=is_sharded(model), **sampling,
    )
    model.train(was_training)
    completion_ids = output.sequences[:, prompt_ids.shape[1]:]
    if completion_ids.shape[1] == 0:
        completion_ids = torch.full((len(prompts), 1), tokenizer.pad_token_id, dtype=torch.long, device=device)
    logprobs = None
    if return_logprobs and output.scores:
        scores = torch.stack(output.scores, dim=1).float()  # processed logits: what was sampled from
        logprobs = torch.log_softmax(scores, -1).gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)
    return Batch(prompt_ids, prompt_mask, completion_ids, completion_mask(completion_ids, eos_ids), logprobs)


class HFSampler:
    """Rollouts with HF `generate` from the live student: always on-policy, nothing to synchronise."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, return_logprobs: bool = False):
        self.model, self.tokenizer, self.return_logprobs = model, tokenizer, return_logprobs

    def sync_weights(self, model: torch.nn.Module) -> None:
        pass

    def sample(self, prompts: list[list[int]], max_new_tokens: int, temperature: float, top_p: float,
               seed: int) -> Batch:
        torch.manual_seed(seed)
        return generate(self.model, self.tokenizer, prompts, max_new_tokens, temperature, top_p,
                        return_logprobs=self.return_logprobs)
