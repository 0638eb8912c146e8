"""Coalescing a burst of evaluations of one deployment into the fewest that still see
every change.

The evaluation deployment runs one at a time (its concurrency limit is 1; runs that
arrive meanwhile wait, Prefect's ENQUEUE). When a waiting run gets its turn, it asks
whether another run of the deployment *started after this one was requested*; such a
run evaluated the table as it was after the change that requested this one, so this
run has nothing new to see and ends at once as ``Coalesced``. With ingestions every
minute that leaves at most one evaluation running and one waiting per table, whatever
the burst."""

from __future__ import annotations

from typing import Any

# The name of the final (Completed) state of a run that another run made redundant.
COALESCED = "Coalesced"
# States of a run that did not (or will not) evaluate anything.
_NOT_AN_EVALUATION = {"FAILED", "CRASHED", "CANCELLED", "CANCELLING"}


def superseded_by() -> Any:
    """The flow run that makes the current deployment run redundant (one of the same
    deployment, started after this run was created, evaluating or done evaluating), or
    None: always None outside a deployment run."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId, FlowRunFilterStartTime
    from prefect.runtime import flow_run

    run_id = flow_run.get_id()
    if not run_id:
        return None
    with get_client(sync_client=True) as client:
        me = client.read_flow_run(run_id)
        if me.deployment_id is None:
            return None
        others = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            deployment_id=FlowRunFilterDeploymentId(any_=[me.deployment_id]),
            start_time=FlowRunFilterStartTime(after_=me.created)))
    # The filter can let through runs that have not started; only started ones count.
    for run in sorted((r for r in others if r.start_time is not None), key=lambda r: r.start_time):
        state = run.state
        if run.id == me.id or state is None or state.type.value in _NOT_AN_EVALUATION or state.name == COALESCED:
            continue
        return run
    return None
