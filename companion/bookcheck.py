"""Open every page of the built book in headless Chromium and report what a reader would see broken.

The HTML folder is served on 127.0.0.1 (a free port); Chromium is driven through its DevTools protocol with a
small standard-library websocket client. A page fails on: an uncaught JavaScript exception or console error,
a request that fails or answers >= 400 (except the browser's own /favicon.ico probe), an image that did not
decode, an internal link whose #fragment is not an id on the target page, a visible code or text block that
scrolls sideways, a table or figure wider than the text column, a figure without a caption or shown below
``MIN_FIGURE_SCALE`` of its drawn width, and a front page over ``FRONT_PAGE_MAX_WORDS`` words
(:func:`layout_problems`). Each page is also screenshotted (for a person to look at).

Before the browser starts, :func:`check_links` reads every ``<a href>`` of every page from the HTML files: a link
must stay in the book (relative, naming a file of the build) or be one of ``ALLOWED_EXTERNAL``; any other
``http(s):``/``mailto:``/... link, and any internal link to a missing file, is a problem. The book is read offline,
so a link that leaves it is either dead to its reader or a citation, and citations are few and deliberate.
``python -m companion.bookcheck book/_build/html`` prints one line per problem (``--links-only``: no browser).
"""

from __future__ import annotations

import argparse
import base64
import functools
import html.parser
import http.server
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

__all__ = ["ALLOWED_EXTERNAL", "CHROMIUM_FLAGS", "find_chromium", "serve", "Chromium", "check_links",
           "check_site", "main"]

# The only links that may leave the book: the arXiv pages of the works its references page cites.
ALLOWED_EXTERNAL = frozenset(f"https://arxiv.org/abs/{paper}" for paper in (
    "2512.05865", "2411.06890", "1810.00597", "2406.04558", "2310.10348", "2403.17806", "2304.14997", "2211.00593",
    "2305.00586", "2209.11895"))
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
)
_SKIP_DIRS = {"_static", "_sources", "_images"}


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise FileNotFoundError("chromium not found: run `make chromium` (apt-get install -y chromium, as root)")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """The browser drops connections it no longer needs when it navigates: not an error of the book."""
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


@contextmanager
def serve(folder: Path) -> Iterator[str]:
    """Serve ``folder`` on 127.0.0.1 at a free port; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class _WebSocket:
    """Just enough of RFC 6455 for DevTools: masked text frames out, (fragmented) text frames in."""

    def __init__(self, url: str, timeout: float):
        parsed = urllib.parse.urlparse(url)
        self.sock = socket.create_connection((parsed.hostname, parsed.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (f"GET {parsed.path} HTTP/1.1\r\nHost: {parsed.hostname}:{parsed.port}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("devtools closed the websocket handshake")
            head += chunk
        status_line = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status_line:
            raise ConnectionError(f"devtools refused the websocket: {status_line!r}")
        self.buffer = head.split(b"\r\n\r\n", 1)[1]

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buffer)))
            if not chunk:
                raise ConnectionError("devtools closed the websocket")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def send(self, text: str) -> None:
        payload = text.encode()
        header = bytearray([0x81])
        if len(payload) < 126:
            header.append(0x80 | len(payload))
        elif len(payload) < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", len(payload))
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", len(payload))
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes(header) + mask + masked)

    def _send_control(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        self.sock.sendall(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask
                          + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def recv(self) -> str:
        message = b""
        while True:
            first, second = self._read(2)
            length = second & 0x7F
            if length == 126:
                length = struct.unpack(">H", self._read(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self._read(8))[0]
            mask = self._read(4) if second & 0x80 else None
            payload = self._read(length)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            opcode = first & 0x0F
            if opcode == 0x9:
                self._send_control(0xA, payload)
                continue
            if opcode == 0x8:
                raise ConnectionError("devtools closed the websocket")
            if opcode in (0x0, 0x1, 0x2):
                message += payload
                if first & 0x80:
                    return message.decode()

    def close(self) -> None:
        try:
            self._send_control(0x8, b"")
        except OSError:
            pass
        self.sock.close()


class Chromium:
    """A headless Chromium with a fresh profile, driven over DevTools (one page target)."""

    def __init__(self, executable: str | None = None, timeout: float = 30.0):
        self.timeout = timeout
        self.profile_dir = tempfile.mkdtemp(prefix="spartan-chromium-")
        self.process = subprocess.Popen(
            [executable or find_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={self.profile_dir}",
             "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1", "--window-size=1280,900",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            port = self._devtools_port()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=timeout) as response:
                targets = json.load(response)
            page = next(t for t in targets if t.get("type") == "page")
            self.ws = _WebSocket(page["webSocketDebuggerUrl"], timeout)
        except BaseException:
            self.close()
            raise
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")

    def _devtools_port(self) -> int:
        marker = Path(self.profile_dir) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"chromium exited with status {self.process.returncode} at start")
            if marker.exists() and marker.read_text().strip():
                return int(marker.read_text().split()[0])
            time.sleep(0.1)
        raise TimeoutError("chromium did not open its DevTools port")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command and wait for its answer; events that arrive meanwhile are kept in ``events``."""
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error'].get('message')}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def wait_for(self, event: str, timeout: float | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + (timeout or self.timeout)
        for index, message in enumerate(self.events):
            if message["method"] == event:
                return self.events.pop(index)
        while time.monotonic() < deadline:
            message = json.loads(self.ws.recv())
            if message.get("method") == event:
                return message
            if "method" in message:
                self.events.append(message)
        raise TimeoutError(f"no {event} within {timeout or self.timeout} s")

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"evaluate failed: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.profile_dir, ignore_errors=True)


