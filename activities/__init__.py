"""Activities: all the I/O of ackflow's workflows, and the worker that runs them."""

from activities.request_activities import RequestActivities
from activities.worker import run_worker

__all__ = ["RequestActivities", "run_worker"]
