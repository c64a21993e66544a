"""Tests for vafa.run.progress.relay: the one forwarder of generator jobs' events."""

from __future__ import annotations

import threading

from vafa.attacks import drive
from vafa.run.progress import relay


def _job(n: int, received: list):
    """Yields 1..n, records what was sent back, stops at ``False``; returns the last event."""
    for i in range(1, n + 1):
        answer = yield i
        received.append(answer)
        if answer is False:
            return i
    return n


def test_relay_forwards_transformed_events_answers_and_the_return_value():
    received: list = []
    outer = relay(_job(3, received), lambda i: 10 * i)
    assert next(outer) == 10
    assert outer.send("a") == 20
    assert outer.send(None) == 30
    try:
        outer.send("c")
    except StopIteration as stop:
        assert stop.value == 3
    else:
        raise AssertionError("the job ended: relay must return")
    assert received == ["a", None, "c"]


def test_relay_yields_nothing_where_the_transform_gives_none():
    received: list = []

    def wrapper():
        return (yield from relay(_job(4, received), lambda i: i if i % 2 == 0 else None))

    seen = []
    result = drive(wrapper(), lambda e: seen.append(e) or "ok")
    assert seen == [2, 4] and result == 4
    assert received == [None, "ok", None, "ok"]  # skipped events are answered None


def test_relay_cancel_flag_sends_false_and_a_false_answer_sets_it():
    received: list = []
    flag = threading.Event()
    outer = relay(_job(5, received), str, cancel=flag)
    assert next(outer) == "1"
    flag.set()  # e.g. a GUI's cancel button: the job gets False whatever comes back
    try:
        outer.send("go on")
    except StopIteration as stop:
        assert stop.value == 1
    assert received == [False]

    received.clear()
    flag = threading.Event()
    result = drive(relay(_job(5, received), str, cancel=flag), lambda e: e != "2")
    assert result == 2 and received == [True, False] and flag.is_set()
