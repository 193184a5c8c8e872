"""What a stage run tells its operator: log lines in the Prefect run log, and a link artifact
to the files it wrote.

The runner calls `log_plan` once the stage has planned and `log_outcome` once it has its
summary, for every stage the same way. In a Prefect flow run the lines go to the run logger
(shown on the flow run's page, and sent to the API); elsewhere to this module's logger.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flows.artifacts import artifact_key, in_flow_run
from toucan.records import utc_now

if TYPE_CHECKING:
    from flows.run_context import RunContext

logger = logging.getLogger(__name__)

# the summary fields that name a file or folder a stage wrote (export: out_dir, report: out)
OUTPUT_FIELDS = ("out_dir", "out")


def run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The Prefect run logger inside a flow run, else this module's logger."""
    if not in_flow_run():
        return logger
    from prefect.logging import get_run_logger

    return get_run_logger()


def log_plan(ctx: RunContext) -> None:
    """`<stage>: planned N items (M done by earlier runs) in B batches, K in flight each`."""
    plan = ctx.plan
    run_logger().info(
        "%s: planned %d items (%d done by earlier runs) in %d batches, %d in flight each; run %s",
        ctx.run.stage,
        plan.planned,
        plan.already_done,
        len(plan.batches),
        plan.per_batch,
        ctx.run_id,
    )


def log_outcome(ctx: RunContext, summary: dict[str, Any], writes: tuple[str, ...]) -> None:
    """What finished, what failed by reason, how long it took and where the output went;
    a link artifact to the output file or folder when the stage wrote one."""
    tally, stage = ctx.tally, ctx.run.stage
    wall_s = (utc_now() - ctx.run.started_at).total_seconds()
    failed = tally.counts("failed_reason")
    reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(failed.items())) or "none"
    log = run_logger()
    log.info(
        "%s: finished %d of %d planned in %.1f s; failed %d (%s)",
        stage,
        tally.finished,
        ctx.plan.planned,
        wall_s,
        tally.failed,
        reasons,
    )
    output = output_path(summary)
    if output is not None:
        log.info("%s: output in %s", stage, output)
        publish_output_link(stage, output, ctx.run_id)
    else:
        log.info("%s: output in %s of %s", stage, ", ".join(writes), ctx.store.path.resolve())


def output_path(summary: dict[str, Any]) -> Path | None:
    """The absolute file or folder a stage's summary names as its output, if any."""
    for field in OUTPUT_FIELDS:
        value = summary.get(field)
        if isinstance(value, str) and value:
            return Path(value).resolve()
    return None


def publish_output_link(stage: str, output: Path, run_id: str) -> None:
    """A Prefect link artifact (`<stage>-output`) to the output, as a file:// URL: it is a
    path on the worker's machine, which the operator's browser reaches only there."""
    if not in_flow_run():
        return
    from prefect.artifacts import create_link_artifact

    try:
        create_link_artifact(  # type: ignore[call-arg]
            link=output.as_uri(),
            link_text=str(output),
            key=artifact_key(stage, "output"),
            description=f"What {stage} wrote in run {run_id}.",
            _sync=True,
        )
    except Exception:  # the stage's own outcome stands whatever happens to its artifact
        logger.warning("could not publish the output link of %s", run_id, exc_info=True)
