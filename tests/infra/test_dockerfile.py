"""The image recipe, read as text (no Docker engine here): pinned base, non-root user, weights
mounted rather than copied, the `op4ksr` entrypoint, and a build context that keeps weights out."""
from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "infra" / "docker" / "Dockerfile"
# BuildKit reads <Dockerfile>.dockerignore beside the Dockerfile for `-f infra/docker/Dockerfile`.
DOCKERIGNORE = DOCKERFILE.with_name("Dockerfile.dockerignore")


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuation lines joined."""
    result, pending = [], ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.strip()[:-1].strip() + " "
            continue
        keyword, _, args = (pending + line.strip()).partition(" ")
        pending = ""
        result.append((keyword.upper(), args.strip()))
    return result


def _pinned(image: str) -> bool:
    tag = image.rsplit("/", 1)[-1].partition(":")[2]
    return "@sha256:" in image or bool(tag and tag != "latest" and re.search(r"\d+\.\d+", tag))


def problems(text: str) -> list[str]:
    """What breaks the house rules for our images, one line each (none: fine)."""
    steps = instructions(text)
    args = {kw: [a for k, a in steps if k == kw] for kw, _ in steps}
    found = []
    if not args.get("FROM"):
        found.append("no FROM")
    found += [f"base not pinned: {b}" for b in args.get("FROM", []) if not _pinned(b.split()[0])]
    if re.search(r":latest\b", text):
        found.append("a ':latest' tag")
    users = args.get("USER", [])
    if not users or users[-1].split(":")[0] in ("root", "0"):
        found.append("runs as root (no non-root USER last)")
    elif "RUN" in [kw for kw, _ in steps][max(i for i, s in enumerate(steps) if s[0] == "USER"):]:
        found.append("RUN after the final USER")
    if [json.loads(a) for a in args.get("ENTRYPOINT", [])] != [["op4ksr"]]:
        found.append('ENTRYPOINT is not ["op4ksr"]')
    if "/models" not in [v for a in args.get("VOLUME", []) for v in json.loads(a)]:
        found.append("no VOLUME /models for the weights")
    found += [f"weights copied in: {a}" for a in args.get("COPY", []) + args.get("ADD", [])
              if re.search(r"\.(safetensors|ckpt|pt|bin)\b|models", a)]
    found += [f"secret in {a}" for a in args.get("ENV", []) + args.get("ARG", [])
              if re.search(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY", a, re.IGNORECASE)]
    return found


def test_parser_joins_continuations_and_skips_comments():
    text = "# c\nFROM a:1\nRUN x \\\n  && y\n\nUSER u\n"
    assert instructions(text) == [("FROM", "a:1"), ("RUN", "x && y"), ("USER", "u")]


def test_the_dockerfile_follows_the_rules():
    assert problems(DOCKERFILE.read_text()) == []
    assert "nvidia/cuda" in instructions(DOCKERFILE.read_text())[0][1], "a CUDA base image"


def test_a_dockerfile_breaking_the_rules_is_caught():
    broken = ('FROM nvidia/cuda:latest\nCOPY models/ /models/\nENV AWS_SECRET_ACCESS_KEY=x\n'
              'ENTRYPOINT ["python"]\n')
    assert problems(broken) == [
        "base not pinned: nvidia/cuda:latest", "a ':latest' tag",
        "runs as root (no non-root USER last)", 'ENTRYPOINT is not ["op4ksr"]',
        "no VOLUME /models for the weights", "weights copied in: models/ /models/",
        "secret in AWS_SECRET_ACCESS_KEY=x"]
    assert "RUN after the final USER" in problems('FROM a:1.0\nUSER app\nRUN make\n')


def test_no_latest_tags_in_infra_yaml():
    for path in sorted((ROOT / "infra").rglob("*.yaml")):
        assert not re.search(r":latest\b", path.read_text()), f"{path}: ':latest' tag"


def test_build_context_holds_what_is_copied_and_no_weights():
    # The context is the repository root: a renamed package must fail here, not in an image build.
    ignore = DOCKERIGNORE.read_text().splitlines()
    assert "**/*.safetensors" in ignore, "weights must stay out of the build context"
    for args in (a for kw, a in instructions(DOCKERFILE.read_text()) if kw == "COPY"):
        for source in args.split()[:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
            assert f"!{source}" in ignore, f"COPY {source}: excluded by {DOCKERIGNORE.name}"


def test_torch_comes_from_pyproject_and_the_cuda_index():
    steps = instructions(DOCKERFILE.read_text())
    commands = " ".join(args for _, args in steps)
    assert "pyproject.toml" in commands, "dependencies are read from pyproject.toml"
    assert "download.pytorch.org/whl/cu" in commands, "torch's CUDA build: the PyTorch index"
    assert not re.search(r"torch==\d", commands), "the torch pin lives in pyproject.toml only"


def test_the_image_installs_what_a_backfill_needs_and_no_extra():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {re.split(r"[\[=<>]", d)[0] for d in project["dependencies"]}
    optional = {re.split(r"[\[=<>]", d)[0] for extra in project["optional-dependencies"].values() for d in extra}
    assert not core & {"moto", "transformers", "peft", "scikit-image", "pytest"}  # only other commands need them
    assert {"moto", "transformers", "peft", "scikit-image"} <= optional
    runs = " ".join(a for k, a in instructions(DOCKERFILE.read_text()) if k == "RUN")
    assert '["project"]["dependencies"]' in runs and "optional-dependencies" not in runs
    assert not re.search(r"pip install[^&]*\.\[", runs), "the project is installed without extras"
