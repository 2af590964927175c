"""A real headless browser over the built HTML book, with the network switched off.

Used by tests/test_book.py. The browser is the system's Chromium, driven by
selenium through the system's chromedriver (Debian: ``apt-get install chromium
chromium-driver``; macOS: ``brew install --cask chromium chromedriver``). Pages are opened from ``file://``, as a reader opens
a book copied to a machine with no network, and every host name fails to
resolve (``--host-resolver-rules``), so a page that needs the network shows
it; only the loopback address (127.0.0.1), where a test serves the book over
HTTP, is reached.
"""

import html.parser
import os
import pathlib
import shutil
import time
import urllib.parse

try:  # selenium is in requirements.txt; without it the browser tests skip, saying why
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
except ImportError:  # pragma: no cover
    webdriver = None

INSTALL_HINT = (
    "no headless Chromium found: install it with `apt-get install chromium chromium-driver` (Debian), "
    "`brew install --cask chromium chromedriver` (macOS), or your system's Chromium and chromedriver "
    "packages (their names vary: Ubuntu's chromium-browser is a snap), or set CHROMIUM and CHROMEDRIVER "
    "to the two programs"
)


def find_browser():
    """(chromium, chromedriver) paths, or None if either is missing."""
    if webdriver is None:
        return None
    browser = os.environ.get("CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome", "chrome")) if p), None)
    driver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def start(browser: str, driver: str):
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # no network but the loopback address
        "--window-size=1280,900",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    session = webdriver.Chrome(service=Service(driver), options=options)
    session.set_script_timeout(60)
    session.set_page_load_timeout(60)
    return session


