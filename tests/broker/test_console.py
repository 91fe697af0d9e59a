"""The approval console in a real headless Chromium, against the broker and a running worker.

Three deployments need a human (payments: approval-only; two data-writes releases). The
browser imports alice's key file (PEM PKCS#8, as `rollguard keys generate` writes it) into
WebCrypto, and: approves the first (the gate's signed command appears on `rollback.commands`),
denies the second (a DENIED decision, no command), and — with the page's request tampered with
after signing — sees the backend refuse the third (nothing is published). Forged requests
written by a plain client (unsigned, foreign key, tampered) are listed as refused, with why,
and cannot be answered, in the page or through the API. Screenshots go to
``var/screenshots/console`` (ROLLGUARD_SCREENSHOTS overrides); docs/ keeps one of them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiokafka import AIOKafkaProducer

from rollguard.models.events import ApprovalRequest, ApprovalResponse
from rollguard.streams.serde import record_to_dict
from rollguard.streams.signing import (
    generate_key_pair,
    load_private_key,
    load_public_key,
    sign_record,
    verify_mapping,
)
from rollguard.streams.simulate import generate
from rollguard.streams.simulate_io import send_events, shifted_to_now
from tests.broker.conftest import REPO, ROLLGUARD, WorkerRun, consume, free_port

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]

SHOTS = Path(os.environ.get("ROLLGUARD_SCREENSHOTS", REPO / "var" / "screenshots" / "console"))
FLEET = {"approve": ("approval-only-service", 1), "deny": ("data-writes", 3),
         "tamper": ("data-writes", 10)}


def _driver_paths() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser and driver:
        return browser, driver
    message = ("chromium and chromium-driver are not installed "
               "(scripts/ensure-chromium.sh installs them)")
    if os.environ.get("ROLLGUARD_REQUIRE_BROKER") == "1":
        pytest.fail(message)
    pytest.skip(message)


def _fleet() -> tuple[list[dict[str, Any]], dict[str, str]]:
    events: list[dict[str, Any]] = []
    services: dict[str, str] = {}
    for name, (scenario, seed) in FLEET.items():
        generated = list(generate(scenario, seed).events)
        service = next(e["service"] for e in generated if e["type"] == "deploy")
        services[name] = service
        events.extend(e for e in generated if name == "approve" or e["service"] == service)
    return shifted_to_now(sorted(events, key=lambda e: e["ts"]), time.time()), services


async def _publish(bootstrap: str, events: list[dict[str, Any]], run: WorkerRun) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=2_000_000)
    await producer.start()
    try:
        await send_events(producer, events, run.settings())
    finally:
        await producer.stop()


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
        return response.status, dict(response.headers), response.read()


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        dict[str, Any]]:
    """A worker, `rollguard console`, three pending requests and a headless Chromium."""
    browser, driver_path = _driver_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    tmp = tmp_path_factory.mktemp("console")
    keys = tmp / "keys"
    for name in ("gate", "alice", "mallory"):
        generate_key_pair(keys, name)
    (tmp / "approvers.yaml").write_text(yaml.safe_dump({"approvers": {"user:alice": {
        "roles": ["sre-oncall"], "public_key": (keys / "alice.pub").read_text()}}}))
    prefix = f"t{uuid.uuid4().hex[:10]}."
    env = dict(os.environ, ROLLGUARD_BOOTSTRAP_SERVERS=kafka_bootstrap,
               ROLLGUARD_TOPIC_PREFIX=prefix, ROLLGUARD_APP_ID=f"rollguard-{prefix[:-1]}",
               ROLLGUARD_PARTITIONS="2", ROLLGUARD_WEB_PORT=str(free_port()),
               ROLLGUARD_APPROVERS=str(tmp / "approvers.yaml"),
               ROLLGUARD_SIGNING_KEY=str(keys / "gate.key"), ROLLGUARD_IDLE_ADVANCE_SECONDS="2",
               ROLLGUARD_VERIFY_KEY=str(keys / "gate.pub"))
    run = WorkerRun(env=env, prefix=prefix, web_port=int(env["ROLLGUARD_WEB_PORT"]),
                    log_path=tmp / "worker.log")
    assert run.rollguard("topics", "create").returncode == 0
    run.start()
    port = free_port()
    console_log = open(tmp / "console.log", "wb")  # noqa: SIM115 - closed below
    console = subprocess.Popen([ROLLGUARD, "console", "--port", str(port)], cwd=REPO, env=env,
                               stdout=console_log, stderr=subprocess.STDOUT)
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", f"--user-data-dir={tmp / 'profile'}",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = None
    try:
        run.wait_healthy()
        events, services = _fleet()
        asyncio.run(_publish(kafka_bootstrap, events, run))
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 150
        ids: dict[str, str] = {}
        while len(ids) < len(FLEET):
            assert time.monotonic() < deadline, run.log_tail()
            assert console.poll() is None, (tmp / "console.log").read_text()
            try:
                listed = orjson.loads(_get(url + "/api/requests")[2])
            except OSError:
                listed = []
            by_service = {r["service"]: r["request_id"] for r in listed if r["pending"]}
            ids = {n: by_service[s] for n, s in services.items() if s in by_service}
            time.sleep(1.0)
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
        SHOTS.mkdir(parents=True, exist_ok=True)
        yield {"run": run, "url": url, "ids": ids, "services": services, "driver": driver,
               "keys": keys, "bootstrap": kafka_bootstrap, "console_log": tmp / "console.log"}
    finally:
        if driver is not None:
            driver.quit()
        console.send_signal(signal.SIGTERM)
        try:
            console.wait(timeout=20)
        except subprocess.TimeoutExpired:
            console.kill()
        console_log.close()
        run.stop()


def _answer(stack: dict[str, Any], name: str, button: str, shot: str) -> str:
    """Open the request's page, import alice's key, press ``button``; the page's result text."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = stack["driver"]
    driver.get(f"{stack['url']}/requests/{stack['ids'][name]}")
    driver.find_element(By.ID, "identity").send_keys("user:alice")
    driver.find_element(By.ID, "keyfile").send_keys(str(stack["keys"] / "alice.key"))
    driver.find_element(By.ID, "load-key").click()
    WebDriverWait(driver, 20).until(
        lambda d: "imported" in d.find_element(By.ID, "key-status").text
        or d.find_element(By.ID, "result").text)
    assert "imported" in driver.find_element(By.ID, "key-status").text, \
        driver.find_element(By.ID, "result").text
    driver.find_element(By.ID, "comment").send_keys(f"browser test: {button}")
    driver.find_element(By.ID, button).click()
    WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "result").text)
    WebDriverWait(driver, 60).until(lambda d: d.execute_script(
        "const i = document.querySelector('img.plot'); return i.complete;"))
    height = driver.execute_script("return document.body.scrollHeight")
    driver.set_window_size(1400, min(max(int(height) + 40, 1000), 6000))
    driver.save_screenshot(str(SHOTS / shot))
    driver.set_window_size(1400, 1000)
    text: str = driver.find_element(By.ID, "result").text
    return text


