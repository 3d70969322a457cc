"""Every client command against one `ledgerhook dev`, as a newcomer runs them: no LEDGERHOOK_* variable
anywhere, only the flags the banner prints (`--url`, `--bootstrap`, `--emulator-url`).

One dev stack for the module, in a session of its own and stopped as a terminal stops it (SIGINT to
its process group). Each command is a real process; none may print a traceback. The fan-out worker
may start consuming a little after `/readyz` answers 200, so events are awaited with a deadline.
"""

import asyncio
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.cli.main import SAMPLE_PROVIDERS
from gateway.dev.embedded import EmbeddedBroker, free_port
from gateway.dev.secrets import DEV_CONNECTION_SECRETS, DEV_SECRETS
from gateway.runtime.kafka import ensure_topics
from gateway.settings import load_settings

LEDGERHOOK = [sys.executable, "-m", "gateway.cli"]
# No setting from the environment: what works here works on a fresh machine next to `dev`.
ENV = {name: value for name, value in os.environ.items() if not name.startswith("LEDGERHOOK_")}
CHANGES, QUARANTINE, RAW = "ledgerhook.changes", "ledgerhook.quarantine", "ledgerhook.webhooks.raw"
DELIVERY = re.compile(r"-> 200 \(.*delivery ([0-9a-f-]{36})\)$")


@dataclass
class Dev:
    """The running stack: where it is, and its standard error (the banner, then its logs)."""

    process: "subprocess.Popen[bytes]"
    base: str
    bootstrap: str
    emulator: str
    data_dir: Path
    log: Path


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 45) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen in {timeout:.0f}s"
        time.sleep(0.2)


def ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/readyz", timeout=2) as response:  # noqa: S310 - loopback
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    folder = tmp_path_factory.mktemp("dev")
    port, kafka_port, emulator_port = free_port(), free_port(), free_port()
    log = folder / "dev.err"
    command = [
        *LEDGERHOOK,
        "dev",
        *("--port", str(port), "--kafka-port", str(kafka_port)),
        *("--data-dir", str(folder / "state"), "--emulator", "--emulator-port", str(emulator_port)),
    ]
    with log.open("w") as stderr:
        process = subprocess.Popen(
            command, env=ENV, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True
        )
    stack = Dev(
        process,
        f"http://127.0.0.1:{port}",
        f"127.0.0.1:{kafka_port}",
        f"http://127.0.0.1:{emulator_port}",
        folder / "state",
        log,
    )
    try:
        wait_until(
            lambda: process.poll() is None and ready(stack.base) and "Ctrl-C" in log.read_text(),
            "dev ready",
            timeout=120,
        )
        yield stack
    finally:
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C, as a terminal sends it
        try:
            code = process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
    assert code == 0, log.read_text()[-3000:]
    assert "Traceback" not in log.read_text()


def ledgerhook(
    *args: str, stdin: str | None = None, timeout: float = 60
) -> "subprocess.CompletedProcess[str]":
    """One command as a process; never a traceback."""
    result = subprocess.run(
        [*LEDGERHOOK, *args], env=ENV, input=stdin, capture_output=True, text=True, timeout=timeout
    )
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    return result


def ok(*args: str) -> str:
    """The standard output of a command that must succeed."""
    result = ledgerhook(*args)
    assert result.returncode == 0, f"{args}: {result.returncode}\n{result.stdout}{result.stderr}"
    return result.stdout


def records(dev: Dev, topic: str) -> list[str]:
    """What `tail --no-follow` prints of a topic, one block per record."""
    output = ok("tail", topic, "--bootstrap", dev.bootstrap, "--no-follow")
    return [block for block in ("\n" + output).split("\n--- ") if block.strip()]


def wait_for_records(dev: Dev, topic: str, *wanted: tuple[str, ...], timeout: float = 45) -> list[str]:
    """For each tuple of texts in `wanted`, the first record of `topic` holding them all, once every
    one is there (one `tail` a round, however many are awaited)."""
    found: list[str] = []

    def present() -> bool:
        blocks = records(dev, topic)
        found[:] = [next((b for b in blocks if all(t in b for t in texts)), "") for texts in wanted]
        return all(found)

    wait_until(present, f"records with {wanted} on {topic}", timeout)
    return found


