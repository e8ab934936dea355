"""The load of a chaos run: commands from a seeded workload, sent by two kinds of callers
that write down what they sent and what they were told.

- :class:`ClientCaller`: Pachyderm's Python client, typed commands.
- :class:`RawCaller`: plain aio-pika and JSON from docs/protocol.md, either
  waiting for a reply or publishing without one (then only the broker's
  confirm is known: the command must still apply).

A caller whose attempt times out records it as *unknown* and retries with
the same command id, as the documentation tells callers to, until an answer
comes or it gives up (recorded: the request stays unanswered).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractIncomingMessage

from examples import bank, counter
from pachyderm import (
    App,
    CallTimeoutError,
    Client,
    CommandQuarantinedError,
    EntityEndedError,
    HandlerError,
    InvalidInputError,
    PachydermError,
    Ref,
    RejectedError,
)
from pachyderm.transport import Topology, connect_to_broker

from .app import POISONS, TIMER_POISON, Reminder, Ticket, Volatile
from .record import (
    ENDED,
    FAILED,
    INVALID,
    OK,
    QUARANTINED,
    REJECTED,
    SENT,
    UNKNOWN,
    Attempt,
    Record,
    Request,
)

# -- the workload ------------------------------------------------------------------------

_POISONS = (*POISONS, TIMER_POISON)
_VOLATILE_COMMANDS = 6  # a volatile entity's: 2 bumps, its poison, 3 bumps


@dataclass(frozen=True, slots=True)
class Command:
    """A command about to be sent: entity, registered name and fields as plain data."""

    ref: Ref
    name: str
    payload: dict[str, Any]


class Workload:
    """Counters crossing their threshold (one external effect each), bank accounts
    transferring money (entity-to-entity effects, refunds from never-opened ones)
    and, a ``timer_share`` of the commands, reminders setting timers due a few
    seconds later (see :mod:`chaos.app`), a third of them cancelled again soon after;
    and, a ``ticket_share``, tickets punched a few times, then retired (ended), then
    punched some more, each of those to be answered ``ended``; and, a
    ``poison_share``, poison commands (see :mod:`chaos.app`'s ``Volatile``): each to
    a fresh volatile entity, bumped twice before and three times after it (the later
    bumps wait, parked, until the run's operator skips the poison); every third sets
    a poison timer instead (``Defer``), which workers hold after its tries.

    Counters come and go: each gets a few increments, then a fresh one takes
    its place, so threshold effects keep being produced all through a run.
    """

    def __init__(
        self,
        seed: int,
        *,
        counters: int = 200,
        accounts: int = 24,
        counter_share: float = 0.7,
        timer_share: float = 0.0,
        reminders: int = 32,
        ticket_share: float = 0.0,
        poison_share: float = 0.0,
    ) -> None:
        self.rng = random.Random(seed)
        self.poison_share = poison_share
        self._volatiles = itertools.count()
        # The volatile entity at hand, its poison, and how many of its commands are left.
        self._volatile: tuple[Ref, str, int] | None = None
        self.ticket_share = ticket_share
        self._tickets = itertools.count()
        self._ticket: tuple[Ref, int] | None = None  # the ticket at hand, commands left
        self.counter_share = counter_share
        self.timer_share = timer_share
        self.reminders = [Reminder.ref(f"r-{n}") for n in range(reminders)]
        self._tags = itertools.count()
        self._set: list[tuple[Ref, str]] = []  # timers set lately, some to cancel
        self._numbers = itertools.count()
        self._counters: list[tuple[Ref, int]] = [self._new_counter() for _ in range(counters)]
        self.accounts = [bank.account(f"acct-{n}") for n in range(accounts)]
        # Never opened: transfers to them come back as refunds.
        self.ghosts = [bank.account(f"ghost-{n}") for n in range(max(2, accounts // 8))]

    def _new_counter(self) -> tuple[Ref, int]:
        return counter.Counter.ref(f"c-{next(self._numbers)}"), self.rng.randint(3, 8)

    def setup(self) -> list[Command]:
        """Opening and funding every account, before the load."""
        return [
            *(Command(ref, "Open", {"owner": ref.id.hex[:8]}) for ref in self.accounts),
            *(Command(ref, "Deposit", {"amount": 1_000}) for ref in self.accounts),
        ]

    def next(self) -> Command:
        if self.ticket_share and self.rng.random() < self.ticket_share:
            return self.ticket()
        if self.poison_share and self.rng.random() < self.poison_share * _VOLATILE_COMMANDS:
            return self.volatile()
        roll = self.rng.random()
        if roll < self.timer_share:
            return self.timer()
        if roll < self.timer_share + (1 - self.timer_share) * self.counter_share:
            return self.increment()
        return self._banking()

    def timer(self) -> Command:
        """Set a timer due in 0.5 to 4 s, or (a quarter of the time) cancel one set lately:
        the cancel may come before, as or after it falls due."""
        if self._set and self.rng.random() < 0.25:
            ref, tag = self._set.pop(self.rng.randrange(len(self._set)))
            return Command(ref, "Forget", {"tag": tag})
        ref, tag = self.rng.choice(self.reminders), f"t-{next(self._tags)}"
        self._set = [*self._set[-63:], (ref, tag)]
        return Command(ref, "Remind", {"tag": tag, "seconds": round(self.rng.uniform(0.5, 4), 3)})

    def ticket(self) -> Command:
        """Punches, the Retire that ends the ticket, then punches it must refuse (the
        sixth command of each ticket retires it; a fresh ticket comes after the ninth)."""
        if self._ticket is None:
            self._ticket = (Ticket.ref(f"k-{next(self._tickets)}"), 9)
        ref, left = self._ticket
        self._ticket = (ref, left - 1) if left > 1 else None
        return Command(ref, "Retire" if left == 4 else "Punch", {})

    def volatile(self) -> Command:
        """Two bumps, a poison (hang, crash or a poison timer, in turn), three bumps, then
        a fresh one."""
        if self._volatile is None:
            number = next(self._volatiles)
            ref = Volatile.ref(f"v-{number}")
            self._volatile = (ref, _POISONS[number % len(_POISONS)], _VOLATILE_COMMANDS)
        ref, poison, left = self._volatile
        self._volatile = (ref, poison, left - 1) if left > 1 else None
        return Command(ref, poison if left == _VOLATILE_COMMANDS - 2 else "Bump", {})

    def increment(self) -> Command:
        """An increment: never refused, so one sent without a reply must still apply."""
        slot = self.rng.randrange(len(self._counters))
        ref, left = self._counters[slot]
        self._counters[slot] = (ref, left - 1) if left > 1 else self._new_counter()
        return Command(ref, "Increment", {"amount": self.rng.randint(1, 5)})

    def _banking(self) -> Command:
        source = self.rng.choice(self.accounts)
        roll = self.rng.random()
        if roll < 0.2:
            return Command(source, "Deposit", {"amount": self.rng.randint(1, 100)})
        if roll < 0.35:
            return Command(source, "Withdraw", {"amount": self.rng.randint(1, 400)})
        target = self.rng.choice(self.ghosts if roll > 0.95 else self.accounts)
        amount = self.rng.randint(1, 300)
        return Command(source, "Transfer", {"to": str(target.id), "amount": amount})

    def probes(self, count: int) -> list[Ref]:
        """Counters of their own, spread over the partitions, to see the fleet answer."""
        return [counter.Counter.ref(f"probe-{n}") for n in range(count)]


# -- callers ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Patience:
    """How long a caller waits for one attempt, and for an answer at all."""

    attempt: float = 5.0
    give_up: float = 120.0
    pause: float = 0.2  # between a failed publish and its retry


class Caller:
    """Sends a request until it is answered; records every attempt."""

    name = "caller"

    def __init__(self, record: Record, patience: Patience) -> None:
        self.record = record
        self.patience = patience

    def request(self, command: Command, caller: str | None = None) -> Request:
        return self.record.add(
            Request(
                command_id=str(uuid.uuid4()),
                entity_type=command.ref.type,
                entity_id=str(command.ref.id),
                command=command.name,
                payload=command.payload,
                caller=caller or self.name,
            )
        )

    async def send(self, command: Command, caller: str | None = None) -> Request:
        request = self.request(command, caller)
        deadline = self.record.now() + self.patience.give_up
        while True:
            attempt = Attempt(sent_at=self.record.now())
            request.attempts.append(attempt)
            await self.attempt(command, request, attempt)
            if attempt.outcome != UNKNOWN or self.record.now() > deadline:
                return request
            if attempt.answered_at is None:  # the publish failed outright: not so fast
                await asyncio.sleep(self.patience.pause)

    async def attempt(self, command: Command, request: Request, attempt: Attempt) -> None:
        raise NotImplementedError


class ClientCaller(Caller):
    """Pachyderm's client: typed commands, the reply (not its version) on success."""

    name = "client"

    def __init__(self, client: Client, app: App, record: Record, patience: Patience) -> None:
        super().__init__(record, patience)
        self.client = client
        self.app = app

    async def attempt(self, command: Command, request: Request, attempt: Attempt) -> None:
        typed = self.app.entity_type(command.ref.type).commands.load(command.name, command.payload)
        try:
            attempt.reply = await self.client.call(
                command.ref, typed, command_id=request.command_id, timeout=self.patience.attempt
            )
            attempt.outcome = OK
        except CallTimeoutError:
            return  # unknown: retry with the same id
        except RejectedError as rejection:
            attempt.outcome, attempt.detail = REJECTED, rejection.reason
        except EntityEndedError as error:
            attempt.outcome, attempt.detail = ENDED, str(error)
        except CommandQuarantinedError as error:
            attempt.outcome, attempt.detail = QUARANTINED, str(error)
        except InvalidInputError as error:
            attempt.outcome, attempt.detail = INVALID, str(error)
        except HandlerError as error:
            attempt.outcome, attempt.detail = FAILED, str(error)
        except PachydermError as error:  # publishing failed: the broker is away
            attempt.detail = str(error)
            return
        attempt.answered_at = self.record.now()


# What publishing raises while the broker is away (the channel closed, the
# connection lost or being restored): the attempt's outcome is unknown.
_AMQP_ERRORS = (aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError, OSError)


class RawCaller(Caller):
    """A caller written from docs/protocol.md alone: aio-pika, JSON bodies."""

    name = "raw"

    def __init__(
        self, amqp_url: str, topology: Topology, record: Record, patience: Patience
    ) -> None:
        super().__init__(record, patience)
        self.amqp_url = amqp_url
        self.topology = topology
        self._waiting: dict[str, asyncio.Future[AbstractIncomingMessage]] = {}
        self._reply_to = f"chaos-raw-replies-{uuid.uuid4().hex}"

    async def start(self) -> None:
        self._connection = await connect_to_broker(
            self.amqp_url, client_properties={"connection_name": "chaos-raw-caller"}
        )
        # A publish the broker returns (routed to no queue: the consistent-hash ring of a
        # cluster node restarting, say) is confirmed all the same: raise, and retry it.
        self._channel = await self._connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        # Named here so that a reconnect declares it again under the same name.
        replies = await self._channel.declare_queue(self._reply_to, exclusive=True)
        await replies.consume(self._on_reply, no_ack=True)
        self._exchange = await self._channel.get_exchange(self.topology.commands_exchange)

    async def close(self) -> None:
        await self._connection.close()

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        waiting = self._waiting.pop(message.correlation_id or "", None)
        if waiting is not None and not waiting.done():
            waiting.set_result(message)

    async def attempt(self, command: Command, request: Request, attempt: Attempt) -> None:
        wants_reply = request.caller != "raw-noreply"
        correlation_id = str(uuid.uuid4())
        message = aio_pika.Message(
            json.dumps(command.payload).encode(),
            message_id=request.command_id,
            type=command.name,
            content_type="application/json",
            headers={"pachyderm-entity-type": command.ref.type},
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            reply_to=self._reply_to if wants_reply else None,
            correlation_id=correlation_id,
        )
        waiting = asyncio.get_running_loop().create_future()
        if wants_reply:
            self._waiting[correlation_id] = waiting
        try:
            async with asyncio.timeout(self.patience.attempt):
                await self._exchange.publish(message, str(command.ref.id), mandatory=True)
                if not wants_reply:
                    attempt.outcome, attempt.answered_at = SENT, self.record.now()
                    return
                self._read(await waiting, attempt)
        except (TimeoutError, *_AMQP_ERRORS) as error:
            attempt.detail = repr(error)  # unknown: retry with the same id
        finally:
            self._waiting.pop(correlation_id, None)

    def _read(self, reply: AbstractIncomingMessage, attempt: Attempt) -> None:
        body = json.loads(reply.body)
        attempt.answered_at = self.record.now()
        outcomes = {
            "ok": OK,
            "rejected": REJECTED,
            "invalid": INVALID,
            "ended": ENDED,
            "quarantined": QUARANTINED,
        }
        attempt.outcome = outcomes.get(body["status"], FAILED)
        attempt.version = body.get("version")
        attempt.reply = body.get("reply")
        attempt.detail = str(body.get("reason") or body.get("message") or "")


# -- driving it --------------------------------------------------------------------------------

Send = Callable[[Command], Awaitable[Request]]


@dataclass(frozen=True, slots=True)
class Sender:
    """A way of sending commands, its share of the load, and the commands it sends."""

    send: Send
    weight: float
    source: Callable[[], Command]


class Load:
    """Sends commands through a weighted mix of senders, at most ``limit`` in flight and,
    given a ``rate``, at most that many per second."""

    def __init__(
        self,
        rng: random.Random,
        senders: list[Sender],
        *,
        limit: int = 200,
        rate: float | None = None,
    ) -> None:
        self.rng = rng
        self.senders = senders
        self.weights = [sender.weight for sender in senders]
        self.limit = limit
        self.rate = rate
        self.issued = 0
        self._count: int | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()

    def pause(self) -> None:
        """Send nothing new until :meth:`resume` or :meth:`stop` (those in flight finish)."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def stop(self, after: int = 0) -> None:
        """Send no more commands once ``after`` were sent (those in flight finish)."""
        self._flowing.set()
        self._count = after

    async def run(self, count: int | None = None) -> None:
        """Send ``count`` commands (or until :meth:`stop`), then wait for their answers.

        A caller that crashes (rather than record an outcome) ends the run with
        its exception: the record would be incomplete.
        """
        if count is not None:
            self._count = count
        gate = asyncio.Semaphore(self.limit)

        async def one(send: Send, command: Command) -> None:
            try:
                await send(command)
            finally:
                gate.release()

        loop = asyncio.get_running_loop()
        started, issued = loop.time(), 0
        async with asyncio.TaskGroup() as tasks:
            while True:
                if not self._flowing.is_set():
                    await self._flowing.wait()
                    started, issued = loop.time(), 0  # no burst to make up for the pause
                if self._count is not None and self.issued >= self._count:
                    break
                if self.rate:
                    await asyncio.sleep(started + issued / self.rate - loop.time())
                    issued += 1
                await gate.acquire()
                (sender,) = self.rng.choices(self.senders, self.weights)
                tasks.create_task(one(sender.send, sender.source()))
                self.issued += 1
