"""Profiles and notebook parameters: one place that says what each notebook accepts.

``profiles/<profile>.yaml`` maps notebook name -> parameter values (``smoke``: seconds on a CPU, for tests;
``tiny``: real CPU results; ``paper``: GPU, paper scale). ``profiles/schema.yaml`` declares, per notebook, each
parameter's type and allowed values. A wrong name or value is refused with one line, a ``ValueError`` whose
message starts with the parameter's name, before anything is written to ``results/``. Each run validates once:
the runner, before it starts a kernel, hands the validated set to the kernel (env ``SPARTAN_PARAMETERS``), whose
first code cell only checks that it got exactly that set; a run that bypasses the runner is validated by that
cell. The runner and the notebook also refuse the ``paper`` profile on a machine without CUDA unless env
``SPARTAN_ALLOW_CPU=1`` (the runner's ``--allow-cpu``) forces it, so a CPU result is never mistaken for a GPU one.

In a notebook, right after the cell tagged ``parameters``::

    from companion.params import start
    params, results = start("01_gated_attention", globals())
"""

from __future__ import annotations

import json
import math
import os
import textwrap
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from .results import REPO_ROOT, ResultsDir

__all__ = [
    "PROFILES",
    "PROFILES_DIR",
    "NOTEBOOKS_DIR",
    "notebook_names",
    "ALLOW_CPU_ENV",
    "VALIDATED_ENV",
    "ParamSpec",
    "resolve_profile",
    "cpu_allowed",
    "check_device",
    "load_profile",
    "load_schema",
    "validate",
    "parse_cli_value",
    "notebook_parameters",
    "start",
]

PROFILES = ("smoke", "tiny", "gpu", "paper")
GPU_PROFILES = ("gpu", "paper")  # results filed as GPU results: refused without CUDA unless forced
PROFILES_DIR = REPO_ROOT / "profiles"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"


def notebook_names(notebooks_dir: Path | None = None) -> list[str]:
    """``NN_name`` of every notebook, in chapter order."""
    return sorted(p.stem for p in Path(notebooks_dir or NOTEBOOKS_DIR).glob("[0-9][0-9]_*.ipynb"))
_SCALARS = {"int": int, "float": float, "str": str, "bool": bool}
_NOT_PARAMETERS = {"In", "Out", "get_ipython", "exit", "quit", "open"}
ALLOW_CPU_ENV = "SPARTAN_ALLOW_CPU"
VALIDATED_ENV = "SPARTAN_PARAMETERS"  # JSON {"notebook", "parameters"} the runner validated for its kernel


def resolve_profile(profile: str) -> str:
    """``auto`` -> ``gpu`` (about an hour on one GPU) when CUDA is available, else ``tiny``; any other name must be
    a known profile (``paper`` is the full plan: days on one GPU)."""
    if profile == "auto":
        import torch

        return "gpu" if torch.cuda.is_available() else "tiny"
    if profile not in PROFILES:
        raise ValueError(f"profile: must be one of auto, {', '.join(PROFILES)}; got {profile!r}")
    return profile


def cpu_allowed(env: Mapping[str, str] | None = None) -> bool:
    """Whether ``SPARTAN_ALLOW_CPU`` (in ``env``, default this process's environment) forces a paper run on a CPU."""
    value = (os.environ if env is None else env).get(ALLOW_CPU_ENV, "")
    return value.strip().lower() not in ("", "0", "false", "no")


def check_device(profile: str, allow_cpu: bool = False) -> None:
    """Refuse the GPU profiles without CUDA unless forced: the book files their results as GPU results."""
    if profile not in GPU_PROFILES or allow_cpu or cpu_allowed():
        return
    import torch

    if not torch.cuda.is_available():
        raise ValueError(f"profile: {profile} needs a CUDA GPU (none found); pass --allow-cpu (or set "
                         f"{ALLOW_CPU_ENV}=1) to run it on this CPU anyway")


