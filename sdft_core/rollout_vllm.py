"""vLLM rollouts for the paper-scale path (GPU only: `pip install -e ".[gpu]"`). Nothing here imports vLLM at
module import time, and the CPU path never constructs these classes.

Two modes:
- "colocate": a vLLM engine inside the training process, sharing the GPU. The student's weights are pushed into it
  after every optimizer step; with sleep mode the engine releases its weights and KV cache between rollouts so the
  optimizer step has the memory.
- "server": a separate vLLM server (`trl vllm-serve --model <id>` on other GPUs), reached with TRL's `VLLMClient`;
  weights are broadcast to it after every optimizer step through TRL's NCCL communicator.

Both return the sampler's log-probability of every sampled token (vLLM's processed log-probs: after temperature
and top-p), which the importance-sampling correction (TrainConfig.importance_sampling) needs.

Not yet verified on a GPU by the kit's own tests: the CPU tests cover `batch_from_completions` and
`sampled_token_logprobs` with stand-in outputs shaped like vLLM's; see README "Paper scale".
"""

from __future__ import annotations

import torch

from sdft_core.lora import is_lora, merged_state_dict
from sdft_core.rollout import Batch, completion_mask, full_named_parameters, left_pad, right_pad


def sampled_token_logprobs(token_ids: list[int], position_logprobs: list[dict]) -> list[float]:
    """vLLM gives, per generated position, a dict {token id: Logprob}; keep the sampled token's log-prob."""
    if len(token_ids) != len(position_logprobs):
        raise ValueError(f"{len(token_ids)} sampled tokens but {len(position_logprobs)} log-prob entries")
    values = []
    for position, (token, candidates) in enumerate(zip(token_ids, position_logprobs)):
        if token not in candidates:
            raise ValueError(f"position {position}: the sampled token {token} has no log-prob (request logprobs=0)")
        entry = candidates[token]
        values.append(float(getattr(entry, "logprob", entry)))
    return values


def batch_from_completions(prompts: list[list[int]], completions: list[list[int]], logprobs: list[list[float]],
                           pad_id: int, eos_ids: list[int], device="cpu") -> Batch:
    """The kit's Batch from token lists: the same layout (left-padded prompts, right-padded completions, mask up to
    and including the first EOS) as HF generate gives, with the sampler's log-probs aligned to the completions."""
    prompt_ids, prompt_mask = left_pad(prompts, pad_id)
    completion_ids, _ = right_pad(completions, pad_id)
    sampler, _ = right_pad([[0] * len(c) for c in completions], 0)
    sampler = sampler.float()
    for row, values in enumerate(logprobs):
        sampler[row, : len(values)] = torch.tensor(values)
    mask = completion_mask(completion_ids, eos_ids)
    lengths = torch.tensor([len(c) for c in completions])
    mask = mask * (torch.arange(completion_ids.shape[1])[None, :] < lengths[:, None]).long()
    return Batch(prompt_ids.to(device), prompt_mask.to(device), completion_ids.to(device), mask.to(device),
                 sampler.to(device))


class VLLMSampler:
    """Sample completions with vLLM; `sync_weights(model)` after every optimizer step keeps it on-policy."""

    def __init__(self, model_path: str, tokenizer, eos_ids: list[int], mode: str = "colocate",
                 gpu_memory_utilization: float = 0.3, server_url: str | None = None, sleep_mode: bool = True,
                 max_model_len: int | None = None, seed: int = 0, dtype: str = "bfloat16"):
        if mode not in ("colocate", "server"):
            raise ValueError(f"vLLM mode must be 'colocate' or 'server', got {mode!r}")
        self.mode, self.pad_id, self.eos_ids = mode, tokenizer.pad_token_id, eos_ids
        self.sleep_mode = sleep_mode and mode == "colocate"
        if mode == "colocate":
            from vllm import LLM

            self.llm = LLM(model=model_path, gpu_memory_utilization=gpu_memory_utilization, dtype=dtype,
                           enable_sleep_mode=self.sleep_mode, max_model_len=max_model_len, seed=seed,
                           # log-probs after temperature/top-p: the distribution actually sampled from
                           logprobs_mode="processed_logprobs")
            self.weights_awake = True
            if self.sleep_mode:
                self.llm.sleep(level=1)  # offload the weights, drop the KV cache until the first rollout
                self.weights_awake = False
        else:
            from trl.generation.vllm_client import VLLMClient

            if not server_url:
                raise ValueError("vLLM server mode needs vllm_server_url (e.g. http://localhost:8000)")
            self.client = VLLMClient(base_url=server_url, connection_timeout=240.0)
            self.client.init_communicator(device=torch.cuda.current_device())

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Push the student's current weights into the engine (after every optimizer step). A LoRA student is pushed
        merged (base + adapter, under the base model's names): the engine needs no LoRA support, at the cost of
        sending every weight each step (unverified on a GPU, like the rest of this module)."""
        named = list(merged_state_dict(model).items()) if is_lora(model) else None
        if self.mode == "server":
            metadata = [(name, str(parameter.dtype).removeprefix("torch."), list(parameter.shape))
                        for name, parameter in (named or model.named_parameters())]
            self.client.update_named_params(metadata, named or full_named_parameters(model))
            self.client.reset_prefix_cache()
            return
        if not self.weights_awake:
            self.llm.wake_up(tags=["weights"])  # loading into offloaded weights would write to freed memory
            self.weights_awake = True
        engine_model = self.llm.llm_engine.model_executor.driver_worker.model_runner.model
        engine_model.load_weights(named or full_named_parameters(model))
        self.llm.reset_prefix_cache()

    def sample(self, prompts: list[list[int]], max_new_tokens: int, temperature: float, top_p: float, seed: int,
               device="cuda") -> Batch:
        if self.mode == "server":
            out = self.client.generate(prompts, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens,
                                       logprobs=0, generation_kwargs={"seed": seed})
            # logprobs=0 returns only the sampled token's log-prob, first in each position's list
            logprobs = [[position[0] for position in row] for row in out["logprobs"]]
            return batch_from_completions(prompts, out["completion_ids"], logprobs, self.pad_id, self.eos_ids,
                                          device)

        from vllm import SamplingParams

        if self.sleep_mode:
            self.llm.wake_up(tags=None if not self.weights_awake else ["kv_cache"])
        params = SamplingParams(temperature=temperature, top_p=top_p, max_tokens=max_new_tokens, logprobs=0,
                                seed=seed, stop_token_ids=self.eos_ids)
        outputs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], sampling_params=params,
                                    use_tqdm=False)
        if self.sleep_mode:  # give the memory back for the training forward/backward
            self.llm.sleep(level=1)
            self.weights_awake = False
        completions = [list(o.outputs[0].token_ids) for o in outputs]
        logprobs = [sampled_token_logprobs(c, o.outputs[0].logprobs) for c, o in zip(completions, outputs)]
        return batch_from_completions(prompts, completions, logprobs, self.pad_id, self.eos_ids, device)
