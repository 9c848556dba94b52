"""Build every deployable's image from the root Dockerfile, and start one the way a cluster would.

`make images` runs `build`. The engine is docker when its daemon answers, else buildah (`--isolation chroot`,
no daemon). The bases are the Dockerfile's own (`PYTHON_IMAGE`, `UV_IMAGE`) when their registries answer, else
local stand-ins made here and cached in .cache/images: Debian bookworm's python3.11 in a debootstrap root file
system for python:3.11-slim-bookworm, and uv's binary from its PyPI wheel for ghcr.io/astral-sh/uv. The list
of images (target, PACKAGES, name) is docker-compose.yml's. tests/images runs each image with `Engine.start`.

Environment: IMAGES_ENGINE (auto|docker|buildah), IMAGES_BASES (auto|registry|standin), SHOPBOTLY_TAG (dev),
DEBIAN_MIRROR (http://deb.debian.org/debian).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
CACHE = Path(os.environ.get("SHOPBOTLY_CACHE_DIR", ROOT / ".cache")) / "images"
STANDIN_REPO = "localhost/shopbotly-standin"
DEBIAN_MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
# What python:3.11-slim-bookworm holds besides Python: CA certificates, /etc/services and friends, time zones.
STANDIN_PACKAGES = ("python3.11", "ca-certificates", "netbase", "tzdata")
# Bump when the recipe below changes in a way the package list does not show: it names the cached stand-in.
STANDIN_RECIPE = "2"
STANDIN_ENV = {
    "PATH": "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}


def log(message: str) -> None:
    print(f"images: {message}", file=sys.stderr, flush=True)


def run(cmd: Sequence[str | Path], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a command, failing with the command line and its stderr when it fails."""
    kwargs.setdefault("check", True)
    kwargs.setdefault("text", True)
    return subprocess.run([str(c) for c in cmd], **kwargs)  # type: ignore[call-overload,no-any-return]


# --- what to build ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    target: str
    packages: str
    name: str  # without the tag, as docker-compose.yml names it

    def ref(self, tag: str) -> str:
        return f"{self.name}:{tag}"


def compose_images() -> list[Image]:
    """Each image docker-compose.yml builds, once per target, in the order compose lists them."""
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    images: dict[str, Image] = {}
    for service in services.values():
        build = service.get("build")
        if not build:
            continue
        name = service["image"].split(":", 1)[0]
        image = Image(build["target"], build["args"]["PACKAGES"], name)
        if images.setdefault(image.target, image) != image:
            raise SystemExit(f"docker-compose.yml builds target {image.target} two different ways")
    return list(images.values())


def dockerfile_default(arg: str) -> str:
    """The default of a global `ARG` of the Dockerfile: the real base images are named there only."""
    match = re.search(rf"^ARG {arg}=(\S+)$", DOCKERFILE.read_text(), flags=re.MULTILINE)
    if not match:
        raise SystemExit(f"Dockerfile: no default for ARG {arg}")
    return match.group(1)


# --- tools --------------------------------------------------------------------------------------------------


def ensure_command(command: str, package: str) -> None:
    """Install a Debian package if its command is missing and we may (root, apt-get), else says what to do."""
    if shutil.which(command):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log(f"installing {package} (apt-get install {package})")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run(["apt-get", "update", "-qq"], env=env)
        run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        if shutil.which(command):
            return
    raise SystemExit(f"images: {command} is required: sudo apt-get install {package}")


def docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    result = subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False)
    return result.returncode == 0


def registry_answers(image: str) -> bool:
    """Whether the registry of an image reference answers at all (401 counts: it is there)."""
    first = image.split("/", 1)[0]
    host = first if ("." in first or ":" in first) and "/" in image else "registry-1.docker.io"
    try:
        urllib.request.urlopen(f"https://{host}/v2/", timeout=5)
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False
    return True


# --- engines ------------------------------------------------------------------------------------------------


