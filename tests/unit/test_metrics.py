"""The metrics: Prometheus naming, bounded labels, and the apply path's bulk observe."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from shared import metrics


def tally_metrics() -> list[object]:
    return [
        value for value in vars(metrics).values() if isinstance(value, Counter | Gauge | Histogram)
    ]


@pytest.mark.parametrize("metric", tally_metrics(), ids=lambda m: m._name)
def test_metric_names_follow_prometheus_conventions(metric: object) -> None:
    name = metric._name  # type: ignore[attr-defined]
    assert name.startswith("tally_")
    if isinstance(metric, Histogram):
        assert not name.endswith("_total")
    # Durations and ages are in seconds, the base unit (Prometheus docs, "Metric and label naming").
    for unit in ("_ms", "_milliseconds", "_minutes", "_hours"):
        assert unit not in name
    parts = name.split("_")
    if "duration" in parts or "age" in parts:
        assert "seconds" in parts
    # Bounded label sets: nothing that takes one value per id, path or message.
    unbounded = {"id", "path", "url", "message", "error", "detail"}
    for label in metric._labelnames:  # type: ignore[attr-defined]
        assert label not in unbounded and not label.endswith("_id"), label


def exposition(registry: CollectorRegistry) -> dict[str, float]:
    return {
        f"{sample.name}{sorted(sample.labels.items())}": sample.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


@pytest.mark.parametrize("seed", range(5))
def test_observe_many_equals_one_observe_per_value(seed: int) -> None:
    rng = random.Random(seed)
    values = [rng.choice([0.0, 0.01, 0.5, 1.0, 3600.0, 7200.0]) or rng.uniform(0, 100)
              for _ in range(rng.randint(0, 300))]  # fmt: skip
    one, bulk = CollectorRegistry(), CollectorRegistry()
    buckets = (0.01, 0.5, 1, 10, 60, 3600)
    each = Histogram("h_seconds", "h", buckets=buckets, registry=one)
    many = Histogram("h_seconds", "h", buckets=buckets, registry=bulk)
    for value in values:
        each.observe(value)
    metrics.observe_many(many, values)
    got, expected = exposition(bulk), exposition(one)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key


def test_observe_many_of_a_labelled_child() -> None:
    registry = CollectorRegistry()
    histogram = Histogram("h_seconds", "h", ["job"], buckets=(1, 2), registry=registry)
    metrics.observe_many(histogram.labels("sweep"), [0.5, 1.5, 9])
    samples = exposition(registry)
    assert samples["h_seconds_bucket[('job', 'sweep'), ('le', '1.0')]"] == 1
    assert samples["h_seconds_bucket[('job', 'sweep'), ('le', '2.0')]"] == 2
    assert samples["h_seconds_bucket[('job', 'sweep'), ('le', '+Inf')]"] == 3
    assert samples["h_seconds_sum[('job', 'sweep')]"] == 11
