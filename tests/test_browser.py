"""End to end: `streamlit run app.py` on a loopback port, every page in headless Chromium."""

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 # A camera that films a test pattern, allowed without asking: st.camera_input works headless.
                 "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _require_browser():
    missing = []
    if CHROMIUM is None:
        missing.append("Chromium (apt-get install -y chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing.append("Playwright (pip install -r requirements-dev.txt)")
    if missing:
        message = "browser tests need " + " and ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def models_root(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def claims_root(tmp_path_factory):
    """The paper's claims' bundled runs the server reads: the shipped bundle when it has claim 1's
    runs, else claim 1's experiment written here as finished runs (tests/test_claims_page.py)."""
    from alexnet_core import locations
    from alexnet_core.analysis import claims

    shipped = claims.matching_runs("relu", root=tmp_path_factory.mktemp("no-runs"))
    if all(len([r for r in runs if r["state"] == "finished"]) >= claims.MIN_SEEDS for runs in shipped.values()):
        return Path(locations.CLAIMS_DIR)
    from tests.test_claims_page import write_claim_runs

    folder = tmp_path_factory.mktemp("claims")
    write_claim_runs(folder / "runs", "relu", epochs=8, read_only=True)
    return folder


@contextlib.contextmanager
def app_server(env: dict, log_path: Path):
    """The app served on a free port of 127.0.0.1 with `env` for the length of the block: its URL."""
    port = _free_port()
    log = open(log_path, "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        log.seek(0)
        pytest.fail("streamlit did not start:\n" + log.read())
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def server(tmp_path_factory, runs_root, models_root, claims_root):
    _require_browser()
    env = {**os.environ, "ALEXNET_RUNS_DIR": str(runs_root), "ALEXNET_DATA_DIR": str(tmp_path_factory.mktemp("data")),
           "ALEXNET_MODELS_DIR": str(models_root), "ALEXNET_CLAIMS_DIR": str(claims_root)}
    with app_server(env, tmp_path_factory.mktemp("log") / "streamlit.log") as url:
        yield url


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def settle(page, timeout=120_000):
    """Wait until the script run has finished (the running indicator is gone)."""
    page.wait_for_timeout(800)
    page.wait_for_function("document.querySelector('[data-testid=\"stApp\"]')?.getAttribute('data-test-script-state') === 'notRunning'", timeout=timeout)
    page.wait_for_timeout(500)


def assert_no_errors(page, where):
    problems = page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]')
    texts = [problems.nth(i).inner_text() for i in range(problems.count())]
    assert not texts, f"{where} shows an error: {texts}"


def open_page(browser, server, path, title, height=1000):
    """A new tab on `path`, once the page titled `title` has finished its script run."""
    page = browser.new_page(viewport={"width": 1400, "height": height})
    page.goto(server + path)
    page.wait_for_selector(f"h1:has-text('{title}')", timeout=60_000)
    settle(page)
    return page


def test_every_page_renders_offline_without_errors(server, browser):
    """A tour by the sidebar and by direct links (bookmarks, reloads): no exception, no request to
    another host, no failed request, no console error."""
    from urllib.parse import urlparse

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    hosts, failed, console = set(), [], []
    page.on("request", lambda r: hosts.add(urlparse(r.url).netloc))
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: console.append(str(e)))
    page.goto(server)
    page.wait_for_selector("h1", timeout=60_000)
    settle(page)
    links = page.locator('[data-testid="stSidebarNavLink"]')
    hrefs = [links.nth(i).get_attribute("href") for i in range(links.count())]
    pages = re.findall(r'st\.Page\("(pages/[\w]+\.py)"', (Path(ROOT) / "app.py").read_text())
    assert len(pages) == 10 and len(hrefs) == len(pages), "the sidebar should list every page"
    for href in hrefs:
        page.locator(f'[data-testid="stSidebarNavLink"][href="{href}"]').click()
        page.wait_for_timeout(300)
        page.wait_for_selector("h1", timeout=60_000)
        settle(page)
        assert_no_errors(page, href)
    for href in hrefs:
        page.goto(href if href.startswith("http") else server + "/" + href.lstrip("/"))
        page.wait_for_selector("h1", timeout=60_000)
        settle(page)
        assert_no_errors(page, href)
        assert page.locator("h1").first.inner_text().strip()
    page.close()
    assert hosts == {urlparse(server).netloc}, f"requests to other hosts: {hosts}"
    assert not failed, failed
    assert not console, console