class Engine:
    """The few things `make images` and its test need from a container engine."""

    name = ""

    def has_image(self, ref: str) -> bool:
        raise NotImplementedError

    def import_rootfs(self, tarball: Path, ref: str, env: dict[str, str], cmd: list[str]) -> None:
        raise NotImplementedError

    def build(self, image: Image, tag: str, build_args: dict[str, str], *, pull: bool) -> None:
        raise NotImplementedError

    @staticmethod
    def secret_flags() -> list[str]:
        """The host's CA bundle as the build secret `ca-bundle`, for uv behind a TLS-inspecting proxy."""
        bundle = Path(os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt")
        return ["--secret", f"id=ca-bundle,src={bundle}"] if bundle.is_file() else []

    def size(self, ref: str) -> int:
        raise NotImplementedError

    def config(self, ref: str) -> dict[str, object]:
        """The image's OCI config (User, Env, Entrypoint, WorkingDir...)."""
        raise NotImplementedError

    def list_files(self, ref: str, path: str) -> list[str]:
        """Every path under `path` in the image, relative to it (no container is started)."""
        raise NotImplementedError

    @contextlib.contextmanager
    def start(
        self,
        ref: str,
        env: dict[str, str],
        volumes: dict[str, str],
        log_path: Path,
        command: Sequence[str] | None = None,
    ) -> Iterator[subprocess.Popen[bytes]]:
        """Run the image's entry point (or `command`) as the image's user: root read-only, /tmp a fresh tmpfs,
        no capabilities, the host's network. Output goes to `log_path`; leaving the block stops it.

        `volumes`: host path -> container path, a trailing `:ro` on the container path for read-only.
        """
        raise NotImplementedError
        yield  # pragma: no cover

    def exec(
        self, ref: str, command: Sequence[str], env: dict[str, str], volumes: dict[str, str], log_path: Path
    ) -> int:
        """Run a one-shot command the way `start` runs a service; its exit status."""
        with self.start(ref, env, volumes, log_path, command) as proc:
            return proc.wait(timeout=300)


class Docker(Engine):
    name = "docker"

    def has_image(self, ref: str) -> bool:
        return run(["docker", "image", "inspect", ref], capture_output=True, check=False).returncode == 0

    def import_rootfs(self, tarball: Path, ref: str, env: dict[str, str], cmd: list[str]) -> None:
        changes = [f"ENV {k}={v}" for k, v in env.items()] + [f"CMD {json.dumps(cmd)}"]
        run(["docker", "import", *(a for c in changes for a in ("--change", c)), tarball, ref])

    def build(self, image: Image, tag: str, build_args: dict[str, str], *, pull: bool) -> None:
        args = [a for k, v in build_args.items() for a in ("--build-arg", f"{k}={v}")]
        run(
            [
                "docker",
                "build",
                "--target",
                image.target,
                *args,
                *self.secret_flags(),
                "-t",
                image.ref(tag),
                "-f",
                DOCKERFILE,
                ROOT,
            ],
            env={**os.environ, "DOCKER_BUILDKIT": "1"},
        )

    def size(self, ref: str) -> int:
        return int(
            run(["docker", "image", "inspect", "--format", "{{.Size}}", ref], capture_output=True).stdout
        )

    def config(self, ref: str) -> dict[str, object]:
        out = run(
            ["docker", "image", "inspect", "--format", "{{json .Config}}", ref], capture_output=True
        ).stdout
        return dict(json.loads(out))

    def list_files(self, ref: str, path: str) -> list[str]:
        container = run(["docker", "create", ref], capture_output=True).stdout.strip()
        try:
            with tempfile.TemporaryDirectory() as tmp:
                tar = Path(tmp) / "fs.tar"
                run(["docker", "export", "-o", tar, container])
                out = run(["tar", "-tf", tar], capture_output=True).stdout
        finally:
            run(["docker", "rm", container], capture_output=True, check=False)
        prefix = path.strip("/") + "/"
        return [p[len(prefix) :] for p in out.split() if p.startswith(prefix) and p != prefix]

    @contextlib.contextmanager
    def start(
        self,
        ref: str,
        env: dict[str, str],
        volumes: dict[str, str],
        log_path: Path,
        command: Sequence[str] | None = None,
    ) -> Iterator[subprocess.Popen[bytes]]:
        flags = ["--rm", "--network", "host", "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL"]  # noqa: S108
        flags += ["--security-opt", "no-new-privileges:true"]
        flags += [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
        flags += [a for host, inside in volumes.items() for a in ("-v", f"{host}:{inside}")]
        name = f"shopbotly-images-{os.getpid()}-{time.monotonic_ns()}"
        with log_path.open("ab") as out:
            if command:
                flags += ["--entrypoint", command[0]]
            cmd = ["docker", "run", "--name", name, *flags, ref, *(command or [])[1:]]
            proc = subprocess.Popen(cmd, stdout=out, stderr=out)
        try:
            yield proc
        finally:
            run(["docker", "stop", "-t", "10", name], capture_output=True, check=False)
            proc.wait(timeout=30)


class Buildah(Engine):
    name = "buildah"
    ISOLATION = ("--isolation", "chroot")

    def has_image(self, ref: str) -> bool:
        return (
            run(["buildah", "inspect", "--type", "image", ref], capture_output=True, check=False).returncode
            == 0
        )

    def import_rootfs(self, tarball: Path, ref: str, env: dict[str, str], cmd: list[str]) -> None:
        container = run(["buildah", "from", "scratch"], capture_output=True).stdout.strip()
        try:
            run(["buildah", "add", container, tarball, "/"], stdout=subprocess.DEVNULL)  # unpacks the archive
            config = [a for k, v in env.items() for a in ("--env", f"{k}={v}")]
            run(["buildah", "config", *config, "--cmd", json.dumps(cmd), container])
            run(["buildah", "commit", "--rm", "--quiet", container, ref], stdout=subprocess.DEVNULL)
        except BaseException:
            run(["buildah", "rm", container], capture_output=True, check=False)
            raise

    def _containers(self) -> set[str]:
        return set(
            run(["buildah", "containers", "--quiet", "--notruncate"], capture_output=True).stdout.split()
        )

    def build(self, image: Image, tag: str, build_args: dict[str, str], *, pull: bool) -> None:
        before = self._containers()
        try:
            self._build(image, tag, build_args, pull=pull)
        finally:
            # buildah 1.28 keeps a working container (and its mount) of the `uv` stage, which has no step of
            # its own, after every build: one more per run without this.
            leftovers = sorted(self._containers() - before)
            if leftovers:
                run(["buildah", "rm", *leftovers], capture_output=True, check=False)

    def _build(self, image: Image, tag: str, build_args: dict[str, str], *, pull: bool) -> None:
        args = [a for k, v in build_args.items() for a in ("--build-arg", f"{k}={v}")]
        # --layers: the dependency layer of the build stage is shared by every image and kept between runs.
        run(
            [
                "buildah",
                "build",
                *self.ISOLATION,
                "--layers",
                f"--pull={'missing' if pull else 'never'}",
                "--target",
                image.target,
                *args,
                *self.secret_flags(),
                "-t",
                image.ref(tag),
                "-f",
                DOCKERFILE,
                ROOT,
            ]
        )

    def _inspect(self, ref: str) -> dict[str, object]:
        out = run(["buildah", "inspect", "--type", "image", ref], capture_output=True).stdout
        return dict(json.loads(out))

    def size(self, ref: str) -> int:
        # The unpacked file system, as `docker images` reports it (buildah only prints it rounded).
        with self._mounted(ref) as (_, mnt):
            return int(run(["du", "-sbx", mnt], capture_output=True).stdout.split()[0])

    def config(self, ref: str) -> dict[str, object]:
        oci = self._inspect(ref)["OCIv1"]
        assert isinstance(oci, dict)
        return dict(oci.get("config", {}))

    @contextlib.contextmanager
    def _mounted(self, ref: str) -> Iterator[tuple[str, Path]]:
        container = run(
            ["buildah", "from", "--pull=never", "--quiet", ref], capture_output=True
        ).stdout.strip()
        try:
            mnt = Path(run(["buildah", "mount", container], capture_output=True).stdout.strip())
            yield container, mnt
        finally:
            run(["buildah", "rm", container], capture_output=True, check=False)

    def list_files(self, ref: str, path: str) -> list[str]:
        with self._mounted(ref) as (_, mnt):
            base = mnt / path.strip("/")
            return [str(p.relative_to(base)) for p in base.rglob("*")]

    # buildah 1.28 exits 2 after any command on a read-only root (it cannot remove /run/.containerenv, then
    # panics logging that), so a one-shot command reports its own status on its last line.
    STATUS = "[images] exit status "

    @contextlib.contextmanager
    def start(
        self,
        ref: str,
        env: dict[str, str],
        volumes: dict[str, str],
        log_path: Path,
        command: Sequence[str] | None = None,
    ) -> Iterator[subprocess.Popen[bytes]]:
        if command is None:
            command = list(self.config(ref).get("Entrypoint") or [])  # type: ignore[call-overload]
        else:
            command = ["/bin/sh", "-c", f'"$@"; echo "{self.STATUS}$?"', "sh", *command]
        with self._mounted(ref) as (container, mnt):
            # The container's root is buildah's overlay mount of the image, made read-only here (buildah run
            # has no --read-only), so nothing the process does can write to it; /tmp is a tmpfs over it. The
            # mount points, the volumes' and the one buildah run adds, must exist first (runtimes make them).
            (mnt / "run/.containerenv").touch()
            for host, inside in volumes.items():
                point = mnt / inside.split(":", 1)[0].lstrip("/")
                if Path(host).is_dir():
                    point.mkdir(parents=True, exist_ok=True)
                else:
                    point.parent.mkdir(parents=True, exist_ok=True)
                    point.touch()
            run(["mount", "-o", "remount,ro", mnt])
            flags = [*self.ISOLATION, "--mount", "type=tmpfs,destination=/tmp", "--cap-drop", "all"]
            flags += [a for k, v in env.items() for a in ("--env", f"{k}={v}")]
            flags += [a for host, inside in volumes.items() for a in ("--volume", f"{host}:{inside}")]
            with log_path.open("ab") as out:
                # buildah run uses the image's USER; a session of its own, so the whole tree can be stopped.
                proc = subprocess.Popen(
                    ["buildah", "run", *flags, container, "--", *command],
                    stdout=out,
                    stderr=out,
                    start_new_session=True,
                )
            try:
                yield proc
            finally:
                stop_session(proc)
                run(["umount", mnt], capture_output=True, check=False)

    def exec(
        self, ref: str, command: Sequence[str], env: dict[str, str], volumes: dict[str, str], log_path: Path
    ) -> int:
        offset = log_path.stat().st_size if log_path.exists() else 0
        super().exec(ref, command, env, volumes, log_path)
        with log_path.open("rb") as f:
            f.seek(offset)
            lines = [
                line
                for line in f.read().decode(errors="replace").splitlines()
                if line.startswith(self.STATUS)
            ]
        return int(lines[-1].removeprefix(self.STATUS)) if lines else -1


def stop_session(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM the process group (the service), then SIGKILL what is left after `grace` seconds."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def engine() -> Engine:
    choice = os.environ.get("IMAGES_ENGINE", "auto")
    if choice == "docker" or (choice == "auto" and docker_answers()):
        return Docker()
    if choice not in ("auto", "buildah"):
        raise SystemExit(f"IMAGES_ENGINE={choice}: expected auto, docker or buildah")
    ensure_command("buildah", "buildah")
    return Buildah()


# --- stand-in bases -----------------------------------------------------------------------------------------


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


def python_standin_rootfs(python_image: str) -> Path:
    """A Debian bookworm root file system with python3.11 where python:3.11-slim-bookworm has its Python.

    Made once with debootstrap (minbase) from Debian's packages and cached as a tarball; the official image's
    Python lives in /usr/local, so its paths are links to Debian's. Docs, man pages, translations, apt lists
    are dropped as the slim image drops them.
    """
    key = _digest(python_image, DEBIAN_MIRROR, STANDIN_RECIPE, *STANDIN_PACKAGES)
    tarball = CACHE / f"python-3.11-slim-bookworm.{key}.tar.gz"
    if tarball.exists():
        return tarball
    ensure_command("debootstrap", "debootstrap")
    CACHE.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        rootfs = Path(tmp) / "rootfs"
        log(f"making the stand-in for {python_image}: debootstrap bookworm from {DEBIAN_MIRROR}")
        run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(STANDIN_PACKAGES)}",
                "bookworm",
                rootfs,
                DEBIAN_MIRROR,
            ],
            stdout=subprocess.DEVNULL,
        )
        local_bin = rootfs / "usr/local/bin"
        for link in ("python3.11", "python3", "python"):
            (local_bin / link).unlink(missing_ok=True)
            (local_bin / link).symlink_to("/usr/bin/python3.11")
        junk_dirs = ("var/lib/apt/lists", "var/cache/apt", "usr/share/doc", "usr/share/man", "usr/share/info")
        for junk in (*junk_dirs, "usr/share/locale"):
            for child in (rootfs / junk).glob("*"):
                if child.name == "locale.alias":
                    continue
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        partial = tarball.with_suffix(".partial")
        # /dev, /proc and /sys are the runtime's to fill; debootstrap's device nodes stay out of the image.
        run(
            [
                "tar",
                "--numeric-owner",
                "--xattrs",
                "-czf",
                partial,
                "-C",
                rootfs,
                "--exclude=./dev/*",
                "--exclude=./proc/*",
                "--exclude=./sys/*",
                ".",
            ]
        )
        partial.rename(tarball)
    for old in CACHE.glob("python-3.11-slim-bookworm.*.tar.gz"):
        if old != tarball:
            old.unlink()
    log(f"stand-in root file system in {tarball} ({time.monotonic() - started:.0f} s)")
    return tarball


