"""The worker's hooks: how concerns that cut across a command's path see it.

Exported from :mod:`pachyderm.worker`; a module of its own at the top so that a
concern (telemetry) can implement it without importing the worker.

The engine, a partition and the outbox publisher call one :class:`WorkerHooks`
at fixed points of the path (a batch, its load and commit, deciding, each
effect published) and import nothing of the concerns themselves: telemetry is
one implementation (:mod:`pachyderm.telemetry`), and quarantine accounting,
lag metrics or a test's probe are others, combined with :class:`Hooks`. As in
dramatiq's middleware, every hook is a no-op here and a concern overrides what
it needs.

Hooks run on the hot path: they must be cheap, and must not raise (a hook
that raises fails the work it wraps, as any bug on that path would).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext

from .store import OutboxEntry
from .transport import Delivery, Message

Reading = Callable[[], int]

_NOTHING = nullcontext()


class BatchHooks:
    """What hooks see of one batch while it is applied (:meth:`WorkerHooks.batch`)."""

    measuring: bool = False
    """Whether :meth:`outcome` is worth calling for every delivery."""

    def outcome(self, index: int, entity_type: str | None, outcome: str) -> None:
        """Delivery ``index`` was answered with ``outcome``: ok, rejected, failed,
        invalid, expired, ended, erased or duplicate, or left for another worker
        (deferred); ``entity_type``
        only when the message named a known one."""


_NO_BATCH = BatchHooks()


class WorkerHooks:
    """The points of a command's path a concern can hook into; each a no-op here."""

    def batch(
        self, exchange: str, partition: int, deliveries: Sequence[Delivery]
    ) -> AbstractContextManager[BatchHooks]:
        """Around applying one batch of a partition, replies and effects included."""
        return nullcontext(_NO_BATCH)

    def loading(self, store: object, entities: int) -> AbstractContextManager[object]:
        """Around loading ``entities`` entities missing from the cache."""
        return _NOTHING

    def deciding(self) -> AbstractContextManager[object]:
        """Around running the entities' ``handle`` on a batch's requests."""
        return _NOTHING

    def committing(self, store: object, changes: int) -> AbstractContextManager[object]:
        """Around committing ``changes`` changes in one transaction."""
        return _NOTHING

    def conflict(self, entity_type: str) -> None:
        """A change to an entity of ``entity_type`` was refused: the entity had moved on."""

    def publishing(
        self, exchange: str, message: Message, entry: OutboxEntry, batch: BatchHooks | None
    ) -> AbstractContextManager[Message]:
        """Around publishing one effect; gives the message to publish (a hook may add
        headers). ``batch`` is the batch that committed it (None: the outbox sweep)."""
        return nullcontext(message)

    def published(self, entries: Sequence[OutboxEntry], source: str) -> None:
        """These effects reached the broker; ``source``: "commit" or "sweep"."""

    def failed(self, entry: OutboxEntry, error: Exception) -> None:
        """Publishing this effect failed; it will be tried again."""

    def serving(self, partitions: Reading, entities: Reading) -> AbstractContextManager[object]:
        """While a worker runs: how many partitions it owns, how many entities it caches."""
        return _NOTHING

    def timer_fired(self, entity_type: str, lateness: float) -> None:
        """A timer of an entity of ``entity_type`` fired, ``lateness`` seconds after it
        was due (its command committed; or, for another entity, went to the outbox)."""

    def timer_failed(self, entity_type: str, error: Exception) -> None:
        """Firing a timer failed (its handler raised, or it cannot be read); it is tried
        again later."""

    def timers_pending(self, pending: Reading) -> AbstractContextManager[object]:
        """While a worker runs: how many timers are pending in the store (last count)."""
        return _NOTHING

    def in_flight(self, commands: Reading) -> AbstractContextManager[object]:
        """While a worker with a cap on commands in flight runs: how many its partitions
        are handling (``PACHYDERM_MAX_IN_FLIGHT``)."""
        return _NOTHING

    def newer_schema(self, entity_type: str, error: Exception) -> None:
        """An entity of ``entity_type`` holds an event newer than this code
        (:class:`~pachyderm.NewerSchemaError`): its commands are left for a newer worker."""

    def pruned(self, retained: str, rows: int) -> None:
        """A pruning batch deleted ``rows`` rows of ``retained`` (commands, effects,
        attempts or quarantine) that had outlived their window."""

    def quarantined(self, entity_type: str, policy: str) -> None:
        """A command of an entity of ``entity_type`` used up its attempts and was
        quarantined; ``policy``: park (its entity's later commands wait) or skip."""


