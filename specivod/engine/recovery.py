"""On start, drive whatever transaction a killed process left behind to a terminal state.

Before STARTING the app was never touched: abort (``.env`` back). STARTING: apply ``up -d`` again
(idempotent) and verify. VERIFYING: verify again. ROLLING_BACK and RESTORING: redo the rollback
(every step of it is idempotent). A terminal transaction is never run again.
"""

from __future__ import annotations

from specivod.domain.states import BEFORE_START, State
from specivod.engine.context import Context
from specivod.engine.journal import Transaction
from specivod.engine.rollback import restore_and_start, roll_back
from specivod.engine.upgrade import abort, start_and_verify, verify


async def recover(context: Context) -> Transaction | None:
    """Finish the unfinished transaction, if any; return it in its terminal state."""
    transaction = context.journal.unfinished()
    if transaction is None:
        return None
    state = transaction.state
    context.tell(transaction, f"resuming transaction {transaction.id} found in {state.name}")
    if state in BEFORE_START:
        reason = f"interrupted in {state.name} by a restart"
        return abort(context, transaction, reason)
    if state is State.STARTING:
        return await start_and_verify(context, transaction)
    if state is State.VERIFYING:
        return await verify(context, transaction)
    if state is State.ROLLING_BACK:
        return await roll_back(context, transaction, transaction.reason or "resumed after restart")
    if state is State.RESTORING:
        return await restore_and_start(context, transaction, "resuming an interrupted restore")
    raise AssertionError(f"no recovery for {state}")  # every non-terminal state is handled above
