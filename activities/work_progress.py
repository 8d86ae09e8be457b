"""progress() in the activities of a workflow kind: a worker interceptor that reports for the request
the activity's workflow runs for (its workflow id names it, `work-<request id>`)."""

from __future__ import annotations

from typing import Any

from temporalio import activity
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from ackflow.contracts import request_of_work
from ackflow.progress_reports import ProgressReports


class WorkProgress(Interceptor):
    def __init__(self, reports: ProgressReports) -> None:
        self._reports = reports

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Reporting(next, self._reports)


class _Reporting(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, reports: ProgressReports) -> None:
        super().__init__(next)
        self._reports = reports

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        request_id = request_of_work(activity.info().workflow_id or "")
        if request_id is None:  # ackflow's own activities, or a workflow ackflow did not start
            return await self.next.execute_activity(input)
        async with self._reports.reporting(request_id):
            return await self.next.execute_activity(input)