def test_architecture_page_in_the_browser(server, browser):
    page = open_page(browser, server, "/architecture", "Architecture")
    page.locator('[data-testid="stMetricValue"]').filter(has_text="60,965,224").first.wait_for(timeout=60_000)
    assert page.locator('[data-testid="stMetricValue"]').first.inner_text().strip() == "60,965,224"
    page.get_by_role("tab", name="Diagram").click()
    page.wait_for_selector('[data-testid="stGraphVizChart"] svg', timeout=30_000)
    assert page.locator('[data-testid="stGraphVizChart"] svg g.node').count() >= 10
    page.get_by_role("tab", name="Parameters and compute").click()
    page.wait_for_selector(".js-plotly-plot", timeout=30_000)
    assert_no_errors(page, "architecture")
    page.close()


def test_start_a_run_from_the_train_page_and_see_its_curves(server, browser):
    page = open_page(browser, server, "/train", "Train", height=1100)
    epochs = page.get_by_label("Epochs", exact=True)
    epochs.fill("2")
    epochs.press("Enter")
    settle(page)
    page.get_by_role("button", name="Start training").click()
    # The live view polls the run folder: the curves appear while the detached trainer runs.
    page.wait_for_selector(".js-plotly-plot", timeout=240_000)
    page.locator('[data-testid="stMetricValue"]').filter(has_text="2 / 2").wait_for(timeout=300_000)
    page.get_by_text("Finished 2 epochs").wait_for(timeout=60_000)
    settle(page)
    assert_no_errors(page, "train")
    assert page.locator('[data-testid="stMetricValue"]').filter(has_text="2 / 2").count() == 1
    page.close()


def test_click_a_confusion_matrix_cell_and_see_its_images(server, browser):
    page = open_page(browser, server, "/evaluate", "Evaluate")
    page.wait_for_selector('[data-testid="stPlotlyChart"] .scatterlayer .points path', timeout=120_000)
    settle(page)
    points = page.locator('[data-testid="stPlotlyChart"]').first.locator(".scatterlayer .points path")
    assert points.count() == 100  # 10 x 10 cells
    # Click the cell (true cat, predicted dog): points are laid out row by row.
    box = points.nth(3 * 10 + 5).bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    heading = page.locator("h3").filter(has_text="True cat, predicted dog")
    heading.wait_for(timeout=60_000)
    settle(page)
    count = int(heading.inner_text().split(":")[1].split()[0])
    if count:
        assert page.locator('[data-testid="stImage"]').count() >= min(count, 12)
    assert_no_errors(page, "evaluate")
    page.close()


def test_upload_an_image_on_classify_and_see_top_k(server, browser, tmp_path):
    from PIL import Image

    good = tmp_path / "plane.png"
    Image.new("RGB", (64, 48), (120, 160, 220)).save(good)
    bad = tmp_path / "fake.jpg"
    bad.write_text("<html>not an image</html>")
    page = open_page(browser, server, "/classify", "Classify")
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files([str(good), str(bad)])
    page.get_by_text("fake.jpg: not an image").wait_for(timeout=60_000)
    settle(page)
    settle(page)  # with uploads, the examples step aside
    assert page.get_by_text("plane.png (64×48)").count() == 1
    assert page.locator('[data-testid="stPlotlyChart"]').count() == 1  # top-k bars of the good image
    page.close()