def uv_standin_rootfs(uv_image: str) -> Path:
    """uv and uvx from uv's PyPI wheel, at / as in ghcr.io/astral-sh/uv (the Dockerfile copies /uv)."""
    version = uv_image.rsplit(":", 1)[1]
    tarball = CACHE / f"uv-{version}.tar"
    if tarball.exists():
        return tarball
    uv = os.environ.get("UV") or shutil.which("uv") or str(ROOT / ".tools/bin/uv")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        target = Path(tmp) / "wheel"
        log(f"making the stand-in for {uv_image}: uv=={version} from its PyPI wheel")
        run(
            [
                uv,
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--only-binary",
                ":all:",
                "--python",
                sys.executable,
                "--target",
                target,
                f"uv=={version}",
            ]
        )
        partial = tarball.with_suffix(".partial")
        run(["tar", "--numeric-owner", "-cf", partial, "-C", target / "bin", "uv", "uvx"])
        partial.rename(tarball)
    return tarball


def standin_bases(eng: Engine) -> dict[str, str]:
    """Build arguments naming local stand-ins for the Dockerfile's bases (imported into the engine once)."""
    python_image, uv_image = dockerfile_default("PYTHON_IMAGE"), dockerfile_default("UV_IMAGE")
    python_tar = python_standin_rootfs(python_image)
    uv_tar = uv_standin_rootfs(uv_image)
    # The recipe's digest is in the tag: a changed recipe is a new image, not a stale one under the old name.
    python_ref = f"{STANDIN_REPO}/python:3.11-slim-bookworm-{python_tar.name.split('.')[-3]}"
    uv_ref = f"{STANDIN_REPO}/uv:{uv_image.rsplit(':', 1)[1]}"
    if not eng.has_image(python_ref):
        log(f"importing {python_ref}")
        eng.import_rootfs(python_tar, python_ref, STANDIN_ENV, ["python3"])
    if not eng.has_image(uv_ref):
        log(f"importing {uv_ref}")
        eng.import_rootfs(uv_tar, uv_ref, {}, ["/uv"])
    return {"PYTHON_IMAGE": python_ref, "UV_IMAGE": uv_ref}


