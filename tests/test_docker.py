"""The Docker image, tested without a Docker engine: a static check, and its command line run directly."""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

from .conftest import free_port
from .serving import Serve

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions() -> list[tuple[str, str]]:
    joined = DOCKERFILE.replace("\\\n", " ")
    rows = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            rows.append((word.upper(), rest.strip()))
    return rows


def final_stage() -> list[tuple[str, str]]:
    rows = instructions()
    last_from = max(i for i, (word, _) in enumerate(rows) if word == "FROM")
    return rows[last_from:]


def test_dockerfile_is_small_non_root_and_self_checking() -> None:
    stage = final_stage()
    words = [w for w, _ in stage]
    assert stage[0][1].startswith("python:3.11-slim")
    user = next(rest for word, rest in stage if word == "USER")
    assert user not in ("root", "0")
    assert words.index("USER") > max(i for i, w in enumerate(words) if w == "RUN")  # installs run as root, then drop
    assert ("EXPOSE", "8000") in stage
    env = " ".join(rest for word, rest in stage if word == "ENV")
    assert "MOCKGEN_HOST=0.0.0.0" in env and "MOCKGEN_PORT=8000" in env
    healthcheck = next(rest for word, rest in stage if word == "HEALTHCHECK")
    assert '"mockgen", "healthcheck"' in healthcheck and "curl" not in DOCKERFILE
    assert any("mockgen validate" in rest for word, rest in stage if word == "RUN")
    assert ("CMD", '["mockgen", "serve"]') in stage


def test_the_image_installs_the_wheel_at_the_locked_versions() -> None:
    rows = instructions()
    build = rows[: max(i for i, (word, _) in enumerate(rows) if word == "FROM")]
    assert any(word == "COPY" and shlex.split(rest)[0] == "requirements/lock.txt" for word, rest in build)
    assert any(word == "RUN" and "requirements/lock.txt /wheels/" in rest for word, rest in build)
    install = next(rest for word, rest in final_stage() if word == "RUN" and "pip install" in rest)
    args = shlex.split(install.split("&&")[0])
    assert args[:2] == ["pip", "install"] and "/wheels/*.whl" in args
    assert args[args.index("-c") + 1] == "/wheels/lock.txt"  # constraints: the wheel's dependencies, pinned
    assert "pip check" in install


def test_everything_the_image_copies_exists() -> None:
    for word, rest in instructions():
        if word == "COPY" and not rest.startswith("--from"):
            for source in shlex.split(rest)[:-1]:
                assert (ROOT / source).exists(), source


def test_the_containers_command_line_serves_and_its_healthcheck_passes() -> None:
    """CMD and HEALTHCHECK as the image runs them, with the image's ENV (host kept on loopback here)."""
    port = free_port()
    env = {**os.environ, "MOCKGEN_HOST": "127.0.0.1", "MOCKGEN_PORT": str(port), "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "mockgen", "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            check = subprocess.run(
                [sys.executable, "-m", "mockgen", "healthcheck"], env=env, capture_output=True, text=True
            )
            if check.returncode == 0:
                break
            assert time.monotonic() < deadline, check.stderr
            time.sleep(0.1)
        assert "healthy" in check.stdout
    finally:
        server.terminate()
        server.wait(timeout=10)
        server.stderr.close()  # type: ignore[union-attr]


def test_serve_binds_where_told_and_warns_when_the_control_api_is_exposed() -> None:
    env = {"MOCKGEN_HOST": "0.0.0.0", "MOCKGEN_PORT": "0"}
    with Serve(env=env) as served:  # the image's host: every interface, reached here on loopback
        port = served.base.rsplit(":", 1)[1]
        with socket.create_connection(("127.0.0.1", int(port)), timeout=5):
            pass
    assert "WARNING: listening on 0.0.0.0 with no --admin-token" in served.errors
    with Serve("--admin-token", "t", env=env) as quiet:
        pass
    assert "WARNING" not in quiet.errors
