"""The container images (operator/Dockerfile, sidecar/Dockerfile), checked without an engine.

No container engine runs here, so what a build would find out is checked piece by piece:

- each Dockerfile parses, with the parser Docker itself uses (moby/buildkit's, through the
  `dockerfile` package), into instructions this test knows, in the forms it expects;
- the base image is pinned by an exact version tag and a digest, the same in both files;
- every COPY source exists in the repository and is in the build context (.dockerignore),
  and the context holds nothing that no COPY uses;
- the entry point exists (a console script declared in pyproject.toml, or a module with a
  `__main__`), and the sidecar's is the command the operator injects;
- the user is the one docs/images.md promises: a fixed non-root UID for the operator, root
  for the sidecar (CAP_SYS_ADMIN is only usable by UID 0 under Kubernetes);
- `make images` names both Dockerfiles and says one sentence where there is no engine.

Then the build's own steps are replayed outside a container: the files the COPY lines bring
(through .dockerignore) are laid out as the build stage sees them, the wheel is built from
them with the pinned setuptools, the image's extra is installed from it into a fresh venv
(no pip, no setuptools, no system site-packages) with constraints.txt, the entry point runs
there, and every third-party module the image's code imports must belong to a distribution
the extra declares directly. Finally pip resolves the extra for the image's own Python and
platforms, wheels only (the slim image has no compiler), and every distribution an image
installs must be pinned in constraints.txt.

The replay and the resolution need PyPI or pip's cache (about 10 s and 5 s per image on
2 cores, downloads included).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import posixpath
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import dockerfile
import pytest

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
DOCS = REPO / "docs" / "images.md"
VENV = "/opt/kwatt"


@dataclass(frozen=True)
class Image:
    name: str
    dockerfile: Path
    extra: str
    non_root: bool
    # What the image runs: every module of these packages, and these modules.
    packages: tuple[str, ...]
    modules: tuple[str, ...]


IMAGES = (
    Image(
        "operator",
        REPO / "operator" / "Dockerfile",
        "operator",
        non_root=True,
        packages=("kwatt_core", "kwatt_operator"),
        modules=("kwatt_cli.main", "kwatt_cli.operator", "kopf"),
    ),
    Image(
        "sidecar",
        REPO / "sidecar" / "Dockerfile",
        "sidecar",
        non_root=False,
        packages=("kwatt_core", "kwatt_sidecar"),
        modules=("pynvml",),
    ),
)
BY_NAME = {image.name: image for image in IMAGES}
names = pytest.mark.parametrize("name", [image.name for image in IMAGES])

INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "COPY", "ENTRYPOINT", "USER", "WORKDIR",
    "ARG", "STOPSIGNAL", "HEALTHCHECK", "VOLUME", "SHELL",
}  # fmt: skip
# ADD (which fetches URLs and unpacks archives), ONBUILD and MAINTAINER are not wanted.
PINNED_BASE = re.compile(
    r"^(?P<name>[a-z0-9]+(?:[._/-][a-z0-9]+)*)"
    r":(?P<tag>(?P<version>\d+\.\d+\.\d+)-slim-(?P<distro>[a-z]+))"
    r"@sha256:[0-9a-f]{64}$"
)
# glibc of each Debian release a slim tag may name: which manylinux wheels its pip takes.
GLIBC_MINOR = {"bookworm": 36, "trixie": 41}
ARCHES = ("x86_64", "aarch64")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# --- Dockerfiles -----------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    base: str
    alias: str | None
    commands: tuple[dockerfile.Command, ...]

    def all(self, cmd: str) -> list[dockerfile.Command]:
        return [c for c in self.commands if c.cmd.upper() == cmd]

    def last(self, cmd: str) -> dockerfile.Command | None:
        found = self.all(cmd)
        return found[-1] if found else None


@cache
def stages(path: Path) -> tuple[Stage, ...]:
    commands = dockerfile.parse_file(str(path))
    assert commands, f"{path} has no instructions"
    assert commands[0].cmd.upper() == "FROM", f"{path}: the first instruction must be FROM"
    result: list[Stage] = []
    for command in commands:
        if command.cmd.upper() == "FROM":
            value = command.value
            assert len(value) in (1, 3) and (len(value) == 1 or value[1].upper() == "AS"), (
                f"{path}:{command.start_line}: FROM IMAGE [AS NAME], not {command.original!r}"
            )
            result.append(Stage(value[0], value[2] if len(value) == 3 else None, ()))
        else:
            last = result[-1]
            result[-1] = Stage(last.base, last.alias, (*last.commands, command))
    return tuple(result)


def final(image: Image) -> Stage:
    return stages(image.dockerfile)[-1]


def external_bases(path: Path) -> list[str]:
    aliases: set[str] = set()
    bases = []
    for stage in stages(path):
        if stage.base not in aliases:
            bases.append(stage.base)
        if stage.alias:
            aliases.add(stage.alias)
    return bases


@dataclass(frozen=True)
class Copy:
    stage: int
    command: dockerfile.Command
    sources: tuple[str, ...]
    dest: str
    workdir: str

    @property
    def where(self) -> str:
        return f"line {self.command.start_line}"


def copies(path: Path) -> Iterator[Copy]:
    """Each COPY from the build context (not --from another stage), with its WORKDIR."""
    for index, stage in enumerate(stages(path)):
        workdir = "/"
        for command in stage.commands:
            cmd = command.cmd.upper()
            if cmd == "WORKDIR":
                workdir = posixpath.join(workdir, command.value[0])
            if cmd == "COPY" and not any(f.startswith("--from=") for f in command.flags):
                *sources, dest = command.value
                yield Copy(index, command, tuple(sources), dest, workdir)


def copied_sources() -> set[str]:
    return {
        posixpath.normpath(src)
        for image in IMAGES
        for copy in copies(image.dockerfile)
        for src in copy.sources
    }


# --- .dockerignore (moby/patternmatcher's rules, without character classes or escapes) --


@dataclass(frozen=True)
class Pattern:
    text: str
    exclusion: bool
    regex: re.Pattern[str]


def compile_pattern(text: str) -> re.Pattern[str]:
    assert not any(ch in text for ch in "[]\\"), (
        f".dockerignore pattern {text!r}: this test implements *, ** and ? only"
    )
    out, i = "", 0
    while i < len(text):
        ch = text[i]
        if ch == "*" and text[i + 1 : i + 2] == "*":
            i += 1
            if text[i + 1 : i + 2] == "/":
                i += 1
            out += ".*" if i + 1 >= len(text) else "(.*/)?"
        elif ch == "*":
            out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        else:
            out += re.escape(ch)
        i += 1
    return re.compile(f"^{out}$")


@cache
def dockerignore() -> tuple[Pattern, ...]:
    patterns = []
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclusion = line.startswith("!")
        text = posixpath.normpath(line[1:].strip() if exclusion else line).lstrip("/")
        patterns.append(Pattern(text, exclusion, compile_pattern(text)))
    return tuple(patterns)


def ignored(rel: str) -> bool:
    """Whether the build context leaves `rel` out (MatchesOrParentMatches; the last match wins)."""
    parts = rel.split("/")
    matched = False
    for pattern in dockerignore():
        if pattern.exclusion != matched:
            continue
        hit = bool(pattern.regex.match(rel)) or any(
            pattern.regex.match("/".join(parts[: i + 1])) for i in range(len(parts) - 1)
        )
        if hit:
            matched = not pattern.exclusion
    return matched


@cache
def context() -> frozenset[str]:
    """The files and links of the build context, relative to the repository root."""
    exceptions = [p.text for p in dockerignore() if p.exclusion]
    found: set[str] = set()
    for root, dirs, files in os.walk(REPO):
        rel_root = Path(root).relative_to(REPO).as_posix()
        keep = []
        for d in dirs:
            rel = d if rel_root == "." else f"{rel_root}/{d}"
            if (REPO / rel).is_symlink():
                files.append(d)
            elif not ignored(rel) or any(e.startswith(rel + "/") for e in exceptions):
                keep.append(d)
        dirs[:] = keep
        for f in files:
            rel = f if rel_root == "." else f"{rel_root}/{f}"
            if not ignored(rel):
                found.add(rel)
    return frozenset(found)


def stage_build(image: Image, root: Path) -> Path:
    """Lay out the build stage's files as its COPY lines would; return its WORKDIR."""
    ctx = context()
    workdir = "/"
    for copy in copies(image.dockerfile):
        if copy.stage != 0:
            continue
        workdir = copy.workdir
        target = posixpath.join(copy.workdir, copy.dest)
        for src in map(posixpath.normpath, copy.sources):
            files = sorted(f for f in ctx if f == src or f.startswith(src + "/"))
            assert files, f"{image.dockerfile}: COPY {src}: nothing in the build context"
            for rel in files:
                if rel != src:  # a file inside a copied folder: the folder's contents go to dest
                    into = posixpath.join(target, posixpath.relpath(rel, src))
                elif copy.dest.endswith("/"):
                    into = posixpath.join(target, posixpath.basename(src))
                else:
                    into = target
                out = root / into.lstrip("/")
                out.parent.mkdir(parents=True, exist_ok=True)
                if (REPO / rel).is_symlink():
                    out.symlink_to(os.readlink(REPO / rel))
                else:
                    shutil.copy2(REPO / rel, out)
    return root / workdir.lstrip("/")


