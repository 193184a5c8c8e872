"""Circuit breaker per model deployment: N failed requests in a row pause it for the run.

A provider outage answers every request with a 5xx, a timeout or a refused connection; without
a breaker each call still goes through all its retries (150 doomed requests and 107 s for 30
items in issue 15, fault 5). Here every failed request counts, retries included, a success
resets the count, and at `models.circuit_breaker_failures` the deployment is paused: nothing
more is sent to it, retries waiting in their backoff stop at once, and calls go to a live
deployment of their group or fail as `model_unavailable` (the router). 429s and rejected
requests (4xx other than 401/403/404) never count: the deployment is up. The counting is the
core's (toucan/breaker.py, shared with the MCP server breaker): thread-safe, so one breaker
serves every router of a run (each batch in its own thread).
"""

from __future__ import annotations

from toucan.breaker import FailureStreaks, Paused

# why a deployment stopped taking requests (`key` is the deployment's name)
DeploymentPaused = Paused


class ModelBreaker(FailureStreaks):
    """Consecutive failed requests per deployment name; `threshold` None never pauses."""

    noun = "failed requests"
