"""How long and how hard each scenario runs: `--quick` (about 5 minutes in all, 3 of them batching) or the full run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    """Rates to step through, step lengths and latency bounds of every scenario."""

    name: str
    accept_rates: tuple[float, ...]
    accept_step_seconds: float
    accept_p99_bound_ms: float
    half_load_seconds: float
    e2e_rates: tuple[float, ...]
    e2e_step_seconds: float
    e2e_grace_seconds: float
    e2e_p99_bound_ms: float
    relay_lag_rates: tuple[float, ...]
    relay_lag_step_seconds: float
    backlog_size: int
    backlog_seconds: float
    notify_seconds: float
    fanout_clients: tuple[int, ...]
    webhook_deliveries: int
    batching_requests: int  # closed loop, per configuration
    batching_clients: int
    batching_batch_maxes: tuple[int, ...]  # ACKFLOW_BATCH_MAX values compared (raw Temporal always runs beside them)
    batching_latency_seconds: float  # each open-loop latency step
    batching_burst: int
    batching_idle_accepts: int  # the burst's baseline: accepts with nothing draining


QUICK = Profile(
    name="quick",
    accept_rates=(300, 500, 800, 1200, 1700, 2500),
    accept_step_seconds=1.5,
    accept_p99_bound_ms=100.0,
    half_load_seconds=2.0,
    e2e_rates=(10, 20, 30, 40, 50, 60),
    e2e_step_seconds=2.0,
    e2e_grace_seconds=1.0,
    e2e_p99_bound_ms=1000.0,
    relay_lag_rates=(5, 10, 20),
    relay_lag_step_seconds=1.0,
    backlog_size=10_000,
    backlog_seconds=3.0,
    notify_seconds=2.5,
    fanout_clients=(2500,),  # 10,000 take ~30 s to connect here: the full profile only
    webhook_deliveries=1000,
    batching_requests=1000,
    batching_clients=32,
    batching_batch_maxes=(1, 10, 50),
    batching_latency_seconds=3.0,
    batching_burst=2000,
    batching_idle_accepts=500,
)

FULL = Profile(
    name="full",
    accept_rates=(100, 150, 200, 250, 300, 375, 450, 550, 650, 800, 1000, 1250, 1500, 2000, 2500, 3000, 4000),
    accept_step_seconds=5.0,
    accept_p99_bound_ms=100.0,
    half_load_seconds=10.0,
    e2e_rates=(5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60, 70, 80),
    e2e_step_seconds=8.0,
    e2e_grace_seconds=3.0,
    e2e_p99_bound_ms=1000.0,
    relay_lag_rates=(5, 10, 20),
    relay_lag_step_seconds=8.0,
    backlog_size=10_000,
    backlog_seconds=10.0,
    notify_seconds=15.0,
    fanout_clients=(1000, 10_000),
    webhook_deliveries=20_000,
    batching_requests=3000,
    batching_clients=32,
    batching_batch_maxes=(1, 10, 50),
    batching_latency_seconds=10.0,
    batching_burst=10_000,
    batching_idle_accepts=2000,
)
