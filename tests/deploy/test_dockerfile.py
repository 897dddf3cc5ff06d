"""docker/Dockerfile: hadolint clean, and the properties the image promises (no Docker engine runs here, so the
image is not built; these checks read the Dockerfile)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from aml_screener.infra.settings import Settings
from tests.deploy.conftest import DOCKER, REPO, run, tool

DOCKERFILE = DOCKER / "Dockerfile"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


def _stages() -> list[Stage]:
    """The Dockerfile's stages with their instructions (continuation lines joined, comments dropped)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    stages: list[Stage] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        keyword, _, rest = stripped.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=parts[0], name=name))
        else:
            stages[-1].instructions.append((keyword, rest.strip()))
    return stages


def test_hadolint_reports_nothing() -> None:
    result = run([tool("hadolint"), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_base_images_are_pinned_and_identical() -> None:
    stages = _stages()
    assert len(stages) >= 2, "multi-stage: a build stage and a runtime stage"
    for stage in stages:
        # An exact patch release and Debian release (a moving tag like 3.11-slim or latest changes under us).
        assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", stage.base), stage.base
    # The runtime stage runs the build stage's venv: its interpreter symlinks must point at the same Python.
    assert len({stage.base for stage in stages}) == 1


def test_runtime_stage_carries_no_build_tools_sources_or_caches() -> None:
    runtime = _stages()[-1]
    copies = [rest for keyword, rest in runtime.instructions if keyword in {"COPY", "ADD"}]
    assert copies, "the runtime stage copies the built environment"
    assert all(rest.startswith("--from=") for rest in copies), f"runtime stage copies from the context: {copies}"
    runs = " ".join(rest for keyword, rest in runtime.instructions if keyword == "RUN")
    for forbidden in ("apt-get install", "pip install", "gcc", "build-essential"):
        assert forbidden not in runs, forbidden
    build_runs = " ".join(rest for stage in _stages()[:-1] for keyword, rest in stage.instructions if keyword == "RUN")
    assert "--no-cache-dir" in build_runs


def test_runs_as_a_fixed_non_root_uid() -> None:
    users = [rest for keyword, rest in _stages()[-1].instructions if keyword == "USER"]
    assert users, "the runtime stage sets USER"
    uid = users[-1].split(":")[0]
    # Numeric, so Kubernetes' runAsNonRoot can verify it; the chart's securityContext uses the same uid.
    assert uid.isdigit() and int(uid) != 0
    chart_helpers = (REPO / "helm" / "aml-screener" / "templates" / "_helpers.tpl").read_text(encoding="utf-8")
    assert f"runAsUser: {uid}" in chart_helpers


def test_healthcheck_probes_healthz_with_the_standard_library() -> None:
    runtime = _stages()[-1]
    checks = [rest for keyword, rest in runtime.instructions if keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    check = checks[0]
    # /healthz, not /readyz: a screener failing closed is alive and must not be restarted.
    assert "/healthz" in check and "/readyz" not in check
    assert "urllib.request" in check and "curl" not in check and "wget" not in check
    exposed = [rest for keyword, rest in runtime.instructions if keyword == "EXPOSE"]
    assert exposed == [str(Settings.model_fields["http_port"].default)]


def test_build_context_holds_everything_the_dockerfile_copies() -> None:
    for stage in _stages():
        for keyword, rest in stage.instructions:
            if keyword != "COPY" or rest.startswith("--from="):
                continue
            *sources, _destination = rest.split()
            for source in sources:
                assert (REPO / source).exists(), f"COPY {source}: missing from the build context"
    ignored = (REPO / ".dockerignore").read_text(encoding="utf-8").split()
    for needed in ("pyproject.toml", "README.md", "LICENSE", "schemas", "services"):
        assert needed not in ignored, f"{needed} is copied by the Dockerfile but excluded by .dockerignore"


def test_entrypoint_is_the_cli_and_default_command_runs_the_screener() -> None:
    runtime = _stages()[-1]
    instructions = dict(runtime.instructions)
    assert instructions["ENTRYPOINT"] == '["aml-screener"]'
    assert instructions["CMD"] == '["run"]'