_PAGE_FACTS = """(() => ({
  images: Array.from(document.images).map(i => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0})),
  links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
  title: document.title,
  textLength: document.body ? document.body.innerText.length : 0,
  wide: Array.from(document.querySelectorAll('article pre, .bd-article pre'))
    .filter(p => p.offsetParent !== null && p.scrollWidth > p.clientWidth + 1)
    .map(p => (p.textContent.split('\\n').sort((a, b) => b.length - a.length)[0] || '').trim().slice(0, 60)),
  column: (() => {
    const a = document.querySelector('article.bd-article');
    if (!a) return 0;
    const style = getComputedStyle(a);
    return a.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  })(),
  tables: Array.from(document.querySelectorAll('article table'))
    .filter(t => t.offsetParent !== null && !t.closest('table table'))
    .map(t => ({width: Math.round(t.getBoundingClientRect().width),
                head: (t.rows[0] ? t.rows[0].innerText : '').replace(/\\s+/g, ' ').trim().slice(0, 60)})),
  figures: Array.from(document.querySelectorAll('article img'))
    .filter(i => i.offsetParent !== null && i.naturalWidth > 0 && !i.closest('.sd-badge, .sd-card-header'))
    .map(i => {
      const figure = i.closest('figure');
      const caption = figure ? figure.querySelector('figcaption') : null;
      const src = i.getAttribute('src') || '';
      return {src: src.startsWith('data:') ? (i.alt || 'an inline image').slice(0, 60) : src.split('/').pop(),
              shown: i.getBoundingClientRect().width,
              natural: i.naturalWidth, caption: caption ? caption.innerText.trim() : ''};
    }),
  words: (document.querySelector('article.bd-article') || document.body).innerText.split(/\\s+/)
    .filter(w => /\\w/.test(w)).length,
}))()"""

# What a reader of the 1280 px page must be able to read without scrolling sideways or zooming.
FRONT_PAGE = "intro.html"
FRONT_PAGE_MAX_WORDS = 1200
MIN_FIGURE_SCALE = 0.6  # a figure shown below this fraction of its drawn width has labels too small to read


def layout_problems(page: str, facts: dict[str, Any]) -> list[str]:
    """A table or figure wider than the text column, a figure without a caption or shown too small to read, and a
    front page too long to read as one: what the page facts (``_PAGE_FACTS``) of ``page`` show."""
    problems = []
    column = facts.get("column") or 0
    for table in facts.get("tables", []):
        if column and table["width"] > column + 1:
            problems.append(f"{page}: a table is {table['width']} px wide in a {round(column)} px column "
                            f"(first row {table['head']!r})")
    for figure in facts.get("figures", []):
        if column and figure["shown"] > column + 1:
            problems.append(f"{page}: a figure is {round(figure['shown'])} px wide in a {round(column)} px column "
                            f"({figure['src']})")
        if not figure["caption"]:
            problems.append(f"{page}: a figure has no caption ({figure['src']})")
        scale = figure["shown"] / figure["natural"]
        if scale < MIN_FIGURE_SCALE:
            problems.append(f"{page}: a figure is shown at {scale:.0%} of its drawn width ({figure['src']})")
    if page == FRONT_PAGE and facts.get("words", 0) > FRONT_PAGE_MAX_WORDS:
        problems.append(f"{page}: the front page has {facts['words']} words (at most {FRONT_PAGE_MAX_WORDS})")
    return problems


def _pages(html_dir: Path) -> list[str]:
    return sorted(
        p.relative_to(html_dir).as_posix() for p in html_dir.rglob("*.html")
        if not (set(p.relative_to(html_dir).parts[:-1]) & _SKIP_DIRS)
    )


def _ids(html_dir: Path, relative: str) -> set[str]:
    text = (html_dir / relative).read_text(errors="replace")
    return set(re.findall(r'\bid="([^"]+)"', text))


