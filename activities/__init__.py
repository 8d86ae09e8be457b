"""Activities: all the I/O of ackflow's workflows, and the worker that runs them."""

from activities.request_activities import RequestActivities

__all__ = ["RequestActivities"]
