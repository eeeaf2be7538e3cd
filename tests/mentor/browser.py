"""Real headless Chromium for the mentor-page tests (Debian ``chromium`` driven by Playwright).

Nothing downloads a browser: Playwright launches ``/usr/bin/chromium`` (installed by
``make install``) through ``executable_path``. Fake media devices stand in for the mentor's
microphone; loopback ICE candidates are allowed so WebRTC runs on 127.0.0.1 only.

Fixtures (made available to tests/mentor by its conftest.py):
``chromium`` (one browser per test module), ``static_origin`` (a 127.0.0.1 HTTP server serving
mentor/static/ under /static/, for the tests of the page's pure modules).
"""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
STATIC_DIR = Path(__file__).resolve().parents[2] / "mentor" / "static"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--ignore-certificate-errors",
]


def launch_chromium(playwright, extra_args: tuple[str, ...] = ()) -> Browser:
    """Launch the system Chromium headless with the WebRTC-on-loopback flags."""
    if not CHROMIUM.exists():
        raise FileNotFoundError(f"{CHROMIUM}: not found; run `make install` (Debian chromium)")
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=[*CHROMIUM_ARGS, *extra_args])


def new_page(browser: Browser, *, width: int = 1280, height: int = 900) -> Page:
    """A page in a fresh context whose console errors and uncaught exceptions are collected.

    ``page.errors`` (list of str) holds them; tests assert it stays empty.
    """
    context = browser.new_context(viewport={"width": width, "height": height},
                                  ignore_https_errors=True)
    page = context.new_page()
    errors: list[str] = []

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            errors.append(f"console: {msg.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.errors = errors  # type: ignore[attr-defined]
    return page


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """One headless Chromium per test module."""
    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            yield browser
        finally:
            browser.close()


class PageHandler(http.server.SimpleHTTPRequestHandler):
    """Files for a test page, plus one HTML body (``index_html``) at ``index_paths``; quiet."""

    index_paths: tuple[str, ...] = ("/",)
    index_html = b"<!doctype html><html><head><link rel='icon' href='data:,'></head></html>"

    def do_GET(self) -> None:
        if self.path in self.index_paths:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(self.index_html)))
            self.end_headers()
            self.wfile.write(self.index_html)
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


class _StaticHandler(PageHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".js": "text/javascript", ".css": "text/css", ".html": "text/html"}
    index_paths = ("/", "/blank")
    index_html = (b"<!doctype html><html><head><link rel='icon' href='data:,'></head>"
                  b"<body><canvas id='c'></canvas></body></html>")

    def translate_path(self, path: str) -> str:
        path = path.split("?", 1)[0].split("#", 1)[0]
        if path.startswith("/static/"):
            return str(STATIC_DIR / path.removeprefix("/static/"))
        return str(STATIC_DIR / "__none__")


@pytest.fixture(scope="module")
def static_origin() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` serving mentor/static/ under /static/ and a blank page at /."""
    handler = functools.partial(_StaticHandler, directory=str(STATIC_DIR))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class ServerThread:
    """A real :class:`~scrubin.mentor.server.MentorServer` on 127.0.0.1 in its own thread/loop.

    ``call(coro_fn, *args)`` runs a coroutine function on the server's loop and returns its
    result; ``new_session()`` makes a session and returns its tokens by role.
    """

    def __init__(self, state_dir: Path) -> None:
        import asyncio

        from scrubin.mentor.server import MentorServer, ServerConfig

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = MentorServer(ServerConfig(db=state_dir / "mentor.db", host="127.0.0.1",
                                                port=0, grpc_port=0,
                                                ice_hosts=["127.0.0.1"]))
        self.call(self.server.start)

    def call(self, fn, *args, timeout: float = 30.0):
        import asyncio

        return asyncio.run_coroutine_threadsafe(fn(*args), self.loop).result(timeout)

    def db(self, fn, *args):
        """Run a Store method on the server's loop (the store's own thread discipline)."""
        async def run():
            return await self.server.hub.db(fn, *args)
        return self.call(run)

    @property
    def url(self) -> str:
        return self.server.url

    def new_session(self) -> tuple[str, dict[str, str]]:
        made = self.db(self.server.hub.store.new_session, False, "test")
        return made.session_id, made.tokens

    def events(self, session_id: str) -> list[tuple[int, dict]]:
        return self.db(self.server.hub.store.events_after, session_id, 0)

    def stop(self) -> None:
        self.call(self.server.stop)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def mentor_server(tmp_path_factory) -> Iterator[ServerThread]:
    """A real mentoring server (HTTPS + WebSocket + gRPC, self-signed TLS) on 127.0.0.1."""
    server = ServerThread(tmp_path_factory.mktemp("mentor-server"))
    try:
        yield server
    finally:
        server.stop()
