"""The chat client against a real OpenAI-compatible HTTP server on 127.0.0.1, through the real `openai` client.

FakeServer and the `fake_server` / `client_config` fixtures are imported by test_data_prep_paper.py and test_judge.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, urlparse

import pytest

from sdft_core.openai_client import ChatClient, ChatError, ChatRequest, ClientConfig, MissingCredentialsError, \
    Usage, check_credentials, retry_after_s, user_message
from sdft_core.options import config_from_argv

API_KEY = "sk-test-NEVER-WRITE-ME-0123456789"


@dataclass
class Reply:
    """One scripted HTTP answer."""

    status: int = 200
    body: bytes | dict | list | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


def completion(texts: list[str], prompt_tokens: int = 10, completion_tokens: int = 5) -> dict:
    return {"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "gpt-4o",
            "choices": [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                        for i, text in enumerate(texts)],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


class FakeServer:
    """An OpenAI-compatible server: POSTs are answered first from `script` (a queue of Replies), then by
    `responder(request_body)`, which returns a text, a list of texts (n > 1) or a Reply. GETs are answered by
    `get_routes[path](query)`. Every request is recorded."""

    def __init__(self):
        self.script: deque[Reply] = deque()
        self.responder: Callable[[dict], str | list[str] | Reply] = lambda body: "ok"
        self.get_routes: dict[str, Callable[[dict], Reply | dict | list]] = {}
        self.posts: list[dict] = []
        self.post_headers: list = []  # case-insensitive header maps
        self.gets: list[str] = []
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.posts.append(body)
                    server.post_headers.append(self.headers)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    scripted = server.script.popleft() if server.script else None
                try:
                    reply = scripted or server.responder(body)
                    if isinstance(reply, str):
                        reply = Reply(body=completion([reply]))
                    elif isinstance(reply, list):
                        reply = Reply(body=completion(reply))
                    self._send(reply)
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def do_GET(self):
                url = urlparse(self.path)
                with server._lock:
                    server.gets.append(self.path)
                route = server.get_routes.get(url.path)
                if route is None:
                    self._send(Reply(status=404, body={"error": "no such route"}))
                    return
                reply = route({key: values[0] for key, values in parse_qs(url.query).items()})
                self._send(reply if isinstance(reply, Reply) else Reply(body=reply))

            def _send(self, reply: Reply):
                time.sleep(reply.delay_s)
                payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (timeout tests)

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        # A short poll interval keeps shutdown (once per test) fast.
        self._thread = threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self._http.server_port}"

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1"

    def close(self):
        self._http.shutdown()
        self._http.server_close()


@pytest.fixture
def fake_server(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # local traffic must not go through a proxy
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    server = FakeServer()
    yield server
    server.close()


@pytest.fixture
def client_config(tmp_path, fake_server):
    """A config for the fake server with test-sized timeouts and backoff; keyword overrides give variants."""
    def make(config_class=ClientConfig, **overrides):
        settings = dict(base_url=fake_server.base_url, cache_dir=str(tmp_path / "cache"), timeout_s=2.0,
                        max_attempts=4, max_malformed_attempts=3, backoff_base_s=0.01, backoff_max_s=0.05)
        settings.update(overrides)
        return config_class(**settings)
    return make


def ask(text: str, **parameters) -> ChatRequest:
    return ChatRequest(user_message(text), **parameters)


def test_normal_response_sends_parameters_and_counts_usage(fake_server, client_config):
    client = ChatClient(client_config())
    result = client.complete(ask("hello", temperature=0.0, seed=7, max_tokens=32))
    assert result.text == "ok" and not result.from_cache
    body = fake_server.posts[0]
    assert body["model"] == "gpt-4o" and body["messages"] == [{"role": "user", "content": "hello"}]
    assert (body["temperature"], body["seed"], body["max_tokens"], body["n"]) == (0.0, 7, 32, 1)
    assert "top_p" not in body  # unset parameters are not sent: the server's default applies
    assert fake_server.post_headers[0]["Authorization"] == f"Bearer {API_KEY}"
    assert fake_server.post_headers[0].get("X-Stainless-Retry-Count", "0") == "0"
    usage = client.usage
    assert (usage.requests, usage.cache_hits, usage.prompt_tokens, usage.completion_tokens) == (1, 0, 10, 5)
    assert usage.cost_usd() == pytest.approx((10 * 2.50 + 5 * 10.00) / 1e6)
    assert "estimated cost $" in usage.report() and "1 requests sent" in usage.report()


def test_n_choices_come_back_in_index_order(fake_server, client_config):
    fake_server.responder = lambda body: Reply(body={"choices": [
        {"index": 1, "message": {"content": "second"}}, {"index": 0, "message": {"content": "first"}}]})
    assert ChatClient(client_config()).complete(ask("q", n=2)).texts == ["first", "second"]


def test_second_identical_run_is_served_from_cache_without_http(fake_server, client_config):
    requests = [ask(f"question {i}", temperature=1.0, seed=i) for i in range(3)]
    first = ChatClient(client_config()).complete_many(requests, progress=False)
    assert len(fake_server.posts) == 3
    rerun_client = ChatClient(client_config())
    again = rerun_client.complete_many(requests, progress=False)
    assert len(fake_server.posts) == 3  # not one more request
    assert [r.texts for r in again] == [r.texts for r in first] and all(r.from_cache for r in again)
    assert (rerun_client.usage.cache_hits, rerun_client.usage.requests, rerun_client.usage.prompt_tokens) == (3, 0, 0)


def test_cache_key_separates_what_changes_the_answer(fake_server, client_config):
    client = ChatClient(client_config())
    keys = {client.cache_key(ask("q")), client.cache_key(ask("q", seed=1)), client.cache_key(ask("q", n=2)),
            client.cache_key(ask("q", temperature=0.5)), client.cache_key(ask("other")),
            ChatClient(client_config(model="gpt-5")).cache_key(ask("q")),
            ChatClient(client_config(base_url="http://127.0.0.1:1/v1")).cache_key(ask("q"))}
    assert len(keys) == 7


def test_api_key_never_written_to_cache(fake_server, client_config, tmp_path):
    client = ChatClient(client_config())
    client.complete_many([ask("a"), ask("b")], progress=False)
    files = [path for path in (tmp_path / "cache").rglob("*") if path.is_file()]
    assert len(files) == 2
    for path in files:
        assert API_KEY not in path.read_text(encoding="utf-8")
        assert set(json.loads(path.read_text())) == {"model", "host", "request", "texts", "finish_reasons",
                                                     "prompt_tokens", "completion_tokens"}


def test_429_with_retry_after_is_honoured_then_succeeds(fake_server, client_config):
    fake_server.script.append(Reply(status=429, body={"error": {"message": "rate limited"}},
                                    headers={"Retry-After": "1"}))
    client = ChatClient(client_config(backoff_max_s=5.0))
    started = time.monotonic()
    assert client.complete(ask("q")).text == "ok"
    assert time.monotonic() - started >= 0.9  # waited as asked, not the 10 ms backoff
    assert len(fake_server.posts) == 2 and client.usage.retries == 1


def test_server_error_timeout_and_malformed_bodies_are_retried_then_succeed(fake_server, client_config):
    fake_server.script.extend([
        Reply(status=500, body={"error": {"message": "boom"}}),
        Reply(status=503, body=b"<html>unavailable</html>"),
        Reply(delay_s=1.0, body=completion(["too late"])),  # slower than the client's timeout
        Reply(body=b"{not json"),
        Reply(body={"id": "x", "object": "chat.completion"}),  # no choices
    ])
    client = ChatClient(client_config(timeout_s=0.3, max_attempts=4, max_malformed_attempts=3))
    assert client.complete(ask("q")).text == "ok"
    assert len(fake_server.posts) == 6 and client.usage.retries == 5


def test_gives_up_after_the_bound_with_a_clear_error(fake_server, client_config):
    fake_server.responder = lambda body: Reply(status=500, body={"error": {"message": "still broken"}})
    with pytest.raises(ChatError, match=r"gave up after 3 attempts; last error: Error code: 500 - still broken"):
        ChatClient(client_config(max_attempts=3)).complete(ask("q"))
    assert len(fake_server.posts) == 3


def test_malformed_responses_give_up_after_their_own_bound(fake_server, client_config):
    fake_server.responder = lambda body: Reply(body={"object": "chat.completion"})
    with pytest.raises(ChatError, match=r"malformed response 2 times in a row.*no choices"):
        ChatClient(client_config(max_malformed_attempts=2)).complete(ask("q"))
    assert len(fake_server.posts) == 2


def test_client_errors_are_not_retried(fake_server, client_config):
    fake_server.script.append(Reply(status=400, body={"error": {"message": "bad parameter"}}))
    with pytest.raises(ChatError, match=r"not retried: Error code: 400 - bad parameter"):
        ChatClient(client_config()).complete(ask("q"))
    fake_server.script.append(Reply(status=401, body={"error": {"message": "invalid key"}}))
    with pytest.raises(ChatError, match=r"rejected the API key from \$OPENAI_API_KEY") as raised:
        ChatClient(client_config()).complete(ask("q"))
    assert API_KEY not in str(raised.value)
    assert len(fake_server.posts) == 2


def test_connection_errors_are_retried_then_reported(fake_server, client_config):
    closed = FakeServer()
    closed.close()  # nothing listens on this port any more
    with pytest.raises(ChatError, match=r"gave up after 2 attempts; last error: APIConnectionError"):
        ChatClient(client_config(base_url=closed.base_url, max_attempts=2)).complete(ask("q"))


def test_concurrent_batch_preserves_order_and_sends_duplicates_once(fake_server, client_config):
    def slow_echo(body):
        text = body["messages"][-1]["content"]
        time.sleep(0.05 if int(text.split()[-1]) % 2 == 0 else 0.0)  # even ones finish last
        return f"echo {text}"

    fake_server.responder = slow_echo
    requests = [ask(f"item {i}") for i in range(12)] + [ask("item 3")]
    results = ChatClient(client_config(max_workers=4)).complete_many(requests, progress=False)
    assert [r.text for r in results] == [f"echo item {i}" for i in range(12)] + ["echo item 3"]
    assert len(fake_server.posts) == 12  # the duplicate was asked once
    assert 1 < fake_server.max_in_flight <= 4


def test_missing_key_is_one_clear_message_before_any_request(fake_server, client_config, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(MissingCredentialsError, match=r"OPENAI_API_KEY is not set"):
        ChatClient(client_config())
    monkeypatch.setenv("MY_ENDPOINT_KEY", "local")
    assert check_credentials(client_config(api_key_env="MY_ENDPOINT_KEY")) == "local"
    assert fake_server.posts == []


def test_unknown_model_cost_is_reported_as_unknown():
    usage = Usage("Qwen/Qwen2.5-7B-Instruct", "localhost:8000", requests=1, prompt_tokens=10, completion_tokens=2)
    assert usage.cost_usd() is None and "cost unknown" in usage.report()
    assert Usage("gpt-4o-2024-08-06", "api.openai.com", prompt_tokens=10**6).cost_usd() == pytest.approx(2.50)


def test_retry_after_forms():
    assert retry_after_s({"retry-after-ms": "250"}) == pytest.approx(0.25)
    assert retry_after_s({"retry-after": "3"}) == 3.0
    assert retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # a date in the past
    assert retry_after_s({}) is None


def test_config_from_command_line():
    config = config_from_argv(ClientConfig, ["--base-url", "http://localhost:8000/v1", "--max-workers", "3",
                                             "--timeout-s", "5"])
    assert (config.base_url, config.max_workers, config.timeout_s) == ("http://localhost:8000/v1", 3, 5.0)
    assert config_from_argv(ClientConfig, ["--base-url", "none"]).base_url is None
