"""gearworker.metrics: the MetricsSink protocol, NullMetrics / NO_METRICS, and Prometheus Metrics fitting it."""

from __future__ import annotations

import inspect

import pytest

from gearworker.metrics import NO_METRICS, MetricsSink, NullMetrics
from gearworker.metrics.prometheus import OUTCOMES, STATES, Metrics

#: Every event of the protocol (its public methods).
EVENTS = sorted(name for name, value in vars(MetricsSink).items() if callable(value) and not name.startswith("_"))

#: One valid call of each event.
CALLS: dict[str, tuple[object, ...]] = {
    "job_started": ("echo",),
    "job_finished": ("echo", "complete", 0.25),
    "set_connection": ("127.0.0.1:4730", "connected"),
    "reconnect": ("127.0.0.1:4730",),
    "set_pool": (3,),
    "pool_restart": (),
}


def test_the_protocol_has_the_six_worker_events() -> None:
    """The sink's events are exactly job_started/finished, set_connection, reconnect, set_pool, pool_restart."""
    assert sorted(CALLS) == EVENTS


@pytest.mark.parametrize("cls", [NullMetrics, Metrics])
@pytest.mark.parametrize("event", EVENTS)
def test_each_sink_has_every_event_with_the_protocols_signature(cls: type, event: str) -> None:
    """NullMetrics and prometheus Metrics match MetricsSink structurally: same names, parameters and return."""
    assert inspect.signature(getattr(cls, event)) == inspect.signature(getattr(MetricsSink, event))


def test_null_metrics_is_a_metrics_sink_that_records_nothing() -> None:
    """Every event on NullMetrics returns None and leaves no state (it has no attributes to fill)."""
    sink: MetricsSink = NullMetrics()
    for event in EVENTS:
        assert getattr(sink, event)(*CALLS[event]) is None
    assert vars(sink) == {}


def test_no_metrics_is_the_shared_null_sink() -> None:
    """NO_METRICS, the default of the worker, runner and pool, is a NullMetrics."""
    assert isinstance(NO_METRICS, NullMetrics)
    NO_METRICS.job_finished("f", "anything", 1.0)  # no validation: the null sink costs nothing per job


def test_prometheus_metrics_records_each_event_called_through_the_protocol() -> None:
    """Used as a MetricsSink, Metrics records every event.

    The typed assignment below is checked statically by ``mypy --strict tests/test_metrics_sink.py``.
    """
    metrics = Metrics(process_metrics=False)
    sink: MetricsSink = metrics
    for event in EVENTS:
        assert getattr(sink, event)(*CALLS[event]) is None
    sink.job_started("echo")
    text = metrics.render().decode()
    assert 'gearworker_jobs_total{function="echo",outcome="complete"} 1.0' in text
    assert 'gearworker_jobs_in_flight{function="echo"} 1.0' in text
    assert 'gearworker_server_connection_state{server="127.0.0.1:4730",state="connected"} 1.0' in text
    assert 'gearworker_server_reconnects_total{server="127.0.0.1:4730"} 1.0' in text
    assert "gearworker_pool_processes 3.0" in text
    assert "gearworker_pool_restarts_total 1.0" in text


def test_the_protocol_documents_the_outcomes_and_states_prometheus_accepts() -> None:
    """MetricsSink's docstrings list the same outcomes and connection states that Metrics validates."""
    finished_doc = MetricsSink.job_finished.__doc__ or ""
    connection_doc = MetricsSink.set_connection.__doc__ or ""
    assert all(f'"{outcome}"' in finished_doc for outcome in OUTCOMES)
    assert finished_doc.count('"') == 2 * len(OUTCOMES)
    assert all(f'"{state}"' in connection_doc for state in STATES)
    assert connection_doc.count('"') == 2 * len(STATES)
