"""Run a command with its stdout on a pseudo-terminal, as a person at a terminal would."""

from __future__ import annotations

import os
import pty
import subprocess


def run_in_tty(argv: list[str], *, columns: int = 120, timeout: float = 60) -> tuple[int, str]:
    """Run `argv` with stdout on a fresh pseudo-terminal (stderr discarded); its exit code and what it
    showed on the terminal."""
    main_fd, child_fd = pty.openpty()
    proc = subprocess.Popen(
        argv, stdout=child_fd, stderr=subprocess.DEVNULL, env={**os.environ, "COLUMNS": str(columns)}
    )
    os.close(child_fd)
    chunks = []
    while True:
        try:
            chunk = os.read(main_fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main_fd)
    return proc.wait(timeout=timeout), b"".join(chunks).decode(errors="replace")