# --- pyproject and constraints ------------------------------------------------------------


def extra_requirements(extra: str) -> list[str]:
    return list(PYPROJECT["project"]["optional-dependencies"][extra])


def requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match, requirement
    return normalize(match.group(0))


@cache
def pins() -> dict[str, str]:
    found = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"constraints.txt: {line!r} is not NAME==VERSION"
            found[normalize(name)] = version.strip()
    return found


def package_dir(package: str) -> str | None:
    """The repository folder of a top-level package, under setuptools' `where` roots."""
    for where in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["where"]:
        if (REPO / where / package / "__init__.py").is_file():
            return f"{where}/{package}"
    return None


def is_copied(rel: str, image: Image) -> bool:
    sources = {posixpath.normpath(s) for copy in copies(image.dockerfile) for s in copy.sources}
    return any(rel == s or rel.startswith(s + "/") for s in sources)


# --- static checks ----------------------------------------------------------------------


@names
def test_dockerfile_parses_into_known_instructions(name: str) -> None:
    image = BY_NAME[name]
    all_stages = stages(image.dockerfile)
    for stage in all_stages:
        for command in stage.commands:
            assert command.cmd.upper() in INSTRUCTIONS, (
                f"{image.dockerfile}:{command.start_line}: {command.cmd} is not expected here"
            )
            assert not command.heredocs, f"{image.dockerfile}:{command.start_line}: heredoc"
    assert len(all_stages) == 2 and all_stages[0].alias, "a build stage, then the runtime stage"
    last = final(image)
    for cmd in ("ENTRYPOINT", "CMD"):
        found = last.all(cmd)
        assert len(found) == 1, f"{image.dockerfile}: one {cmd} in the final stage"
        assert found[0].json, f"{image.dockerfile}: {cmd} in exec (JSON) form, not shell form"
    # The runtime stage takes the venv from the build stage and puts it first on PATH.
    (copy_venv,) = [c for c in last.all("COPY")]
    assert copy_venv.flags == (f"--from={all_stages[0].alias}",)
    assert copy_venv.value == (VENV, VENV)
    (env_line,) = last.all("ENV")
    env = dict(zip(env_line.value[::2], env_line.value[1::2], strict=True))
    assert env["PATH"].startswith(f"{VENV}/bin:"), env
    # The build stage installs exactly the extra, wheels only, under the pins.
    (run,) = all_stages[0].all("RUN")
    script = " ".join(run.value[0].split())
    assert f"python -m venv --without-pip {VENV}" in script
    assert script.count("--constraint constraints.txt") == 2, script
    assert "--no-build-isolation" in script and "--only-binary=:all:" in script
    assert f'[{image.extra}]"' in script, f"the RUN line must install kwatt[{image.extra}]"


