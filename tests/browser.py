"""Real-browser helpers for the dashboard tests: the dashboard served on 127.0.0.1 by
`rlhf dashboard`, and Debian's headless chromium (`make system-deps`) driven by Playwright.
Playwright's own browser download is never used.

    with dashboard_server(tmp_path) as server, chromium_page() as page:
        open_app(page, server.url)
        click_nav(page, "Rank")          # a sidebar (or top) navigation link, by its label
        page.get_by_role("button", name="Submit").click()
        wait_until_idle(page)            # Streamlit finished the rerun
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM = Path("/usr/bin/chromium")
# The --disable-*-networking/update/sync flags keep chromium's own connections off a closed
# network, which refuses them; --disable-dev-shm-usage because containers often have a small
# /dev/shm (Debian's launcher would add it, but its check of /dev/shm fails in some containers).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
ON_CI = os.environ.get("CI", "").lower() not in ("", "0", "false")
STARTUP_TIMEOUT = 60.0  # seconds for the server to answer its health check
TIMEOUT_MS = 30_000  # Playwright's default for every wait and action
FIRST_RUN_TIMEOUT_MS = 90_000  # the first run of a page may import torch on a busy machine


def require_chromium() -> None:
    """Skip when /usr/bin/chromium is missing, except on CI (env CI set), where that fails."""
    if CHROMIUM.exists():
        return
    import pytest  # here, so that dashboard/screenshots.py runs without pytest

    message = f"{CHROMIUM} is missing; `make system-deps` installs Debian's chromium"
    if ON_CI:
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    """A TCP port nothing listens on at the moment (on 127.0.0.1)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a TCP socket listening on `port` (from /proc/net, Linux)."""
    found = set()
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        if not os.path.exists(table):
            continue
        with open(table) as f:
            next(f)  # header
            for line in f:
                fields = line.split()
                address, hex_port = fields[1].split(":")
                if fields[3] != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                    continue
                raw = bytes.fromhex(address)
                # /proc prints each 32-bit word in host (little-endian) order
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, width, 4))
                family = socket.AF_INET if width == 4 else socket.AF_INET6
                found.add(socket.inet_ntop(family, raw))
    return found


@dataclass
class DashboardServer:
    url: str  # http://127.0.0.1:<port>
    port: int
    process: subprocess.Popen
    log: Path  # the server's stdout and stderr (deleted when the server stops)
    final_output: str | None = None  # what the log held when the server stopped

    def output(self) -> str:
        """The server's output so far (after the block: all of it)."""
        if self.final_output is not None:
            return self.final_output
        return self.log.read_text(errors="replace")


