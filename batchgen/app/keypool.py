"""The run's API keys, from the environment to the engine: one client per key, a balance check per key.

``SEGMIND_API_KEY`` is one key; ``SEGMIND_API_KEYS`` (comma-separated) and ``SEGMIND_API_KEYS_FILE``
(one a line) add more, read and checked by ``settings.read_api_keys``. Every key gets its own
client over one shared connection pool, and reaches the engine as a ``PoolKey``: the client, the
key's fingerprint (what the ledger records, never the key) and its request-history client. No
message here shows a key: a key is named by its position and fingerprint.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import anyio

from batchgen.api.client import Client, Credits, RunFatal, Secret
from batchgen.api.history import HistoryClient
from batchgen.api.outcomes import RateLimited, Retryable
from batchgen.app.settings import read_api_keys
from batchgen.core.errors import ExitCode, UserError
from batchgen.engine.context import PoolKey

__all__ = ["BALANCE_MAX_WAIT_S", "BALANCE_TRIES", "KeyClients", "fetch_balance", "preflight", "run_secrets"]

SANDBOX_KEY = "sandbox-local-key"
BALANCE_TRIES = 4
BALANCE_MAX_WAIT_S = 120.0


def run_secrets(sandbox: bool) -> list[Secret]:
    """The keys of a run, first to last; the sandbox accepts any key, so it needs none."""
    keys = read_api_keys(os.environ)
    if not keys and sandbox:
        return [Secret(SANDBOX_KEY)]
    if not keys:
        raise UserError("SEGMIND_API_KEY is not set: export your Segmind API key, or use --sandbox to rehearse")
    return [Secret(k) for k in keys]


def label(secrets: list[Secret], i: int) -> str:
    """How a message names key ``i``: position and fingerprint (the engine's ``KeySlot.label``)."""
    return f"key {i + 1} of {len(secrets)} ({secrets[i].fingerprint})"


@dataclass
class KeyClients:
    """One client per key; ``retired[i]``: why key ``i`` may not submit (a refusal at the balance check)."""

    secrets: list[Secret]
    clients: list[Client]
    retired: list[str | None]

    def pool(self, history_url: str) -> list[PoolKey]:
        """The keys as the engine takes them, each with its own request history."""

        def history(client: Client) -> Callable[[Callable[[], Awaitable[None]] | None], HistoryClient]:
            return lambda acquire: HistoryClient.beside(client, history_url, acquire=acquire)

        return [
            PoolKey(c, s.fingerprint, history(c), retired=r, refused=r is not None)
            for s, c, r in zip(self.secrets, self.clients, self.retired, strict=True)
        ]

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, base_url: str, secrets: list[Secret], connections: int) -> AsyncIterator[KeyClients]:
        """The first key's client owns the transport; the others share it."""
        async with Client(base_url, secrets[0], connections=connections) as first:
            clients = [first, *(first.with_key(s) for s in secrets[1:])]
            yield cls(secrets, clients, [None] * len(secrets))


async def fetch_balance(
    client: Client, *, sleep: Callable[[float], Awaitable[None]] = anyio.sleep
) -> Credits | str:
    """The account balance, or why it is unknown.

    A 429 here says nothing about the balance: wait out its reset (bounded) and ask again, rather
    than start a paid batch with the check skipped.
    """
    waited = 0.0
    for attempt in range(BALANCE_TRIES):
        got = await client.credits()
        if isinstance(got, Credits):
            return got
        if isinstance(got, RunFatal) and got.kind in ("auth", "forbidden"):
            raise UserError(got.message, ExitCode.ABORTED)
        answered = isinstance(got, RateLimited) or (isinstance(got, Retryable) and got.status is not None)
        if not answered or attempt == BALANCE_TRIES - 1:
            break  # no answer at all (refused, DNS): the run's own checks decide; don't stall here
        pause = got.reset_in if isinstance(got, RateLimited) and got.reset_in is not None else 2.0**attempt
        pause = min(max(pause, 0.1), BALANCE_MAX_WAIT_S - waited)
        if pause <= 0:
            break
        await sleep(pause)
        waited += pause
    return getattr(got, "message", repr(got))


async def balances(keys: KeyClients, say: Callable[[str], None]) -> list[Credits | str | None]:
    """Each key's balance (None: refused, and retired in ``keys``). A key refused here (401, 403)
    is retired for the run with one warning; only a single key, or the last one, ends the command."""
    got: list[Credits | str | None] = []
    for i, client in enumerate(keys.clients):
        try:
            got.append(await fetch_balance(client))
        except UserError as e:
            if len(keys.clients) == 1:
                raise
            keys.retired[i] = str(e)
            got.append(None)
            say(f"warning: {label(keys.secrets, i)} retired for this run: {e}; the other keys go on")
    if all(r is not None for r in keys.retired):
        raise UserError(f"no API key left: every key was refused ({keys.retired[-1]})", ExitCode.ABORTED)
    return got


async def preflight(
    keys: KeyClients, need_n: int, price: float, spend_available: bool, say: Callable[[str], None]
) -> None:
    """The balance check before a paid run: every key's balance, summed, against the plan.

    One key says what it always said. With several, a key short of its even share is named in a
    warning (the others take on more; it is retired at its first 406), and a key whose balance
    cannot be read leaves the sum unknown: the run goes on, as with one key.
    """
    got = await balances(keys, say)
    need = need_n * price
    unknown = [(i, b) for i, b in enumerate(got) if isinstance(b, str)]
    for i, why in unknown:
        who = "" if len(got) == 1 else f" of {label(keys.secrets, i)}"
        say(f"warning: could not read the balance{who} ({why}); going on")
    known = [(i, b) for i, b in enumerate(got) if isinstance(b, Credits)]
    if len(got) > 1:
        share = need / max(1, len(known) + len(unknown))
        for i, b in known:
            if b.total + 1e-9 < share:
                say(f"warning: {label(keys.secrets, i)} has ${b.total:.2f}, short of its share ${share:.2f} of "
                    "this run; the other keys take on more")
    if unknown or not known:
        return
    total = sum(b.total for _, b in known)
    if total + 1e-9 < need:
        of = "" if len(got) == 1 else f" (over {len(known)} keys)"
        msg = (
            f"balance ${total:.2f}{of} cannot pay for {need_n} images (${need:.2f} at "
            f"${price:.2f}); top up, lower the batch, or pass --spend-available"
        )
        if not spend_available:
            raise UserError(msg + "; nothing was submitted", ExitCode.ABORTED)
        say("warning: " + msg.split(";")[0] + "; spending what there is")