def test_base_image_is_pinned_by_version_and_digest() -> None:
    bases = {base for image in IMAGES for base in external_bases(image.dockerfile)}
    assert len(bases) == 1, f"both images, both stages, one base image: {sorted(bases)}"
    (base,) = bases
    match = PINNED_BASE.match(base)
    assert match, f"{base}: NAME:X.Y.Z-slim-DISTRO@sha256:DIGEST expected"
    assert match.group("distro") in GLIBC_MINOR, f"{base}: add its glibc to GLIBC_MINOR"
    python = tuple(int(x) for x in match.group("version").split(".")[:2])
    floor = re.match(r">=\s*(\d+)\.(\d+)", PYPROJECT["project"]["requires-python"])
    assert floor and python >= (int(floor.group(1)), int(floor.group(2)))


@names
def test_copy_sources_exist_and_are_in_the_build_context(name: str) -> None:
    image = BY_NAME[name]
    ctx = context()
    for copy in copies(image.dockerfile):
        where = f"{image.dockerfile.relative_to(REPO)}, {copy.where}"
        assert copy.sources, f"{where}: COPY needs a source"
        if len(copy.sources) > 1:
            assert copy.dest.endswith("/"), f"{where}: several sources need a folder destination"
        for src in copy.sources:
            norm = posixpath.normpath(src)
            assert not any(ch in src for ch in "*?[") and not src.startswith(("/", "..")), where
            assert (REPO / norm).exists(), f"{where}: {src} does not exist in the repository"
            inside = [f for f in ctx if f == norm or f.startswith(norm + "/")]
            assert inside, f"{where}: .dockerignore leaves {src} out of the build context"
            if (REPO / norm).is_dir():
                wanted = [
                    p.relative_to(REPO).as_posix()
                    for p in (REPO / norm).rglob("*")
                    if (p.is_file() or p.is_symlink())
                    and "__pycache__" not in p.parts
                    and p.suffix != ".pyc"
                ]
                missing = sorted(set(wanted) - set(inside))
                assert not missing, f"{where}: .dockerignore leaves out {missing}"


