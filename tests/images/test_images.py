"""Every image of the root Dockerfile builds, is small, carries its console scripts and nothing test-only, and
each service starts from it as the image's own user on a read-only root (only /tmp writable) and answers
/readyz against the local broker.

Builds with `deploy/images/images.py` (docker, else buildah; real bases, else the local stand-ins) and runs
each image with that engine. Minutes long and root only: `make test-images` runs it (CI after
`make test`); `make test` skips it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import sys
import time
import tomllib
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from dotenv import dotenv_values

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.skipif(
        os.environ.get("SHOPBOTLY_IMAGE_TESTS") != "1",
        reason="builds and starts the container images (minutes, root): run with make test-images",
    ),
    # The first test builds every image (the session fixture); a cold build takes several minutes.
    pytest.mark.timeout(1800),
]


def _load_images_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("shopbotly_images_tool", ROOT / "deploy/images/images.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


images_tool = _load_images_tool()
IMAGES = {image.target: image for image in images_tool.compose_images()}
MB = 1_000_000
# Uncompressed size budgets. 200 MB for each image but the mapper and the console (which installs the mapper
# and the CLI as libraries): they carry the operator CLI (rich, pygments, typer, crm-writer's connectors) and
# phonenumbers with its geocoder, carrier and timezone data (43 MB neither uses; phonenumberslite has none of
# it). Lower them when that changes.
SIZE_BUDGET_MB = {target: 200 for target in IMAGES} | {"mapper": 250, "console": 250}


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s<>=!~\[;]", req, maxsplit=1)[0].lower().replace("_", "-") for req in requirements}


def _test_only() -> set[str]:
    """What only the tests use: the root `dev` group (test clients, linters, pytest) and the benchmark tool,
    less what a member needs at run time (crm-writer signs with standardwebhooks, which the tests use too)."""
    projects = [tomllib.loads(p.read_text()).get("project", {}) for p in ROOT.glob("*/*/pyproject.toml")]
    runtime = set().union(
        *(_names(p.get("dependencies", [])) for p in projects if p.get("name") != "shopbotly-bench")
    )
    dev = _names(tomllib.loads((ROOT / "pyproject.toml").read_text())["dependency-groups"]["dev"])
    return (dev | {"shopbotly-bench"}) - runtime - {"shopbotly-common"}


TEST_ONLY = _test_only()
# Build tools that must stay in the build stage.
TOOLCHAIN = {"gcc", "cc", "c++", "g++", "clang", "ld", "as", "strip", "make", "uv", "uvx", "pip"}
BIN_DIRS = ["usr/bin", "usr/local/bin", "usr/sbin", "app/.venv/bin"]


@pytest.fixture(scope="session")
def built(pytestconfig: pytest.Config) -> dict[str, Any]:
    """Build every image (cached layers make a rebuild cheap) and report sizes and build times."""
    started = time.monotonic()
    engine, results = images_tool.build()
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\nimages built with {engine.name} in {time.monotonic() - started:.0f} s:")
            reporter.write_line(images_tool.report(results))
    return {"engine": engine, "results": {b.image.target: b for b in results}}


@pytest.fixture(scope="session")
def engine(built: dict[str, Any]) -> Any:
    return built["engine"]


def _console_scripts(packages: str) -> set[str]:
    """The console scripts of the workspace packages PACKAGES names."""
    scripts: set[str] = set()
    for pyproject in ROOT.glob("*/*/pyproject.toml"):
        project = tomllib.loads(pyproject.read_text()).get("project", {})
        if project.get("name") in packages.split():
            scripts |= set(project.get("scripts", {}))
    return scripts


@pytest.mark.parametrize("target", list(IMAGES))
def test_image_is_within_its_size_budget(built: dict[str, Any], target: str) -> None:
    size = built["results"][target].size
    assert size <= SIZE_BUDGET_MB[target] * MB, f"{target}: {size / MB:.0f} MB > {SIZE_BUDGET_MB[target]} MB"


@pytest.mark.parametrize("target", list(IMAGES))
def test_image_has_its_console_scripts_and_nothing_test_only(engine: Any, target: str) -> None:
    image = IMAGES[target]
    ref = image.ref(os.environ.get("SHOPBOTLY_TAG", "dev"))
    config = engine.config(ref)
    files = engine.list_files(ref, "/")

    scripts = {f.removeprefix("app/.venv/bin/") for f in files if f.startswith("app/.venv/bin/")}
    expected = _console_scripts(image.packages)
    assert expected and expected <= scripts, f"{target}: missing console scripts {sorted(expected - scripts)}"
    entrypoint = config.get("Entrypoint") or []
    assert entrypoint and entrypoint[0] in expected, (
        f"{target}: entry point {entrypoint} is not one of {expected}"
    )

    dists = {
        m.group(1).lower().replace("_", "-")
        for f in files
        if (m := re.fullmatch(r"app/\.venv/lib/python3\.11/site-packages/([^/]+)-[^-/]+\.dist-info", f))
    }
    assert dists, f"{target}: no installed distributions found"
    assert not dists & TEST_ONLY, (
        f"{target}: test-only distributions in the image: {sorted(dists & TEST_ONLY)}"
    )

    tools = {f.rsplit("/", 1)[1] for f in files if f.rsplit("/", 1)[0] in BIN_DIRS} & TOOLCHAIN
    assert not tools, f"{target}: build tools in the final image: {sorted(tools)}"

    assert config.get("User") == "10001:10001", f"{target}: runs as {config.get('User')!r}, not 10001:10001"


# --- starting the services ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - local http
            return int(response.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return 0


@pytest.fixture(scope="session")
def stack_env(kafka_bootstrap: str) -> dict[str, str]:
    """What compose gives every service, with this run's own topics and consumer groups."""
    demo = {k: v for k, v in dotenv_values(ROOT / "config/demo.env").items() if v is not None}
    prefix = f"img{uuid.uuid4().hex[:8]}."
    return demo | {
        "SHOPBOTLY_ENVIRONMENT": "development",
        "SHOPBOTLY_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "SHOPBOTLY_KAFKA_TOPIC_PREFIX": prefix,
        "SHOPBOTLY_KAFKA_PARTITIONS": "3",
        "SHOPBOTLY_KAFKA_REPLICATION_FACTOR": "1",
        "SHOPBOTLY_CONSUMER_GROUP": f"{prefix}crm-writer",
        "SHOPBOTLY_LOG_LEVEL": "info",
    }


