"""Evaluation helpers: batched greedy answers, fact-matcher accuracy, and forgetting measured against the base model.

Forgetting (on general prompts unrelated to the task):
- kl_to_base: sequence-level KL(model ‖ base) in nats, estimated without bias as the mean over prompts of
  Σ_t KL_t(model ‖ base) along completions sampled from the model (temperature 1); the paper's Fig. 2 (right) metric;
- top1_agreement: along the base model's greedy completions, the fraction of positions where the model's most likely
  next token equals the base model's (1.0 = unchanged behaviour).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from tqdm import tqdm

from sdft_core.eval.stats import pass_at_k_curve
from sdft_core.forward import completion_hidden, with_teacher_prompts
from sdft_core.io import ensure_writable_folder, fingerprint, provenance, read_cache, write_json
from sdft_core.loss import Divergence, stepwise_divergence
from sdft_core.model import BASE, EMBEDDED_MODEL, load_model, load_tokenizer, model_to_load, weights_fingerprint
from sdft_core.prompts import CONTEXT_PREFIX, chat_prompt, encode, student_prompt_ids, teacher_prompt_ids
from sdft_core.rollout import Batch, generate


def prompt_ids(tokenizer, user_messages: list[str]) -> list[list[int]]:
    return [encode(tokenizer, chat_prompt(tokenizer, message)) for message in user_messages]


def _batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield slice(start, start + size)


def generate_batched(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, batch_size: int = 8,
                     temperature: float = 0.0, top_p: float = 1.0, desc: str = "generate",
                     progress: bool = True) -> list[tuple[list[int], Batch]]:
    """Generate in batches; returns (indices into `prompts`, batch) pairs."""
    # Longest prompts first: rows in a batch then have similar lengths and waste less padding.
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    batches = []
    for part in tqdm(list(_batches(order, batch_size)), desc=desc, disable=not progress, mininterval=2.0, ncols=100):
        batches.append((order[part], generate(model, tokenizer, [prompts[i] for i in order[part]], max_new_tokens,
                                             temperature, top_p)))
    return batches


def generate_completions(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, batch_size: int = 8,
                         temperature: float = 0.0, top_p: float = 1.0, desc: str = "generate",
                         progress: bool = True) -> list[tuple[str, int]]:
    """(text, number of generated tokens) per prompt, in the order of `prompts` (greedy by default, as the paper
    evaluates accuracy)."""
    completions: list[tuple[str, int]] = [("", 0)] * len(prompts)
    for indices, batch in generate_batched(model, tokenizer, prompts, max_new_tokens, batch_size, temperature,
                                           top_p, desc, progress):
        for row, index in enumerate(indices):
            tokens = batch.completion_ids[row][batch.completion_mask[row].bool()]
            completions[index] = (tokenizer.decode(tokens, skip_special_tokens=True).strip(), len(tokens))
    return completions


def generate_texts(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, batch_size: int = 8,
                   temperature: float = 0.0, top_p: float = 1.0, desc: str = "generate",
                   progress: bool = True) -> list[str]:
    return [text for text, _ in generate_completions(model, tokenizer, prompts, max_new_tokens, batch_size,
                                                     temperature, top_p, desc, progress)]


def score_items(items, responses: list[str], score) -> tuple[dict, list[dict]]:
    """Mean of every boolean the scorer returns ("correct" and task-specific ones) and one record per item, kept so
    that two models can be compared item by item."""
    references = [item.reference for item in items]
    # A scorer that calls an LLM judge scores a whole split at once (concurrent, cached requests).
    scores = (score.score_many(responses, references) if hasattr(score, "score_many")
              else [score(response, reference) for response, reference in zip(responses, references)])
    records = [{"id": item.id, "prompt": item.prompt, "response": response, **result}
               for item, response, result in zip(items, responses, scores)]
    keys = [k for k, v in records[0].items() if isinstance(v, bool)] if records else []
    metrics = {key: sum(r[key] for r in records) / len(records) for key in keys}
    return {**metrics, "n": len(records)}, records


@torch.no_grad()
def sampled_sequence_kl(p_model, p_prompts: list[list[int]], q_model, q_prompts: list[list[int]], tokenizer,
                        max_new_tokens: int, batch_size: int = 8, seed: int = 0, progress: bool = True) -> list[float]:
    """Sequence-level KL(p ‖ q) per prompt, estimated without bias as Σ_t KL_t(p ‖ q) along one completion sampled
    from p (temperature 1). p and q may see different prompts for the same completion (e.g. the demonstration-
    conditioned teacher vs the plain student context, paper Fig. 2 right)."""
    torch.manual_seed(seed)
    kl = [0.0] * len(p_prompts)
    for indices, batch in generate_batched(p_model, tokenizer, p_prompts, max_new_tokens, batch_size,
                                           temperature=1.0, desc="sequence KL", progress=progress):
        q_batch = with_teacher_prompts(batch, [q_prompts[i] for i in indices], tokenizer.pad_token_id)
        divergence = stepwise_divergence(completion_hidden(p_model, batch), completion_hidden(q_model, q_batch),
                                         p_model.get_output_embeddings(), q_model.get_output_embeddings(),
                                         Divergence("reverse"), chunk_size=64)
        for row, index in enumerate(indices):
            kl[index] = (divergence[row] * batch.completion_mask[row]).sum().item()
    return kl


@torch.no_grad()
def forgetting_metrics(model, base_model, tokenizer, general_prompts: list[str], max_new_tokens: int = 64,
                       batch_size: int = 8, seed: int = 0, progress: bool = True) -> dict:
    """KL(model ‖ base) on the model's own samples, and top-1 agreement on the base model's greedy completions."""
    prompts = prompt_ids(tokenizer, general_prompts)
    sequence_kl = sampled_sequence_kl(model, prompts, base_model, prompts, tokenizer, max_new_tokens, batch_size,
                                      seed, progress)
    model_head, base_head = model.get_output_embeddings(), base_model.get_output_embeddings()
    agree = positions = 0
    for _, batch in generate_batched(base_model, tokenizer, prompts, max_new_tokens, batch_size, temperature=0.0,
                                     desc="agreement", progress=progress):
        model_top = model_head(completion_hidden(model, batch)).argmax(-1)
        base_top = base_head(completion_hidden(base_model, batch)).argmax(-1)
        mask = batch.completion_mask.bool()
        agree += (model_top == base_top)[mask].sum().item()
        positions += mask.sum().item()
    return {"kl_to_base": sum(sequence_kl) / len(sequence_kl), "top1_agreement": agree / max(positions, 1),
            "n_prompts": len(prompts)}


def up_to_date(output_path: str, key: str, tag: str) -> dict | None:
    """The cached result in `output_path` if it was computed for `key`, else None (a file that cannot be read is
    reported and computed again). On a miss, checks that the result can be written, before any model loads."""
    if (cached := read_cache(output_path, tag)) is not None and cached.get("fingerprint") == key:
        print(f"[{tag}] {output_path} is up to date; skipping.")
        return cached
    ensure_writable_folder(Path(output_path).parent)
    return None


def evaluate_model(model_dir: str, task, splits: list[str], general_prompts: list[str], output_path: str,
                   base_model_name: str = EMBEDDED_MODEL, max_items: int = 0, batch_size: int = 8, seed: int = 0,
                   oracle_context: bool = False, max_new_tokens: int | None = None, dtype: str = "float32",
                   device: str = "cpu") -> dict:
    """Evaluate one model on a task's splits (greedy answers, paper B.2) and on forgetting; cached in `output_path`.

    model_dir: a trained run's model folder, or "base" for the untrained base model.
    oracle_context: ask each question with its source text in front of it (paper Table 1, "Oracle RAG": a retriever
    that always finds the right article).
    """
    model_name = model_to_load(model_dir, base_model_name)
    # Keyed by the weights read, not by the run that wrote them: a retrained model is evaluated again, whoever
    # trained it, and an unchanged one never is.
    weights = weights_fingerprint(model_name)
    items = {split: task.eval_splits[split][: max_items or None] for split in splits}
    max_new_tokens = max_new_tokens or task.max_new_tokens
    key = fingerprint(model_name, weights, task.name, {s: [i.id for i in its] for s, its in items.items()},
                      general_prompts, max_new_tokens, seed, oracle_context)
    if (cached := up_to_date(output_path, key, "eval")) is not None:
        return cached
    tokenizer = load_tokenizer(model_name)
    model = load_model(model_name, dtype, device).eval()
    base = model if model_dir == BASE else load_model(base_model_name, dtype, device).eval()
    started = time.perf_counter()
    result = {"fingerprint": key, "model": model_name, "task": task.name, "records": {}}
    for split, split_items in items.items():
        messages = [CONTEXT_PREFIX.format(context=i.context) + i.prompt if oracle_context else i.prompt
                    for i in split_items]
        completions = generate_completions(model, tokenizer, prompt_ids(tokenizer, messages), max_new_tokens,
                                           batch_size, desc=f"answer {split}")
        responses = [text for text, _ in completions]
        result[split], result["records"][split] = score_items(split_items, responses, task.score)
        # Paper Table 2 measures retained reasoning by the length of what the model writes.
        result[split]["mean_response_tokens"] = sum(n for _, n in completions) / max(len(completions), 1)
    if general_prompts:
        result["forgetting"] = forgetting_metrics(model, base, tokenizer, general_prompts, max_new_tokens,
                                                  batch_size, seed)
    result["eval_seconds"] = time.perf_counter() - started
    result["provenance"] = provenance(result["eval_seconds"])
    write_json(output_path, result)
    return result


def pass_at_k_counts(model_dir: str, task, split: str, samples: int, output_path: str, max_items: int = 0,
                     temperature: float = 1.0, top_p: float = 0.95, batch_size: int = 16, seed: int = 0,
                     base_model_name: str = EMBEDDED_MODEL, dtype: str = "float32", device: str = "cpu") -> dict:
    """`samples` completions per item at temperature 1.0 and top-p 0.95 (paper B.2), the number correct per item,
    and the unbiased pass@k curve for k = 1, 2, 4, … ≤ samples. Cached in `output_path`."""
    model_name = model_to_load(model_dir, base_model_name)
    weights = weights_fingerprint(model_name)
    items = task.eval_splits[split][: max_items or None]
    key = fingerprint(model_name, weights, task.name, split, [i.id for i in items], samples, temperature, top_p,
                      seed)
    if (cached := up_to_date(output_path, key, "pass@k")) is not None:
        return cached
    tokenizer = load_tokenizer(model_name)
    model = load_model(model_name, dtype, device).eval()
    torch.manual_seed(seed)
    started = time.perf_counter()
    prompts = prompt_ids(tokenizer, [i.prompt for i in items])
    repeated = [p for p in prompts for _ in range(samples)]
    texts = generate_texts(model, tokenizer, repeated, task.max_new_tokens, batch_size, temperature, top_p,
                           desc=f"sample {samples} per item")
    per_item = []
    for index, item in enumerate(items):
        responses = texts[index * samples : (index + 1) * samples]
        per_item.append({"id": item.id, "n": samples,
                         "c": sum(task.score(r, item.reference)["correct"] for r in responses)})
    ks = [2**i for i in range(samples.bit_length()) if 2**i <= samples]
    result = {"fingerprint": key, "model": model_name, "task": task.name, "split": split, "items": per_item,
              "pass_at_k": {str(k): v for k, v in pass_at_k_curve([(r["n"], r["c"]) for r in per_item], ks).items()},
              "provenance": provenance(time.perf_counter() - started)}
    write_json(output_path, result)
    return result


def kl_to_base_of_sft_and_teacher(sft_model_dir: str, task, output_path: str, max_examples: int = 16,
                                  teacher_context: str = "demonstration", base_model_name: str = EMBEDDED_MODEL,
                                  batch_size: int = 8, seed: int = 0, dtype: str = "float32",
                                  device: str = "cpu") -> dict:
    """Paper Fig. 2 (right): how far from the base policy are (a) the SFT model and (b) the demonstration-
    conditioned teacher? Both as sequence-level KL(· ‖ base) on their own samples for the same training prompts x:
    KL(π_SFT(·|x) ‖ π_0(·|x)) and KL(π_0(·|x,c) ‖ π_0(·|x)). Cached in `output_path`."""

    examples = task.train[:max_examples]
    key = fingerprint(weights_fingerprint(sft_model_dir), weights_fingerprint(base_model_name), task.name,
                      [e.id for e in examples], teacher_context, seed)
    if (cached := up_to_date(output_path, key, "kl")) is not None:
        return cached
    tokenizer = load_tokenizer(base_model_name)
    base, sft = load_model(base_model_name, dtype, device).eval(), load_model(sft_model_dir, dtype, device).eval()
    started = time.perf_counter()
    student = [student_prompt_ids(tokenizer, e, 4096) for e in examples]
    teacher = [teacher_prompt_ids(tokenizer, e, 4096, teacher_context) for e in examples]
    sft_kl = sampled_sequence_kl(sft, student, base, student, tokenizer, task.max_new_tokens, batch_size, seed)
    teacher_kl = sampled_sequence_kl(base, teacher, base, student, tokenizer, task.max_new_tokens, batch_size, seed)
    result = {"fingerprint": key, "task": task.name, "n": len(examples),
              "sft_kl_to_base": sum(sft_kl) / len(sft_kl), "teacher_kl_to_base": sum(teacher_kl) / len(teacher_kl),
              "per_example": [{"id": e.id, "sft": s, "teacher": t} for e, s, t in zip(examples, sft_kl, teacher_kl)],
              "provenance": provenance(time.perf_counter() - started)}
    write_json(output_path, result)
    return result
