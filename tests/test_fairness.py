"""Fairness between API clients, and embeddings beside streams (hostile round 2, N51, N20).

Every API request was one owner, "api", to the scheduler: two clients competed as one, so
a client sending eight long requests kept another client's short one waiting for one of
them to end.  And one /v1/embeddings call of many inputs ran all its groups back to back on
the model thread, stalling every stream 16.6 s.  Counts, not clocks: what matters is
whether the short request ends while the long ones are all still running, and how many
tokens a stream gets while a big embedding call runs."""

from __future__ import annotations

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

