"""`ledgerhook serve` as operators run it: a separate process, configured from the environment."""

import asyncio
import os
import signal
import subprocess
import sys
import time

import aiohttp
import orjson
import pytest

from gateway.dev import samples
from gateway.dev.embedded import EmbeddedBroker, free_port
from gateway.settings import Settings
from tests.support import QUICKBOOKS_TOKENS, migrate_and_create_topics, read_topic, record_header

LEDGERHOOK = [sys.executable, "-m", "gateway.cli"]


def clean_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGERHOOK_")}
    return env | values


def env_for(settings: Settings, port: int, **extra: str) -> dict[str, str]:
    return clean_env(
        LEDGERHOOK_DATABASE_URL=settings.database_url.get_secret_value(),
        LEDGERHOOK_KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
        LEDGERHOOK_KAFKA_IDEMPOTENT_PRODUCER="false",
        LEDGERHOOK_TOPIC_RAW=settings.topic_raw,
        LEDGERHOOK_QUICKBOOKS_VERIFIER_TOKENS=",".join(QUICKBOOKS_TOKENS),
        LEDGERHOOK_PORT=str(port),
        LEDGERHOOK_HOST="127.0.0.1",
        **extra,
    )


async def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            try:
                async with session.get(url + "/readyz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("gateway never became ready")


def test_missing_and_invalid_settings_stop_serve_with_one_clear_message() -> None:
    result = subprocess.run(
        [*LEDGERHOOK, "serve"],
        env=clean_env(LEDGERHOOK_MAX_BODY_BYTES="lots", LEDGERHOOK_XERO_WEBHOOK_KEYS="s3cr3t-value"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    for name in (
        "LEDGERHOOK_DATABASE_URL",
        "LEDGERHOOK_KAFKA_BOOTSTRAP_SERVERS",
        "LEDGERHOOK_MAX_BODY_BYTES",
    ):
        assert name in result.stderr
    assert "lots" not in result.stderr and "s3cr3t-value" not in result.stderr


async def test_sigterm_drains_finishes_in_flight_and_exits_zero(settings: Settings) -> None:
    await migrate_and_create_topics(settings)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [*LEDGERHOOK, "serve"],
        env=env_for(settings, port, LEDGERHOOK_SHUTDOWN_DRAIN_SECONDS="1.5"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        await wait_ready(base, process)
        body = samples.quickbooks_legacy("4620816365", 4)
        signature = samples.signed_quickbooks(body, QUICKBOOKS_TOKENS[0]).headers

        async def slow_body():  # an in-flight request that outlives the drain period
            yield body[:10]
            await asyncio.sleep(3.0)
            yield body[10:]

        async with aiohttp.ClientSession() as session:
            in_flight = asyncio.create_task(
                session.post(base + "/webhooks/quickbooks", data=slow_body(), headers=signature)
            )
            await asyncio.sleep(0.5)
            process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.4)
            async with session.get(base + "/readyz") as r:
                assert r.status == 503  # draining: load balancers stop sending
                assert (await r.json())["status"] == "draining"
            async with session.get(base + "/livez") as r:
                assert r.status == 200
            response = await in_flight
            assert response.status == 200
            delivery_id = response.headers["x-ledgerhook-delivery-id"]
        assert await asyncio.to_thread(process.wait, 30) == 0
        records = await read_topic(settings.kafka_bootstrap_servers, settings.topic_raw)
        assert [record_header(r, "ledgerhook-delivery-id") for r in records] == [delivery_id]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_several_workers_share_the_port_and_stop_cleanly(settings: Settings) -> None:
    await migrate_and_create_topics(settings)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [*LEDGERHOOK, "serve", "--workers", "2"],
        env=env_for(settings, port, LEDGERHOOK_SHUTDOWN_DRAIN_SECONDS="0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        await wait_ready(base, process)
        bodies = [samples.quickbooks_legacy(str(i), 2) for i in range(30)]
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            for body in bodies:
                async with session.post(
                    base + "/webhooks/quickbooks",
                    data=body,
                    headers=samples.signed_quickbooks(body, QUICKBOOKS_TOKENS[1]).headers,
                ) as r:
                    assert r.status == 200
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 30)
        assert code == 0, process.stderr.read().decode()[-3000:] if process.stderr else ""
        stored = [r.value for r in await read_topic(settings.kafka_bootstrap_servers, settings.topic_raw)]
        assert sorted(stored) == sorted(bodies)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_serve_without_a_broker_names_it_in_one_line(settings: Settings) -> None:
    port = free_port()
    nowhere = EmbeddedBroker(free_port())  # never started: nothing listens there
    env = env_for(settings, port) | {
        "LEDGERHOOK_KAFKA_BOOTSTRAP_SERVERS": nowhere.bootstrap,
        "LEDGERHOOK_STARTUP_TIMEOUT_SECONDS": "1",
    }
    result = await asyncio.to_thread(
        subprocess.run, [*LEDGERHOOK, "serve"], env=env, capture_output=True, text=True, timeout=90
    )
    assert result.returncode == 3
    assert result.stderr.splitlines()[-1] == (
        f"ledgerhook serve: cannot reach Kafka at {nowhere.bootstrap} (connection refused, tried for 1 s);"
        " check LEDGERHOOK_KAFKA_BOOTSTRAP_SERVERS"
    )
    assert "Traceback" not in result.stderr


# The server itself, without `ledgerhook serve`'s start-up checks: what still goes wrong while the
# app starts (here, a broker gone by then) is one log line, not a traceback, and exit 3.
SERVE_UNCHECKED = (
    "import sys; from gateway.runtime.server import serve; from gateway.settings import load_settings;"
)
SERVE_UNCHECKED += " sys.exit(serve(load_settings()))"


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_start_up_failure_past_the_checks_is_one_line_and_exit_3(
    settings: Settings, workers: int
) -> None:
    nowhere = EmbeddedBroker(free_port())
    env = env_for(settings, free_port()) | {
        "LEDGERHOOK_KAFKA_BOOTSTRAP_SERVERS": nowhere.bootstrap,
        "LEDGERHOOK_WORKERS": str(workers),
    }
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", SERVE_UNCHECKED],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    messages = [orjson.loads(line)["message"] for line in result.stderr.splitlines()]
    failures = [m for m in messages if m.startswith("the gateway could not start: ")]
    assert failures and all(
        m.startswith("the gateway could not start: KafkaConnectionError: Unable to bootstrap from")
        for m in failures
    )
    assert "Application startup failed. Exiting." in messages
