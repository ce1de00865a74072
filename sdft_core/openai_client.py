"""Chat completions through the official `openai` client: cached on disk, retried, concurrent, accounted.

Works with any OpenAI-compatible endpoint: OpenAI itself, a vLLM server (`vllm serve ...`, base_url
http://host:8000/v1) or a llama.cpp server (base_url http://host:8080/v1).

- The API key is read only from the environment (OPENAI_API_KEY, or the variable named by `api_key_env`). Every
  entry point calls `check_credentials()` before it does anything, so a missing key is one clear message. The key
  is handed to the openai client and nowhere else: not to the cache, the results, the logs or any error message.
- Every response is cached as one JSON file per request under `cache_dir`, named by a hash of what determines the
  answer (model, messages, sampling parameters, n, seed, endpoint host). A rerun or a resumed run pays nothing twice.
- Retry policy is ours, not the openai client's (its max_retries is 0), so it is visible and testable: rate limits
  (429), server errors (5xx), timeouts and connection errors are retried with exponential backoff and jitter,
  honouring Retry-After; a malformed answer (not JSON, no choices) is retried a few times and then is an error.
- Batches run on a bounded thread pool and come back in the order they were given.
- Usage: tokens and an estimated cost (from PRICES_PER_MILLION) are counted and reported in one line.
"""

from __future__ import annotations

import dataclasses
import email.utils
import hashlib
import json
import os
import random
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

import openai
from tqdm import tqdm

from sdft_core.io import write_json
from sdft_core.options import config_from_argv

DEFAULT_CACHE_DIR = "~/.cache/sdft_kit/openai"

# US dollars per 1M tokens, (input, output): OpenAI list prices for standard processing as published in 2025.
# Edit this table when prices change. A model that is not listed (a local vLLM or llama.cpp model, a new OpenAI
# model) has its cost reported as unknown rather than guessed. Dated snapshots ("gpt-4o-2024-08-06") use the
# price of their family.
PRICES_PER_MILLION: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
}
_DATED_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")

# The statuses the openai SDK itself treats as transient: timeout, lock conflict, rate limit, server errors.
_RETRYABLE_STATUSES = {408, 409, 429}


class MissingCredentialsError(RuntimeError):
    """No API key in the environment."""


class ChatError(RuntimeError):
    """A chat request failed for good: retries exhausted, or an error that retrying cannot fix."""


class MalformedResponse(ValueError):
    """The server answered 200 with a body that is not a usable chat completion."""


@dataclass
class ClientConfig:
    """Settings of the chat client. Entry points extend this dataclass, so their configs stay flat."""

    base_url: str | None = None
    """OpenAI-compatible endpoint, e.g. "http://localhost:8000/v1" (vLLM); None: OpenAI (or $OPENAI_BASE_URL)."""
    model: str = "gpt-4o"
    """Model name as the endpoint knows it."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (local servers that ignore keys accept any non-empty value)."""
    cache_dir: str = DEFAULT_CACHE_DIR
    """Folder of cached responses, one JSON file per request."""
    max_workers: int = 8
    """Requests in flight at once."""
    timeout_s: float = 300.0
    """Seconds to wait for one response before it counts as a (retried) timeout."""
    max_attempts: int = 8
    """Attempts per request on rate limits, server errors, timeouts and connection errors before giving up."""
    max_malformed_attempts: int = 3
    """Attempts per request when the server answers with a malformed body (not JSON, no choices)."""
    backoff_base_s: float = 1.0
    """First retry waits about this long; each further retry doubles it (with jitter)."""
    backoff_max_s: float = 60.0
    """Longest wait between two attempts; also caps a server's Retry-After."""

    def __post_init__(self):
        positive = ("max_workers", "timeout_s", "max_attempts", "max_malformed_attempts")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{type(self).__name__}.{name} must be positive, got {getattr(self, name)!r}")
        if self.backoff_base_s < 0 or self.backoff_max_s < 0:
            raise ValueError(f"{type(self).__name__}: backoff times must not be negative")
        if not self.api_key_env:
            raise ValueError(f"{type(self).__name__}.api_key_env must name an environment variable")


