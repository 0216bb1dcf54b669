"""Run the book's notebooks with papermill: profile parameters plus overrides, offline, one line per failure.

    python -m companion.runner --profile tiny                       # every notebook
    python -m companion.runner --profile tiny --only 05_addition -p seed 3 -p steps 4000
    python -m companion.runner --profile paper --allow-cpu            # paper scale without a GPU

Each ``notebooks/NN_name.ipynb`` is executed (kernel ``python3``, working directory the repository root, env
``HF_HUB_OFFLINE=1``) into ``book/executed/NN_name.ipynb``; only when it finishes is it published as the book
chapter ``book/chapters/NN_name.ipynb``, so a killed or failed run never replaces a good chapter (and a ``smoke``
run, whose numbers are meaningless, never does). Parameters are validated once, before any kernel starts (the
kernel is handed the validated set): a wrong name or value exits with status 2 and one line. So does a ``paper``
run on a machine without CUDA unless ``--allow-cpu`` (env ``SPARTAN_ALLOW_CPU=1``) forces it, and a run whose
results folder another live run is writing (the lock is taken before the kernel starts and held until
the chapter is published).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from .book import BOOK_DIR, publish_chapter
from .params import (
    ALLOW_CPU_ENV,
    NOTEBOOKS_DIR,
    PROFILES_DIR,
    VALIDATED_ENV,
    check_device,
    cpu_allowed,
    load_profile,
    load_schema,
    notebook_names,
    parse_cli_value,
    resolve_profile,
)
from .results import LOCK_HELD_ENV, REPO_ROOT, ResultsBusy, ResultsLock
from .results import results_root as default_results_root

__all__ = ["Folders", "NotebookFailed", "ResultsBusy", "run_notebook", "run_profile", "main"]

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "TQDM_DISABLE": "1",
    "MPLBACKEND": "module://matplotlib_inline.backend_inline",
}


@dataclass(frozen=True)
class Folders:
    """Where a run reads its notebooks and profiles and writes executed notebooks, chapters and results: the
    repository's own unless told otherwise, so that tests can run the real notebooks without touching the
    committed ``results/`` and ``book/``. The defaults are read when a ``Folders`` is made, not at import."""

    notebooks: Path = field(default_factory=lambda: NOTEBOOKS_DIR)
    executed: Path = field(default_factory=lambda: BOOK_DIR / "executed")
    chapters: Path = field(default_factory=lambda: BOOK_DIR / "chapters")
    results: Path | None = None  # None: the run's SPARTAN_RESULTS, else companion.results.results_root()
    profiles: Path = field(default_factory=lambda: PROFILES_DIR)


class NotebookFailed(RuntimeError):
    """A notebook raised; the message is one line: notebook, exception type and message."""


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """The kernel inherits this process's environment: set ours for the duration of a run."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def resolve_parameters(name: str, profile: str, overrides: Mapping[str, Any] | None = None,
                       profiles_dir: Path | None = None) -> dict[str, Any]:
    """The profile's parameters for ``name`` with ``overrides`` on top, validated (``ValueError`` on a bad one)."""
    return _resolve(profile, [name], overrides, profiles_dir)[name]


