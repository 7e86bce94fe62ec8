"""Everything between the command line and the pipeline: options, lock, balance check, plan.

Kept apart from ``cli`` so that the command line only parses and prints, and from ``pipeline`` so
that the stages never touch files other than the ledger and the images.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from batchgen.api.client import Credits, Secret
from batchgen.api.history import HISTORY_URL
from batchgen.app.keypool import (
    BALANCE_MAX_WAIT_S,
    BALANCE_TRIES,
    SANDBOX_KEY,
    KeyClients,
    balances,
    fetch_balance,
    label,
    preflight,
    run_secrets,
)
from batchgen.app.output import (
    Output,
    hold_output,
    manifest_output,
    open_output,
    run_ledger,
    run_uploading,
    sync,
    writer_token,
)
from batchgen.app.settings import read_api_keys
from batchgen.app.shards import folder_lock, ledgers_version, replay_ledgers, resolve_shard, shard_limits
from batchgen.core.errors import ExitCode, UserError
from batchgen.engine.config import RecoveryPolicy, RunConfig
from batchgen.engine.context import RunOutcome
from batchgen.engine.counters import SnapshotSource
from batchgen.engine.plan import TO_SUBMIT, PlanGroup, plan
from batchgen.engine.root import run_batch
from batchgen.manifest import Manifest, ManifestError, load_manifest
from batchgen.models import typical_latency_s
from batchgen.store import ledger as L
from batchgen.store.files import atomic_write_text, ensure_dir
from batchgen.store.lease import DEFAULT_TTL_S
from batchgen.store.ledger import LedgerCorrupt
from batchgen.store.shards import ImageLayout, Shard, choose_layout, ledger_name, refuse_other_layout
from batchgen.store.storage import Storage

__all__ = ["RunOptions", "UserError", "Prepared", "prepare", "dry_run", "execute", "SANDBOX_LATENCY_S"]
__all__ += ["resolve_history_url", "fetch_balance", "BALANCE_TRIES", "BALANCE_MAX_WAIT_S", "SANDBOX_KEY"]

DEFAULT_BASE_URL = "https://api.segmind.com"
SANDBOX_LATENCY_S = 1.0


@dataclass(frozen=True)
class RunOptions:
    manifest: Path
    out: Output | None = None  # a folder, or an object store's URL (``s3://bucket/prefix``)
    sandbox: bool = False
    base_url: str | None = None
    history_url: str | None = None  # where the request history is asked: resolve_history_url()
    concurrency: int | None = None
    rpm: float | None = None
    rpm_scope: str = "all"
    max_images: int | None = None
    max_cost: float | None = None
    price: float | None = None
    dry_run: bool = False
    spend_available: bool = False
    retention: float = 3600.0
    retry_failed: bool = False  # submit items that failed for good again (a FAILED job is not billed)
    unreachable_after: float = 60.0  # seconds without reaching the service before the run ends (tests shorten it)
    history_wait: float | None = None  # RecoveryPolicy.landing_wait_s (hidden --history-wait, for emulators)
    sandbox_options: dict[str, Any] = field(default_factory=dict)
    shard_index: int | None = None  # None with a count: from JOB_COMPLETION_INDEX / AWS_BATCH_JOB_ARRAY_INDEX
    shard_count: int | None = None  # run only the items of one shard of this many (app.shards)
    rpm_per_shard: bool = False  # --rpm is each shard's own (a key per shard), not the key's total
    image_layout: str = ImageLayout.AUTO.value  # where new images go (store.shards.choose_layout)
    cache_dir: Path | None = None  # an object store's local side (default under $XDG_CACHE_HOME)
    lease_ttl: float = DEFAULT_TTL_S  # an object store's lease: how long a killed run keeps others out
    upload_interval: float = 2.0  # an object store's ledger: seconds between segment uploads


def resolve_history_url(history_url: str | None, base_url: str | None, sandbox_url: str | None = None) -> str:
    """Where the account's request history is asked. Segmind serves it from its own host; a server
    named by ``--base-url`` (or the in-process sandbox) is taken to serve both, so one emulator
    answers every call, unless ``--history-url`` names another."""
    return (history_url or sandbox_url or base_url or HISTORY_URL).rstrip("/")


@dataclass(frozen=True)
class Prepared:
    manifest: Manifest
    out_dir: Path
    cfg: RunConfig
    groups: dict[str, list[Any]]
    state: L.LedgerState
    warnings: tuple[str, ...]
    ledger_version: object = None  # the ledger files as ``state`` replayed them (app.shards.ledgers_version)
    others: int = 0  # items in the ledger that this manifest does not have
    retry_failed: bool = False  # the plan sends items that failed for good again
    shard: Shard | None = None  # the shard this run does; ``manifest.items`` holds only its items
    all_items: int = 0  # items of the whole manifest (the shard's are ``manifest.items``)
    storage: Storage | None = None  # where the output is (``out_dir`` is its local folder)

    @property
    def where(self) -> str:
        return str(self.out_dir) if self.storage is None else self.storage.display

    @property
    def to_submit(self) -> int:
        return sum(len(self.groups.get(group, ())) for group in TO_SUBMIT)

    def budgeted_submits(self) -> int:
        """How many submits this run may make once budgets are applied."""
        n = self.to_submit
        cfg = self.cfg
        if cfg.max_images is not None:
            done = self.state.submits
            n = min(n, max(0, cfg.max_images - done))
        if cfg.max_cost_usd is not None and cfg.price_usd > 0:
            spent = self.state.spent_usd + self.state.completed_without_cost * cfg.price_usd
            in_flight = len(self.groups["poll"])
            n = min(n, max(0, int((cfg.max_cost_usd - spent + 1e-9) / cfg.price_usd) - in_flight))
        return n


def _positive(name: str, value: float | None, integer: bool = False) -> None:
    if value is None:
        return
    if value <= 0 or (integer and int(value) != value):
        raise UserError(f"{name} must be a positive {'integer' if integer else 'number'}, got {value:g}")


def prepare(opts: RunOptions) -> Prepared:
    """Validate everything the user gave us; raises UserError before any request is made."""
    try:
        manifest = load_manifest(opts.manifest)
    except ManifestError as e:
        raise UserError(str(e)) from None
    shard = resolve_shard(opts.shard_index, opts.shard_count, os.environ)
    _positive("--concurrency", opts.concurrency, integer=True)
    _positive("--rpm", opts.rpm)
    _positive("--price", opts.price)
    if opts.max_images is not None and opts.max_images < 0:
        raise UserError("--max-images must be 0 or more")
    if opts.max_cost is not None and opts.max_cost < 0:
        raise UserError("--max-cost must be 0 or more")
    limits = manifest.limits
    price = opts.price if opts.price is not None else manifest.price_per_image_usd
    warnings = list(manifest.warnings)
    if price is None:
        price = 0.10
        warnings.append(f"no known price for model {manifest.model}: estimating ${price:.2f} per image (set price_usd)")
    cfg = RunConfig(
        slug=manifest.model,
        price_usd=price,
        concurrency=int(opts.concurrency or limits.concurrency or 16),
        rpm=opts.rpm if opts.rpm is not None else limits.rpm,
        rpm_scope=opts.rpm_scope,
        max_images=opts.max_images if opts.max_images is not None else limits.max_images,
        max_cost_usd=opts.max_cost if opts.max_cost is not None else limits.max_cost_usd,
        retention_s=opts.retention,
        expected_latency_s=SANDBOX_LATENCY_S if opts.sandbox else typical_latency_s(manifest.model),
        recovery=_recovery_policy(opts),
        image_layout=choose_layout(opts.image_layout, len(manifest.items)),
    )
    cfg = replace(cfg, retry=replace(cfg.retry, unreachable_after_s=opts.unreachable_after))
    cfg = shard_limits(cfg, shard, rpm_per_shard=opts.rpm_per_shard)
    storage = open_output(opts.out if opts.out is not None else manifest_output(manifest.output), opts.cache_dir)
    sync(storage)
    out_dir = storage.work_dir
    refuse_other_layout(out_dir, shard)
    all_items = len(manifest.items)
    if shard is not None:
        manifest = replace(manifest, items=tuple(it for it in manifest.items if shard.owns(it.id)))
    ledger_path = out_dir / ledger_name(shard)
    try:
        version = ledgers_version(out_dir, shard)
        state = replay_ledgers(out_dir, shard)
    except LedgerCorrupt as e:
        raise UserError(str(e)) from None
    except OSError as e:
        raise UserError(f"{ledger_path}: cannot read the ledger: {e.strerror or e}") from None
    groups = plan(list(manifest.items), state, out_dir / "images", retry_failed=opts.retry_failed,
                  files=storage.files())
    others = _others_in_ledger(manifest, state)
    if others:
        warnings.append(
            f"{storage.display} also holds {others} item(s) that are not in this manifest (another manifest, or "
            "edited prompts or ids); this run leaves them alone and counts them apart"
        )
    return Prepared(manifest, out_dir, cfg, groups, state, tuple(warnings), version, others, opts.retry_failed,
                    shard, all_items, storage)


def _recovery_policy(opts: RunOptions) -> RecoveryPolicy:
    """The documented landing wait, unless told otherwise; the in-process sandbox says its own lag."""
    wait = opts.history_wait
    if wait is None and opts.sandbox and "history_lag" in opts.sandbox_options:
        o = opts.sandbox_options
        wait = float(o["history_lag"]) * float(o.get("time_scale", 1.0)) + 2.0
    if wait is None:
        return RecoveryPolicy()
    _positive("--history-wait", wait)
    return RecoveryPolicy(landing_wait_s=wait)


def _others_in_ledger(manifest: Manifest, state: L.LedgerState) -> int:
    """Items the ledger knows that this manifest does not: a shared or reused folder, an edit."""
    known = state.items
    if len(known) == 0:
        return 0
    # A manifest's ids are unique (build refuses two alike), so the ledger's other items are those
    # it holds beyond the manifest's it knows: no set of 100k ids to build.
    return len(known) - sum(1 for it in manifest.items if it.id in known)


@contextlib.asynccontextmanager
async def service(opts: RunOptions, out_dir: Path) -> AsyncIterator[str]:
    """The base URL to talk to; with --sandbox, an emulator running in this process.

    The emulator keeps its file records under the output folder's cache and listens on the port it
    had last time when it can, so the output URLs a ledger recorded still work on a rerun (a deleted
    image is fetched again, as from the real service, instead of being lost).
    """
    if opts.sandbox:
        from batchgen.sandbox import Sandbox

        shard = resolve_shard(opts.shard_index, opts.shard_count, os.environ)  # each shard its own emulator
        cache = out_dir / ".cache" / ("sandbox" if shard is None else f"sandbox-{shard.name}")
        ensure_dir(cache)
        options = {"latency": SANDBOX_LATENCY_S, "latency_sigma": 0.3, "store_dir": str(cache),
                   **opts.sandbox_options}
        port_file = cache / "port"
        try:
            port = int(port_file.read_text().strip())
        except (OSError, ValueError):
            port = 0
        sb = Sandbox(port=port, **options)
        try:
            await sb.start()
        except OSError:  # the old port is taken: URLs of earlier runs cannot be fetched in this one
            sb = Sandbox(port=0, **options)
            await sb.start()
        try:
            atomic_write_text(port_file, f"{sb.port}\n")
            yield sb.url
        finally:
            await sb.close()
    else:
        yield (opts.base_url or DEFAULT_BASE_URL).rstrip("/")


def start_line(p: Prepared, keys: int = 1) -> str:
    """Said once as a run starts, so a cron log shows at once what it took on (progress waits 30 s)."""
    g = p.groups
    done = len(g["done"]) + len(g["failed"])
    rpm = p.cfg.rpm
    rate = (f"at most {rpm:g} requests/min ({'every request' if p.cfg.rpm_scope == 'all' else 'submits'} counted)"
            if rpm else "rate learned from the service's 429 answers")
    if keys > 1:
        rate = f"{keys} keys, each " + (rate if rpm else "with its rate learned from its 429 answers")
    shard = "" if p.shard is None else f" of {p.all_items} ({p.shard})"
    return (f"starting: {len(p.manifest.items)} items{shard}, {len(p.manifest.items) - done} to do "
            f"({p.to_submit} to submit) -> {p.where}; {rate}")


def describe_plan(p: Prepared) -> list[str]:
    def n_of(group: PlanGroup) -> int:
        return len(p.groups.get(group, ()))

    n = len(p.manifest.items)
    todo = p.budgeted_submits()
    retried = f", retry-failed {n_of(PlanGroup.RETRY_FAILED)}" if p.retry_failed else ""
    failed = n_of(PlanGroup.FAILED)
    lines = [
        f"manifest {p.manifest.path}: {n} items for {p.manifest.model} -> {p.where}"
        + ("" if p.shard is None else f" ({p.shard}: {n} of {p.all_items} items, ledger {ledger_name(p.shard)})")
        + (f" ({p.others} others in the ledger)" if p.others else ""),
        f"  done {n_of(PlanGroup.DONE)}, to submit {p.to_submit} (new {n_of(PlanGroup.PENDING)}, "
        f"changed {n_of(PlanGroup.CHANGED)}, retry {n_of(PlanGroup.RESUBMIT)}{retried}, "
        f"uncertain {n_of(PlanGroup.UNCERTAIN)}), to poll {n_of(PlanGroup.POLL)}, "
        f"to download {n_of(PlanGroup.DOWNLOAD)}, failed for good {failed}"
        + (" (--retry-failed submits them again)" if failed else ""),
        f"  estimated cost ${todo * p.cfg.price_usd:.2f} for {todo} images at ${p.cfg.price_usd:.2f} each"
        + (f" (budget caps it below {p.to_submit})" if todo < p.to_submit else ""),
    ]
    from batchgen.manifest.expand import describe_expansion

    lines.extend(describe_expansion(p.manifest.items, {it.id for it in p.groups[PlanGroup.DONE]}))
    return lines


async def dry_run(opts: RunOptions, say: Callable[[str], None]) -> int:
    p = prepare(opts)
    for w in p.warnings:
        say(f"warning: {w}")
    for line in describe_plan(p):
        say(line)
    secrets = [Secret(k) for k in read_api_keys(os.environ)]
    if secrets and not opts.sandbox:
        async with KeyClients.open(opts.base_url or DEFAULT_BASE_URL, secrets, 8) as keys:
            got = await balances(keys, say)
        need = p.budgeted_submits() * p.cfg.price_usd
        for i, bal in enumerate(got):
            who = "" if len(got) == 1 else f" of {label(secrets, i)}"
            if isinstance(bal, Credits) and len(got) == 1:
                say(f"  balance ${bal.total:.2f}" + ("" if bal.total >= need else f" — short of the ${need:.2f} needed"))
            elif isinstance(bal, Credits):
                say(f"  balance{who} ${bal.total:.2f}")
            elif bal is not None:
                say(f"  balance{who} unknown ({bal})")
        if len(got) > 1 and all(isinstance(b, Credits) or b is None for b in got):
            total = sum(b.total for b in got if isinstance(b, Credits))
            say(f"  balance ${total:.2f} over {len(got)} keys"
                + ("" if total >= need else f" — short of the ${need:.2f} needed"))
    say("dry run: nothing was submitted")
    return 0


async def execute(
    opts: RunOptions,
    say: Callable[[str], None],
    on_start: Callable[[SnapshotSource], None] | None = None,
    *,
    on_second_signal: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    wall: Callable[[], float] = time.time,
) -> RunOutcome:
    """A real run: validate, lock, check the balance, run the pipeline, conclude.

    ``on_start``, ``on_second_signal``, ``clock`` and ``wall`` go to ``engine.root.run_batch``.
    """
    p = prepare(opts)
    secrets = run_secrets(opts.sandbox)
    for w in p.warnings:
        say(f"warning: {w}")
    assert p.storage is not None
    writer = writer_token()
    with hold_output(p.storage, p.shard, folder_lock=folder_lock, lease_ttl=opts.lease_ttl, writer=writer) as guard:
        # Another run may have written the ledger before we got the lock: replay and plan again
        # then, and only then (both take seconds for 100k items).
        if ledgers_version(p.out_dir, p.shard) != p.ledger_version:
            try:
                p = replace(p, state=replay_ledgers(p.out_dir, p.shard))
            except LedgerCorrupt as e:
                raise UserError(str(e)) from None
            p = replace(p, groups=plan(list(p.manifest.items), p.state, p.out_dir / "images",
                                       retry_failed=p.retry_failed, files=p.storage.files()))
        ledger = run_ledger(p.storage, p.shard, p.state, writer)
        async with service(opts, p.out_dir) as base_url:
            async with KeyClients.open(base_url, secrets, max(64, p.cfg.concurrency * 2)) as keys:
                history_url = resolve_history_url(opts.history_url, opts.base_url, base_url if opts.sandbox else None)
                need_n = p.budgeted_submits()
                if need_n > 0:
                    await preflight(keys, need_n, p.cfg.price_usd, opts.spend_available, say)
                try:
                    ledger.open()
                except OSError as e:
                    raise UserError(f"{ledger.path}: cannot open the ledger: {e.strerror or e}", ExitCode.ABORTED) from None
                say(start_line(p, len(secrets)))
                try:
                    return await run_uploading(ledger, guard, lambda: run_batch(
                        p.cfg,
                        list(p.manifest.items),
                        p.out_dir,
                        ledger,
                        keys.pool(history_url),
                        on_start=on_start,
                        on_second_signal=on_second_signal,
                        groups=p.groups,
                        clock=clock,
                        wall=wall,
                        on_warning=lambda message: say(f"warning: {message}"),
                        storage=p.storage,
                    ), lambda message: say(f"warning: {message}"), interval=opts.upload_interval)
                finally:
                    with contextlib.suppress(OSError):
                        ledger.close()
