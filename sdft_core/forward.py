"""The forward passes that training, evaluation and the pre-flight share: the hidden states that predict each
completion token, under the student's or the teacher's context, and the loss weights of those positions."""

from __future__ import annotations

import torch
from torch.distributed.fsdp import FSDPModule

from sdft_core.rollout import Batch, left_pad


def completion_hidden(model, batch: Batch) -> torch.Tensor:
    """Final (normed) hidden states at the positions that predict each completion token: [B, T, H].

    The vocabulary projection happens later, chunk by chunk, in the loss."""
    attention_mask = batch.attention_mask
    # Same positions as `generate` gives left-padded prompts, so scores match what was sampled.
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    inputs = {"input_ids": batch.input_ids, "attention_mask": attention_mask, "position_ids": position_ids,
              "use_cache": False}
    if torch.is_grad_enabled() or isinstance(model, FSDPModule):
        # Through the model's own forward, so that a DistributedDataParallel or FSDP wrapper sees it (FSDP gathers
        # the embeddings and the output head in the root's forward); logits for one position only.
        hidden = model(**inputs, output_hidden_states=True, logits_to_keep=1).hidden_states[-1]
    else:
        # No gradient: the decoder alone frees each layer's activations as it goes.
        hidden = model.get_decoder()(**inputs).last_hidden_state
    prompt_length, completion_length = batch.prompt_ids.shape[1], batch.completion_ids.shape[1]
    return hidden[:, prompt_length - 1 : prompt_length + completion_length - 1]


def with_teacher_prompts(rollout: Batch, teacher_prompts: list[list[int]], pad_id: int) -> Batch:
    """The same sampled completions behind the teacher's context instead of the student's."""
    prompt_ids, prompt_mask = left_pad(teacher_prompts, pad_id)
    device = rollout.completion_ids.device
    return Batch(prompt_ids.to(device), prompt_mask.to(device), rollout.completion_ids, rollout.completion_mask)


def loss_weights(completion_mask: torch.Tensor, mask_first_tokens: int) -> torch.Tensor:
    """Completion mask with the first `mask_first_tokens` positions of every completion set to 0 (paper §5)."""
    weights = completion_mask.float().clone()
    weights[:, :mask_first_tokens] = 0.0
    return weights