def bases(eng: Engine) -> tuple[dict[str, str], bool]:
    """(build arguments for the bases, whether the engine may pull): real bases if their registries answer."""
    choice = os.environ.get("IMAGES_BASES", "auto")
    real = [dockerfile_default("PYTHON_IMAGE"), dockerfile_default("UV_IMAGE")]
    if choice == "registry" or (choice == "auto" and all(registry_answers(r) for r in real)):
        log(f"bases from their registries: {', '.join(real)}")
        return {}, True
    if choice not in ("auto", "standin"):
        raise SystemExit(f"IMAGES_BASES={choice}: expected auto, registry or standin")
    if choice == "auto":
        log("a base registry does not answer: building on local stand-ins")
    return standin_bases(eng), False


# --- commands -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Built:
    image: Image
    ref: str
    seconds: float
    size: int


def build(targets: Sequence[str] = (), tag: str | None = None) -> tuple[Engine, list[Built]]:
    tag = tag or os.environ.get("SHOPBOTLY_TAG", "dev")
    images = compose_images()
    unknown = set(targets) - {i.target for i in images}
    if unknown:
        raise SystemExit(
            f"unknown target(s) {', '.join(sorted(unknown))}: one of {[i.target for i in images]}"
        )
    eng = engine()
    base_args, pull = bases(eng)
    built = []
    for image in images:
        if targets and image.target not in targets:
            continue
        log(f"{eng.name}: building {image.ref(tag)} (target {image.target}, PACKAGES={image.packages})")
        started = time.monotonic()
        eng.build(image, tag, {**base_args, "PACKAGES": image.packages}, pull=pull)
        ref = image.ref(tag)
        built.append(Built(image, ref, time.monotonic() - started, eng.size(ref)))
    return eng, built


def report(built: Sequence[Built]) -> str:
    lines = ["| image | size (MB) | build (s) |", "|---|---:|---:|"]
    lines += [f"| `{b.ref}` | {b.size / 1e6:.0f} | {b.seconds:.0f} |" for b in built]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deploy/images/images.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build_cmd = sub.add_parser(
        "build", help="build the images (all of docker-compose.yml's, or the targets named)"
    )
    build_cmd.add_argument("targets", nargs="*")
    build_cmd.add_argument("--tag", default=None, help="image tag (default: $SHOPBOTLY_TAG or dev)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    _, built = build(args.targets, args.tag)
    print(report(built))
    print(f"\n{len(built)} image(s) in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