def check_credentials(config: ClientConfig) -> str:
    """Return the API key from the environment, or stop with one message saying how to provide it."""
    key = os.environ.get(config.api_key_env, "").strip()
    if not key:
        raise MissingCredentialsError(
            f"No API key: the environment variable {config.api_key_env} is not set. "
            f"Set it before running (export {config.api_key_env}=...); for a local vLLM or llama.cpp server that "
            f"ignores keys, any non-empty value works. Keys are only ever read from the environment.")
    return key


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion request. Parameters left at None are not sent (the server's default applies), which
    matters for models that accept only their default temperature (GPT-5 family)."""

    messages: list[dict[str, str]]
    temperature: float | None = None
    top_p: float | None = None
    n: int = 1
    seed: int | None = None
    max_tokens: int | None = None

    def parameters(self) -> dict[str, Any]:
        """Everything sent besides the model name."""
        sent = {"messages": self.messages, "n": self.n}
        for name in ("temperature", "top_p", "seed", "max_tokens"):
            if getattr(self, name) is not None:
                sent[name] = getattr(self, name)
        return sent


def user_message(text: str, system: str | None = None) -> list[dict[str, str]]:
    """Messages for a single user turn, optionally after a system turn."""
    messages = [{"role": "system", "content": system}] if system is not None else []
    return messages + [{"role": "user", "content": text}]


@dataclass(frozen=True)
class ChatResult:
    texts: list[str]
    """One text per requested choice (n)."""
    finish_reasons: list[str | None]
    prompt_tokens: int
    completion_tokens: int
    from_cache: bool

    @property
    def text(self) -> str:
        return self.texts[0]


def price_per_million(model: str) -> tuple[float, float] | None:
    return PRICES_PER_MILLION.get(model) or PRICES_PER_MILLION.get(_DATED_SNAPSHOT.sub("", model))


@dataclass
class Usage:
    """What this run asked of the endpoint. Cache hits cost nothing and are counted apart."""

    model: str
    host: str
    requests: int = 0
    """Requests answered by the endpoint in this run (retries not counted)."""
    cache_hits: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def cost_usd(self) -> float | None:
        prices = price_per_million(self.model)
        if prices is None:
            return None
        return (self.prompt_tokens * prices[0] + self.completion_tokens * prices[1]) / 1e6

    def report(self) -> str:
        cost = self.cost_usd()
        cost_text = f"estimated cost ${cost:.4f}" if cost is not None else \
            f"cost unknown (no price for model {self.model!r} in PRICES_PER_MILLION)"
        return (f"usage [{self.model} @ {self.host}]: {self.requests} requests sent, {self.cache_hits} cache hits, "
                f"{self.retries} retries, {self.prompt_tokens:,} prompt + {self.completion_tokens:,} completion "
                f"tokens, {cost_text}")


class ChatClient:
    """Cached, retrying, concurrent chat completions. The constructor checks credentials before anything else."""

    def __init__(self, config: ClientConfig):
        api_key = check_credentials(config)
        self.config = config
        self.cache_dir = Path(config.cache_dir).expanduser()
        # No client-side retries: the policy below is the only one, so it is what the tests see.
        self._openai = openai.OpenAI(api_key=api_key, base_url=config.base_url, timeout=config.timeout_s,
                                     max_retries=0)
        # The host the client really talks to (base_url, $OPENAI_BASE_URL or OpenAI), part of every cache key.
        self.host = urlparse(str(self._openai.base_url)).netloc
        self.usage = Usage(config.model, self.host)
        self._lock = threading.Lock()
        self._jitter = random.Random()  # timing only: jitter never changes what is asked or answered

    # --- cache ---------------------------------------------------------------------------------------------------
    def cache_key(self, request: ChatRequest) -> str:
        identity = {"model": self.config.model, "host": self.host, **request.parameters()}
        return hashlib.sha256(json.dumps(identity, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def cache_path(self, request: ChatRequest) -> Path:
        key = self.cache_key(request)
        return self.cache_dir / key[:2] / f"{key}.json"

    def _read_cache(self, path: Path) -> ChatResult | None:
        if not path.exists():
            return None
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            return ChatResult(entry["texts"], entry["finish_reasons"], entry["prompt_tokens"],
                              entry["completion_tokens"], from_cache=True)
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            print(f"warning: unreadable cache entry {path} ({err}); asking again", file=sys.stderr)
            return None

    # --- requests ------------------------------------------------------------------------------------------------
    def complete(self, request: ChatRequest) -> ChatResult:
        """One request: from the cache when it was answered before, otherwise from the endpoint (then cached)."""
        path = self.cache_path(request)
        cached = self._read_cache(path)
        if cached is not None:
            with self._lock:
                self.usage.cache_hits += 1
            return cached
        result = self._fetch(request)
        # Only what the answer is made of is stored, with the request for auditing: never headers, never the key.
        write_json(path, {"model": self.config.model, "host": self.host, "request": request.parameters(),
                          "texts": result.texts, "finish_reasons": result.finish_reasons,
                          "prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens})
        with self._lock:
            self.usage.requests += 1
            self.usage.prompt_tokens += result.prompt_tokens
            self.usage.completion_tokens += result.completion_tokens
        return result

    def complete_many(self, requests: list[ChatRequest], desc: str = "chat", progress: bool = True
                      ) -> list[ChatResult]:
        """Many requests on at most `max_workers` threads; results in the order of `requests`. Identical requests
        are sent once. On a failure, requests not yet started are cancelled (finished ones stay cached) and the
        error is raised."""
        keys = [self.cache_key(request) for request in requests]
        unique = dict(zip(keys, requests))
        if not unique:
            return []
        bar = tqdm(total=len(unique), desc=desc, disable=not progress, mininterval=2.0, ncols=100)
        with ThreadPoolExecutor(max_workers=min(self.config.max_workers, len(unique))) as pool:
            futures = {key: pool.submit(self.complete, request) for key, request in unique.items()}
            for future in futures.values():
                future.add_done_callback(lambda _: bar.update())
            try:
                answers = {key: future.result() for key, future in futures.items()}
            except BaseException:
                for future in futures.values():
                    future.cancel()
                raise
            finally:
                bar.close()
        return [answers[key] for key in keys]

    def _fetch(self, request: ChatRequest) -> ChatResult:
        transient_failures = malformed_answers = 0
        while True:
            try:
                raw = self._openai.chat.completions.with_raw_response.create(
                    model=self.config.model, **request.parameters())
                return parse_completion(raw.text, request.n)
            except MalformedResponse as err:
                malformed_answers += 1
                if malformed_answers >= self.config.max_malformed_attempts:
                    raise ChatError(f"{self._where()}: malformed response {malformed_answers} times in a row, "
                                    f"giving up: {err}") from None
                delay = self._backoff(malformed_answers)
            except openai.APIStatusError as err:
                if err.status_code == 401:
                    raise ChatError(f"{self._where()}: HTTP 401, the endpoint rejected the API key from "
                                    f"${self.config.api_key_env}") from None
                if err.status_code not in _RETRYABLE_STATUSES and err.status_code < 500:
                    raise ChatError(f"{self._where()}: not retried: {err.message}") from None
                transient_failures += 1
                if transient_failures >= self.config.max_attempts:
                    raise ChatError(f"{self._where()}: gave up after {transient_failures} attempts; last error: "
                                    f"{err.message}") from None
                delay = retry_after_s(err.response.headers)
                delay = self._backoff(transient_failures) if delay is None else min(delay, self.config.backoff_max_s)
            except openai.APIConnectionError as err:  # includes APITimeoutError
                transient_failures += 1
                if transient_failures >= self.config.max_attempts:
                    raise ChatError(f"{self._where()}: gave up after {transient_failures} attempts; last error: "
                                    f"{type(err).__name__}: {err}") from None
                delay = self._backoff(transient_failures)
            with self._lock:
                self.usage.retries += 1
            time.sleep(delay)

    def _backoff(self, failures: int) -> float:
        """Exponential backoff with jitter: 0.5–1× of base·2^(failures−1), capped, so that parallel workers hit by
        the same rate limit do not all come back at the same moment."""
        ceiling = min(self.config.backoff_max_s, self.config.backoff_base_s * 2 ** (failures - 1))
        return ceiling * self._jitter.uniform(0.5, 1.0)

    def _where(self) -> str:
        return f"chat request to {self.host} (model {self.config.model!r})"


def parse_completion(body_text: str, n: int) -> ChatResult:
    """A chat completion body → texts and token counts, or MalformedResponse saying what is wrong with it."""
    try:
        body = json.loads(body_text)
    except json.JSONDecodeError as err:
        raise MalformedResponse(f"body is not JSON ({err.msg}): {body_text[:200]!r}") from None
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or not choices:
        raise MalformedResponse(f"body has no choices: {body_text[:200]!r}")
    if len(choices) != n:
        raise MalformedResponse(f"asked for {n} choices, got {len(choices)}")
    texts, finish_reasons = [], []
    for position, choice in enumerate(sorted(choices, key=lambda c: c.get("index", 0) if isinstance(c, dict) else 0)):
        content = choice.get("message", {}).get("content") if isinstance(choice, dict) else None
        if not isinstance(content, str):
            raise MalformedResponse(f"choice {position} has no text content: {json.dumps(choice)[:200]}")
        texts.append(content)
        finish_reasons.append(choice.get("finish_reason"))
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    return ChatResult(texts, finish_reasons, int(usage.get("prompt_tokens") or 0),
                      int(usage.get("completion_tokens") or 0), from_cache=False)


def retry_after_s(headers) -> float | None:
    """Seconds the server asks us to wait: retry-after-ms (OpenAI), Retry-After in seconds or as an HTTP date."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) / scale)
        except ValueError:
            pass
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            pass
    return None


# --- command lines ---------------------------------------------------------------------------------------------------
def run_command_line(entry_point: Callable[[Any], Any], config_class: type, argv: list[str] | None,
                     description: str | None) -> None:
    """Parse the config, run the entry point; a missing key or a request that failed for good ends the program
    with its one-line message instead of a traceback."""
    config = config_from_argv(config_class, argv, description)
    try:
        entry_point(config)
    except (MissingCredentialsError, ChatError) as err:
        raise SystemExit(f"error: {err}") from None