def _resolve(profile: str, names: Sequence[str], overrides: Mapping[str, Any] | None = None,
             profiles_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    """Each of ``names``' parameters, ``overrides`` on top of each: the one validation of a run, before anything
    runs; the kernel gets the result and does not validate it again."""
    entries = load_profile(profile, profiles_dir, {name: dict(overrides or {}) for name in names})
    return {name: entries[name] for name in names}


def run_notebook(name: str, profile: str, overrides: Mapping[str, Any] | None = None, *,
                 folders: Folders | None = None, env: Mapping[str, str] | None = None, timeout_s: int | None = None,
                 publish: bool | None = None, allow_cpu: bool = False) -> Path:
    """Execute one notebook and publish it as a chapter; returns the executed copy's path.

    ``publish`` defaults to every profile but ``smoke``: smoke numbers are meaningless, so a smoke run never
    replaces a chapter of the book. ``folders`` (default: the repository's) says where the run reads and writes;
    its results folder is exported to the kernel as ``SPARTAN_RESULTS``.
    ``allow_cpu`` runs the ``paper`` profile without CUDA (the book labels such a result with its device).
    Raises :class:`ResultsBusy` before any kernel starts when another run is writing the same results folder.
    """
    folders = folders or Folders()
    return _execute(name, resolve_parameters(name, profile, overrides, folders.profiles), folders=folders, env=env,
                    timeout_s=timeout_s, publish=publish, allow_cpu=allow_cpu)


def _execute(name: str, params: Mapping[str, Any], *, folders: Folders | None = None,
             env: Mapping[str, str] | None = None, timeout_s: int | None = None, publish: bool | None = None,
             allow_cpu: bool = False) -> Path:
    """:func:`run_notebook` with ``params`` already validated."""
    folders = folders or Folders()
    run_env = {**OFFLINE_ENV, **dict(env or {})}
    allow_cpu = allow_cpu or cpu_allowed({**os.environ, **run_env})
    check_device(params["profile"], allow_cpu)
    source = Path(folders.notebooks) / f"{name}.ipynb"
    if not source.exists():
        raise ValueError(f"notebook: {source} does not exist")
    root = Path(folders.results or run_env.get("SPARTAN_RESULTS") or default_results_root()).resolve()
    run_env["SPARTAN_RESULTS"] = str(root)
    if allow_cpu:
        run_env[ALLOW_CPU_ENV] = "1"
    run_env[LOCK_HELD_ENV] = f"{params['profile']}/{name}"
    run_env[VALIDATED_ENV] = json.dumps({"notebook": name, "parameters": params})
    with ResultsLock(params["profile"], name, root):
        import papermill
        from papermill.exceptions import PapermillExecutionError

        executed = Path(folders.executed) / f"{name}.ipynb"
        executed.parent.mkdir(parents=True, exist_ok=True)
        with _environment(run_env):
            try:
                papermill.execute_notebook(
                    str(source), str(executed), parameters=params, kernel_name="python3", cwd=str(REPO_ROOT),
                    progress_bar=False, execution_timeout=timeout_s,
                )
            except PapermillExecutionError as error:
                raise NotebookFailed(f"{name}: {error.ename}: {error.evalue}") from None
        if publish is None:
            publish = params["profile"] != "smoke"
        if publish:
            publish_chapter(executed, Path(folders.chapters))
    return executed


def run_profile(profile: str, names: Sequence[str] | None = None, overrides: Mapping[str, Any] | None = None, *,
                folders: Folders | None = None, **kwargs) -> list[Path]:
    """Run ``names`` (default: every notebook) in order under ``profile``; stops at the first failure. The other
    keywords are :func:`run_notebook`'s."""
    folders = folders or Folders()
    names = list(names or notebook_names(folders.notebooks))
    parameters = _resolve(profile, names, overrides, folders.profiles)
    allow_cpu = kwargs.get("allow_cpu", False) or cpu_allowed({**os.environ, **dict(kwargs.get("env") or {})})
    check_device(resolve_profile(profile), allow_cpu)
    return [_execute(name, parameters[name], folders=folders, **kwargs) for name in names]


def _parse_overrides(name: str | None, pairs: Sequence[Sequence[str]]) -> dict[str, Any]:
    if not pairs:
        return {}
    if name is None:
        raise ValueError("-p: parameter overrides need exactly one notebook (--only NAME)")
    schema = load_schema()
    return {key: parse_cli_value(name, key, text, schema=schema) for key, text in pairs}


def print_plan(profile: str, parameters: Mapping[str, Mapping[str, Any]]) -> None:
    """Print every planned training run of ``parameters`` ({notebook: validated parameters}) with its time and
    memory estimates before any kernel starts; a hub model of the plan missing while offline is a ValueError (one
    line) here, before any work."""
    import torch

    from spartan_core.zoo import HubUnavailableError

    from .plan import plan_lines, plan_profile
    from .published import MANIFEST, Manifest, published_dir

    try:
        runs = plan_profile(profile, parameters, cuda=torch.cuda.is_available())
    except HubUnavailableError as error:
        raise ValueError(str(error)) from None
    folder = published_dir(profile)
    published = len(Manifest.read(folder).models) if (folder / MANIFEST).is_file() else 0
    print("\n".join(plan_lines(profile, runs, published)), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m companion.runner", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="auto", help="auto (paper with CUDA, else tiny), smoke, tiny, paper")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="run only this notebook (repeatable), e.g. 05_addition")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                        help="override one parameter (needs a single --only)")
    parser.add_argument("--timeout", type=int, default=None, help="seconds per cell (default: none)")
    parser.add_argument("--allow-cpu", action="store_true",
                        help="run the paper profile without a CUDA GPU (env SPARTAN_ALLOW_CPU=1 does the same)")
    args = parser.parse_args(argv)
    try:
        profile = resolve_profile(args.profile)
        names = args.only or notebook_names()
        known = set(notebook_names())
        for name in names:
            if name not in known:
                raise ValueError(f"--only: no notebook {name!r} (have: {', '.join(sorted(known))})")
        overrides = _parse_overrides(args.only[0] if args.only and len(args.only) == 1 else None, args.parameter)
        parameters = _resolve(profile, names, overrides)
        check_device(profile, args.allow_cpu or cpu_allowed())
        print_plan(profile, parameters)
        for name in names:
            started = time.perf_counter()
            print(f"[{profile}] {name} ...", flush=True)
            _execute(name, parameters[name], timeout_s=args.timeout, allow_cpu=args.allow_cpu)
            print(f"[{profile}] {name} done in {time.perf_counter() - started:.0f} s", flush=True)
    except (ValueError, NotebookFailed, ResultsBusy) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1 if isinstance(error, NotebookFailed) else 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
