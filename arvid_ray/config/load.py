"""Config files and ``key=value`` overrides → a validated ``ExperimentConfig``; every key with its
default and docstring (``arvid-ray config``)."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

from arvid_ray.config.base import ConfigError
from arvid_ray.config.build import _set_dotted, _to_plain
from arvid_ray.config.experiment import ExperimentConfig


def load_config(path: str | Path | list[str | Path] | tuple[str | Path, ...] | None = None,
                overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """YAML file(s) (optional; later files override earlier ones field by field) + ``key=value``
    overrides → validated ExperimentConfig."""
    import yaml

    data: dict[str, Any] = {}
    for one in ([] if path is None else list(path) if isinstance(path, (list, tuple)) else [path]):
        p = Path(one)
        if not p.is_file():
            raise ConfigError(f"config file '{one}' does not exist; pass an existing YAML file to --config")
        try:
            loaded = yaml.load(p.read_text(), Loader=_yaml12_loader())
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file '{one}' is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file '{one}' must contain a mapping of sections, got {type(loaded).__name__}")
        for section, fields in (loaded or {}).items():  # a later file replaces fields, keeps the rest
            if isinstance(fields, dict) and isinstance(data.get(section), dict):
                data[section] = {**data[section], **fields}
            else:
                data[section] = fields
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override '{item}' is not of the form section.field=value (e.g. train.steps=100)")
        _set_dotted(data, key.strip(), _override_value(key.strip(), raw))
    return ExperimentConfig.from_dict(data)


def config_keys() -> list[tuple[str, Any, str]]:
    """(dotted key, default, docstring) of every config field, in declaration order — what
    ``arvid-ray config`` lists; the docstrings are the string literals under each field."""
    out: list[tuple[str, Any, str]] = []

    def walk(cls: type, prefix: str) -> None:
        docs, hints, default = _attribute_docs(cls), typing.get_type_hints(cls), cls()
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], f"{prefix}{f.name}.")
            else:
                out.append((prefix + f.name, _to_plain(getattr(default, f.name)), docs.get(f.name, "")))

    walk(ExperimentConfig, "")
    return out


def _attribute_docs(cls: type) -> dict[str, str]:
    import ast
    import inspect
    import textwrap

    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    docs = {}
    for field_node, doc in zip(body, body[1:]):
        if (isinstance(field_node, ast.AnnAssign) and isinstance(field_node.target, ast.Name)
                and isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)
                and isinstance(doc.value.value, str)):
            docs[field_node.target.id] = " ".join(doc.value.value.split())
    return docs


def _yaml12_loader() -> type:
    """SafeLoader with YAML 1.2 booleans: only true/false are booleans; yes/no/on/off stay strings, so a
    bool field refuses them by name instead of reading ``train.use_gpu=yes`` as true."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                 list("tTfF"))
    return Loader


def _field_type(key: str) -> Any:
    """The annotated type of a dotted config key, or None when it is not a dataclass field."""
    tp: Any = ExperimentConfig
    for part in key.split("."):
        if not dataclasses.is_dataclass(tp):
            return None
        hints = typing.get_type_hints(tp)
        if part not in hints:
            return None
        tp = hints[part]
    return tp


def _override_value(key: str, raw: str) -> Any:
    """An override's text → its value: a str field takes the text as written (``experiment.name=2026`` is
    the name "2026"); anything else is read as YAML 1.2 (empty = null)."""
    import yaml

    tp = _field_type(key)
    optional = typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)
    inner = [a for a in typing.get_args(tp) if a is not type(None)] if optional else [tp]
    quoted = len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\""
    if inner == [str] and not quoted and not (optional and raw.strip() in ("", "null", "~", "None")):
        return raw
    if not raw.strip():
        return None
    try:
        return yaml.load(raw, Loader=_yaml12_loader())
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{key}={raw}': the value is not valid YAML: {exc}") from exc