def _csp_violations(driver: Any) -> list[str]:
    return [e["message"] for e in driver.get_log("browser")
            if "Content Security Policy" in e["message"] or "Refused to" in e["message"]]


def test_the_console_lists_requests_with_a_strict_csp(stack: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By

    status, headers, _ = _get(stack["url"] + "/")
    assert status == 200
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp
    driver = stack["driver"]
    driver.get(stack["url"] + "/")
    rows = driver.find_elements(By.CSS_SELECTOR, "table.pending tbody tr")
    assert len(rows) == 3
    assert stack["services"]["approve"] in driver.page_source
    driver.save_screenshot(str(SHOTS / "console-index.png"))
    # The plot is the replay report's timeline of the deployment, drawn from the topics.
    driver.get(f"{stack['url']}/requests/{stack['ids']['approve']}")
    from selenium.webdriver.support.ui import WebDriverWait
    WebDriverWait(driver, 90).until(lambda d: d.execute_script(
        "const i = document.querySelector('img.plot'); return i.complete && i.naturalWidth;"))
    assert driver.execute_script("return document.querySelector('img.plot').naturalWidth") > 500
    assert "THRESHOLD_BREACH" in driver.page_source and "baseline" in driver.page_source
    assert _csp_violations(driver) == []


def test_approve_in_the_browser_gives_a_signed_command(stack: dict[str, Any]) -> None:
    result = _answer(stack, "approve", "approve", "console-approve.png")
    assert "published" in result, result
    run: WorkerRun = stack["run"]
    commands = asyncio.run(consume(stack["bootstrap"], run.topic("rollback.commands"), 1, 90))
    assert len(commands) == 1, run.log_tail()
    command = orjson.loads(commands[0].value)
    assert command["service"] == stack["services"]["approve"]
    assert command["authority"] == "approved:user:alice"
    gate = load_public_key(stack["keys"] / "gate.pub")
    assert verify_mapping(command, gate)
    assert _csp_violations(stack["driver"]) == []


def test_deny_in_the_browser_closes_the_request(stack: dict[str, Any]) -> None:
    result = _answer(stack, "deny", "deny", "console-deny.png")
    assert "published" in result, result
    run: WorkerRun = stack["run"]
    rid = stack["ids"]["deny"]

    async def denied() -> bool:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            for message in await consume(stack["bootstrap"], run.topic("rollguard.decisions"),
                                         10_000, 3):
                decision = orjson.loads(message.value)
                approval = (decision.get("evidence") or {}).get("approval") or {}
                if "DENIED" in decision["reasons"] and approval.get("request_id") == rid:
                    return True
        return False

    assert asyncio.run(denied()), run.log_tail()
    commands = asyncio.run(consume(stack["bootstrap"], run.topic("rollback.commands"), 10, 3))
    assert all(orjson.loads(m.value)["service"] != stack["services"]["deny"] for m in commands)


def test_a_request_tampered_with_in_the_page_is_refused(stack: dict[str, Any]) -> None:
    driver = stack["driver"]
    run: WorkerRun = stack["run"]
    driver.get(f"{stack['url']}/requests/{stack['ids']['tamper']}")
    # After the page signs, change what it sends: the answer now names another version of the
    # comment (any field would do), so the signature no longer covers what is sent.
    driver.execute_script("""
        const original = window.fetch;
        window.fetch = (url, init) => {
            const body = JSON.parse(init.body);
            body.comment = body.comment + " (and roll back the database too)";
            return original(url, {...init, body: JSON.stringify(body)});
        };""")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.find_element(By.ID, "identity").send_keys("user:alice")
    driver.find_element(By.ID, "keyfile").send_keys(str(stack["keys"] / "alice.key"))
    driver.find_element(By.ID, "load-key").click()
    WebDriverWait(driver, 20).until(
        lambda d: "imported" in d.find_element(By.ID, "key-status").text)
    driver.find_element(By.ID, "approve").click()
    WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "result").text)
    result = driver.find_element(By.ID, "result").text
    driver.save_screenshot(str(SHOTS / "console-tampered.png"))
    assert "refused (HTTP 403)" in result and "signature does not verify" in result, result
    responses = asyncio.run(consume(stack["bootstrap"],
                                    run.topic("rollback.approval-responses"), 10, 3))
    assert all(orjson.loads(m.value)["request_id"] != stack["ids"]["tamper"]
               for m in responses)


