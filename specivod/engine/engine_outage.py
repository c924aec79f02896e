"""A Docker Engine that went away in the middle of a step and came back is not a failed step.

Rule: when a step fails, or a verification ends unhealthy, and the deployment saw the Docker
Engine unreachable meanwhile, the transaction waits for the engine (within the deployment's
budget); the deployment starts again the containers the engine's restart stopped — those that
stopped after the last moment the engine was seen working, never one stopped before (by this
transaction's STOPPING or by an operator) — and the same step runs again: every step is safe to
run again, recovery relies on it. At most ``MAX_RERUNS`` times per run of a transaction. A
deployment that does not watch the engine (no ``recover_from_outage``) never has an outage.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from specivod.domain.errors import SpecivodError
from specivod.engine.context import Context
from specivod.engine.journal import Transaction
from specivod.engine.ports import ServiceState

log = logging.getLogger(__name__)

MAX_RERUNS = 3


@runtime_checkable
class WatchesTheEngine(Protocol):
    async def recover_from_outage(self) -> str | None:
        """``None`` when the engine was not seen unreachable since the last call. Otherwise,
        once the engine answers again and what its restart stopped was started, what happened;
        ``DeploymentError`` when it did not come back within the budget."""
        ...


def finished_at(state: ServiceState) -> datetime | None:
    """Docker's ``FinishedAt`` (RFC 3339, UTC, nanoseconds cut to microseconds); ``None``
    when the container never stopped or the stamp cannot be read."""
    text = state.finished_at
    if not text or text.startswith("0001-") or not text.endswith("Z"):
        return None
    stamp, _, fraction = text.removesuffix("Z").partition(".")
    try:
        moment = datetime.fromisoformat(stamp).replace(tzinfo=UTC)
        micro = int(fraction[:6].ljust(6, "0")) if fraction else 0
    except ValueError:
        return None
    return moment.replace(microsecond=micro)


def stopped_since(
    states: Iterable[ServiceState], since: datetime, until: datetime | None = None
) -> list[str]:
    """The services whose container is stopped, and stopped after ``since`` (to the
    microsecond: a container this transaction stopped just before ``since``, in the same
    second, stays stopped) and not after ``until``, the first moment the engine was seen
    working again: what was stopped after that was stopped on purpose (a rollback's STOPPING)."""
    return [
        state.service
        for state in states
        if state.container_id is not None
        and not state.running
        and (stopped := finished_at(state)) is not None
        and stopped > since
        and (until is None or stopped <= until)
    ]


async def came_back(context: Context, transaction: Transaction) -> bool:
    """Whether the engine went away during the step just run and is back (so the step runs
    again); the operator is told either way."""
    deployment = context.deployment
    if not isinstance(deployment, WatchesTheEngine):
        return False
    try:
        what = await deployment.recover_from_outage()
    except SpecivodError as error:
        context.tell(transaction, str(error))
        return False
    if what is None:
        return False
    log.warning("transaction %s: %s", transaction.id, what)
    context.tell(transaction, f"{what}; running {transaction.state.name} again")
    return True