class Hooks(WorkerHooks):
    """Several hooks as one, called in the order given (context managers nest in it)."""

    def __init__(self, hooks: Sequence[WorkerHooks]) -> None:
        self.hooks = tuple(hooks)

    def batch(
        self, exchange: str, partition: int, deliveries: Sequence[Delivery]
    ) -> AbstractContextManager[BatchHooks]:
        return self._batch(exchange, partition, deliveries)

    @contextmanager
    def _batch(
        self, exchange: str, partition: int, deliveries: Sequence[Delivery]
    ) -> Iterator[BatchHooks]:
        with ExitStack() as stack:
            batches = [
                stack.enter_context(hook.batch(exchange, partition, deliveries))
                for hook in self.hooks
            ]
            yield _Batches(batches)

    def loading(self, store: object, entities: int) -> AbstractContextManager[object]:
        return self._all(lambda hook: hook.loading(store, entities))

    def deciding(self) -> AbstractContextManager[object]:
        return self._all(lambda hook: hook.deciding())

    def committing(self, store: object, changes: int) -> AbstractContextManager[object]:
        return self._all(lambda hook: hook.committing(store, changes))

    def conflict(self, entity_type: str) -> None:
        for hook in self.hooks:
            hook.conflict(entity_type)

    def publishing(
        self, exchange: str, message: Message, entry: OutboxEntry, batch: BatchHooks | None
    ) -> AbstractContextManager[Message]:
        return self._publishing(exchange, message, entry, batch)

    @contextmanager
    def _publishing(
        self, exchange: str, message: Message, entry: OutboxEntry, batch: BatchHooks | None
    ) -> Iterator[Message]:
        with ExitStack() as stack:
            for index, hook in enumerate(self.hooks):
                own = batch.batches[index] if isinstance(batch, _Batches) else batch
                message = stack.enter_context(hook.publishing(exchange, message, entry, own))
            yield message

    def published(self, entries: Sequence[OutboxEntry], source: str) -> None:
        for hook in self.hooks:
            hook.published(entries, source)

    def failed(self, entry: OutboxEntry, error: Exception) -> None:
        for hook in self.hooks:
            hook.failed(entry, error)

    def serving(self, partitions: Reading, entities: Reading) -> AbstractContextManager[object]:
        return self._all(lambda hook: hook.serving(partitions, entities))

    def timer_fired(self, entity_type: str, lateness: float) -> None:
        for hook in self.hooks:
            hook.timer_fired(entity_type, lateness)

    def timer_failed(self, entity_type: str, error: Exception) -> None:
        for hook in self.hooks:
            hook.timer_failed(entity_type, error)

    def timers_pending(self, pending: Reading) -> AbstractContextManager[object]:
        return self._all(lambda hook: hook.timers_pending(pending))

    def in_flight(self, commands: Reading) -> AbstractContextManager[object]:
        return self._all(lambda hook: hook.in_flight(commands))

    def newer_schema(self, entity_type: str, error: Exception) -> None:
        for hook in self.hooks:
            hook.newer_schema(entity_type, error)

    def pruned(self, retained: str, rows: int) -> None:
        for hook in self.hooks:
            hook.pruned(retained, rows)

    def quarantined(self, entity_type: str, policy: str) -> None:
        for hook in self.hooks:
            hook.quarantined(entity_type, policy)

    @contextmanager
    def _all(
        self, enter: Callable[[WorkerHooks], AbstractContextManager[object]]
    ) -> Iterator[object]:
        with ExitStack() as stack:
            for hook in self.hooks:
                stack.enter_context(enter(hook))
            yield None


class _Batches(BatchHooks):
    """The batch of each of several hooks, as one."""

    def __init__(self, batches: list[BatchHooks]) -> None:
        self.batches = batches
        self.measuring = any(batch.measuring for batch in batches)

    def outcome(self, index: int, entity_type: str | None, outcome: str) -> None:
        for batch in self.batches:
            if batch.measuring:
                batch.outcome(index, entity_type, outcome)
