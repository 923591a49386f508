"""Loading a fleet file: YAML, `${VAR}` expansion as compose does it, errors with file, line and field."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tokengate.errors import InvalidInputError
from tokengate.fleet.schema import Fleet

_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\}")
# Fields holding secrets keep their ${VAR} reference; they are resolved only when a process needs them.
SECRET_FIELDS = frozenset({"api_key", "key"})


def load_fleet(path: Path, environ: Mapping[str, str] | None = None) -> Fleet:
    expanded, root = read_yaml_mapping(path, "fleet file", "a mapping with a `deployments:` list", environ)
    try:
        fleet = Fleet(**expanded)
    except ValidationError as exc:
        raise InvalidInputError(
            describe_errors(exc, path, root, "fleet file", "check the spelling; `tokengate schema` lists every field")
        ) from None
    return _with_absolute_model_paths(fleet, path)


def _with_absolute_model_paths(fleet: Fleet, path: Path) -> Fleet:
    """Model paths written relative to the fleet file stay valid wherever tokengate runs."""
    base = path.resolve().parent
    deployments = [
        d.model_copy(update={"model": str((base / Path(d.model).expanduser()).resolve())})
        if d.model.startswith((".", "/", "~"))
        else d
        for d in fleet.deployments
    ]
    return fleet.model_copy(update={"deployments": deployments})


def state_dir(fleet: Fleet, fleet_path: Path) -> Path:
    """The state dir, relative to the fleet file's folder unless absolute."""
    directory = Path(fleet.state_dir).expanduser()
    return directory if directory.is_absolute() else fleet_path.resolve().parent / directory


def resolve_secret(reference: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    if reference is None:
        return None
    environ = os.environ if environ is None else environ
    name = reference[2:-1]
    if name not in environ:
        raise InvalidInputError(f"{reference} is not set; export {name} before starting this deployment")
    return environ[name]


def read_yaml_mapping(
    path: Path, kind: str, shape: str, environ: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], yaml.Node]:
    """A YAML file's mapping with `${VAR}` expanded, and its node tree (for file:line in later errors)."""
    environ = os.environ if environ is None else environ
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidInputError(f"cannot read {kind} {path}: {exc.strerror}") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise InvalidInputError(f"{path}: a {kind} is {shape}")
    return _expand(raw, environ, path, root, ()), root


def _expand(value: Any, environ: Mapping[str, str], path: Path, root: yaml.Node, where: tuple[Any, ...]) -> Any:
    if isinstance(value, dict):
        return {
            key: item if key in SECRET_FIELDS else _expand(item, environ, path, root, (*where, key))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_expand(item, environ, path, root, (*where, index)) for index, item in enumerate(value)]
    if isinstance(value, str):
        return _substitute(value, environ, lambda: location_of(path, root, where))
    return value


def _substitute(text: str, environ: Mapping[str, str], location: Any) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match["name"], match["default"]
        value = environ.get(name)
        if value:  # compose: ${VAR:-x} also replaces an empty value
            return value
        if default is not None:
            return default
        if value is not None:
            return value
        raise InvalidInputError(f"{location()}: ${{{name}}} is not set; export it or write ${{{name}:-default}}")

    return _VARIABLE.sub(replace, text)


def describe_errors(exc: ValidationError, path: Path, root: yaml.Node, kind: str, spelling_hint: str) -> str:
    """pydantic's errors as `file:line: field: message` lines, with a hint on unknown (misspelt) fields."""
    lines = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        field = ".".join(str(part) for part in loc) or kind
        hint = f" ({spelling_hint})" if error["type"] == "extra_forbidden" else ""
        lines.append(f"{location_of(path, root, loc)}: {field}: {message}{hint}")
    return f"invalid {kind}:\n  " + "\n  ".join(lines)


def location_of(path: Path, root: yaml.Node, loc: tuple[Any, ...]) -> str:
    """file:line of the deepest YAML node the error path reaches."""
    node = root
    for part in loc:
        child = _child(node, part)
        if child is None:
            break
        node = child
    return f"{path}:{node.start_mark.line + 1}"


def _child(node: yaml.Node, part: Any) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == str(part):
                return value
        return None
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        return node.value[part]
    return None
