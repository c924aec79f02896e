"""The engine's front door: every upgrade and rollback, manual or automatic, comes through here.

Each operation takes the host-wide lock, first finishes whatever a killed process left behind,
then plans and runs one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from specivod.adapters.protocols import Registry
from specivod.domain.errors import SpecivodError
from specivod.domain.planning import make_plan
from specivod.domain.states import RestoreMode, State
from specivod.domain.versions import VersionPolicy, require_version, within_step
from specivod.domain.windows import Window, is_open, next_opening
from specivod.engine.context import Context
from specivod.engine.journal import Kind, Transaction
from specivod.engine.lock import host_lock
from specivod.engine.recovery import recover
from specivod.engine.rollback import roll_back
from specivod.engine.upgrade import run_upgrade


class NothingToDo(SpecivodError):
    """No transaction was needed (already up to date, or nothing to roll back to)."""


class NeedsAPerson(SpecivodError):
    """The last rollback failed; specivod does not touch the deployment until a person has."""


class WindowClosed(SpecivodError):
    """An unattended upgrade was asked for outside every maintenance window."""


@dataclass(frozen=True)
class Result:
    transaction: Transaction
    recovered: Transaction | None


class Engine:
    def __init__(
        self,
        context: Context,
        registry: Registry,
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
            return await recover(self.context)

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
            recovered = await recover(self.context)
            self._refuse_after_failed_rollback(force)
            if not ignore_window:
                self._require_open_window()
            deployed = self.context.deployment.pinned_version()
            if deployed is None:
                raise SpecivodError("the deployment pins no version; pin a release in .env first")
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
            return Result(await run_upgrade(self.context, transaction), recovered)

    async def rollback(
        self, *, restore: RestoreMode = RestoreMode.AUTO, trigger: str = "manual"
    ) -> Result:
        """Back to the version the last successful upgrade replaced."""
        with host_lock(self._state_dir, f"rollback ({trigger})"):
            recovered = await recover(self.context)
            journal = self.context.journal
            upgrade = journal.last_succeeded_upgrade()
            current = self.context.deployment.pinned_version()
            if upgrade is None:
                raise NothingToDo("the journal holds no successful upgrade to roll back")
            if upgrade.to_version != current:
                raise NothingToDo(
                    f"the last successful upgrade installed {upgrade.to_version}, but .env pins "
                    f"{current}; nothing recorded to roll back to"
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
            )
            reason = f"{trigger} rollback of upgrade #{upgrade.id}"
            return Result(await roll_back(self.context, transaction, reason), recovered)

    def _refuse_after_failed_rollback(self, force: bool) -> None:
        latest = self.context.journal.latest()
        if latest is not None and latest.state is State.ROLLBACK_FAILED and not force:
            raise NeedsAPerson(
                f"transaction {latest.id} ended in ROLLBACK_FAILED ({latest.reason}); repair the "
                "deployment, then upgrade with --force"
            )

    def _require_open_window(self) -> None:
        now = self.context.clock.now()
        if not is_open(self._windows, now):
            upcoming = next_opening(self._windows, now)
            when = upcoming.isoformat() if upcoming else "never (no window is configured)"
            raise WindowClosed(f"no maintenance window is open; the next opens {when}")

    async def _choose_target(self, deployed: str, to: str | None, force: bool) -> str:
        tags = await self._registry.list_tags()
        if to is None:
            plan = make_plan(
                tags, deployed, self._policy, self.context.journal.rolled_back_versions()
            )
            if plan.target is None:
                raise NothingToDo(plan.reason)
            return plan.target.tag
        wanted = require_version(to)
        if to not in tags:
            raise SpecivodError(f"{to} is not a tag of {self._registry_name()}")
        if wanted == require_version(deployed):
            raise NothingToDo(f"{deployed} is already deployed")
        if not force:
            if not self._policy.allows(wanted):
                raise SpecivodError(
                    f"{to} is outside the range {self._policy.range!r} (use --force to override)"
                )
            current = require_version(deployed)
            if wanted < current or not within_step(current, wanted, self._policy.step):
                raise SpecivodError(
                    f"{deployed} → {to} is not an upgrade of at most one {self._policy.step} step "
                    "(use --force to override)"
                )
        return to

    def _registry_name(self) -> str:
        return str(getattr(self._registry, "reference", "the registry"))
