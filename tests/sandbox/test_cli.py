"""``batchgen sandbox`` as a process: announces its URL, serves, stops cleanly on SIGINT."""

import json
import signal
import socket
import subprocess
import sys
import urllib.request


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serves_and_stops_on_sigint() -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "batchgen",
            "sandbox",
            "--port",
            str(port),
            "--latency",
            "0.1",
            "--api-key",
            "sekrit",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line == f"batchgen sandbox listening on http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_sandbox/stats", timeout=5) as r:
            stats = json.load(r)
        assert stats["submits_accepted"] == 0
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert "Traceback" not in err
    assert "sekrit" not in out + err


def test_bad_faults_spec_exits_2_with_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "batchgen", "sandbox", "--faults", "429=0.1,explode=0.5"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "explode" in lines[0]
    assert "Traceback" not in proc.stderr


def test_bad_number_exits_2_with_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "batchgen", "sandbox", "--time-scale", "0"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "--time-scale" in proc.stderr
