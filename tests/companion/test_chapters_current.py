"""A published chapter is the executed copy of its notebook: if a notebook's cells change and the chapter is not
executed again, the book shows outputs of code that no longer exists. Every chapter's cells must equal its
notebook's, except the cells the runner adds (the injected parameters, the provenance box)."""

import nbformat
import pytest

from companion.book import PROVENANCE_TAG
from companion.results import REPO_ROOT
from companion.params import notebook_names

ADDED = {"parameters", "injected-parameters", PROVENANCE_TAG}


def cells(path):
    return [(c.cell_type, c.source) for c in nbformat.read(str(path), as_version=4).cells
            if not ADDED & set(c.get("metadata", {}).get("tags", []))]


def stale_cells(notebook, chapter) -> list[int]:
    mine, published = cells(notebook), cells(chapter)
    if len(mine) != len(published):
        return [min(len(mine), len(published))]
    return [i for i, (a, b) in enumerate(zip(mine, published)) if a != b]


@pytest.mark.parametrize("name", notebook_names())
def test_each_chapter_was_executed_from_its_notebook_as_it_is(name):
    chapter = REPO_ROOT / "book" / "chapters" / f"{name}.ipynb"
    assert chapter.exists(), f"{name}: not published; run `make notebook NB={name}`"
    assert stale_cells(REPO_ROOT / "notebooks" / f"{name}.ipynb", chapter) == [], (
        f"{name}: the chapter's cells differ from the notebook's; run `make notebook NB={name}`")


def test_an_edited_notebook_makes_its_chapter_stale(tmp_path):
    source = REPO_ROOT / "notebooks" / "05_addition.ipynb"
    nb = nbformat.read(str(source), as_version=4)
    code = next(c for c in nb.cells if c.cell_type == "code" and "parameters" not in c.metadata.get("tags", []))
    code.source += "\nprint('changed')"
    nbformat.write(nb, str(tmp_path / "05_addition.ipynb"))
    assert stale_cells(tmp_path / "05_addition.ipynb", REPO_ROOT / "book" / "chapters" / "05_addition.ipynb")
