"""`relay demo`: a summary table, plain lines when piped, and a clean stop on SIGTERM / Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from relay.cli import main
from tests.unit.tty import run_in_tty

RELAY = str(Path(sys.executable).with_name("relay"))


def test_demo_prints_its_summary_as_a_table(capsys):
    assert main(["demo", "--orders", "4"]) == 0
    out = capsys.readouterr().out
    assert "factories acme and bolt (webhook)" in out
    assert "{" not in out  # no Python dict
    lines = out.split("\nsummary\n", 1)[1].splitlines()
    assert lines[0].split() == ["got", "expected"]
    assert lines[1].split() == ["orders", "completed", "4", "4"]
    assert lines[-1] == "OK: every order reached its factory exactly once and got tracking back (4 orders)"
    progress = [line for line in out.split("\nsummary\n", 1)[0].splitlines() if line.startswith("  ")]
    assert progress[-1] == "  completed=4"  # plain lines when not a terminal


def test_demo_on_a_terminal_shows_a_progress_bar_and_a_rich_table():
    code, shown = run_in_tty([RELAY, "demo", "--orders", "4"])
    assert code == 0
    assert "orders completed" in shown and "━" in shown and "4/4" in shown  # the progress bar
    assert "┏" in shown and "┃" in shown and "storefront fulfilments" in shown  # the summary table
    assert "OK: every order reached its factory exactly once" in shown


def test_an_unknown_fake_is_one_line(capsys):
    assert main(["demo", "--storefront", "magento"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no fake storefront for 'magento'" in err


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_demo_stops_cleanly_on_a_signal(tmp_path, sig, code):
    """Stopped while it runs: no traceback, its temporary database removed, 128 + the signal."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen(
        [RELAY, "demo", "--orders", "3000", "--timeout", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp)},
    )
    assert proc.stdout is not None and proc.stderr is not None
    started = proc.stdout.readline()  # printed once the fakes run and the database is in place
    assert started.startswith("relay demo: 3000 orders"), started
    assert [p.name for p in tmp.iterdir()] != []  # its temporary directory exists while it runs
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == code
    err = [line for line in proc.stderr.read().splitlines() if not line.startswith("{")]
    proc.stdout.close()
    proc.stderr.close()
    assert err == [f"relay demo: stopped by {sig.name}"]
    assert list(tmp.iterdir()) == []
