"""The command line: serve, validate, scenarios, healthcheck (thin: parse flags, call the package)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from .errors import ControlError, ScenarioError
from .spec import CREATE_PATH, SEED_MODEL
from .store import run_now

ENV = "MOCKGEN"
F = TypeVar("F", bound=Callable[..., Any])


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="mockgen")
def main() -> None:
    """mockgen: an offline emulator of the image/video generation Open API."""


def option(*names: str, **kwargs: Any) -> Callable[[F], F]:
    """``click.option`` with its environment variable shown in ``--help``."""
    return click.option(*names, show_envvar=True, **kwargs)


@main.command()
@option("--scenario", "-s", envvar="MOCKGEN_SCENARIO", default="default", help="Bundled scenario name or YAML path.")
@option("--host", envvar="MOCKGEN_HOST", default="127.0.0.1", help="Address to listen on (0.0.0.0: every interface).")
@option(
    "--port",
    "-p",
    envvar="MOCKGEN_PORT",
    default=8000,
    type=click.IntRange(0, 65535),
    help="Port to listen on (0: a free one, shown in the banner).",
)
@option(
    "--clock",
    envvar="MOCKGEN_CLOCK",
    type=click.Choice(["real", "manual"]),
    default=None,
    help="Override the scenario's clock.",
)
@option(
    "--envelope",
    envvar="MOCKGEN_ENVELOPE",
    type=click.Choice(["documented", "compat"]),
    default=None,
    help="Override the scenario's envelope; compat also puts the task's fields at the top level (vendor SDKs).",
)
@option(
    "--public-url",
    envvar="MOCKGEN_PUBLIC_URL",
    default=None,
    help="Base URL for result links (behind Docker or a proxy).",
)
@option(
    "--admin-token", envvar="MOCKGEN_ADMIN_TOKEN", default=None, help="Require 'Authorization: Bearer T' on /_mock/."
)
@option(
    "--max-tasks",
    envvar="MOCKGEN_MAX_TASKS",
    default=1_000_000,
    type=click.IntRange(min=1),
    help="Tasks kept, unfinished ones included; past it the oldest finished ones are dropped "
    "(a submit is refused when none has finished).",
)
@option(
    "--max-accounts",
    envvar="MOCKGEN_MAX_ACCOUNTS",
    default=100_000,
    type=click.IntRange(min=1),
    help="Accounts kept; past it a new key's first charge or top-up is refused (existing ones keep working).",
)
@option(
    "--journal-bytes",
    envvar="MOCKGEN_JOURNAL_BYTES",
    default=64 * 1024 * 1024,
    type=click.IntRange(min=0),
    help="Bytes the request journal may hold (about; each entry's parts cut to 4 KiB); past it the oldest go.",
)
@option(
    "--max-connections",
    envvar="MOCKGEN_MAX_CONNECTIONS",
    default=1000,
    type=click.IntRange(min=1),
    help="Open connections served at once; past it a request gets 503 at once.",
)
@option(
    "--state-bytes",
    envvar="MOCKGEN_STATE_BYTES",
    default=256 * 1024 * 1024,
    type=click.IntRange(min=1),
    help="The largest body PUT /_mock/state takes (413 past it).",
)
@option(
    "--allowed-host",
    "allowed_hosts",
    envvar="MOCKGEN_ALLOWED_HOSTS",
    multiple=True,
    metavar="NAME",
    help="Also answer requests whose Host is NAME (repeatable or comma-separated; '.example.com': "
    "it and its subdomains; '*': any). Loopback names and the bound host are always answered.",
)
@option("--watch", envvar="MOCKGEN_WATCH", is_flag=True, help="Reload the scenario file when it changes.")
@option(
    "--access-log/--no-access-log",
    envvar="MOCKGEN_ACCESS_LOG",
    default=False,
    help="Print uvicorn's line for every request.",
)
@option(
    "--state-file",
    envvar="MOCKGEN_STATE_FILE",
    default=None,
    type=click.Path(dir_okay=False),
    help="Load the world from this JSON at start (if it exists); write it there at clean shutdown.",
)
@option(
    "--state-any-scenario",
    envvar="MOCKGEN_STATE_ANY_SCENARIO",
    is_flag=True,
    help="Load a --state-file saved under another scenario (refused otherwise).",
)
@option(
    "--store",
    envvar="MOCKGEN_STORE",
    default="memory",
    metavar="URL",
    help="Where the world lives: memory (this process), or redis://HOST:PORT/DB, rediss://... or "
    "unix:///PATH: one world shared by every server pointed at it.",
)
@option(
    "--store-prefix",
    envvar="MOCKGEN_STORE_PREFIX",
    default="mockgen",
    help="The world's name in a shared store (several worlds can share one Redis; reset clears only its own).",
)
@option(
    "--workers",
    envvar="MOCKGEN_WORKERS",
    default=1,
    type=click.IntRange(1, 64),
    help="Worker processes serving the port (above 1 needs a shared --store).",
)
def serve(
    scenario: str,
    host: str,
    port: int,
    clock: str | None,
    envelope: str | None,
    public_url: str | None,
    admin_token: str | None,
    max_tasks: int,
    journal_bytes: int,
    max_accounts: int,
    max_connections: int,
    state_bytes: int,
    allowed_hosts: tuple[str, ...],
    watch: bool,
    access_log: bool,
    state_file: str | None,
    state_any_scenario: bool,
    store: str,
    store_prefix: str,
    workers: int,
) -> None:
    """Run the emulator."""
    from .app import create_app
    from .guard import is_loopback_host
    from .server import BindError, bind, make_server, run_workers
    from .store import StoreUnavailable

    if workers > 1 and store == "memory":
        raise click.UsageError(
            f"--workers {workers} needs a shared store: with the memory store each worker would hold a world "
            "of its own (two servers, two balances). Start Redis and add --store redis://127.0.0.1:6379/0 "
            "(README, Sharing one world), or serve with one worker."
        )
    hosts = [name for value in allowed_hosts for name in value.split(",") if name.strip()]
    if host not in ("0.0.0.0", "::", ""):
        hosts.append(host)  # the name it was bound to is its own
    options: dict[str, Any] = {
        "scenario": scenario,
        "clock": clock,
        "envelope": envelope,
        "public_url": public_url,
        "admin_token": admin_token,
        "max_tasks": max_tasks,
        "journal_bytes": journal_bytes,
        "max_accounts": max_accounts,
        "watch": watch,
        "state_file": state_file,
        "state_any_scenario": state_any_scenario,
        "allowed_hosts": hosts,
        "state_bytes": state_bytes,
        "store": store,
        "store_prefix": store_prefix,
    }
    try:
        app = create_app(**options)
    except ScenarioError as exc:
        raise click.ClickException(f"scenario refused:\n{exc}") from None
    except ControlError as exc:
        raise click.ClickException(f"state file {state_file} refused: {exc.msg}") from None
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    backend = app.state.backend
    if not backend.shared:
        key = run_now(backend.ready_key())
    else:
        # A shared store: joined (or its world started) here, for the banner, by an app of its own (a
        # client's connections belong to one event loop); each server then joins the world again.
        try:
            key = asyncio.run(_join(backend))
        except StoreUnavailable as exc:
            click.secho(f"WARNING: the store does not answer ({exc}): 503 until it does", fg="red", err=True)
            key = "(none yet: the store does not answer; see /_mock/health)"
    # The world's scenario and clock, as joined (the serving app's store has not joined yet).
    scenario_name, clock_kind = backend.scenario_name, backend.clock.kind
    if backend.shared:
        app = create_app(**options)
        backend = app.state.backend
    try:
        sock = bind(host, port)  # before the banner: it names a port that is really ours
    except BindError as exc:
        raise click.ClickException(str(exc)) from None
    port = sock.getsockname()[1]
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    if ":" in shown_host:
        shown_host = f"[{shown_host}]"
    base = public_url.rstrip("/") if public_url else f"http://{shown_host}:{port}"
    click.echo(f"mockgen {scenario_name!r} scenario, {clock_kind} clock")
    click.echo(f"  API        {base}{CREATE_PATH}")
    click.echo(f"  key        {key}")
    click.echo(f"  dashboard  {base}/")
    click.echo(f"  control    {base}/_mock/health")
    if backend.shared:
        click.echo(f"  store      {mask_url(store)} (world {store_prefix!r}, {workers} worker(s) here)")
    if state_file:
        loaded = "loaded" if app.state.state_loaded else "new"
        click.echo(f"  state      {state_file} ({loaded}; written at shutdown)")
    if not is_loopback_host(host) and not admin_token:
        click.secho(
            f"WARNING: listening on {host} with no --admin-token: anyone who can reach this port "
            "can change balances, resolve tasks and load scenarios through /_mock/.",
            fg="red",
            err=True,
        )
    if host in ("0.0.0.0", "::") and not allowed_hosts and not public_url:
        click.echo(
            f"note: requests are answered under loopback names and this machine's addresses; to reach it "
            f"by a name (a proxy, a Compose service), add --allowed-host NAME ({ENV}_ALLOWED_HOSTS)",
            err=True,
        )
    sys.stdout.flush()
    if workers > 1:
        os.environ[WORKER_OPTIONS] = json.dumps(options)
        run_workers("mockgen.cli:worker_app", sock, workers, access_log=access_log, max_connections=max_connections)
        return
    server = make_server(app, access_log=access_log, max_connections=max_connections)
    with tuned_gc():
        server.run(sockets=[sock])


WORKER_OPTIONS = "MOCKGEN_WORKER_OPTIONS"  # serve's create_app options, as JSON, for each worker process


async def _join(backend: Any) -> str:
    """Join (or start) the shared world and name a key for the banner; the store is let go after."""
    try:
        await backend.open()
        return str(await backend.ready_key())
    finally:
        await backend.close()


def worker_app() -> Any:
    """The app of one ``serve --workers N`` process: serve's options, from the environment."""
    from .app import create_app

    app = create_app(**json.loads(os.environ[WORKER_OPTIONS]))
    gc.collect()
    gc.freeze()  # as tuned_gc does (the process only serves)
    gc.set_threshold(20_000, 20, 20)
    return app


