"""When a failed model request is tried again, and where each stage's model is."""

from __future__ import annotations

import pytest

from pipeflow.cascade.chat import ChatError
from pipeflow.cascade.endpoint import OPENAI_BASE_URL, endpoint, with_retries
from pipeflow.cascade.retry import RetryPolicy, retry_delay

POLICY = RetryPolicy(retries=2, backoff_s=0.5, max_wait_s=3.0)


@pytest.mark.parametrize(("error", "attempt", "delay"), [
    (ChatError("x", "http_429", 429, retry_after=1.5), 1, 1.5),  # what it asks
    (ChatError("x", "http_429", 429, retry_after=30.0), 1, None),  # longer than we wait
    (ChatError("x", "http_429", 429), 2, 1.0),  # no retry-after: the back-off
    (ChatError("x", "http_503", 503), 1, 0.5),
    (ChatError("x", "http_500", 500), 2, 1.0),  # doubled
    (ChatError("x", "http_500", 500), 3, None),  # two retries, then reported
    (ChatError("x", "timeout"), 1, 0.5),
    (ChatError("x", "unreachable"), 1, 0.5),
    (ChatError("x", "http_401", 401), 1, None),  # a refused key is never retried
    (ChatError("x", "http_400", 400), 1, None),
    (ChatError("x", "stream_cut"), 1, None),  # part of the answer was used
])
def test_retry_delay(error: ChatError, attempt: int, delay: float | None) -> None:
    assert retry_delay(error, attempt, POLICY) == delay


def test_backoff_is_capped() -> None:
    policy = RetryPolicy(retries=10, backoff_s=1.0, max_wait_s=3.0)
    assert retry_delay(ChatError("x", "http_502", 502), 6, policy) == 3.0


async def test_with_retries_stops_after_the_tries() -> None:
    calls: list[int] = []

    async def failing() -> str:
        calls.append(1)
        raise ChatError("boom", "http_500", 500)

    told: list[float] = []
    with pytest.raises(ChatError, match="boom"):
        await with_retries(failing, RetryPolicy(retries=2, backoff_s=0.0),
                           lambda error, delay: told.append(delay))
    assert len(calls) == 3 and told == [0.0, 0.0]


def test_the_endpoint_rule_and_the_key_stays_out_of_repr(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PF_TEST_KEY", raising=False)
    assert endpoint("", "PF_TEST_KEY").base_url == ""  # offline
    monkeypatch.setenv("PF_TEST_KEY", "sk-secret-123")
    where = endpoint("", "PF_TEST_KEY")
    assert where.base_url == OPENAI_BASE_URL and where.api_key == "sk-secret-123"
    assert endpoint("http://127.0.0.1:8000/v1", "PF_TEST_KEY").base_url.startswith("http://127")
    assert "sk-secret" not in repr(where)