def test_play_a_run_epoch_by_epoch(server, browser, runs_root, tmp_path):
    """The Runs page's time-travel: the figure opens on the last epoch; Play runs from epoch 1 back
    to the last, and nothing blanks on the way: no picture is taken out of the page or reloaded
    (a reloaded picture is blank until the browser decodes it again) while its content changes."""
    from tests.helpers import make_image_folder
    from tests.test_training import TINY, cli

    folder = make_image_folder(tmp_path / "data", classes=3, per_class=10)
    result = cli("train", *TINY, "--data", str(folder), "--epochs", "3", "--val-split", "0.3",
                 "--runs-dir", str(runs_root), "--run-id", "timeline")
    assert result.returncode == 0, result.stderr[-2000:]
    page = open_page(browser, server, "/runs?run=timeline", "Runs", height=2400)
    page.get_by_text("Epoch by epoch: how the model came to be").click()
    chart = page.locator('[data-testid="stPlotlyChart"]').filter(has=page.locator(".updatemenu-button"))
    title = chart.locator(".textpoint").filter(has_text=re.compile(r"^Epoch \d+ of \d+:"))
    title.wait_for(timeout=60_000)
    assert title.text_content().startswith("Epoch 3 of 3:")
    pictures = chart.locator("image")
    assert pictures.count() == 2 * 3 + 1  # each epoch's matrix and filters, and the probe images
    shown = "() => [...document.querySelectorAll('[data-testid=stPlotlyChart] image')].map(i => i.getAttribute('opacity'))"
    assert page.evaluate(shown).count("1") == 3  # the last epoch's two, and the probes
    chart.evaluate("""root => { window.churn = {changed: 0, fewest: 1e9};
        new MutationObserver(ms => { for (const m of ms) {
            if (m.type === 'attributes' && m.target.tagName === 'image') churn.changed++;
            for (const n of [...m.addedNodes, ...m.removedNodes])
                if (n.nodeName === 'image' || n.querySelector?.('image')) churn.changed++; } })
            .observe(root, {subtree: true, childList: true, attributes: true, attributeFilter: ['href', 'xlink:href']});
        const count = () => { churn.fewest = Math.min(churn.fewest, root.querySelectorAll('image').length);
                              requestAnimationFrame(count); };
        count(); }""")
    seen = set()
    page.locator(".updatemenu-button").filter(has_text="Play").click()
    for _ in range(300):  # 0.7 s a frame; a busy machine may take longer to start
        seen.add(title.text_content().split(":")[0])
        if {"Epoch 1 of 3", "Epoch 2 of 3"} <= seen:
            break
        page.wait_for_timeout(100)
    assert {"Epoch 1 of 3", "Epoch 2 of 3"} <= seen, seen
    page.wait_for_function(  # it stops on the last epoch
        "() => [...document.querySelectorAll('[data-testid=stPlotlyChart] .textpoint')]"
        ".some(t => t.textContent.startsWith('Epoch 3 of 3:'))", timeout=30_000)
    page.wait_for_timeout(1500)
    assert title.text_content().startswith("Epoch 3 of 3:")
    assert page.evaluate("window.churn") == {"changed": 0, "fewest": 2 * 3 + 1}
    assert page.evaluate(shown).count("1") == 3
    assert page.locator(".slider-container").count() == 1
    assert_no_errors(page, "runs")
    page.close()


def test_map_of_what_the_network_learned_hover_and_click(server, browser):
    """Evaluate's map: the bundled model's is shipped, so it is drawn at once, with no button to
    press; hovering a point shows its image; a click opens it with its top 5 and Grad-CAM."""
    page = open_page(browser, server, "/evaluate", "Evaluate", height=1400)
    chart = page.locator('[data-testid="stVegaLiteChart"]')
    chart.wait_for(timeout=120_000)
    assert page.get_by_role("button", name="Draw the map").count() == 0
    settle(page)
    chart.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    box = chart.bounding_box()
    tooltip = page.locator("#vg-tooltip-element img")
    spot = None
    for fy in range(10, 95, 4):  # the points form islands: a coarse scan meets one soon
        for fx in range(5, 80, 4):
            x, y = box["x"] + box["width"] * fx / 100, box["y"] + box["height"] * fy / 100
            page.mouse.move(x, y)
            page.wait_for_timeout(30)
            if tooltip.count() and tooltip.first.is_visible():
                spot = (x, y)
                break
        if spot:
            break
    assert spot, "no point of the map showed an image on hover"
    assert tooltip.first.get_attribute("src").startswith("data:image/jpeg;base64,")
    assert "true" in page.locator("#vg-tooltip-element").inner_text()
    page.mouse.click(*spot)
    page.get_by_text("The picked image:").wait_for(timeout=60_000)
    settle(page)
    assert page.get_by_text("Grad-CAM for").count() >= 1
    assert_no_errors(page, "evaluate map")
    page.close()


