"""Failure corpus, HTTP: every bad request is a 4xx with one line naming the field, never a 500 or a reset.

The requests of :mod:`tests.failures.http_cases` go to the real ``rectorch-serve`` over loopback. Each must
get its status and a one-line ``error`` naming the field and value, must not echo a large body back, must
leave the connection usable (``GET /healthz`` on it answers 200) and the bundle byte-for-byte unchanged.
Generated bodies (hypothesis) — schema-shaped JSON with wrong values, arbitrary JSON, arbitrary bytes —
must never get a 5xx or break the connection.
"""

import json
import os
import signal
import string
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.failures.bundle_cases import snapshot
from tests.failures.http_cases import CASES, MAX_BODY, Exchange, HttpCase, exchange, post, start_server
from tests.serving.conftest import build_bundle

MAX_MESSAGE = 500
MAX_ANSWER = 16_384  # an error answer never echoes the request back
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path, dict]]:
    """``(port, bundle, bundle snapshot)`` of a running ``rectorch-serve``."""
    root = tmp_path_factory.mktemp("http")
    bundle = build_bundle(root / "bundle")
    before = snapshot(bundle)
    process, port = start_server(bundle, root / "server.log")
    try:
        yield port, bundle, before
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    log = (root / "server.log").read_text()
    assert "Traceback" not in log, log[-3000:]


def check(result: Exchange, case: HttpCase) -> None:
    assert not result.failure, f"no answer: {result.failure}"
    assert result.status == case.status, f"{result.status}: {result.body[:300]!r}"
    assert len(result.body) <= MAX_ANSWER, f"a {len(result.body)}-byte answer"
    text = result.error if case.json_error else result.body.decode("utf-8", "replace")
    assert text and "\n" not in text.strip() and len(text) <= MAX_MESSAGE, result.body[:1000]
    for fragment in case.fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"


def test_the_corpus_is_large_and_its_ids_unique() -> None:
    assert len(CASES) >= 60 and len({case.id for case in CASES}) == len(CASES)


def test_a_valid_request_still_answers(served: tuple[int, Path, dict]) -> None:
    port, _, _ = served
    result = exchange(port, post("valid", {"history": ["i0", "i3"], "k": 3}, 200))
    assert result.status == 200 and result.reusable and len(json.loads(result.body)["items"]) == 3


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_a_bad_request_is_one_clear_4xx(served: tuple[int, Path, dict], case: HttpCase) -> None:
    port, bundle, before = served
    result = exchange(port, case)
    check(result, case)
    if case.send_body and case.raw is None:
        assert result.reusable, "the connection did not survive the bad request"
    assert snapshot(bundle) == before


ID_TEXT = st.text(st.characters(codec="utf-8"), min_size=1, max_size=20)
ANY_TEXT = st.text(max_size=30)  # includes lone surrogates, which JSON escapes as \\udXXX
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(ANY_TEXT, inner, max_size=5),
    max_leaves=20,
)
FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "history": st.lists(ID_TEXT | JSON, max_size=8),
        "k": st.integers(-5, 200) | JSON,
        "exclude": st.lists(ID_TEXT, max_size=4) | JSON,
        "filters": st.dictionaries(st.sampled_from(["category", "brand"]) | ANY_TEXT, st.lists(ANY_TEXT) | JSON) | JSON,
        "now": st.floats() | JSON,
        "user_features": st.dictionaries(ANY_TEXT, JSON, max_size=3) | JSON,
    },
)


def fuzz(port: int, bundle: Path, before: dict, body: bytes) -> None:
    result = exchange(port, post("generated", body, 0))
    assert not result.failure, f"{result.failure} for {body[:200]!r}"
    assert result.status is not None and result.status < 500, f"{result.status} for {body[:200]!r}"
    if result.status >= 400:
        assert result.error and "\n" not in result.error and len(result.body) <= MAX_ANSWER, result.body[:500]
    assert result.reusable
    assert snapshot(bundle) == before


@FUZZ
@given(FIELDS | st.dictionaries(st.sampled_from(["history", "k", "colour"]), JSON))
def test_generated_request_fields_never_get_a_5xx(served: tuple[int, Path, dict], payload: dict) -> None:
    fuzz(*served, json.dumps(payload).encode())


@FUZZ
@given(JSON)
def test_generated_json_bodies_never_get_a_5xx(served: tuple[int, Path, dict], payload: object) -> None:
    fuzz(*served, json.dumps(payload).encode())


@FUZZ
@given(st.binary(max_size=200) | st.text(string.printable + '{}[]":,\\', max_size=200).map(str.encode))
def test_generated_bytes_never_get_a_5xx(served: tuple[int, Path, dict], body: bytes) -> None:
    fuzz(*served, body)


@FUZZ
@given(st.integers(MAX_BODY - 64, MAX_BODY + 64))
def test_the_body_limit_is_exact(served: tuple[int, Path, dict], size: int) -> None:
    port, _, _ = served
    prefix, suffix = b'{"history": ["i1"], "exclude": ["', b'"]}'
    body = prefix + b"x" * (size - len(prefix) - len(suffix)) + suffix
    result = exchange(port, post("sized", body, 0))
    assert len(body) == size and result.status == (413 if size > MAX_BODY else 422) and result.reusable