def test_build_context_holds_only_what_the_images_copy() -> None:
    sources = copied_sources()
    extra = sorted(
        f for f in context() if not any(f == s or f.startswith(s + "/") for s in sources)
    )
    assert not extra, f".dockerignore lets in files no COPY uses: {extra}"
    for pattern in dockerignore():
        if pattern.exclusion:
            assert pattern.text in sources, f".dockerignore re-includes {pattern.text}: no COPY"


@names
def test_links_in_the_copied_tree_resolve(name: str, tmp_path: Path) -> None:
    src = stage_build(BY_NAME[name], tmp_path)
    for path in src.rglob("*"):
        if path.is_symlink():
            assert path.exists(), f"{path.relative_to(tmp_path)} points outside what is copied"


@names
def test_entry_point_exists(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    image = BY_NAME[name]
    last = final(image)
    entry = last.last("ENTRYPOINT")
    cmd = last.last("CMD")
    assert entry is not None and cmd is not None
    argv = [*entry.value, *cmd.value]
    if argv[0] == "python":
        assert argv[1] == "-m", argv
        module = argv[2]
        top = module.split(".")[0]
        folder = package_dir(top)
        assert folder, f"{module}: no such package in the repository"
        main = REPO / folder / Path(*module.split(".")[1:]) / "__main__.py"
        assert main.is_file(), f"python -m {module}: {main.relative_to(REPO)} does not exist"
    else:
        scripts = PYPROJECT["project"]["scripts"]
        assert argv[0] in scripts, f"{argv[0]} is not a console script of pyproject.toml"
        module, _, function = scripts[argv[0]].partition(":")
        top = module.split(".")[0]
        folder = package_dir(top)
        assert folder, f"{module}: no such package in the repository"
        source = REPO / folder / Path(*module.split(".")[1:]).with_suffix(".py")
        tree = ast.parse(source.read_text())
        assert any(isinstance(n, ast.FunctionDef) and n.name == function for n in tree.body)
    assert is_copied(folder, image), f"{image.dockerfile} does not COPY {folder}"

    if image.name == "operator":
        from kwatt_cli import operator as operator_command
        from kwatt_cli.main import SUBCOMMANDS

        assert argv[:2] == ["kwatt", "operator"]
        assert SUBCOMMANDS["operator"][2] == image.extra, "the subcommand's deps are the extra"
        # The operator injects the sidecar image `make images` tags.
        monkeypatch.delenv("KWATT_SIDECAR_IMAGE", raising=False)
        parser = argparse.ArgumentParser()
        operator_command.add_arguments(parser)
        assert parser.parse_args([]).sidecar_image == make_tags()["sidecar"]
    else:
        from kwatt_operator.jobs import SidecarSettings

        injected = SidecarSettings.__dataclass_fields__["command"].default
        assert argv == list(injected), "the image runs what the operator injects"


@names
def test_user_is_the_one_promised(name: str) -> None:
    image = BY_NAME[name]
    for stage in stages(image.dockerfile)[:-1]:
        assert not stage.all("USER"), "the build stage builds as root"
    user = final(image).last("USER")
    assert user is not None, f"{image.dockerfile}: USER must be set, not left to the base"
    uid, _, gid = user.value[0].partition(":")
    assert uid.isdigit() and gid.isdigit(), (
        "numeric UID:GID, so the kubelet can check runAsNonRoot against it"
    )
    if image.non_root:
        assert int(uid) != 0 and int(gid) != 0, f"{image.name} runs as a fixed non-root UID"
    else:
        assert int(uid) == 0, f"{image.name} runs as root (CAP_SYS_ADMIN needs UID 0)"
    docs = DOCS.read_text()
    assert f"{image.name}/Dockerfile" in docs and f"`{user.value[0]}`" in docs, (
        f"docs/images.md says who {image.name} runs as"
    )


@cache
def make_tags() -> dict[str, str]:
    outer = {"IMAGE_REPO", "IMAGE_TAG", "ENGINE", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"}
    out = subprocess.run(
        ["make", "-n", "images", "ENGINE=docker"],
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if k not in outer},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    tags = {}
    for image in IMAGES:
        rel = image.dockerfile.relative_to(REPO).as_posix()
        match = re.search(rf"build -f {re.escape(rel)} -t (\S+) \.( |$)", out, re.M)
        assert match, f"make images does not build {rel} from the repository root:\n{out}"
        tags[image.name] = match.group(1)
    return tags


def test_make_images_without_an_engine_says_so(tmp_path: Path) -> None:
    assert set(make_tags()) == {image.name for image in IMAGES}
    make, sed = shutil.which("make"), shutil.which("sed")
    assert make and sed
    (tmp_path / "sed").symlink_to(sed)  # for IMAGE_TAG; no docker, no podman
    done = subprocess.run(
        [make, "-s", "images"],
        cwd=REPO,
        env={"PATH": str(tmp_path), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2, done
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and "docker or podman" in lines[0], done.stdout


# --- the build, replayed ------------------------------------------------------------------

PROBE = r"""
import ast, importlib, importlib.metadata as md, importlib.util, json, pkgutil, sys

packages, modules = json.loads(sys.argv[1]), json.loads(sys.argv[2])
files = {}
for name in modules:
    importlib.import_module(name)
for package in packages:
    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(root.__path__, package + "."):
        if info.name.endswith(".__main__"):  # read, not run
            files[info.name] = importlib.util.find_spec(info.name).origin
        else:
            importlib.import_module(info.name)


def imports(tree):
    # Top-level names of absolute imports, leaving out `if TYPE_CHECKING:` blocks.
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]
        todo.extend(ast.iter_child_nodes(node))


owners = md.packages_distributions()
third_party = {}
for name, module in sys.modules.items():
    if name.startswith("kwatt_") and getattr(module, "__file__", None):
        files[name] = module.__file__
for name, file in sorted(files.items()):
    with open(file, encoding="utf-8") as source:
        tree = ast.parse(source.read())
    for top in imports(tree):
        if top in sys.stdlib_module_names or top.startswith("kwatt_") or top == "__future__":
            continue
        third_party[top] = sorted(set(owners.get(top, [])))
installed = {d.metadata["Name"]: d.version for d in md.distributions()}
print(json.dumps({"files": files, "third_party": third_party, "installed": installed}))
"""


def pip(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_CONSTRAINT")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    done = subprocess.run(
        [sys.executable, "-m", "pip", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"pip {' '.join(args)}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_sidecar(argv: Sequence[str], bin_dir: Path, tmp: Path) -> None:
    """Start the image's entry point on an empty simulated node; it must serve and stop cleanly."""
    port, metrics = free_port(), free_port()
    report = tmp / "termination-log"
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "KWATT_SIM_GPU_DIR": str(tmp / "gpus"),
        "KWATT_STATE_DIR": str(tmp / "state"),
        "KWATT_TERMINATION_PATH": str(report),
        "KWATT_PORT": str(port),
        "KWATT_METRICS_PORT": str(metrics),
        "NVIDIA_VISIBLE_DEVICES": "all",
    }
    (tmp / "gpus").mkdir()
    proc = subprocess.Popen(
        [str(bin_dir / argv[0]), *argv[1:]],
        cwd=tmp,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"the sidecar exited: {proc.communicate()[0][-3000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/healthz", timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the sidecar never answered /healthz"
                time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0, out[-3000:]
    assert "result" in json.loads(report.read_text()), report.read_text()


@pytest.mark.timeout(400)
@names
def test_extra_installs_alone_and_the_entry_point_runs(name: str, tmp_path: Path) -> None:
    image = BY_NAME[name]
    src = stage_build(image, tmp_path / "build")
    # RUN, as in the build stage: the wheel from the copied files with the pinned setuptools,
    # then a venv with nothing in it but kwatt[extra], wheels only, under the pins.
    constraints = src / "constraints.txt"
    wheels = tmp_path / "wheels"
    pip("wheel", "--no-deps", "--build-constraint", str(constraints), "-w", str(wheels), str(src))
    (wheel,) = wheels.glob("kwatt-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    pip(
        "--python", str(python), "install", "--no-compile", "--only-binary=:all:",
        "--constraint", str(constraints), f"{wheel}[{image.extra}]",
    )  # fmt: skip

    probe = subprocess.run(
        [str(python), "-I", "-c", PROBE, json.dumps(image.packages), json.dumps(image.modules)],
        cwd=tmp_path,
        env={"PATH": f"{venv / 'bin'}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.returncode == 0, f"the image's code does not import:\n{probe.stderr[-4000:]}"
    found: dict[str, Any] = json.loads(probe.stdout)

    site = venv.resolve()
    for module, file in found["files"].items():
        assert Path(file).resolve().is_relative_to(site), f"{module} came from {file}"
    # Package data comes along (the CRD reaches kwatt_operator through a link in the tree).
    package_data = PYPROJECT["tool"]["setuptools"].get("package-data", {})
    for package in image.packages:
        installed = Path(found["files"][package]).parent
        folder = package_dir(package)
        assert folder
        for key in ("*", package):
            for pattern in package_data.get(key, []):
                want = {p.relative_to(REPO / folder) for p in (REPO / folder).glob(pattern)}
                have = {p.relative_to(installed) for p in installed.glob(pattern) if p.is_file()}
                assert want == have, f"{package}: package data {pattern}: {sorted(map(str, have))}"
    declared = {requirement_name(r) for r in extra_requirements(image.extra)}
    for top, owners in found["third_party"].items():
        assert owners, f"`import {top}` in the {image.name} image: no installed distribution"
        assert {normalize(o) for o in owners} & declared, (
            f"`import {top}` ({owners}) is not a declared dependency of kwatt[{image.extra}]"
        )
    for dist, version in found["installed"].items():
        if normalize(dist) != "kwatt":
            assert pins().get(normalize(dist)) == version, (
                f"the {image.name} image installs {dist} {version}, not pinned in constraints.txt"
            )

    last = final(image)
    entry, cmd = last.last("ENTRYPOINT"), last.last("CMD")
    assert entry is not None and cmd is not None
    argv = [*entry.value, *cmd.value]
    if image.name == "operator":
        done = subprocess.run(
            [str(venv / "bin" / argv[0]), *argv[1:], "--help"],
            cwd=tmp_path,
            env={"PATH": f"{venv / 'bin'}:/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0 and "usage: kwatt operator" in done.stdout, done
    else:
        run_sidecar(argv, venv / "bin", tmp_path)


@pytest.mark.timeout(300)
@names
def test_extra_resolves_to_pinned_wheels_for_the_image(name: str, tmp_path: Path) -> None:
    image = BY_NAME[name]
    (base,) = set(external_bases(image.dockerfile))
    match = PINNED_BASE.match(base)
    assert match
    major, minor = match.group("version").split(".")[:2]
    glibc = GLIBC_MINOR[match.group("distro")]
    for arch in ARCHES:
        platforms = [f"manylinux_2_{m}_{arch}" for m in range(glibc, 16, -1)]
        platforms.append(f"manylinux2014_{arch}")
        if arch == "x86_64":
            platforms += ["manylinux2010_x86_64", "manylinux_2_5_x86_64", "manylinux1_x86_64"]
        report = tmp_path / f"{arch}.json"
        pip(
            "install", "--dry-run", "--ignore-installed", "--quiet", "--only-binary=:all:",
            "--python-version", f"{major}.{minor}", "--implementation", "cp",
            "--abi", f"cp{major}{minor}", *[f"--platform={p}" for p in platforms],
            "--constraint", str(REPO / "constraints.txt"), "--report", str(report),
            *extra_requirements(image.extra),
        )  # fmt: skip
        for item in json.loads(report.read_text())["install"]:
            dist, version = item["metadata"]["name"], item["metadata"]["version"]
            assert pins().get(normalize(dist)) == version, (
                f"the {image.name} image ({arch}) would install {dist} {version}, "
                "not pinned in constraints.txt"
            )