def test_build_a_dataset_train_it_and_classify_live(server, browser, tmp_path):
    """Your classes, end to end: create a dataset, add two classes, add images by upload (a fake
    file among them is refused by name) and by the camera, fine-tune the bundled model on them,
    then classify an upload with the new model."""
    from PIL import Image

    files = {}
    for name, colour in (("red", (220, 30, 30)), ("blue", (30, 40, 220))):
        files[name] = []
        for shade in range(4):
            path = tmp_path / f"{name}{shade}.png"
            Image.new("RGB", (48, 40), tuple(max(0, c - 25 * shade) for c in colour)).save(path)
            files[name].append(str(path))
    fake = tmp_path / "fake.jpg"
    fake.write_text("<html>not an image</html>")

    page = open_page(browser, server, "/dataset", "Your classes", height=2600)
    page.context.grant_permissions(["camera"])
    page.get_by_label("Name of the new dataset").fill("shapes")
    page.get_by_role("button", name="Create").click()
    settle(page)
    for name in ("red", "blue"):
        page.get_by_label("New class").fill(name)
        page.get_by_role("button", name="Add class").click()
        page.get_by_text(f"{name}: 0 images").wait_for(timeout=30_000)
        settle(page)
    uploader = page.locator('[data-testid="stFileUploader"]').filter(has_text="Add images of red")
    uploader.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files([*files["red"], str(fake)])
    page.get_by_text("red: added 4 images.").wait_for(timeout=60_000)
    assert page.get_by_text("fake.jpg: not an image").count() == 1
    settle(page)
    uploader = page.locator('[data-testid="stFileUploader"]').filter(has_text="Add images of blue")
    uploader.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(files["blue"])
    page.get_by_text("blue: added 4 images.").wait_for(timeout=60_000)
    settle(page)
    # The camera: a photo of the fake device's test pattern, added to blue.
    page.get_by_text("Use the camera").first.click()
    settle(page)
    # A click before the stream shows a frame takes no photo (the widget has nothing to capture yet).
    page.wait_for_function("[...document.querySelectorAll('[data-testid=\"stCameraInput\"] video')]"
                           ".some(v => v.readyState >= 2 && v.videoWidth > 0)", timeout=30_000)
    page.get_by_role("button", name="Take Photo").click()
    page.get_by_text("blue: added 1 image.").wait_for(timeout=60_000)
    settle(page)
    assert page.get_by_text("blue: 5 images").count() == 1
    epochs = page.get_by_label("Epochs")
    epochs.fill("3")
    epochs.press("Enter")
    settle(page)
    page.get_by_role("button", name="Start training").click()
    page.get_by_text("Finished 3 epochs").wait_for(timeout=240_000)
    settle(page)
    page.locator('[data-testid="stFileUploader"]').filter(has_text="An image to classify").locator(
        '[data-testid="stFileUploaderDropzoneInput"]').set_input_files(files["red"][1])
    page.locator('[data-testid="stMarkdownContainer"] strong').filter(has_text="red").first.wait_for(timeout=60_000)
    settle(page)
    verdict = page.locator('[data-testid="stMarkdownContainer"] p').filter(has_text="%)").last.inner_text()
    assert verdict.startswith("red ("), verdict
    assert_no_errors_except(page, "fake.jpg: not an image")
    page.close()


def assert_no_errors_except(page, expected):
    problems = page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]')
    texts = [problems.nth(i).inner_text() for i in range(problems.count())]
    assert all(expected in t for t in texts), texts