VOLUMES = {str(ROOT / "config"): "/etc/shopbotly:ro"}


@pytest.fixture(scope="session")
def topics(engine: Any, stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> None:
    """`shopbotly topics create` from the mapper image (it carries the CLI), as compose's `topics` does."""
    log = tmp_path_factory.mktemp("topics") / "topics.log"
    ref = IMAGES["mapper"].ref(os.environ.get("SHOPBOTLY_TAG", "dev"))
    status = engine.exec(ref, ["shopbotly", "topics", "create"], stack_env, VOLUMES, log)
    assert status == 0, f"shopbotly topics create exited {status}:\n{log.read_text()[-3000:]}"


def _service_process(session: int) -> int | None:
    """The pid of the service's python process in the runner's session (the newest one)."""
    found = None
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            pid = int(status.parent.name)
            if os.getsid(pid) == session and "python" in (status.parent / "cmdline").read_bytes().decode():
                found = pid if found is None or pid > found else found
        except (OSError, ValueError):
            continue
    return found


@pytest.mark.parametrize("target", list(IMAGES))
def test_service_starts_unprivileged_on_a_read_only_root(
    engine: Any, stack_env: dict[str, str], topics: None, target: str, tmp_path: Path
) -> None:
    image = IMAGES[target]
    ref = image.ref(os.environ.get("SHOPBOTLY_TAG", "dev"))
    port = _free_port()
    env = {**stack_env, "SHOPBOTLY_PORT": str(port), "SHOPBOTLY_EMULATOR_PORT": str(port)}
    volumes = dict(VOLUMES)
    if "SHOPBOTLY_DATA_DIR" in str(engine.config(ref).get("Env")):
        # The data dir is a volume (compose: named volume, Kubernetes: emptyDir/PVC) owned by the image user.
        data = tmp_path / "data"
        data.mkdir()
        os.chown(data, 10001, 10001)
        volumes[str(data)] = "/var/lib/shopbotly"
    log = tmp_path / f"{target}.log"
    deadline = time.monotonic() + 120
    with engine.start(ref, env, volumes, log) as proc:
        codes = {"healthz": 0, "readyz": 0}
        while time.monotonic() < deadline and proc.poll() is None:
            codes = {path: _get(f"http://127.0.0.1:{port}/{path}") for path in codes}
            if codes == {"healthz": 200, "readyz": 200}:
                break
            time.sleep(1)
        tail = log.read_text(errors="replace")[-4000:]
        assert proc.poll() is None, f"{target} exited with {proc.returncode}:\n{tail}"
        assert codes == {"healthz": 200, "readyz": 200}, f"{target}: {codes} after 120 s:\n{tail}"

        pid = _service_process(proc.pid)
        if (
            pid is not None
        ):  # the buildah runner: the process is ours to inspect (docker runs it in its daemon)
            uid_line = next(
                x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("Uid:")
            )
            assert uid_line.split()[1:] == ["10001"] * 4, f"{target} runs as {uid_line}"
            mounts = {
                fields[4]: set(fields[5].split(","))
                for fields in (
                    line.split() for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
                )
            }
            assert "ro" in mounts["/"], f"{target}: the root file system is writable: {mounts['/']}"
            assert "rw" in mounts["/tmp"], f"{target}: /tmp is not writable"
            writable = {path for path, opts in mounts.items() if "rw" in opts}
            # What a runtime provides besides the two volumes: /dev, /proc, /sys and the generated /etc files.
            runtime = (
                "/dev",
                "/proc",
                "/sys",
                "/etc/hosts",
                "/etc/hostname",
                "/etc/resolv.conf",
                "/run/.containerenv",
            )
            unexpected = {
                p for p in writable if p not in ("/tmp", "/var/lib/shopbotly") and not p.startswith(runtime)
            }
            assert not unexpected, f"{target}: writable paths besides /tmp: {sorted(unexpected)}"