def mask_url(url: str) -> str:
    """A store URL with any password in it hidden (``redis://:pw@host`` -> ``redis://:***@host``)."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{host}"


@contextlib.contextmanager
def tuned_gc() -> Iterator[None]:
    """The collector tuned for a server process, and put back as it was when the server returns.

    Moves what startup made out of the collector's sight, so the full collections that tasks
    piling up trigger do not walk every module and class again, and collects less often (requests
    free what they make by reference counting; each submit leaves one long-lived task, which the
    default thresholds re-examine over and over: ~10% of a submit). Restored afterwards, so a
    process that calls ``serve`` in-process (a test session) keeps its own settings.
    """
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(dir_okay=False))
def validate(paths: tuple[str, ...]) -> None:
    """Check scenario files (default: the bundled ones); print every problem with file, line and key."""
    from .scenario import bundled_dir, load_scenario

    if not paths:
        paths = tuple(str(p) for p in sorted(bundled_dir().glob("*.yaml")))

    failed = 0
    for path in paths:
        try:
            scenario = load_scenario(Path(path))
        except ScenarioError as exc:
            failed += 1
            for issue in exc.issues:
                click.echo(str(issue), err=True)
            continue
        click.echo(f"{path}: ok ({scenario.name}: {len(scenario.rules)} rules, {len(scenario.faults)} faults)")
    if failed:
        raise click.ClickException(f"{failed} of {len(paths)} scenario file(s) refused")


@main.command()
def scenarios() -> None:
    """List the bundled scenarios."""
    from .scenario import bundled_names, load_scenario

    for name in bundled_names():
        summary = load_scenario(name).description.splitlines()
        click.echo(f"{name:<14} {summary[0] if summary else ''}")


UNREACHABLE = 3  # `mockgen contract`'s exit status when nothing answers at the URL (1 is drift)


@main.command()
@option("--base-url", envvar="MOCKGEN_CONTRACT_URL", required=True, help="The server to check.")
@option("--key", envvar="MOCKGEN_CONTRACT_KEY", required=True, help="An API key of that server.")
@click.option("--allow-charges", is_flag=True, help="Submit paid tasks on a non-local server.")
@click.option("--model", default=SEED_MODEL, help="The model of the paid task.")
@click.option("--timeout", default=120.0, type=click.FloatRange(min=0), help="Seconds to wait for a task to finish.")
@click.option("--interval", default=1.0, type=click.FloatRange(min=0.01), help="Seconds between polls.")
@option("--admin-token", envvar="MOCKGEN_ADMIN_TOKEN", default=None, help="For a mockgen's /_mock/ API.")
def contract(
    base_url: str, key: str, allow_charges: bool, model: str, timeout: float, interval: float, admin_token: str | None
) -> None:
    """Check a server (mockgen or the real service) against the contract.

    Exit 0 when it matches, 1 on drift, 3 when nothing answers at the URL.
    """
    from .conformance import run_contract
    from .journal import mask_key

    click.echo(f"mockgen contract: {base_url} with key {mask_key(key)}")
    options = {"model": model, "timeout": timeout, "interval": interval, "admin_token": admin_token}
    report = run_contract(base_url, key, allow_charges=allow_charges, **options)
    if report.unreachable:
        click.echo(f"Error: {base_url} is unreachable ({report.unreachable}): is the server running?", err=True)
        sys.exit(UNREACHABLE)
    click.echo(report.table())
    if report.failed:
        raise click.ClickException(f"contract drift: {len(report.failed)} check(s) failed")


@main.command()
@option(
    "--url", envvar="MOCKGEN_HEALTHCHECK_URL", default=None, help="Base URL (default: http://127.0.0.1:$MOCKGEN_PORT)."
)
@option("--admin-token", envvar="MOCKGEN_ADMIN_TOKEN", default=None, help="The server's --admin-token, if it has one.")
@option("--timeout", envvar="MOCKGEN_HEALTHCHECK_TIMEOUT", default=3.0, help="Seconds to wait for the answer.")
def healthcheck(url: str | None, admin_token: str | None, timeout: float) -> None:
    """Exit 0 when /_mock/health answers 200 (for Docker's HEALTHCHECK; needs no curl)."""
    import urllib.error  # here, not at the top: it costs `serve` ~40 ms of startup
    import urllib.request

    base = url or f"http://127.0.0.1:{os.environ.get(f'{ENV}_PORT', '8000')}"
    request = urllib.request.Request(f"{base.rstrip('/')}/_mock/health")
    if admin_token:
        request.add_header("Authorization", f"Bearer {admin_token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            ok = response.status == 200
    except (OSError, urllib.error.URLError) as exc:
        raise click.ClickException(f"unhealthy: {exc}") from None
    if not ok:
        raise click.ClickException("unhealthy")
    click.echo("healthy")