def _post(url: str, body: bytes) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, method="POST",  # noqa: S310 - loopback
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read())


def test_a_forged_request_is_refused_and_cannot_be_answered(stack: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By

    run: WorkerRun = stack["run"]
    url = stack["url"]
    listed = orjson.loads(_get(url + "/api/requests")[2])
    genuine = next(r["request"] for r in listed if r["request_id"] == stack["ids"]["approve"])
    service = genuine["service"]
    foreign = sign_record(ApprovalRequest.model_validate(
        {**genuine, "request_id": "apr-forged-foreign"}),
        load_private_key(stack["keys"] / "mallory.key"))
    forged = {
        "apr-forged-unsigned": ({**genuine, "request_id": "apr-forged-unsigned",
                                 "signature": "", "key_id": ""}, "unsigned: no signature"),
        "apr-forged-foreign": (record_to_dict(foreign), "is not in the keyring"),
        "apr-forged-tampered": ({**genuine, "request_id": "apr-forged-tampered"},
                                "tampered, or signed by another key"),
    }

    async def publish() -> None:  # a plain client, as anyone who can write the topic
        producer = AIOKafkaProducer(bootstrap_servers=stack["bootstrap"])
        await producer.start()
        try:
            for data, _ in forged.values():
                await producer.send_and_wait(run.topic("rollback.approvals"),
                                             orjson.dumps(data), key=service.encode())
        finally:
            await producer.stop()

    asyncio.run(publish())
    deadline = time.monotonic() + 60
    while True:
        refused = {r["request_id"]: r for r in
                   orjson.loads(_get(url + "/api/refused")[2])["refused"]}
        if set(forged) <= set(refused) or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    assert set(forged) <= set(refused), refused
    for rid, (_, why) in forged.items():
        assert why in refused[rid]["reason"], refused[rid]
    listed = orjson.loads(_get(url + "/api/requests")[2])
    assert not set(forged) & {r["request_id"] for r in listed}
    # An answer correctly signed by a real approver is still refused: the request is not real.
    alice = load_private_key(stack["keys"] / "alice.key")
    for rid in forged:
        answer = sign_record(ApprovalResponse(request_id=rid, approver="user:alice",
                                              decision="approve", ts=time.time(),
                                              service=service), alice)
        status, body = _post(url + "/api/responses", orjson.dumps(record_to_dict(answer)))
        assert status == 403 and "cannot be verified" in body["error"], (status, body)
    # The page says why and offers no way to answer.
    driver = stack["driver"]
    driver.get(f"{url}/requests/apr-forged-foreign")
    assert "is not in the keyring" in driver.find_element(By.ID, "refusal").text
    assert driver.find_elements(By.ID, "approve") == []
    driver.get(url + "/")
    assert "not verified" in driver.find_element(By.ID, "refused-count").text
    driver.save_screenshot(str(SHOTS / "console-refused.png"))
    assert _csp_violations(driver) == []
    responses = asyncio.run(consume(stack["bootstrap"],
                                    run.topic("rollback.approval-responses"), 10, 3))
    assert not set(forged) & {orjson.loads(m.value)["request_id"] for m in responses}
    assert "refused, not shown to anyone" in stack["console_log"].read_text()
