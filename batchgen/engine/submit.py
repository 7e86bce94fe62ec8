"""The submitter: turns items into request_ids under the concurrency cap, the rate limit and the budget.

Each POST is preceded by an ``intent`` line and followed by the request_id, so a crash can lose at
most the answer of a submit in flight. There is no idempotency key: a retried submit whose answer
was lost may pay twice, which is counted, never hidden.
"""

from __future__ import annotations

from typing import Any

import anyio

from batchgen.api.outcomes import Accepted, ItemFatal, RateLimited, Retryable, RunFatal
from batchgen.core.fastjson import params_sha
from batchgen.engine.context import Job, Run
from batchgen.engine.limits import backoff_delay

__all__ = ["submitter"]


async def submitter(run: Run) -> None:
    """A fixed pool of workers takes items until none is left or a stop was asked.

    POSTs go out one at a time (see ``_submit_until_settled``); several workers still help because
    an item backing off after a 5xx sleeps outside the POST lock while the others go on. A pool
    rather than a task per item keeps a 100,000-item run at a handful of tasks.
    """
    async with anyio.create_task_group() as tg:
        for _ in range(max(1, run.cfg.submit_workers)):
            tg.start_soon(_worker, run)


async def _worker(run: Run) -> None:
    while True:
        await run.slots.acquire()
        item = await run.next_submission()
        if item is None:
            run.slots.release()
            return
        run.submitting += 1
        await _submit_until_settled(run, item)


def _give_back(run: Run) -> None:
    run.submitting -= 1
    run.slots.release()
    run.notify()


async def _submit_until_settled(run: Run, item: Any) -> None:
    cfg = run.cfg
    failures = 0
    params = dict(item.params)
    sha = params_sha(params)
    while True:
        if run.stop_reason is not None:
            # Stop asked while this item waited: it was never sent, so it simply stays pending.
            _give_back(run)
            return
        # One POST in flight at a time: a crash (SIGKILL, power cut) can then lose the answer of
        # at most one accepted submit, which is the bound on paying twice that the ledger promises.
        async with run.post_lock:
            await run.limiter.acquire()
            if run.stop_reason is not None:
                _give_back(run)
                return
            run.record("intent", item.id, params_sha=sha, attempt=failures + 1, params=params)
            if run.abort_reason is not None:
                # The intent could not be written (disk full) or the run is stopping: a POST now
                # could be a paid job the ledger never hears of. Say it was not sent, where the
                # ledger can still be written, so the next run does not count it as uncertain.
                run.record("submit_retry", item.id, error=f"not sent: {run.abort_reason}")
                _give_back(run)
                return
            # Shielded so that an interrupt cannot separate an accepted POST from its request_id;
            # the interrupt handler gives shielded scopes a short deadline.
            with anyio.CancelScope(shield=True) as shield:
                run.shields.add(shield)
                try:
                    if run.interrupted:
                        shield.deadline = anyio.current_time() + cfg.interrupt_grace_s
                    outcome = await run.client.submit(cfg.slug, params)
                    if isinstance(outcome, Accepted):
                        run.record("submitted", item.id, request_id=outcome.request_id)
                finally:
                    run.shields.discard(shield)
        if shield.cancelled_caught:
            run.record("submit_retry", item.id, error="interrupted while the submit was in flight", uncertain=True)
            _give_back(run)
            return

        if isinstance(outcome, Accepted):
            run.limiter.on_success()
            run.counts["submitted"] += 1
            job = Job(item=item, request_id=outcome.request_id)
            job.submitted_mono = run.clock()
            job.deadline_mono = run.clock() + cfg.retention_s - cfg.retention_margin_s
            run.submitting -= 1
            run.in_flight += 1
            assert run.to_poller is not None
            try:
                run.to_poller.send_nowait(job)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                # The run is stopping (interrupt, abort) and the poller is gone; the request_id is
                # in the ledger, so the next run polls it.
                run.finish(job)
                return
            run.notify()
            return
        if isinstance(outcome, RateLimited):
            pause = run.limiter.on_rate_limited(outcome.reset_in)
            run.record("submit_retry", item.id, status=429, error=outcome.message, wait_s=round(pause, 3))
            continue
        if isinstance(outcome, ItemFatal):
            run.record("failed", item.id, stage="submit", status=outcome.status, error=outcome.message, retryable=False)
            run.counts["failed"] += 1
            _give_back(run)
            return
        if isinstance(outcome, RunFatal):
            run.record("submit_retry", item.id, status=outcome.status, error=outcome.message)
            if outcome.kind in ("credits", "spend_limit"):
                run.stop_submitting(outcome.message)
            else:
                run.abort(outcome.message)
            _give_back(run)
            return
        if isinstance(outcome, Retryable):
            uncertain = outcome.sent and outcome.status is None or (outcome.status is not None and outcome.status < 300)
            failures += 1
            run.counts["retries"] += 1
            if uncertain:
                run.counts["possible_double_charges"] += 1
            if failures > cfg.submit_retries:
                run.record(
                    "failed",
                    item.id,
                    stage="submit",
                    status=outcome.status,
                    error=f"{outcome.message} (gave up after {failures} tries; the next run tries again)",
                    retryable=True,
                    uncertain=uncertain or None,
                )
                run.counts["failed"] += 1
                _give_back(run)
                return
            run.record("submit_retry", item.id, status=outcome.status, error=outcome.message, uncertain=uncertain or None)
            await anyio.sleep(backoff_delay(failures - 1, base=cfg.backoff_base_s))
            continue
        run.record("failed", item.id, stage="submit", error=f"unexpected answer {outcome!r}", retryable=True)
        _give_back(run)
        return
