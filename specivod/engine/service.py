"""The engine's front door: every upgrade, rollback and restore, manual or automatic, comes
through here.

Each operation takes the host-wide lock and first finishes whatever a killed process left behind.
An upgrade then plans and runs its transaction; a rollback or restore stops after a recovery that
finished something, because the state it was asked to undo may just have changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from specivod.domain.errors import SpecivodError
from specivod.domain.planning import make_plan
from specivod.domain.states import RestoreMode, State
from specivod.domain.versions import VersionPolicy, parse_version, require_version, within_step
from specivod.domain.windows import Window, is_open, next_opening
from specivod.engine.context import Context
from specivod.engine.controls import Controls
from specivod.engine.journal import Kind, Transaction
from specivod.engine.lock import host_lock
from specivod.engine.ports import TagSource
from specivod.engine.transaction import drive, resume


class NothingToDo(SpecivodError):
    """No transaction was needed (already up to date, or nothing to roll back to)."""


class NeedsAPerson(SpecivodError):
    """The last rollback failed; specivod does not touch the deployment until a person has."""


class WindowClosed(SpecivodError):
    """An unattended upgrade was asked for outside every maintenance window."""


class UnversionedPin(SpecivodError):
    """The deployment pins no semver release (``latest``, a digest, nothing): there is no
    version to plan from or to roll back to."""


class RecoveredFirst(SpecivodError):
    """A rollback or restore found an unfinished transaction and finished it instead: what it
    was asked to undo may have changed, so it stops and lets a person look again."""

    def __init__(self, recovered: Transaction) -> None:
        super().__init__(f"finished transaction {recovered.id} first ({recovered.state.name})")
        self.recovered = recovered


@dataclass(frozen=True)
class Result:
    transaction: Transaction
    recovered: Transaction | None


class Engine:
    def __init__(
        self,
        context: Context,
        registry: TagSource,
        policy: VersionPolicy,
        windows: Sequence[Window],
        state_dir: Path,
    ) -> None:
        self.context = context
        self._registry = registry
        self._policy = policy
        self._windows = list(windows)
        self._state_dir = state_dir

    async def recover(self) -> Transaction | None:
        with host_lock(self._state_dir, "recovery"):
            return await self._recover()

    async def _recover(self) -> Transaction | None:
        transaction = self.context.journal.unfinished()
        if transaction is None:
            return None
        self.context.tell(
            transaction,
            f"resuming transaction {transaction.id} found in {transaction.state.name}",
        )
        return await resume(self.context, transaction)

    async def upgrade(
        self,
        *,
        to: str | None = None,
        force: bool = False,
        ignore_window: bool = False,
        trigger: str = "manual",
    ) -> Result:
        """One upgrade: to ``to`` or to the policy's target. Raises ``NothingToDo`` when the
        deployment is already where it should be."""
        with host_lock(self._state_dir, f"upgrade ({trigger})"):
            recovered = await self._recover()
            self._refuse_after_failed_rollback(force)
            if not ignore_window:
                self._require_open_window()
            deployed = self.context.deployment.pinned_version()
            target = await self._choose_target(deployed, to, force)
            transaction = self.context.journal.begin(
                Kind.UPGRADE,
                trigger=trigger,
                from_version=deployed,
                to_version=target,
                now=self.context.clock.now(),
                detail=f"upgrade {deployed} → {target}",
            )
            self.context.tell(transaction, f"upgrading {deployed} → {target}")
            return Result(await drive(self.context, transaction), recovered)

    async def rollback(
        self, *, restore: RestoreMode = RestoreMode.AUTO, trigger: str = "manual"
    ) -> Result:
        """Back to the version the last successful upgrade replaced."""
        with host_lock(self._state_dir, f"rollback ({trigger})"):
            recovered = await self._recover()
            if recovered is not None:
                raise RecoveredFirst(recovered)
            journal = self.context.journal
            upgrade = journal.last_succeeded_upgrade()
            current = self.context.deployment.pinned_version()
            if upgrade is None:
                raise NothingToDo("the journal holds no successful upgrade to roll back")
            if upgrade.to_version != current:
                raise NothingToDo(
                    f"the last successful upgrade installed {upgrade.to_version}, but the "
                    f"deployment pins {current}; nothing recorded to roll back to"
                )
            transaction = journal.begin(
                Kind.ROLLBACK,
                trigger=trigger,
                from_version=current,
                to_version=upgrade.from_version,
                now=self.context.clock.now(),
                restore_mode=restore,
                detail=f"rollback {current} → {upgrade.from_version} (undoing #{upgrade.id})",
                backup_id=upgrade.backup_id,
                fingerprint_before=upgrade.fingerprint_before,
                reason=f"{trigger} rollback of upgrade #{upgrade.id}",
            )
            return Result(await drive(self.context, transaction), None)

    async def restore(
        self, backup_id: str, version: str | None, *, trigger: str = "manual"
    ) -> Result:
        """The backup's database and data dir, under ``version`` (the one it was taken at; the
        pinned one when the backup records none)."""
        with host_lock(self._state_dir, f"restore {backup_id} ({trigger})"):
            recovered = await self._recover()
            if recovered is not None:
                raise RecoveredFirst(recovered)
            current = self.context.deployment.pinned_version()
            target = version or current
            if target is None:
                raise UnversionedPin(
                    f"backup {backup_id} records no version and the deployment pins none"
                )
            transaction = self.context.journal.begin(
                Kind.RESTORE,
                trigger=trigger,
                from_version=current,
                to_version=target,
                now=self.context.clock.now(),
                restore_mode=RestoreMode.ALWAYS,
                detail=f"restore backup {backup_id} under {target} (pinned now: {current})",
                backup_id=backup_id,
                reason=f"{trigger} restore of backup {backup_id}",
            )
            return Result(await drive(self.context, transaction), None)

    def _refuse_after_failed_rollback(self, force: bool) -> None:
        latest = self.context.journal.latest_effective()
        if latest is None or latest.state is not State.ROLLBACK_FAILED or force:
            return
        if latest.id in Controls(self._state_dir).state(self.context.clock.now()).resolved:
            return
        raise NeedsAPerson(
            f"transaction {latest.id} ended in ROLLBACK_FAILED ({latest.reason}); repair the "
            "deployment (specivod restore ID is the runbook), then run specivod resolve "
            "(or upgrade with --force)"
        )

    def _require_open_window(self) -> None:
        now = self.context.clock.now()
        if not is_open(self._windows, now):
            upcoming = next_opening(self._windows, now)
            when = upcoming.isoformat() if upcoming else "never (no window is configured)"
            raise WindowClosed(f"no maintenance window is open; the next opens {when}")

    async def _choose_target(self, deployed: str | None, to: str | None, force: bool) -> str:
        unversioned = deployed is None or parse_version(deployed) is None
        if unversioned and not (to is not None and force):
            pinned = "nothing" if deployed is None else repr(deployed)
            raise UnversionedPin(
                f"the deployment pins {pinned}, not a semver release: there is no version to "
                "plan from or to roll back to; move to a release with upgrade --to VERSION --force"
            )
        tags = await self._registry.list_tags()
        if to is None:
            assert deployed is not None  # unversioned pins were refused above
            skipped = Controls(self._state_dir).state(self.context.clock.now()).skipped
            avoid = {**skipped, **self.context.journal.rolled_back_versions()}
            plan = make_plan(tags, deployed, self._policy, avoid)
            if plan.target is None:
                raise NothingToDo(plan.reason)
            return plan.target.tag
        wanted = require_version(to)
        if to not in tags:
            raise SpecivodError(f"{to} is not a tag of {self._registry.name}")
        if deployed is None or unversioned:
            return to
        current = require_version(deployed)
        if wanted == current:
            raise NothingToDo(f"{deployed} is already deployed")
        if not force:
            if not self._policy.allows(wanted):
                raise SpecivodError(
                    f"{to} is outside the range {self._policy.range!r} (use --force to override)"
                )
            if wanted < current or not within_step(current, wanted, self._policy.step):
                raise SpecivodError(
                    f"{deployed} → {to} is not an upgrade of at most one {self._policy.step} step "
                    "(use --force to override)"
                )
        return to