def test_classify_with_an_installed_imagenet_model(server, browser, models_root, monkeypatch, tmp_path):
    """The real AlexNet's shape (generated weights, 224 px, 1,000 classes) installed while the
    server runs: Classify offers it first, shows its top 5 in words, the 224-px input, Grad-CAM
    and its 64 first-layer kernels."""
    import numpy as np
    from PIL import Image

    from alexnet_core.store import model_home
    from tests.imagenet_models import install_generated_imagenet

    monkeypatch.setenv("ALEXNET_MODELS_DIR", str(models_root))
    install_generated_imagenet("imagenet-torchvision", "torchvision")
    photo = tmp_path / "street.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(photo)
    try:
        page = open_page(browser, server, "/classify", "Classify")
        page.get_by_text("published top-1 56.5%").first.wait_for(timeout=120_000)
        page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files([str(photo)])
        page.get_by_text("street.png (400×300)").wait_for(timeout=120_000)
        settle(page, timeout=240_000)
        assert page.get_by_text("What the network sees: 224×224 pixels").count() == 1
        assert page.get_by_text("(Grad-CAM at 224×224)").count() == 1
        assert page.locator('[data-testid="stPlotlyChart"]').count() == 1
        assert page.locator('[data-testid="stPlotlyChart"]').get_by_text("thing ").count() >= 5  # top 5 in words
        page.get_by_text("conv1 filters", exact=True).click()
        page.get_by_text("The first layer's 64 kernels").wait_for(timeout=120_000)
        settle(page)
        assert_no_errors(page, "Classify with an installed ImageNet model")
        page.close()
    finally:
        model_home.remove("imagenet-torchvision")  # the other tests see no installed model


def test_question_the_paper_play_claim_one_and_queue_it(server, browser, runs_root):
    """Claim 1 from the bundle: its verdict and curves; Play replays the curves from epoch 1;
    Run it here queues its six runs. A run holding the machine (its trainer's lock, held by this
    test) keeps them waiting, so nothing trains; they are taken out of the queue at the end."""
    from alexnet_core.analysis import claims
    from alexnet_core.store import catalog, liveness
    from alexnet_core.train import queue

    busy = catalog.create_run(runs_root, "machine-busy", {"variant": "compact", "data": "sample", "epochs": 1})
    liveness.write_status(busy, state="running", pid=os.getpid(), started=time.time())
    lock = liveness.TrainerLock(busy).acquire()
    queued = []
    try:
        page = open_page(browser, server, "/claims", "Question the paper", height=2600)
        page.locator('[data-testid="stRadio"] label').filter(has_text="1. ReLUs train six times faster").click()
        settle(page)
        assert page.get_by_text("Bundled result (measured on").count() == 1
        assert page.get_by_text("reaches a 25% training error rate on CIFAR-10 six times faster").count() == 1
        title = page.locator('[data-testid="stPlotlyChart"] .gtitle')
        title.wait_for(timeout=60_000)
        last = title.text_content()
        assert last.startswith("Epoch ") and last.split()[1] == last.split()[3], last  # opens on the last epoch
        epochs = int(last.split()[3])
        seen = set()
        page.locator(".updatemenu-button").filter(has_text="Play").click()
        for _ in range(400):  # a frame a few tenths of a second: the first may pass while the click returns
            seen.add(int(title.text_content().split()[1]))
            if len(seen & set(range(1, epochs))) >= 3:
                break
            page.wait_for_timeout(25)
        assert min(seen) <= 3 and len(seen & set(range(1, epochs))) >= 3, seen  # from the start, epoch by epoch
        page.wait_for_function(  # it plays on to the last epoch
            f"() => document.querySelector('[data-testid=stPlotlyChart] .gtitle')?.textContent === '{last}'",
            timeout=30_000)
        assert page.locator('[data-testid="stPlotlyChart"] .shapelayer path').count() >= 1  # the 25% line
        page.get_by_text("The bundled CIFAR-10 sample").click()  # CIFAR-10 itself is not on a test machine
        settle(page)
        assert page.get_by_text(f"6 runs of {claims.CPU_BASE['epochs']} epochs").count() == 1
        page.get_by_role("button", name="Run it here").click()
        page.get_by_text("Queued 6 runs").wait_for(timeout=120_000)
        settle(page)
        queued = [e["run_id"] for e in queue.entries(runs_root)]
        assert len(queued) == 6
        assert page.get_by_text("Watch the first one on Train").count() == 1
        assert_no_errors(page, "question the paper")
        page.close()
    finally:
        for run_id in queued or [e["run_id"] for e in queue.entries(runs_root)]:
            queue.cancel(run_id, runs_root)
            catalog.delete_run(runs_root, run_id)
        lock.release()
        liveness.write_status(busy, state="stopped")
        catalog.delete_run(runs_root, "machine-busy")
