"""Admission control on its own, with a hand-driven clock (no HTTP, no model)."""

from __future__ import annotations

import pytest

from s2i_runtime.serve.admission import Admission, Refused


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def one_request(admission: Admission, clock: Clock, seconds: float, completed: bool = True) -> None:
    admission.enter()
    clock.now += seconds
    admission.leave(completed=completed)


def test_hard_limit_refuses_the_one_too_many_and_frees_on_leave():
    admission = Admission(max_queue=2, timeout_s=30, retry_after_s=3, clock=Clock())
    admission.enter()
    admission.enter()
    with pytest.raises(Refused, match=r"busy \(2 requests queued\)") as refused:
        admission.enter()
    assert refused.value.retry_after_s == 3
    admission.leave(completed=False)
    admission.enter()
    assert admission.in_flight == 2


def test_expected_wait_refuses_work_that_could_not_finish_in_time():
    clock = Clock()
    admission = Admission(max_queue=100, timeout_s=10, retry_after_s=1, clock=clock)
    for _ in range(5):
        admission.enter()
    clock.now += 2.0  # the service completes one request every 2 s
    admission.leave(completed=True)
    assert admission.interval_s == 2.0
    assert admission.expected_wait_s() == 5 * 2.0  # four still in flight, plus the new one
    with pytest.raises(Refused, match="overloaded") as refused:  # 10 s > 80 % of the 10 s limit
        admission.enter()
    assert refused.value.retry_after_s == 2  # the 2 s over budget
    for _ in range(2):
        clock.now += 2.0
        admission.leave(completed=True)
    admission.enter()  # 2 in flight + 1 = 6 s: fits again


def test_idle_time_is_not_service_time_and_an_idle_server_always_admits():
    clock = Clock()
    admission = Admission(max_queue=10, timeout_s=1, retry_after_s=1, clock=clock)
    one_request(admission, clock, 0.1)
    clock.now += 500.0  # nobody asks for a while
    one_request(admission, clock, 0.1)
    assert admission.interval_s == pytest.approx(0.1)
    admission.interval_s = 50.0  # however slow it has been, an empty server takes the next request
    admission.enter()
    assert admission.in_flight == 1


def test_requests_that_never_ran_do_not_move_the_average():
    clock = Clock()
    admission = Admission(max_queue=10, timeout_s=30, retry_after_s=1, clock=clock)
    one_request(admission, clock, 1.0, completed=False)
    assert admission.interval_s is None and admission.expected_wait_s() == 0.0
