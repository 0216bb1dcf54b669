"""The workflow that publishes the book: valid for GitHub Actions (the workflow schema that check-jsonschema ships,
offline), triggered by a version tag, building with the repository's own `make book` and deploying the folder that
build writes; a broken copy fails the same check."""

import subprocess
import sys

import yaml

from companion.results import REPO_ROOT

WORKFLOW = REPO_ROOT / ".github" / "workflows" / "book.yml"


def _lint(path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
                           str(path)], capture_output=True, text=True, timeout=120)


def test_the_book_workflow_passes_the_workflow_schema_and_a_broken_copy_fails_it(tmp_path):
    assert _lint(WORKFLOW).returncode == 0, _lint(WORKFLOW).stdout
    broken = tmp_path / "book.yml"
    broken.write_text(WORKFLOW.read_text().replace("runs-on:", "runs_on:", 1))
    result = _lint(broken)
    assert result.returncode == 1 and "is not valid" in result.stdout


def test_the_book_workflow_builds_with_make_book_and_deploys_what_it_built():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as a boolean
    assert triggers["push"]["tags"] == ["v*"] and "workflow_dispatch" in triggers
    jobs = workflow["jobs"]
    assert all(set([job.get("needs", [])] if isinstance(job.get("needs"), str) else job.get("needs", [])) <= set(jobs)
               for job in jobs.values())
    runs = [step.get("run") for step in jobs["build"]["steps"]]
    assert "make setup" in runs and "make book" in runs
    upload = next(step for step in jobs["build"]["steps"] if step.get("uses", "").startswith("actions/upload-pages"))
    assert upload["with"]["path"] == "book/_build/html"
    assert any(step.get("uses", "").startswith("actions/deploy-pages") for step in jobs["deploy"]["steps"])
