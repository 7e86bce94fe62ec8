"""``batchgen sandbox``: serve the emulator until SIGINT/SIGTERM.

Flag mistakes end with one line on stderr and exit code 2, like every other batchgen error, so a
script that starts the sandbox can tell a typo from a crash.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import NoReturn

from batchgen.sandbox.faults import FAULT_KINDS
from batchgen.sandbox.server import Sandbox
from batchgen.sandbox.state import SandboxConfig

__all__ = ["add_sandbox_arguments", "config_from_args", "serve_from_args"]


def _one_line_error(parser: argparse.ArgumentParser) -> None:
    def error(message: str) -> NoReturn:
        print(f"{parser.prog}: error: {message}", file=sys.stderr, flush=True)
        sys.exit(2)

    parser.error = error  # type: ignore[method-assign]


def add_sandbox_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of section 2.4; durations are service seconds, multiplied by ``--time-scale``."""
    _one_line_error(parser)
    d = SandboxConfig()
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=8765, help="TCP port, 0 for any free one (default: %(default)s)"
    )
    parser.add_argument(
        "--latency",
        type=float,
        default=d.latency,
        help="mean generation time in seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--latency-sigma",
        type=float,
        default=d.latency_sigma,
        help="log-normal spread of the latency (default: %(default)s)",
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=d.time_scale,
        help="multiplies latency, retention and rate window (default: %(default)s)",
    )
    parser.add_argument(
        "--retention",
        type=float,
        default=d.retention,
        help="request record lifetime from submission (default: %(default)s)",
    )
    parser.add_argument(
        "--file-retention",
        type=float,
        default=d.file_retention,
        help="output file lifetime from submission (default: %(default)s)",
    )
    parser.add_argument(
        "--rpm", type=int, default=None, help="requests per minute per key (default: unlimited)"
    )
    parser.add_argument(
        "--rpm-scope",
        choices=("submit", "all"),
        default=d.rpm_scope,
        help="which requests count against --rpm",
    )
    parser.add_argument(
        "--rpm-window", choices=("fixed", "sliding"), default=d.rpm_window, help="rate window kind"
    )
    parser.add_argument("--retry-after", action="store_true", help="add Retry-After (seconds) to 429 answers")
    parser.add_argument(
        "--credits", type=float, default=d.credits, help="starting balance in USD (default: %(default)s)"
    )
    parser.add_argument(
        "--price", type=float, default=None, help="USD charged per COMPLETED job (default: the model's price)"
    )
    parser.add_argument("--api-key", default=None, help="the only key accepted (default: any non-empty key)")
    parser.add_argument(
        "--faults",
        default=None,
        metavar="SPEC",
        help=f"e.g. 429=0.2,reset=0.02; kinds: {', '.join(FAULT_KINDS)}",
    )
    parser.add_argument(
        "--fault-seed", type=int, default=None, help="seed that makes faults and latencies repeatable"
    )
    parser.add_argument(
        "--slow-seconds",
        type=float,
        default=d.slow_seconds,
        help="delay of a 'slow' fault, scaled (default: %(default)s)",
    )
    parser.add_argument(
        "--output-shape",
        choices=("list", "string", "object"),
        default=d.output_shape,
        help="form of the result's 'output'",
    )
    _add_history_arguments(parser, d)


_HISTORY_EPILOG = (
    "Request history: GET /inference-request/request-history (page, per_page 1-100, from_date/to_date "
    "YYYY-MM-DD at most 31 days apart, default the last 7 days, model_name, status, sort_by, sort_order; "
    'answers {"data": [...], "page", "per_page", "total"}) and GET /inference-request/request-history/ID '
    "(the caller's own requests, any age) are served on the same host as the v2 API, with the same key "
    "and faults; they count against --rpm when --rpm-scope is all, like status polls. The history trails the service by --history-lag: before a record "
    "lands the list leaves it out and the single-request endpoint answers with every field but request_id "
    "null; a row is PENDING until the lag has passed after its request finished."
)


def _add_history_arguments(parser: argparse.ArgumentParser, d: SandboxConfig) -> None:
    parser.epilog = _HISTORY_EPILOG
    g = parser.add_argument_group("request history")
    g.add_argument(
        "--history",
        choices=("on", "off"),
        default="on" if d.history else "off",
        help="serve the request-history endpoints; off makes both answer 404 (default: %(default)s)",
    )
    g.add_argument(
        "--history-lag",
        type=float,
        default=d.history_lag,
        metavar="SECONDS",
        help="how far the history trails the service, scaled (default: %(default)s)",
    )
    g.add_argument(
        "--history-outputs",
        type=int,
        default=d.history_outputs,
        metavar="N",
        help="rows per COMPLETED request in the list, each with the full cost (default: %(default)s)",
    )
    g.add_argument(
        "--history-body",
        choices=("object", "string"),
        default=d.history_body,
        help="request_body as a JSON object or as the JSON text received (default: %(default)s)",
    )
    g.add_argument(
        "--history-dates",
        choices=("iso", "http"),
        default=d.history_dates,
        help="created_at/updated_at as ISO 8601 or HTTP-date (default: %(default)s)",
    )
    parser.add_argument(
        "--store",
        metavar="DIR",
        help="keep a small record of every completed file in DIR, so a restarted emulator still serves "
        "the output URLs of an earlier one (default: files live as long as the process)",
    )


def config_from_args(args: argparse.Namespace) -> SandboxConfig:
    """Raises ``ValueError`` with a one-line message for values argparse cannot judge alone."""
    return SandboxConfig(
        latency=args.latency,
        latency_sigma=args.latency_sigma,
        time_scale=args.time_scale,
        retention=args.retention,
        file_retention=args.file_retention,
        rpm=args.rpm,
        rpm_scope=args.rpm_scope,
        rpm_window=args.rpm_window,
        credits=args.credits,
        price=args.price,
        api_key=args.api_key,
        faults=args.faults,
        fault_seed=args.fault_seed,
        retry_after=args.retry_after,
        slow_seconds=args.slow_seconds,
        output_shape=args.output_shape,
        history=args.history == "on",
        history_lag=args.history_lag,
        history_outputs=args.history_outputs,
        history_body=args.history_body,
        history_dates=args.history_dates,
        store_dir=args.store,
    )


async def _serve(sb: Sandbox) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with sb:
        print(f"batchgen sandbox listening on {sb.url}", flush=True)
        await stop.wait()


def serve_from_args(args: argparse.Namespace) -> int:
    """Exit code: 0 after a clean stop by signal, 2 for bad flags or a port that cannot be bound."""
    try:
        config = config_from_args(args)
    except ValueError as exc:
        message = str(exc)
        field, _, rest = message.partition(" ")
        if field in vars(args) or field == "faults":
            message = f"--{field.replace('_', '-')} {rest}"
        print(f"batchgen sandbox: error: {message}", file=sys.stderr, flush=True)
        return 2
    if not 0 <= args.port <= 65535:
        print(
            f"batchgen sandbox: error: --port must be 0-65535, got {args.port}", file=sys.stderr, flush=True
        )
        return 2
    sb = Sandbox(config, host=args.host, port=args.port)
    try:
        asyncio.run(_serve(sb))
    except OSError as exc:
        print(
            f"batchgen sandbox: error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        pass
    return 0
