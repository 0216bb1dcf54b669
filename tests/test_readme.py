import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_quickstart_runs_and_sparsifies(capsys):
    """The README's first Python block is what a new user copies: it must run as printed."""
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    counts = namespace["counts"]
    assert 0 <= counts.kept_fraction <= 1 and counts.kept_per_query > 0
    assert namespace["result"].history[-1]["step"] == 20
    assert "kept" in capsys.readouterr().out


def test_readme_names_the_two_commands_used_by_ci():
    text = README.read_text()
    assert "make reproduce" in text and "make test" in text
    assert "make test" in (README.parent / ".ci" / "run").read_text()
