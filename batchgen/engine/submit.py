"""The submitter: turns items into request_ids under the concurrency cap, the rate limit and the budget.

Each POST is preceded by an ``intent`` line and followed by the request_id, so a crash can lose at
most the answer of a submit in flight. There is no idempotency key: a submit whose answer was lost
is looked for in the account's request history before it is sent again (recover.py); without a
history, a retried submit whose answer was lost may pay twice, which is counted, never hidden.

With several keys, each submit goes out with the key that can take a request soonest
(``KeyPool.pick``), and its ``intent`` and ``submitted`` lines name that key by its fingerprint. A
key refused (401, 403) or out of credits (406) is retired and the item tries the next key: such an
answer is a refusal, nothing was billed.
"""

from __future__ import annotations

from typing import Any, assert_never

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from batchgen.api.outcomes import (
    Accepted,
    Credits,
    Expired,
    ItemFatal,
    JobResult,
    JobStatus,
    RateLimited,
    Retryable,
    RunFatal,
)
from batchgen.core.fastjson import params_sha
from batchgen.engine.context import Job, Run
from batchgen.engine.keys import RETIRING
from batchgen.store.events import EventKind

__all__ = ["submit_one", "submitter"]


async def submitter(run: Run, to_poller: MemoryObjectSendStream[Job]) -> None:
    """A fixed pool of workers takes items until none is left or a stop was asked.

    POSTs go out one at a time (see ``submit_one``); several workers still help because an item
    backing off after a 5xx sleeps outside the POST lock while the others go on. A pool rather
    than a task per item keeps a 100,000-item run at a handful of tasks.
    """
    post_lock = anyio.Lock()
    async with anyio.create_task_group() as tg:
        for _ in range(max(1, run.cfg.submit_workers)):
            tg.start_soon(_worker, run, to_poller, post_lock)


async def _worker(run: Run, to_poller: MemoryObjectSendStream[Job], post_lock: anyio.Lock) -> None:
    while (item := await run.admission.next_submission()) is not None:
        await submit_one(run, item, to_poller, post_lock)


async def submit_one(
    run: Run, item: Any, to_poller: MemoryObjectSendStream[Job], post_lock: anyio.Lock | None = None
) -> None:
    """Submit an admitted ``item`` until it is accepted (and handed to the poller), fails, or the run stops.

    ``post_lock``: one POST in flight at a time across the workers. A crash (SIGKILL, power cut)
    can then lose the answer of at most one accepted submit, which is the bound on paying twice
    that the ledger promises.
    """
    lock = post_lock or anyio.Lock()
    retry = run.cfg.retry
    failures = 0
    unreachable = 0  # tries that never reached the service: they spend no retry (see breaker.py)
    params = dict(item.params)
    sha = params_sha(params)
    while True:
        if run.stop.stopping:
            # Stop asked while this item waited: it was never sent, so it simply stays pending.
            run.on_not_submitted()
            return
        async with lock:
            slot = run.keys.pick()
            if slot is not None:
                await slot.limiter.acquire()
            if run.stop.stopping or slot is None:
                run.on_not_submitted()
                return
            if slot.retired is not None:
                continue  # retired while this submit waited for its turn: take another key
            fp = slot.fingerprint
            run.record(EventKind.INTENT, item.id, params_sha=sha, attempt=failures + 1, params=params, key_fp=fp)
            if run.stop.abort_reason is not None:
                # The intent could not be written (disk full) or the run is stopping: a POST now
                # could be a paid job the ledger never hears of. Say it was not sent, where the
                # ledger can still be written, so the next run does not count it as uncertain.
                run.record(EventKind.SUBMIT_RETRY, item.id, error=f"not sent: {run.stop.abort_reason}")
                run.on_not_submitted()
                return
            # An object store's ledger stores the intent before the POST; it says why not to send at all.
            if run.before_post is not None and (why := await run.before_post()) is not None:
                run.stop.abort(why)
                run.record(EventKind.SUBMIT_RETRY, item.id, error=f"not sent: {why}")
                run.on_not_submitted()
                return
            sent_at = run.wall()  # a lost answer is looked for in the history from here on
            # Shielded so that an interrupt cannot separate an accepted POST from its request_id;
            # an interrupt gives the shield a short deadline, a second one ends it.
            with run.stop.shielded() as shield:
                outcome = await slot.client.submit(run.cfg.slug, params)
                run.breaker.heard(outcome)
                if isinstance(outcome, Accepted):
                    run.record(EventKind.SUBMITTED, item.id, request_id=outcome.request_id, key_fp=fp)
        if shield.cancelled_caught:
            run.record(EventKind.SUBMIT_RETRY, item.id, error="interrupted while the submit was in flight", uncertain=True)
            run.on_not_submitted()
            return

        match outcome:
            case Accepted(request_id=request_id):
                slot.limiter.on_success()
                job = run.on_submitted(item, request_id, slot.index)
                try:
                    to_poller.send_nowait(job)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    # The run is stopping (interrupt, abort) and the poller is gone; the request_id
                    # is in the ledger, so the next run polls it.
                    run.admission.finish()
                return
            case RateLimited():
                pause = slot.limiter.on_rate_limited(outcome.reset_in)
                run.record(EventKind.SUBMIT_RETRY, item.id, status=429, error=outcome.message, wait_s=round(pause, 3))
                continue
            case ItemFatal():
                run.on_submit_failed(item, outcome.message, status=outcome.status, retryable=False)
                return
            case RunFatal():
                run.record(EventKind.SUBMIT_RETRY, item.id, status=outcome.status, error=outcome.message)
                if outcome.kind not in RETIRING:
                    run.stop.abort(outcome.message)  # about the model or the endpoint: no key helps
                elif run.retire_key(slot, outcome):
                    continue  # another key takes it (the last one stops the run: ``retire_key``)
                run.on_not_submitted()
                return
            case Retryable(sent=False):
                # It never left: nothing was billed and the item is not at fault. Try again soon,
                # for as long as the breaker lets the run go on.
                unreachable += 1
                run.on_retry()
                run.record(EventKind.SUBMIT_RETRY, item.id, error=outcome.message)
                await anyio.sleep(retry.unreachable_delay(unreachable))
                continue
            case Retryable():
                # The request may have been accepted with its answer lost: a retry may pay twice.
                uncertain = outcome.status is None or outcome.status < 300
                if uncertain and run.on_answer_lost(item, params, sent_at, outcome.message, slot.index):
                    return  # the request history says whether it was accepted before anything is paid again
                failures += 1
                run.on_retry(uncertain=uncertain)
                if failures > retry.submit_retries:
                    run.on_submit_failed(
                        item,
                        f"{outcome.message} (gave up after {failures} tries; the next run tries again)",
                        status=outcome.status,
                        retryable=True,
                        uncertain=uncertain,
                    )
                    return
                run.record(EventKind.SUBMIT_RETRY, item.id, status=outcome.status, error=outcome.message,
                           uncertain=uncertain or None)
                await anyio.sleep(retry.submit_delay(failures))
                continue
            case JobStatus() | JobResult() | Credits() | Expired():
                run.on_submit_failed(item, f"unexpected answer {outcome!r}", retryable=True)
                return
            case _:
                assert_never(outcome)
