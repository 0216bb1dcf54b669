"""nbval on a committed chapter: chapter 1 trains nothing, so its stored outputs can be checked against a rerun in
seconds. ``--nbval-lax`` compares only the cells tagged ``nbval-check-output`` (the sentences that report its
results, which a fixed seed makes deterministic); figures and bookkeeping cells only have to run. A chapter whose
stored sentence no longer matches what its code computes fails. The rerun writes its results into a temporary
folder, never into results/."""

import os
import subprocess
import sys

import nbformat
import pytest

from companion.results import REPO_ROOT

CHAPTER = REPO_ROOT / "book" / "chapters" / "01_gated_attention.ipynb"

pytestmark = pytest.mark.slow


def nbval(path, tmp_path):
    env = {**os.environ, "SPARTAN_RESULTS": str(tmp_path / "results"), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                           "--rootdir", str(tmp_path), str(path)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)


def test_chapter_1_outputs_match_a_rerun_of_its_code(tmp_path):
    checked = [c for c in nbformat.read(str(CHAPTER), as_version=4).cells
               if "nbval-check-output" in c.metadata.get("tags", [])]
    assert len(checked) == 4
    done = nbval(CHAPTER, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:]


def test_a_stale_output_in_a_checked_cell_fails(tmp_path):
    nb = nbformat.read(str(CHAPTER), as_version=4)
    cell = next(c for c in nb.cells if "nbval-check-output" in c.metadata.get("tags", []))
    cell.outputs[0]["data"]["text/markdown"] = cell.outputs[0]["data"]["text/markdown"].replace("0", "9", 1)
    stale = tmp_path / "chapter" / CHAPTER.name
    stale.parent.mkdir()
    nbformat.write(nb, str(stale))
    done = nbval(stale, tmp_path)
    assert done.returncode != 0 and "1 failed" in done.stdout