@dataclass(frozen=True)
class ParamSpec:
    """What one parameter accepts: ``type`` int|float|str|bool or list[int|float|str]; optional inclusive
    ``min``/``max``, exclusive ``gt``, allowed ``choices`` (for lists these apply to every item) and
    ``min_items``/``max_items`` and ``distinct`` (no repeated item: a seed listed twice would count twice) for
    lists. ``nullable``: ``null`` (None) is accepted too and means the recipe's or the registry's default (or, for
    an optional model, none), so a default lives in one place and no number stands in for it."""

    name: str
    type: str
    help: str = ""
    min: float | None = None
    max: float | None = None
    gt: float | None = None
    choices: tuple | None = None
    min_items: int | None = None
    max_items: int | None = None
    distinct: bool = False
    nullable: bool = False

    @classmethod
    def from_mapping(cls, name: str, spec: Mapping[str, Any]) -> "ParamSpec":
        unknown = set(spec) - {"type", "help", "min", "max", "gt", "choices", "min_items", "max_items", "distinct",
                               "nullable"}
        if unknown:
            raise ValueError(f"{name}: unknown schema keys {sorted(unknown)}")
        kind = spec.get("type")
        if kind not in _SCALARS and not (
            isinstance(kind, str) and kind.startswith("list[") and kind[5:-1] in ("int", "float", "str")
        ):
            raise ValueError(f"{name}: schema type must be int, float, str, bool or list[int|float|str], got {kind!r}")
        choices = spec.get("choices")
        return cls(name=name, type=kind, help=spec.get("help", ""), min=spec.get("min"), max=spec.get("max"),
                   gt=spec.get("gt"), choices=tuple(choices) if choices is not None else None,
                   min_items=spec.get("min_items"), max_items=spec.get("max_items"),
                   distinct=bool(spec.get("distinct", False)), nullable=bool(spec.get("nullable", False)))

    @property
    def item_type(self) -> str:
        return self.type[5:-1] if self.type.startswith("list[") else self.type

    def describe(self, item: bool = False) -> str:
        parts = [self.item_type if item else self.type]
        if self.choices is not None:
            parts.append("one of " + ", ".join(map(repr, self.choices)))
        if self.gt is not None:
            parts.append(f"> {self.gt}")
        if self.min is not None:
            parts.append(f">= {self.min}")
        if self.max is not None:
            parts.append(f"<= {self.max}")
        if self.nullable and not item:
            parts.append("or null")
        return " ".join(parts)

    def check(self, value: Any) -> Any:
        """Return the value (ints accepted for floats, as floats) or raise ``ValueError('<name>: ...')``."""
        if value is None and self.nullable:
            return None
        if self.type.startswith("list["):
            if isinstance(value, tuple):
                value = list(value)
            if not isinstance(value, list):
                raise ValueError(f"{self.name}: must be a {self.type}, got {value!r}")
            if self.min_items is not None and len(value) < self.min_items:
                raise ValueError(f"{self.name}: needs at least {self.min_items} items, got {len(value)}")
            if self.max_items is not None and len(value) > self.max_items:
                raise ValueError(f"{self.name}: takes at most {self.max_items} items, got {len(value)}")
            checked = [self._check_item(v, f"{self.name}[{i}]") for i, v in enumerate(value)]
            if self.distinct and len(set(checked)) != len(checked):
                repeated = next(v for i, v in enumerate(checked) if v in checked[:i])
                raise ValueError(f"{self.name}: lists {repeated!r} more than once")
            return checked
        return self._check_item(value, self.name)

    def _check_item(self, value: Any, label: str) -> Any:
        kind = self.item_type
        wanted = f"must be {self.describe(item=self.type.startswith('list['))}"
        if kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"{label}: {wanted}, got {value!r}")
        elif kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{label}: {wanted}, got {value!r}")
        elif kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{label}: {wanted}, got {value!r}")
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"{label}: {wanted}, got {value}")
        elif not isinstance(value, str):
            raise ValueError(f"{label}: {wanted}, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{label}: {wanted}, got {value!r}")
        if kind in ("int", "float"):
            if (self.min is not None and value < self.min) or (self.max is not None and value > self.max) or (
                self.gt is not None and value <= self.gt
            ):
                raise ValueError(f"{label}: {wanted}, got {value!r}")
        return value


def _read_yaml(path: Path, what: str) -> dict:
    if not path.exists():
        raise ValueError(f"{what}: {path} is missing")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ValueError(_yaml_problem(what, path, error)) from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: must map notebook names to parameters")
    return data


def _yaml_problem(what: str, path: Path, error: yaml.YAMLError) -> str:
    """One line naming the file and line of a YAML syntax error instead of yaml's multi-line traceback."""
    shown = path.relative_to(REPO_ROOT).as_posix() if path.is_relative_to(REPO_ROOT) else str(path)
    mark = getattr(error, "problem_mark", None)
    where = f"{shown} line {mark.line + 1}" if mark is not None else shown
    problem = getattr(error, "problem", None) or str(error)
    return " ".join(f"{what}: {where}: {problem}".split())


def load_schema(profiles_dir: Path | None = None) -> dict[str, dict[str, ParamSpec]]:
    """``profiles/schema.yaml`` as {notebook: {parameter: ParamSpec}}; ``profile`` is implicit everywhere."""
    raw = _read_yaml(Path(profiles_dir or PROFILES_DIR) / "schema.yaml", "schema")
    schema = {}
    for notebook, params in raw.items():
        specs = {name: ParamSpec.from_mapping(name, spec) for name, spec in (params or {}).items()}
        specs["profile"] = ParamSpec("profile", "str", "which profile's results folder to write",
                                     choices=PROFILES)
        schema[notebook] = specs
    return schema