class _Anchors(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("id", "name") and value:
                self.ids.add(value)


_anchor_cache = {}


def anchors(path: pathlib.Path) -> set:
    """The ids (and names) a page's HTML defines: the targets of links to path#id."""
    if path not in _anchor_cache:
        parser = _Anchors()
        parser.feed(path.read_text(errors="replace"))
        _anchor_cache[path] = parser.ids
    return _anchor_cache[path]


def broken_links(hrefs, root: pathlib.Path) -> list:
    """The internal links among ``hrefs`` (absolute URLs, as the browser resolves them) that lead nowhere."""
    broken = []
    for href in hrefs:
        url = urllib.parse.urlsplit(href)
        if url.scheme != "file":
            continue  # links out of the book (the repository, Binder, the sources' pages)
        target = pathlib.Path(urllib.parse.unquote(url.path))
        if target.is_dir():
            target = target / "index.html"
        if not target.exists() or root not in target.parents:
            broken.append(href)
        elif url.fragment and target.suffix == ".html" and urllib.parse.unquote(url.fragment) not in anchors(target):
            broken.append(href)
    return broken


WAIT_FOR_MATHJAX = """
const done = arguments[arguments.length - 1];
const start = Date.now();
(function wait() {
  if (document.readyState !== 'complete') {  // judge a page only once it has loaded
    if (Date.now() - start > 30000) { done('the page never finished loading'); return; }
    setTimeout(wait, 50);
  } else if (!document.querySelector('script[src*="mathjax"]')) {
    done('absent');
  } else if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    MathJax.startup.promise.then(() => done('typeset'), (e) => done('error: ' + e));
  } else if (Date.now() - start > 30000) {
    done('MathJax never started');
  } else {
    setTimeout(wait, 50);
  }
})();
"""

# What a reader would see: the mathematics typeset, nothing raw or broken.
PAGE_REPORT = r"""
const maths = [...document.querySelectorAll('.math')];
const untypeset = maths.filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.slice(0, 80));
const mathErrors = [...document.querySelectorAll('mjx-merror, [data-mjx-error]')]
  .map(e => e.getAttribute('data-mjx-error') || e.textContent).slice(0, 5);
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {acceptNode: (n) =>
  n.parentElement.closest('pre, code, script, style, textarea, mjx-container, .highlight')
    ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
const raw = [];
while (walker.nextNode()) {
  const text = walker.currentNode.textContent;
  if (/\\\(|\\\)|\\\[|\\\]|\$\$|\\begin\{/.test(text)) raw.push(text.trim().slice(0, 100));
}
const widgets = [...document.querySelectorAll(
  '.jupyter-widgets, .widget-area, input[type=range], script[type="application/vnd.jupyter.widget-view+json"]')]
  .map(e => e.outerHTML.slice(0, 120));
const widgetErrors = document.body.innerText.includes('Error displaying widget');
const external = performance.getEntriesByType('resource').map(e => e.name)
  .filter(n => !n.startsWith(location.origin === 'null' ? 'file:' : location.origin)
               && !n.startsWith('data:') && !n.startsWith('blob:'));
const images = [...document.querySelectorAll('article img')].map(img => ({
  src: img.getAttribute('src'), alt: img.getAttribute('alt') || '', loaded: img.complete && img.naturalWidth > 0,
  natural: img.naturalWidth, shown: img.getBoundingClientRect().width}));
return {maths: maths.length, untypeset, mathErrors, raw, widgets, widgetErrors, external, images,
        links: [...document.querySelectorAll('a[href]')].map(a => a.href),
        dropdowns: document.querySelectorAll('.dropdown.toggle').length};
"""

# Open every folded dropdown (the solutions) by its button; report those whose content did not appear.
OPEN_DROPDOWNS = """
const stuck = [];
for (const box of document.querySelectorAll('.dropdown.toggle')) {
  const body = [...box.children].find(c => !c.classList.contains('admonition-title'));
  const button = box.querySelector('.toggle-button');
  const shown = () => body && body.getBoundingClientRect().height > 0 && getComputedStyle(body).visibility !== 'hidden';
  if (!button || shown()) { stuck.push((box.id || '?') + ': not folded'); continue; }
  button.click();
  if (!shown()) stuck.push((box.id || '?') + ': does not open');
}
return stuck;
"""

# Is an element that the page holds (a link of the table of contents, the page's contents) in view?
IN_VIEW = """
const element = document.querySelector(arguments[0]);
if (!element) return null;
const r = element.getBoundingClientRect();
const style = getComputedStyle(element);
return r.width > 0 && r.height > 0 && r.right > 0 && r.left < window.innerWidth && style.visibility !== 'hidden';
"""


def in_view(session, selector: str, expected: bool, timeout: float = 5.0) -> bool:
    """Whether the element comes into view (``expected=True``) or leaves it, waiting up to ``timeout`` s.

    The theme's drawers slide in and out: a check made at once would race the animation.
    """
    deadline = time.monotonic() + timeout
    while True:
        now = bool(session.execute_script(IN_VIEW, selector))
        if now == expected or time.monotonic() > deadline:
            return now
        time.sleep(0.05)


def visible_buttons(session, selector: str) -> list:
    return [b for b in session.find_elements(By.CSS_SELECTOR, selector) if b.is_displayed()]


def press_escape(session):
    """The Escape key, where the focus is (the theme's drawers are modal dialogs that close on it)."""
    session.switch_to.active_element.send_keys(Keys.ESCAPE)


def console_errors(session) -> list:
    """The console's errors since the last call (reading the log empties it)."""
    return [e["message"] for e in session.get_log("browser") if e["level"] == "SEVERE"]


def go(session, url: str, width: int) -> str:
    """Open url at a window width, from a blank page and with the console emptied, so that nothing of the
    page before (a late request, a timer, an error) is counted against this one; then wait for MathJax."""
    session.set_window_size(width, 900)
    session.get("about:blank")
    session.get_log("browser")
    session.get(url)
    if session.current_url != url:
        raise AssertionError(f"asked for {url}, the browser shows {session.current_url}")
    return session.execute_async_script(WAIT_FOR_MATHJAX)