@contextmanager
def dashboard_server(
    workspace: Path,
    port: int | None = None,
    timeout: float = STARTUP_TIMEOUT,
    env: dict[str, str] | None = None,
) -> Iterator[DashboardServer]:
    """`rlhf dashboard --port P --workspace W` until the block ends; yields once
    /_stcore/health answers "ok". `env` adds to the server's environment (STREAMLIT_* options,
    say). The server runs in its own process group, which is ended at exit (SIGTERM, then
    SIGKILL after 10 s)."""
    port = port or free_port()
    command = [sys.executable, "-m", "rlhf.cli", "dashboard", "--port", str(port)]
    command += ["--workspace", str(workspace)]
    env = {
        **os.environ,
        **(env or {}),
        # cmd_dashboard passes no --server.headless: without it Streamlit opens a browser
        # tab whenever DISPLAY is set. The environment variable does what the flag would.
        "STREAMLIT_SERVER_HEADLESS": "true",
        "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
        "STREAMLIT_SERVER_FILE_WATCHER_TYPE": "none",  # no reruns on edits, no polling
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    with tempfile.TemporaryDirectory(prefix="rlhf-dashboard-") as tmp:
        log = Path(tmp) / "server.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                command,
                cwd=Path(__file__).resolve().parents[1],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = DashboardServer(f"http://127.0.0.1:{port}", port, process, log)
        try:
            _wait_healthy(server, timeout)
            yield server
        finally:
            _stop(process)
            server.final_output = server.output()


def _wait_healthy(server: DashboardServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"the dashboard exited with code {server.process.returncode} before answering; "
                f"its output:\n{server.output()}"
            )
        try:
            with urllib.request.urlopen(f"{server.url}/_stcore/health", timeout=2) as response:
                body = response.read().decode(errors="replace").strip()
            if body == "ok":
                return
            last_error = f"health check answered {body!r}"
        except (urllib.error.URLError, OSError) as e:
            last_error = str(e)
        time.sleep(0.25)
    raise RuntimeError(
        f"the dashboard did not answer {server.url}/_stcore/health within {timeout:.0f} s "
        f"({last_error}); its output:\n{server.output()}"
    )


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the whole group (`rlhf dashboard` runs streamlit as a child), then SIGKILL to
    whatever of it is left after 10 s."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        process.poll()  # reap the leader, or the group never empties
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


@contextmanager
def chromium_page(width: int = 1400, height: int = 1000) -> Iterator[Page]:
    """A Playwright page in a fresh headless /usr/bin/chromium, closed at exit. Wide enough
    that Streamlit keeps its sidebar open."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(TIMEOUT_MS)
            yield page
        finally:
            browser.close()


# ------------------------------------------------------------------ driving Streamlit


def wait_until_idle(page: Page, timeout_ms: int = TIMEOUT_MS, settle_ms: int = 300) -> None:
    """Wait until the app is connected and no script runs: stApp reports CONNECTED and
    notRunning, and the status widget ("Running...") is gone. A click starts a rerun only
    after a round trip to the server, so first give it `settle_ms` to begin; on a loaded
    machine that may not be enough, so check what the rerun shows with a waiting locator
    (`locator.wait_for()` or playwright's `expect`) rather than a one-shot read."""
    page.wait_for_timeout(settle_ms)
    page.wait_for_selector(
        '[data-testid="stApp"][data-test-connection-state="CONNECTED"]',
        state="attached",
        timeout=timeout_ms,
    )
    page.wait_for_selector(
        '[data-testid="stApp"][data-test-script-state="notRunning"]',
        state="attached",
        timeout=timeout_ms,
    )
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="detached", timeout=timeout_ms)


def open_app(page: Page, url: str, path: str = "", timeout_ms: int = FIRST_RUN_TIMEOUT_MS) -> None:
    """Load the app (or the page at url_path `path`, e.g. "rank") and wait for its first run."""
    page.goto(f"{url}/{path.lstrip('/')}", wait_until="domcontentloaded", timeout=timeout_ms)
    page.locator('[data-testid="stApp"]').wait_for(state="attached", timeout=timeout_ms)
    wait_until_idle(page, timeout_ms)


def nav_link(page: Page, label: str):
    """The navigation link labelled exactly `label`, in the sidebar or the top bar."""
    links = page.locator('[data-testid="stSidebarNavLink"], [data-testid="stTopNavLink"]')
    return links.filter(has=page.get_by_text(label, exact=True))


def click_nav(page: Page, label: str, timeout_ms: int = FIRST_RUN_TIMEOUT_MS) -> None:
    """Go to the page whose navigation link reads `label` and wait for it to finish running.
    (st.navigation shows no links while the app has a single page.)"""
    link = nav_link(page, label)
    link.first.click(timeout=timeout_ms)
    wait_until_idle(page, timeout_ms)


def exceptions(page: Page) -> list[str]:
    """The text of every exception box (st.exception / an uncaught error) on the page."""
    return page.locator('[data-testid="stException"]').all_inner_texts()


@contextmanager
def explained(page: Page, server: DashboardServer, screenshot: Path) -> Iterator[None]:
    """On a failure inside the block: save a screenshot to `screenshot` and fail with the
    error, the exception boxes on the page and the server's output."""
    try:
        yield
    except Exception as e:
        with suppress(Exception):
            page.screenshot(path=str(screenshot), full_page=True)
        boxes = "\n".join(exceptions(page)) if not page.is_closed() else ""
        raise AssertionError(
            f"{type(e).__name__}: {e}\nscreenshot: {screenshot}\n"
            f"exceptions on the page:\n{boxes or '(none)'}\nserver output:\n{server.output()}"
        ) from e


@contextmanager
def app_in_chromium(workspace: Path, failure_png: Path) -> Iterator[Page]:
    """`rlhf dashboard` on `workspace` with its home page open in chromium; a failure inside
    the block is explained (screenshot to `failure_png`, exception boxes, server output)."""
    with (
        dashboard_server(workspace) as server,
        chromium_page() as page,
        explained(page, server, failure_png),
    ):
        open_app(page, server.url)
        yield page


def is_png(path: Path) -> bool:
    return path.stat().st_size > 8 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