class _Hrefs(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs += [value for name, value in attrs if name == "href" and value is not None]


def _link_problem(html_dir: Path, page: str, href: str) -> str | None:
    href = href.strip()
    parsed = urllib.parse.urlsplit(href)
    if parsed.scheme or parsed.netloc:
        if href in ALLOWED_EXTERNAL:
            return None
        return f"{page}: link leaves the book: {href}"
    path = urllib.parse.unquote(parsed.path)
    if not path:
        return None
    target = (html_dir / path.lstrip("/")) if path.startswith("/") else (html_dir / page).parent / path
    target = Path(os.path.normpath(target))
    if target.is_dir():
        target = target / "index.html"
    if not target.is_relative_to(html_dir):
        return f"{page}: link leaves the book: {href}"
    if not target.is_file():
        return f"{page}: dead link: {href}"
    return None


def check_links(html_dir: Path) -> list[str]:
    """Every ``<a href>`` of every page, read from the files: one line per link that leaves the book (unless in
    ``ALLOWED_EXTERNAL``) or names a file the build does not have. Anchors are left to the browser check."""
    html_dir = Path(html_dir).resolve()
    pages = _pages(html_dir)
    if not pages:
        return [f"{html_dir}: no HTML pages (build the book first: make book)"]
    problems = []
    for page in pages:
        parser = _Hrefs()
        parser.feed((html_dir / page).read_text(errors="replace"))
        problems += [p for href in dict.fromkeys(parser.hrefs) if (p := _link_problem(html_dir, page, href))]
    return problems


def _problems_of_events(page: str, events: list[dict[str, Any]], base: str) -> list[str]:
    problems = []
    for event in events:
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text")
            problems.append(f"{page}: javascript exception: {str(text).splitlines()[0]}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            problems.append(f"{page}: console error: {args}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            if entry.get("url") == base + "favicon.ico":
                continue
            problems.append(f"{page}: browser error: {entry.get('text')} {entry.get('url', '')}".rstrip())
        elif method == "Network.responseReceived":
            response = params.get("response", {})
            if response.get("url") == base + "favicon.ico":
                continue
            if response.get("status", 200) >= 400:
                problems.append(f"{page}: HTTP {response['status']} for {response.get('url')}")
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            problems.append(f"{page}: request failed ({params.get('errorText')}) [{params.get('type')}]")
    return problems


def check_site(html_dir: Path, screenshots_dir: Path | None = None, chromium: str | None = None,
               timeout: float = 30.0) -> tuple[list[str], list[str]]:
    """Open every page; returns (pages checked, problems). Screenshots go to ``screenshots_dir`` if given."""
    html_dir = Path(html_dir).resolve()
    pages = _pages(html_dir)
    problems = check_links(html_dir)
    if not pages:
        return [], problems
    if screenshots_dir is not None:
        Path(screenshots_dir).mkdir(parents=True, exist_ok=True)
    with serve(html_dir) as base:
        browser = Chromium(chromium, timeout)
        try:
            browser.call("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1,
                         mobile=False)
            for page in pages:
                browser.events.clear()
                browser.call("Page.navigate", url=base + page)
                browser.wait_for("Page.loadEventFired")
                time.sleep(0.3)
                browser.evaluate("new Promise(r => requestAnimationFrame(() => r(true)))")
                facts = browser.evaluate(_PAGE_FACTS)
                problems += _problems_of_events(page, browser.events, base)
                if facts["textLength"] == 0:
                    problems.append(f"{page}: the page shows no text")
                for line in facts["wide"]:
                    problems.append(f"{page}: a code block scrolls sideways (longest line starts {line!r})")
                problems += layout_problems(page, facts)
                for image in facts["images"]:
                    if not image["ok"]:
                        problems.append(f"{page}: image did not load: {image['src']}")
                for link in facts["links"]:
                    if not link.startswith(base):
                        continue
                    target, _, fragment = link[len(base):].partition("#")
                    fragment = urllib.parse.unquote(fragment)
                    target = urllib.parse.unquote(target.split("?")[0]) or "index.html"
                    if target.endswith("/"):
                        target += "index.html"
                    if fragment and target.endswith(".html") and (html_dir / target).is_file() \
                            and fragment not in _ids(html_dir, target):
                        problems.append(f"{page}: broken link {link} (no id {fragment!r} on {target})")
                if screenshots_dir is not None:
                    size = browser.call("Page.getLayoutMetrics")["cssContentSize"]
                    clip = {"x": 0, "y": 0, "width": 1280, "height": min(max(size["height"], 900), 12000),
                            "scale": 1}
                    shot = browser.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                                        clip=clip)
                    name = page.replace("/", "__").removesuffix(".html") + ".png"
                    (Path(screenshots_dir) / name).write_bytes(base64.b64decode(shot["data"]))
        finally:
            browser.close()
    return pages, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m companion.bookcheck", description=__doc__.splitlines()[0])
    parser.add_argument("html_dir", type=Path, nargs="?", default=Path("book/_build/html"))
    parser.add_argument("--screenshots", type=Path, default=Path("artifacts/screenshots"))
    parser.add_argument("--links-only", action="store_true", help="only the links read from the files, no browser")
    args = parser.parse_args(argv)
    if args.links_only:
        problems = check_links(args.html_dir)
        for problem in problems:
            print(problem)
        print(f"links checked, {len(problems)} problems")
        return 1 if problems else 0
    try:
        pages, problems = check_site(args.html_dir, args.screenshots)
    except (FileNotFoundError, RuntimeError, TimeoutError, ConnectionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for problem in problems:
        print(problem)
    print(f"{len(pages)} pages checked, {len(problems)} problems; screenshots in {args.screenshots}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
