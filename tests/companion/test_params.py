"""Profiles and parameter validation: every profile is complete and valid, bad input is refused in one line."""

import ast
import json
import types

import nbformat
import pytest

from companion import params, runner
from companion.params import (
    PROFILES,
    load_profile,
    load_schema,
    notebook_parameters,
    parse_cli_value,
    resolve_profile,
    validate,
)

NOTEBOOKS = params.notebook_names()


def _parameters_cell_names(name):
    nb = nbformat.read(str(params.NOTEBOOKS_DIR / f"{name}.ipynb"), as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{name}: exactly one cell must be tagged 'parameters'"
    tree = ast.parse(cells[0].source)
    return {target.id for node in tree.body for target in getattr(node, "targets", [])}


def test_there_are_notebooks():
    assert "01_gated_attention" in NOTEBOOKS


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_gives_every_notebook_valid_complete_parameters(profile):
    entries = load_profile(profile)
    assert set(entries) == set(NOTEBOOKS), f"{profile}.yaml must have exactly one entry per notebook"
    for name, values in entries.items():
        assert values["profile"] == profile
        assert set(values) == set(load_schema()[name])


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_parameters_cell_matches_schema_and_its_defaults_are_valid(name):
    assert _parameters_cell_names(name) == set(load_schema()[name])
    nb = nbformat.read(str(params.NOTEBOOKS_DIR / f"{name}.ipynb"), as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", []))
    namespace = {}
    exec(cell.source, namespace)
    assert notebook_parameters(name, namespace)["profile"] == "smoke"
    first_code = [c for c in nb.cells if c.cell_type == "code"][1]
    assert f'start("{name}", globals())' in first_code.source, "validation must be the first cell after parameters"


def _valid(name="01_gated_attention"):
    return dict(load_profile("smoke")[name])


@pytest.mark.parametrize("key, value, message", [
    ("seed", -1, r"^seed: must be int >= 0, got -1$"),
    ("seed", 1.5, r"^seed: must be int"),
    ("seed", True, r"^seed: must be int"),
    ("seq_len", 1000, r"^seq_len: must be int >= 2 <= 64, got 1000$"),
    ("gate_bias", "open", r"^gate_bias: must be float"),
    ("gate_bias", float("nan"), r"^gate_bias: must be float"),
    ("gate_bias", float("inf"), r"^gate_bias: must be float.*, got inf$"),
    ("gate_bias", float("-inf"), r"^gate_bias: must be float.*, got -inf$"),
    ("profile", "huge", r"^profile: must be str one of"),
])
def test_bad_values_are_refused_with_one_line_naming_the_parameter(key, value, message):
    values = _valid()
    values[key] = value
    with pytest.raises(ValueError, match=message) as error:
        validate("01_gated_attention", values)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("value, message", [
    ([], r"^train_seeds: needs at least 1 items, got 0$"),
    ([0, 1, 0], r"^train_seeds: lists 0 more than once$"),
    ([0, -1], r"^train_seeds\[1\]: must be int >= 0"),
])
def test_training_seeds_are_a_non_empty_list_of_distinct_seeds(value, message):
    values = _valid("02_sparsity_loss_curves")
    values["train_seeds"] = value
    with pytest.raises(ValueError, match=message):
        validate("02_sparsity_loss_curves", values)


def test_unknown_and_missing_names_are_refused():
    values = _valid()
    values["seeed"] = 3
    with pytest.raises(ValueError, match=r"^seeed: not a parameter of 01_gated_attention \(known: "):
        validate("01_gated_attention", values)
    values = _valid()
    del values["seed"]
    with pytest.raises(ValueError, match=r"^seed: missing for 01_gated_attention$"):
        validate("01_gated_attention", values)
    with pytest.raises(ValueError, match=r"^notebook: "):
        validate("99_nothing", {})


def test_ints_are_accepted_for_floats():
    values = _valid()
    values["gate_bias"] = 2
    checked = validate("01_gated_attention", values)
    assert checked["gate_bias"] == 2.0 and isinstance(checked["gate_bias"], float)


def test_list_parameters():
    spec = params.ParamSpec.from_mapping("betas", {"type": "list[float]", "gt": 0, "min_items": 1})
    assert spec.check([1, 0.5]) == [1.0, 0.5]
    with pytest.raises(ValueError, match=r"^betas\[1\]: must be float > 0"):
        spec.check([1.0, 0.0])
    with pytest.raises(ValueError, match=r"^betas: needs at least 1 items"):
        spec.check([])
    with pytest.raises(ValueError, match=r"^kind: schema type"):
        params.ParamSpec.from_mapping("kind", {"type": "complex"})


def test_null_means_the_default_and_a_stand_in_number_is_refused():
    values = _valid("04_attention_patterns")
    values.update(dense_steps=None, floor_steps=None, control_model=None)
    checked = validate("04_attention_patterns", values)
    assert checked["dense_steps"] is None and checked["floor_steps"] is None and checked["control_model"] is None
    for key, value, message in [("dense_steps", 0, r"^dense_steps: must be int >= 1 or null, got 0$"),
                                ("floor_steps", -1, r"^floor_steps: must be int >= 0 or null, got -1$"),
                                ("control_model", "", r"^control_model: must be str one of 'smollm2-135m' or null, "
                                                       r"got ''$"),
                                ("seed", None, r"^seed: must be int >= 0, got None$")]:
        with pytest.raises(ValueError, match=message):
            validate("04_attention_patterns", {**values, key: value})
    assert parse_cli_value("04_attention_patterns", "sparse_steps", "null") is None
    assert parse_cli_value("04_attention_patterns", "control_model", "null") is None
    assert parse_cli_value("07_baselines", "kp", "null") is None


def test_cli_values_are_parsed_by_declared_type():
    assert parse_cli_value("01_gated_attention", "gate_bias", "1e-3") == 1e-3
    assert parse_cli_value("01_gated_attention", "seed", "3") == 3
    assert parse_cli_value("01_gated_attention", "profile", "tiny") == "tiny"
    with pytest.raises(ValueError, match=r"^seeed: not a parameter"):
        parse_cli_value("01_gated_attention", "seeed", "3")


def test_auto_profile_follows_cuda(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_profile("auto") == "tiny"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_profile("auto") == "gpu"
    with pytest.raises(ValueError, match=r"^profile: must be one of auto, smoke, tiny, gpu, paper; got 'big'$"):
        resolve_profile("big")


def test_notebook_namespace_ignores_ipython_names_modules_and_functions():
    namespace = {**_valid(), "In": [], "Out": {}, "_i1": "", "__name__": "__main__", "types": types,
                 "start": params.start, "get_ipython": object}
    assert notebook_parameters("01_gated_attention", namespace) == validate("01_gated_attention", _valid())
    namespace["n_sample"] = 10
    with pytest.raises(ValueError, match=r"^n_sample: not a parameter"):
        notebook_parameters("01_gated_attention", namespace)


def test_runner_refuses_bad_parameters_before_anything_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPARTAN_RESULTS", str(tmp_path / "results"))
    executed = runner.BOOK_DIR / "executed" / "01_gated_attention.ipynb"
    before = executed.stat().st_mtime_ns if executed.exists() else None

    def no_kernel(*args, **kwargs):
        raise AssertionError("a kernel was started for refused parameters")

    import papermill

    monkeypatch.setattr(papermill, "execute_notebook", no_kernel)
    for argv, message in [
        (["--profile", "smoke", "--only", "01_gated_attention", "-p", "seeed", "3"], "error: seeed: not a parameter"),
        (["--profile", "smoke", "--only", "01_gated_attention", "-p", "seed", "-2"],
         "error: seed: must be int >= 0, got -2"),
        (["--profile", "smoke", "-p", "seed", "2"], "error: -p: parameter overrides need exactly one notebook"),
        (["--profile", "smoke", "--only", "99_missing"], "error: --only: no notebook '99_missing'"),
        (["--profile", "huge"], "error: profile: must be one of"),
    ]:
        assert runner.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(message) and err.count("\n") == 1, err
    assert not (tmp_path / "results").exists()
    assert (executed.stat().st_mtime_ns if executed.exists() else None) == before


def test_a_runner_run_validates_its_parameters_once(tmp_path, monkeypatch):
    import papermill

    validated = []
    real = params.validate
    monkeypatch.setattr(params, "validate", lambda notebook, values, **kw: validated.append(notebook)
                        or real(notebook, values, **kw))

    def kernel(source, output, parameters, **kwargs):  # what the notebook's first code cell does in its kernel
        chosen, _ = params.start("01_gated_attention", dict(parameters))
        assert chosen == parameters
        nbformat.write(nbformat.read(source, as_version=4), output)

    monkeypatch.setattr(papermill, "execute_notebook", kernel)
    monkeypatch.setenv("SPARTAN_RESULTS", str(tmp_path / "results"))
    monkeypatch.setattr(runner, "BOOK_DIR", tmp_path / "book")
    assert runner.main(["--profile", "smoke", "--only", "01_gated_attention", "-p", "seed", "3"]) == 0
    assert validated.count("01_gated_attention") == 1


def test_a_kernel_checks_it_got_the_set_its_runner_validated(monkeypatch):
    handed = validate("01_gated_attention", _valid())
    monkeypatch.setenv(params.VALIDATED_ENV, json.dumps({"notebook": "01_gated_attention", "parameters": handed}))
    assert notebook_parameters("01_gated_attention", dict(handed)) == handed
    with pytest.raises(ValueError, match=r"^seeed: not a parameter of 01_gated_attention"):
        notebook_parameters("01_gated_attention", {**handed, "seeed": 3})
    with pytest.raises(ValueError, match=r"^seed: must be int >= 0, got -1$"):
        notebook_parameters("01_gated_attention", {**handed, "seed": -1})


@pytest.mark.parametrize("file, label", [("tiny.yaml", "profile"), ("schema.yaml", "schema")])
def test_a_yaml_syntax_error_is_named_with_file_and_line(tmp_path, file, label):
    for name in ("schema.yaml", "tiny.yaml"):
        (tmp_path / name).write_text((params.PROFILES_DIR / name).read_text())
    (tmp_path / file).write_text("01_gated_attention:\n  seed: 0\n  n_samples: 4\n    bad: indent\n")
    with pytest.raises(ValueError) as error:
        load_profile("tiny", tmp_path)
    assert str(error.value) == f"{label}: {tmp_path / file} line 4: mapping values are not allowed here"


def test_repository_profiles_are_named_relative_to_the_repository(monkeypatch):
    real = params.yaml.safe_load
    monkeypatch.setattr(params.yaml, "safe_load", lambda text: real("a: b: c\n"))
    with pytest.raises(ValueError, match=r"^schema: profiles/schema.yaml line 1: mapping values are not allowed here$"):
        load_schema()


def _paper_namespace():
    return dict(load_profile("paper")["01_gated_attention"])


def test_notebook_start_refuses_the_paper_profile_without_cuda_unless_forced(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("SPARTAN_ALLOW_CPU", raising=False)
    monkeypatch.setenv("SPARTAN_RESULTS", str(tmp_path / "results"))
    with pytest.raises(ValueError, match=r"^profile: paper needs a CUDA GPU \(none found\); pass --allow-cpu "
                                         r"\(or set SPARTAN_ALLOW_CPU=1\) to run it on this CPU anyway$"):
        params.start("01_gated_attention", _paper_namespace())
    params.start("01_gated_attention", {**_paper_namespace(), "profile": "tiny"})
    monkeypatch.setenv("SPARTAN_ALLOW_CPU", "1")
    chosen, results = params.start("01_gated_attention", _paper_namespace())
    assert chosen["profile"] == "paper" and results.profile == "paper"
    assert not (tmp_path / "results").exists()


def test_paper_profile_with_cuda_needs_no_permission(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("SPARTAN_ALLOW_CPU", raising=False)
    params.check_device("paper")
    assert params.cpu_allowed({"SPARTAN_ALLOW_CPU": "1"}) and not params.cpu_allowed({"SPARTAN_ALLOW_CPU": "0"})


def test_a_missing_profile_file_is_one_line(tmp_path):
    (tmp_path / "schema.yaml").write_text((params.PROFILES_DIR / "schema.yaml").read_text())
    with pytest.raises(ValueError, match=r"^profile: .*tiny\.yaml is missing$"):
        load_profile("tiny", tmp_path)