def load_profile(profile: str, profiles_dir: Path | None = None,
                 overrides: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """{notebook: parameters} of a profile (``auto`` resolved) with ``overrides`` ({notebook: {name: value}}) on
    top, each entry validated once against the schema; every notebook ``overrides`` names must have an entry."""
    profile = resolve_profile(profile)
    raw = _read_yaml(Path(profiles_dir or PROFILES_DIR) / f"{profile}.yaml", "profile")
    schema = load_schema(profiles_dir)
    overrides = overrides or {}
    for notebook in overrides:
        if notebook not in schema:
            raise ValueError(f"notebook: {notebook!r} is not declared in profiles/schema.yaml")
        if notebook not in raw:
            raise ValueError(f"notebook: profile {profile} has no entry for {notebook}")
    out = {}
    for notebook, params in raw.items():
        if notebook not in schema:
            raise ValueError(f"{notebook}: profile {profile} names a notebook that profiles/schema.yaml lacks")
        out[notebook] = validate(notebook, {**(params or {}), **overrides.get(notebook, {}), "profile": profile},
                                 schema=schema)
    return out


def validate(notebook: str, params: Mapping[str, Any], *,
             schema: Mapping[str, Mapping[str, ParamSpec]] | None = None) -> dict[str, Any]:
    """Check a complete parameter set of ``notebook``: every name known, none missing, every value allowed."""
    schema = schema if schema is not None else load_schema()
    if notebook not in schema:
        raise ValueError(f"notebook: {notebook!r} is not declared in profiles/schema.yaml")
    specs = schema[notebook]
    for name in params:
        if name not in specs:
            raise ValueError(f"{name}: not a parameter of {notebook} (known: {', '.join(sorted(specs))})")
    for name in specs:
        if name not in params:
            raise ValueError(f"{name}: missing for {notebook}")
    return {name: specs[name].check(params[name]) for name in specs}


def parse_cli_value(notebook: str, name: str, text: str, *,
                    schema: Mapping[str, Mapping[str, ParamSpec]] | None = None) -> Any:
    """Turn the text of ``-p name text`` into the parameter's declared type (``1e-3`` is a float, ``3`` an int,
    ``[1, 2]`` a list, ``true`` a bool, ``null`` None where the parameter takes it); the value itself is checked
    later by :func:`validate`."""
    schema = schema if schema is not None else load_schema()
    spec = schema.get(notebook, {}).get(name)
    if spec is None:
        known = ", ".join(sorted(schema.get(notebook, {})))
        raise ValueError(f"{name}: not a parameter of {notebook} (known: {known})")
    if spec.nullable and text == "null":
        return None
    if spec.type == "str":
        return text
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    if spec.type.startswith("list[") and not isinstance(value, list):
        value = [value]
    if spec.item_type == "float":
        value = [_float_or_same(v) for v in value] if isinstance(value, list) else _float_or_same(value)
    if spec.item_type == "str" and isinstance(value, list):
        value = [str(v) for v in value]
    return value


def _float_or_same(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def notebook_parameters(notebook: str, namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The validated parameters of a running notebook, read from its global namespace.

    Call it in the first code cell after the parameters cell: at that point the user names in the namespace
    are exactly the parameters cell's defaults plus whatever papermill injected, so a misspelt injected name
    shows up as an unknown parameter instead of being silently ignored. When they are exactly the set the runner
    validated for this kernel they are not validated again.
    """
    params = {
        name: value for name, value in namespace.items()
        if not name.startswith("_") and name not in _NOT_PARAMETERS
        and not isinstance(value, types.ModuleType) and not callable(value)
    }
    handed = _validated_by_runner(notebook)
    return handed if params == handed else validate(notebook, params)


def _validated_by_runner(notebook: str) -> dict[str, Any] | None:
    """The parameters the runner validated for this notebook's kernel (env ``SPARTAN_PARAMETERS``), if any."""
    handed = json.loads(os.environ.get(VALIDATED_ENV) or "null")
    return handed["parameters"] if handed and handed["notebook"] == notebook else None


def start(notebook: str, namespace: Mapping[str, Any]) -> tuple[dict[str, Any], ResultsDir]:
    """Validate a notebook's parameters (and that a paper run has its GPU or was forced), print them wrapped to
    the width of the book's text column (the book hides the parameter cells), and return them with the notebook's
    results folder (nothing is written until the first result)."""
    params = notebook_parameters(notebook, namespace)
    check_device(params["profile"])
    print(textwrap.fill("Parameters: " + ", ".join(f"{name}={value!r}" for name, value in params.items()),
                        width=72, subsequent_indent="    "))
    return params, ResultsDir(params["profile"], notebook, params)