def wait_for_record(dev: Dev, topic: str, *texts: str, timeout: float = 45) -> str:
    """The first record of `topic` that holds every one of `texts`, once it is there."""
    return wait_for_records(dev, topic, texts, timeout=timeout)[0]


def add(dev: Dev, tenant: str, provider: str, account: str, *more: str) -> "subprocess.CompletedProcess[str]":
    result = ledgerhook(
        "connections", "add", "--tenant", tenant, "--provider", provider, "--account", account, *more,
        "--url", dev.base,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result


def delivery_of(output: str) -> str:
    """The delivery id of the sample, from `send-sample`'s last line."""
    match = DELIVERY.search(output.strip().splitlines()[-1])
    assert match, output
    return match.group(1)


def create(dev: Dev, tenant: str, provider: str, account: str, secret: str | None = None) -> dict[str, str]:
    """A connection registered through the admin API itself (quicker than a process), with the dev
    admin token; `connections add` has tests of its own."""
    body = {"tenant_id": tenant, "provider": provider, "provider_account_id": account}
    request = urllib.request.Request(  # noqa: S310 - loopback
        dev.base + "/admin/v1/connections",
        data=json.dumps(body | ({"webhook_secret": secret} if secret else {})).encode(),
        headers={
            "authorization": f"Bearer {DEV_SECRETS['admin_tokens']}",
            "content-type": "application/json",
        },
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
        return dict(json.loads(response.read()))


class Follower:
    """A command left running in a session of its own, its output in files, stopped with Ctrl-C."""

    def __init__(self, folder: Path, args: list[str]) -> None:
        name = uuid.uuid4().hex[:8]
        self.out, self.err = folder / f"{name}.out", folder / f"{name}.err"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.process = subprocess.Popen(
                [*LEDGERHOOK, *args], env=ENV, stdout=out, stderr=err, start_new_session=True
            )

    @property
    def output(self) -> str:
        return self.out.read_text()

    def ctrl_c(self) -> int:
        os.killpg(self.process.pid, signal.SIGINT)
        return self.process.wait(30)


@pytest.fixture
def follow(tmp_path: Path) -> Iterator[Callable[[list[str]], Follower]]:
    """Starts followers; any a failed test left running is killed after it."""
    started: list[Follower] = []

    def start(args: list[str]) -> Follower:
        started.append(Follower(tmp_path, args))
        return started[-1]

    yield start
    for follower in started:
        if follower.process.poll() is None:
            os.killpg(follower.process.pid, signal.SIGKILL)
            follower.process.wait(30)


def wait_for_block(follower: Follower, *texts: str, timeout: float = 60) -> str:
    """The first record a running `tail` printed that holds every one of `texts`, once it is there."""
    found: list[str] = []

    def present() -> bool:
        found[:] = [block for block in follower.output.split("\n--- ") if all(t in block for t in texts)]
        return bool(found)

    wait_until(present, f"a record with {texts}", timeout)
    return found[0]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_send_sample_for_every_provider_reaches_the_changes_topic(dev: Dev) -> None:
    sent: dict[str, tuple[str, str]] = {}  # provider: (connection id, delivery id)
    for provider in SAMPLE_PROVIDERS:
        account = unique(provider)
        secret = DEV_CONNECTION_SECRETS.get(provider)
        with_secret = secret is not None and provider != "freshbooks"
        connection = create(
            dev, unique("every"), provider, account, DEV_SECRETS[secret] if with_secret else None
        )
        # Found by its account, or named; Sage Intacct's key comes from dev's data folder.
        which = (
            ["--connection", connection["id"]] if provider in ("netsuite", "xero") else ["--account", account]
        )
        extra = ["--data-dir", str(dev.data_dir)] if provider == "sage-intacct" else []
        output = ok("send-sample", provider, *which, *extra, "--url", dev.base)
        lines = output.strip().splitlines()
        if provider == "freshbooks":  # no verifier yet: the handshake hands over the dev one first
            assert len(lines) == 2 and "-> 200 (callback.verify handshake, delivery" in lines[0]
            again = ok("send-sample", provider, "--account", account, "--url", dev.base)
            assert len(again.strip().splitlines()) == 1 and "-> 200" in again
        else:
            assert len(lines) == 1
        path = f"/webhooks/{provider}" + (
            "" if provider in ("quickbooks", "xero") else f"/{connection['id']}"
        )
        assert lines[-1].startswith(f"POST {dev.base}{path} -> 200 (delivery ")
        sent[provider] = (connection["id"], delivery_of(output))

    events = wait_for_records(
        dev, CHANGES, *((f"connectionid: {c}", f'"delivery_id": "{d}"') for c, d in sent.values())
    )
    for provider, event in zip(sent, events, strict=True):
        assert f"provider: {provider}" in event and "accounting." in event


def test_connections_add_says_why_a_webhook_url_is_not_live_yet(dev: Dev) -> None:
    tenant = unique("hints")
    custom = add(dev, tenant, "custom", unique("c"))
    connection = json.loads(custom.stdout)  # the JSON stays alone on standard output
    note = custom.stderr.strip().splitlines()
    assert len(note) == 1 and "webhook_url answers 404 until one is set" in note[0]
    assert f"PATCH /admin/v1/connections/{connection['id']}" in note[0]
    freshbooks = add(dev, tenant, "freshbooks", unique("f"))
    assert "callback.verify handshake" in freshbooks.stderr and len(freshbooks.stderr.splitlines()) == 1
    sage = add(dev, tenant, "sage-intacct", unique("s"))
    assert "LEDGERHOOK_SAGE_INTACCT_JWT_KEYS" in sage.stderr and len(sage.stderr.splitlines()) == 1
    # Nothing to say when the URL takes deliveries, or when the provider posts to a shared endpoint.
    assert add(dev, tenant, "zoho-books", unique("z"), "--secret", "ZohoSecret12345").stderr == ""
    assert add(dev, tenant, "quickbooks", unique("q")).stderr == ""

    # send-sample says the same, rather than posting to a URL that answers 404.
    refused = ledgerhook("send-sample", "custom", "--connection", connection["id"], "--url", dev.base)
    assert refused.returncode == 1 and "has no webhook secret" in refused.stderr
    assert len(refused.stderr.splitlines()) == 1

    listed = ok("connections", "list", "--tenant", tenant, "--url", dev.base).splitlines()
    assert len(listed) == 6 and connection["id"] in listed[1]
    assert json.loads(ok("connections", "show", connection["id"], "--url", dev.base)) == connection


def test_send_sample_explains_which_connection_it_needs(dev: Dev) -> None:
    missing = ledgerhook("send-sample", "zoho-books", "--account", unique("nobody"), "--url", dev.base)
    assert missing.returncode == 1 and "no active zoho-books connection for account" in missing.stderr
    # It says how to make one, with the secret it signs with.
    assert "ledgerhook connections add --tenant acme --provider zoho-books" in missing.stderr
    assert DEV_SECRETS["zoho_books_webhook_secret"] in missing.stderr
    account = unique("twice")
    for tenant in ("one", "two"):
        create(dev, unique(tenant), "netsuite", account, DEV_SECRETS["netsuite_webhook_secret"])
    several = ledgerhook("send-sample", "netsuite", "--account", account, "--url", dev.base)
    assert several.returncode == 1 and "2 active netsuite connections for account" in several.stderr
    assert "--connection ID" in several.stderr and len(several.stderr.splitlines()) == 1
    no_key = ledgerhook(
        "send-sample", "sage-intacct", "--data-dir", str(dev.data_dir / "absent"), "--url", dev.base
    )
    assert no_key.returncode == 1 and "start ledgerhook dev first, or pass --data-dir" in no_key.stderr
    wrong = ledgerhook("send-sample", "custom", "--secret", "not-whsec", "--url", dev.base)
    assert wrong.returncode == 2 and "--secret: a Standard Webhooks secret" in wrong.stderr
    assert "not-whsec" not in wrong.stderr


def test_credentials_and_sync_need_no_settings(dev: Dev) -> None:
    connected = ok(
        "emulator", "connect", "quickbooks", "--tenant", unique("creds"), "--account", "4620816365000001",
        "--url", dev.base, "--emulator-url", dev.emulator,
    )  # fmt: skip
    connection_id = next(line.split()[1] for line in connected.splitlines() if line.startswith("  id "))
    state = json.loads(ok("credentials", "show", connection_id, "--url", dev.base))
    assert state["status"] == "active" and "access_token" not in state
    assert f"connection {connection_id}" in ok("sync", connection_id, "--url", dev.base)
    assert (
        json.loads(ok("sync", connection_id, "--json", "--url", dev.base))["connection_id"] == connection_id
    )


def test_redrive_goes_through_the_admin_api(dev: Dev) -> None:
    sent = ok("send-sample", "quickbooks", "--account", unique("unrouted"), "--url", dev.base)
    delivery_id = delivery_of(sent)
    wait_for_record(dev, QUARANTINE, f"ledgerhook-delivery-id: {delivery_id}", "unknown_account")
    redriven = ok("redrive", "--url", dev.base)
    counts = re.fullmatch(r"redriven: (\d+), skipped: (\d+)\n", redriven)
    assert counts and int(counts.group(1)) >= 1, redriven
    # Fed back to the fan-out worker, and quarantined again: its account still has no connection.
    wait_for_record(dev, QUARANTINE, f"ledgerhook-delivery-id: {delivery_id}", "ledgerhook-redrive-count: 1")

    unreachable = ledgerhook("redrive", "--url", f"http://127.0.0.1:{free_port()}")
    assert unreachable.returncode == 1 and unreachable.stdout == ""
    assert len(unreachable.stderr.splitlines()) == 1 and "cannot reach" in unreachable.stderr
    invalid = ledgerhook("redrive", "--reason", "whatever", "--url", dev.base)
    assert invalid.returncode == 2 and "invalid choice" in invalid.stderr


def test_tail_from_end_shows_only_what_comes_after_it_starts(
    dev: Dev, follow: Callable[[list[str]], Follower]
) -> None:
    realm = unique("realm")
    connection_id = create(dev, unique("tail"), "quickbooks", realm)["id"]
    # A batch of events on the changes topic first: a broker's "end" that lags behind it (the dev
    # broker's ListOffsets) would replay it.
    old = delivery_of(ok("send-sample", "quickbooks", "--account", realm, "--url", dev.base))
    wait_for_record(dev, CHANGES, f'"delivery_id": "{old}"')

    follower = follow(["tail", CHANGES, "--from-end", "--bootstrap", dev.bootstrap])
    wait_until(lambda: "waiting for new records" in follower.err.read_text(), "tail ready", 20)
    new = delivery_of(ok("send-sample", "quickbooks", "--account", realm, "--url", dev.base))
    wait_until(lambda: f'"delivery_id": "{new}"' in follower.output, "the new events printed", 45)
    time.sleep(1.5)  # what else it would print
    assert follower.ctrl_c() == 130  # Ctrl-C: quiet, as other client commands
    output = follower.output
    assert old not in output
    blocks = [block for block in output.split("\n--- ") if "delivery_id" in block]
    assert blocks and all(f'"delivery_id": "{new}"' in block for block in blocks)
    assert all(f"connectionid: {connection_id}" in block for block in blocks)
    assert follower.err.read_text().strip() == (
        f"ledgerhook tail: waiting for new records on {CHANGES} (Ctrl-C stops)"
    )


def test_tail_names_the_topics_there_are(dev: Dev) -> None:
    result = ledgerhook("tail", "ledgerhook.change", "--bootstrap", dev.bootstrap)
    assert result.returncode == 1 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert "topic 'ledgerhook.change' does not exist" in result.stderr
    assert all(topic in result.stderr for topic in (CHANGES, QUARANTINE, RAW, "ledgerhook.account-events"))


def test_tail_without_a_broker_says_so_in_one_line() -> None:
    started = time.monotonic()
    result = ledgerhook("tail", CHANGES, "--bootstrap", f"127.0.0.1:{free_port()}", timeout=30)
    assert time.monotonic() - started < 10
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.endswith("is ledgerhook dev running? (--bootstrap)\n")
    assert result.stderr.startswith("ledgerhook tail: cannot reach the broker at 127.0.0.1:")
    assert len(result.stderr.splitlines()) == 1  # no client library lines either


def test_a_following_tail_says_when_the_broker_goes_and_comes_back(
    tmp_path: Path, follow: Callable[[list[str]], Follower]
) -> None:
    """A broker of its own (the module's stack keeps running): stopped under a following tail, then
    started again on the same port. Each change is said once, on standard error; Ctrl-C still
    stops the tail quietly."""
    port = free_port()
    broker = EmbeddedBroker(port, log_path=tmp_path / "broker.log")
    broker.start()
    try:
        settings = load_settings(
            database_url="postgresql://unused@127.0.0.1/unused", kafka_bootstrap_servers=broker.bootstrap
        )
        asyncio.run(ensure_topics(settings))
        follower = follow(["tail", CHANGES, "--bootstrap", broker.bootstrap])
        time.sleep(3)  # following an empty topic
        broker.stop()
        wait_until(lambda: "stopped answering" in follower.err.read_text(), "the loss said", 40)
        broker = EmbeddedBroker(port, log_path=tmp_path / "broker-again.log")
        broker.start()
        wait_until(lambda: "answers again" in follower.err.read_text(), "the return said", 40)
        assert follower.ctrl_c() == 130
    finally:
        broker.stop()
    said = follower.err.read_text().splitlines()
    assert said == [
        f"ledgerhook tail: the broker stopped answering; still trying at {broker.bootstrap} (Ctrl-C stops)",
        f"ledgerhook tail: the broker answers again at {broker.bootstrap} (Ctrl-C stops)",
    ]


def test_the_banner_suggestions_work_as_printed(dev: Dev, follow: Callable[[list[str]], Follower]) -> None:
    banner = dev.log.read_text()  # the banner, then log lines (JSON)
    printed = [line.strip() for line in banner.splitlines() if line.startswith("  ledgerhook ")]
    commands = [shlex.split(line, comments=True)[1:] for line in printed]
    # What the banner offers, in its order: the fan-out path, then the emulator's polling.
    assert [command[:2] for command in commands] == [
        ["tail", CHANGES],
        ["connections", "add"],
        ["send-sample", "custom"],
        ["send-sample", "quickbooks"],
        ["connections", "add"],
        ["redrive", "--url"],
        ["tail", "ledgerhook.account-events"],
        ["emulator", "connect"],
        ["emulator", "change"],
        ["tail", CHANGES],
    ]
    assert DEV_SECRETS["custom_webhook_secret"] in printed[1]
    assert DEV_SECRETS["zoho_books_webhook_secret"] not in banner

    followers: list[Follower] = []
    created: dict[str, str] = {}  # provider: connection id
    quickbooks_delivery = invoice = ""
    for command in commands:
        if command[0] == "tail":
            followers.append(follow(command))
            continue
        output = ok(*command)
        if command[:2] == ["connections", "add"]:
            connection = json.loads(output)
            created[connection["provider"]] = connection["id"]
        elif command[:2] == ["send-sample", "quickbooks"]:
            quickbooks_delivery = delivery_of(output)
            # Its company has no connection yet: quarantined, as the banner says.
            wait_for_record(dev, QUARANTINE, f"ledgerhook-delivery-id: {quickbooks_delivery}")
        elif command[0] == "emulator" and command[1] == "change":
            invoice = output.split()[2]  # "created Invoice <id> (active)"

    changes, polled = followers[0], followers[-1]  # both print the topic from its beginning
    # The custom sample, and the QuickBooks one fed back by the redrive, both for tenant acme.
    custom = wait_for_block(changes, f"connectionid: {created['custom']}", "tenantid: acme")
    assert '"origin": "webhook"' in custom
    wait_for_block(
        changes,
        f"connectionid: {created['quickbooks']}",
        f'"delivery_id": "{quickbooks_delivery}"',
        "tenantid: acme",
    )
    # The emulator's invoice, polled for the same QuickBooks connection (its tokens handed over).
    invoice_event = wait_for_block(
        polled, f"accounting.invoice.created  invoice/{invoice}  ", f"connectionid: {created['quickbooks']}"
    )
    assert '"origin": "poll"' in invoice_event
    for follower in followers:
        assert follower.ctrl_c() == 130
        assert "Traceback" not in follower.output + follower.err.read_text()
