"""Fairness between API clients, and embeddings beside streams (hostile round 2, N51, N20).

Every API request was one owner, "api", to the scheduler: two clients competed as one, so
a client sending eight long requests kept another client's short one waiting for one of
them to end.  And one /v1/embeddings call of many inputs ran all its groups back to back on
the model thread, stalling every stream 16.6 s.  Counts, not clocks: what matters is
whether the short request ends while the long ones are all still running, and how many
tokens a stream gets while a big embedding call runs."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
from starlette.requests import Request

from tests.conftest import API_KEY, TINY, wait_for
from webui.api.usage import api_party

LONG = {"model": TINY, "prompt": "In the beginning", "max_tokens": 200, "temperature": 0, "ban_eos_token": True}


def request_from(address: str, key: str | None) -> Request:
    headers = [(b"x-api-key", key.encode())] if key else []
    return Request({"type": "http", "method": "POST", "path": "/v1/completions", "headers": headers,
                    "client": (address, 5000), "query_string": b""})


def test_api_parties_are_a_key_at_an_address():
    one = api_party(request_from("10.0.0.1", "key-one-123"))
    assert one == api_party(request_from("10.0.0.1", "key-one-123"))  # one client, however many requests
    assert one != api_party(request_from("10.0.0.1", "key-two-456"))  # another key: another party
    assert one != api_party(request_from("10.0.0.2", "key-one-123"))  # the shared key elsewhere: another
    assert API_KEY not in one  # named by a hash, never by the key itself


def test_another_api_client_gets_a_place_beside_a_flood(api_url, runtime):
    """Client A (127.0.0.1) sends eight long requests at once; client B, with the same key
    from 127.0.0.2, asks for four tokens: answered while all eight of A's still run."""
    engine = runtime.engine
    before = engine.pending

    def client(address: str) -> httpx.Client:
        return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=300,
                            headers={"x-api-key": API_KEY})

    with ThreadPoolExecutor(8) as pool, client("127.0.0.1") as a, client("127.0.0.2") as b:
        flood = [pool.submit(a.post, f"{api_url}/completions", json=LONG) for _ in range(8)]
        try:
            assert wait_for(lambda: engine.pending >= before + 8, 120)
            short = b.post(f"{api_url}/completions", json={**LONG, "max_tokens": 4})
            unfinished = sum(not f.done() for f in flood)
        finally:
            for f in flood:
                f.result(timeout=300)
    assert short.status_code == 200
    assert unfinished == 8  # B was admitted into the free place, not after one of A's ended


def test_a_stream_keeps_decoding_while_a_big_embedding_call_runs(api_url, runtime):
    """N20: 2,048 inputs of 100 tokens beside a stream.  The embedding groups now take turns
    with decoding steps, so the stream keeps producing tokens while the call runs."""
    # Token ids, not text: the call's time is the model's, not the tokenizer's (which
    # runs off the model thread, beside the stream, and would blur the count).
    inputs = [[5 + i % 50] * 100 for i in range(2048)]
    stream_body = {"model": TINY, "prompt": "Once", "max_tokens": 400, "temperature": 0, "ban_eos_token": True,
                   "stream": True}
    tokens_during: list[int] = []
    counted = [0]
    embedding_running = threading.Event()
    embedding_done = threading.Event()

    def stream() -> None:
        with httpx.stream("POST", f"{api_url}/completions", json=stream_body, timeout=300,
                          headers={"x-api-key": API_KEY}) as response:
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    counted[0] += 1
                    if embedding_running.is_set() and not embedding_done.is_set():
                        tokens_during.append(counted[0])

    with ThreadPoolExecutor(1) as pool:
        streaming = pool.submit(stream)
        assert wait_for(lambda: counted[0] >= 5, 120)  # the stream is decoding
        embedding_running.set()
        with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=600) as other:
            response = other.post(f"{api_url}/embeddings", json={"model": TINY, "input": inputs},
                                  headers={"x-api-key": API_KEY})
        embedding_done.set()
        streaming.result(timeout=300)
    assert response.status_code == 200 and len(response.json()["data"]) == 2048
    # Back to back, the groups left the stream no step at all while they ran (it had 5 of
    # its 400 tokens, then nothing until the call ended); interleaved, it moves on.
    assert len(tokens_during) >= 20, len(tokens_during)
