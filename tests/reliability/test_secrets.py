"""The API keys stay secret through a faulted run and everything made from it; TLS is always verified."""

from __future__ import annotations

import ssl
from pathlib import Path

import anyio
import pytest
from aiohttp import web

from batchgen.api.client import Client, Retryable, Secret
from batchgen.api.deferred_transport import HTTP_ENV, DeferredTransport
from batchgen.api.http11 import Http11Transport
from batchgen.app.keypool import KeyClients
from batchgen.app.runner import RunOptions, execute
from batchgen.cli import commands as cli
from batchgen.engine.config import RunConfig
from batchgen.engine.keys import KeyPool
from tests.support.cli import KEY, run_cli, write_manifest

KEY2 = "SG_second_secret_0987654321"


def assert_key_absent(where: str, data: bytes) -> None:
    for key in (KEY, KEY2):
        assert key.encode() not in data, f"an API key appears in {where}"


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


async def test_key_absent_from_every_output_of_a_faulted_run(tmp_path: Path, sandbox_factory,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    sb = await sandbox_factory(latency=0.1, latency_sigma=0.3, api_key=KEY, fault_seed=5,
                            faults="429=0.05,500=0.1,502=0.05,reset=0.05,lost=0.05,failed=0.1,truncate=0.1")
    manifest = write_manifest(tmp_path / "m.yaml", 8)
    out = tmp_path / "out"
    # A reset submit is looked for in the request history before it is paid again: a short wait here.
    text = await run_cli("run", manifest, "--base-url", sb.url, "--out", out, "--no-progress", "--rpm", "6000",
                         "--summary-json", tmp_path / "summary.json", "--history-wait", "1", within=90)
    assert text.code in (0, 1), text.err
    as_json = await run_cli("run", manifest, "--base-url", sb.url, "--out", out, "--log-format", "json",
                            "--summary-json", tmp_path / "summary2.json", "--history-wait", "1", within=90)
    assert as_json.code in (0, 1), as_json.err
    # The service refusing the key: its complaint is reported, the key is not.
    refused = await run_cli("run", manifest, "--base-url", sb.url, "--out", tmp_path / "out401", "--no-progress",
                            key="SG_" + KEY[::-1], within=30)
    assert refused.code == 3
    assert sb.stats()["faults_injected"], "the run was meant to be faulted"

    # The read-only commands run in this process (one import of the export libraries, not six).
    for argv in (["status", out], ["status", out, "--json"], ["report", out, "--to", tmp_path / "report.html"],
                 ["export", out, "--format", "imagefolder", "--to", tmp_path / "exp-if"],
                 ["export", out, "--format", "webdataset", "--to", tmp_path / "exp-wds"],
                 ["export", out, "--format", "parquet", "--to", tmp_path / "exp.parquet", "--with-images"],
                 ["ledger", "repair", out]):
        code = await anyio.to_thread.run_sync(cli.main, [str(a) for a in argv])
        printed = capsys.readouterr()
        assert code == 0, (argv, printed.err)
        assert_key_absent(f"output of {argv[0]}", (printed.out + printed.err).encode())
    for r in [text, as_json, refused]:
        assert_key_absent("console output", r.raw_out + r.raw_err)
    everything = files_under(tmp_path)
    assert any(p.name == "report.html" for p in everything) and any(p.suffix == ".parquet" for p in everything)
    for p in everything:
        if p.name == "m.yaml":
            continue
        assert_key_absent(str(p), p.read_bytes())


async def test_key_echoed_by_the_service_is_redacted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A gateway that echoes request headers in its error pages must not carry the key into the ledger."""
    async def echo(request: web.Request) -> web.Response:
        return web.Response(status=500, content_type="text/html",
                            text=f"<html><title>500 upstream said: bad key {request.headers.get('x-api-key')}</title></html>")

    async def credits(request: web.Request) -> web.Response:
        return web.json_response({"error": f"key {request.headers.get('x-api-key')} over quota"}, status=503)

    app = web.Application()
    app.router.add_post("/v2/{slug}", echo)
    app.router.add_get("/v1/get-user-credits", credits)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    monkeypatch.setenv("SEGMIND_API_KEY", KEY)
    said: list[str] = []
    try:
        import functools

        from batchgen.app import runner as runner_mod
        from batchgen.engine.config import RetryPolicy, RunConfig
        monkeypatch.setattr(runner_mod, "RunConfig", functools.partial(
            RunConfig, retry=RetryPolicy(backoff_base_s=0.01, submit_retries=1)))
        with anyio.fail_after(30):
            outcome = await execute(RunOptions(manifest=write_manifest(tmp_path / "m.yaml", 2),
                                               out=tmp_path / "out", base_url=url), said.append)
    finally:
        await runner.cleanup()
    assert outcome.exit_code == 1
    ledger = (tmp_path / "out" / "ledger.jsonl").read_bytes()
    assert b"upstream said" in ledger  # the service's message is kept ...
    assert_key_absent("the ledger", ledger)  # ... without the key
    assert_key_absent("messages", "\n".join(said).encode() + repr(outcome).encode())


async def test_no_key_of_a_pool_shows_anywhere(tmp_path: Path, sandbox_factory,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Two keys from a key file, one revoked mid-run, through a faulted run, its resume and every reader."""
    sb = await sandbox_factory(latency=0.1, latency_sigma=0.3, fault_seed=7,
                               faults="429=0.05,500=0.1,reset=0.05,lost=0.05,failed=0.1,truncate=0.1")
    create_job = sb.state.create_job

    def revoke_the_second_after_three(slug: str, key: str, *args: object) -> object:
        job = create_job(slug, key, *args)
        if key == KEY2 and sb.state.keys.counters(KEY2)["submits_accepted"] == 3:
            sb.state.keys.revoke(KEY2)
        return job

    sb.state.create_job = revoke_the_second_after_three  # type: ignore[method-assign]
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text(f"# the team's keys\n{KEY}\n\n{KEY2}\n")
    env = {"SEGMIND_API_KEYS_FILE": str(keys_file)}
    manifest = write_manifest(tmp_path / "m.yaml", 10)
    out = tmp_path / "out"
    runs = [await run_cli("run", manifest, "--base-url", sb.url, "--out", out, "--no-progress", "--rpm", "6000",
                          "--summary-json", tmp_path / "summary.json", "--history-wait", "1",
                          key=None, env=env, within=90)]
    assert sb.state.keys.revoked == {KEY2} and sb.state.keys.stats(KEY2)["submits_accepted"] == 3
    assert "retired for this run" in runs[0].out, runs[0].out
    runs.append(await run_cli("run", manifest, "--base-url", sb.url, "--out", out, "--log-format", "json",
                              "--summary-json", tmp_path / "summary2.json", "--history-wait", "1",
                              key=None, env=env, within=90))
    runs.append(await run_cli("run", manifest, "--base-url", sb.url, "--out", out, "--dry-run", key=None, env=env))
    for r in runs:
        assert r.code in (0, 1), r.err
        assert_key_absent("console output", r.raw_out + r.raw_err)
    for argv in (["status", out], ["status", out, "--json"], ["report", out, "--to", tmp_path / "report.html"],
                 ["ledger", "repair", out]):
        code = await anyio.to_thread.run_sync(cli.main, [str(a) for a in argv])
        printed = capsys.readouterr()
        assert code == 0, (argv, printed.err)
        assert_key_absent(f"output of {argv[0]}", (printed.out + printed.err).encode())
    for p in files_under(tmp_path):
        if p != keys_file:
            assert_key_absent(str(p), p.read_bytes())
    # The ledger names the keys by fingerprint only.
    ledger = (out / "ledger.jsonl").read_text()
    assert Secret(KEY).fingerprint in ledger and Secret(KEY2).fingerprint in ledger


async def test_the_pool_objects_never_show_a_key() -> None:
    secrets = [Secret(KEY), Secret(KEY2)]
    async with KeyClients.open("https://api.segmind.com", secrets, 2) as keys:
        pool = keys.pool("https://api.spotprod.segmind.com")
        engine = KeyPool(pool, RunConfig(slug="test-model", price_usd=0.1))
        texts = [repr(keys), repr(pool), repr(engine.slots), *(s.label for s in engine.slots),
                 repr([c.at("https://elsewhere.example") for c in keys.clients])]
        texts += [repr(p.history(None)) for p in pool if p.history is not None]
    for text in texts:
        assert KEY not in text and KEY2 not in text, text


def test_repr_and_str_never_show_the_key() -> None:
    s = Secret(KEY)
    c = Client("https://api.segmind.com", s)
    for text in (repr(s), str(s), f"{s}", repr(c), str(c), repr(vars(c))):
        assert KEY not in text, text


@pytest.mark.parametrize("choice", ["http11", "aiohttp"])
async def test_tls_verification_stays_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, choice: str) -> None:
    """A server with a self-signed certificate is refused: nothing, key included, reaches it."""
    monkeypatch.setenv(HTTP_ENV, choice)
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    made = await anyio.run_process(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                                    "-keyout", str(key), "-out", str(cert)], check=False)
    if made.returncode != 0:
        pytest.skip("openssl cannot make a test certificate here")
    seen: list[str] = []

    async def credits(request: web.Request) -> web.Response:
        seen.append(request.headers.get("x-api-key", ""))
        return web.json_response({"credits": 1.0, "free-credits": 0})

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    app = web.Application()
    app.router.add_get("/v1/get-user-credits", credits)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with Client(f"https://127.0.0.1:{port}", Secret(KEY)) as client:
            transport = client.transport
            assert isinstance(transport, DeferredTransport)
            real = transport.real()
            if isinstance(real, Http11Transport):
                tls = real.ssl_context
                assert tls.verify_mode == ssl.CERT_REQUIRED and tls.check_hostname, "TLS verification disabled"
            else:
                assert client.session.connector is not None
                assert getattr(client.session.connector, "_ssl", True) not in (False,), "TLS verification disabled"
            got = await client.credits()
    finally:
        await runner.cleanup()
    assert isinstance(got, Retryable), got
    assert seen == [], "a request reached a server whose certificate does not verify"
