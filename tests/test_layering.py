"""The library never imports the companion: ``spartan_core`` must stay usable on its own, without the book's
pipeline and its dependencies."""

import subprocess
import sys
import textwrap
from pathlib import Path

LIBRARY = Path(__file__).resolve().parents[2] / "spartan_core"


def test_importing_every_library_module_leaves_companion_unimported():
    code = textwrap.dedent("""
        import importlib, pkgutil, sys
        import spartan_core
        names = [m.name for m in pkgutil.walk_packages(spartan_core.__path__, "spartan_core.")
                 if m.name != "spartan_core.__main__"]
        for name in names:
            importlib.import_module(name)
        print(len(names))
        print(sorted(m for m in sys.modules if m == "companion" or m.startswith("companion.")))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=LIBRARY.parent,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    count, loaded = done.stdout.splitlines()[-2:]
    assert int(count) > 10, "the walk found too few library modules"
    assert loaded == "[]", f"importing spartan_core loaded {loaded}"


def test_no_library_file_imports_companion():
    offenders = [f"{path.relative_to(LIBRARY.parent)}:{number}"
                 for path in sorted(LIBRARY.rglob("*.py"))
                 for number, line in enumerate(path.read_text().splitlines(), 1)
                 if "import companion" in line or "from companion" in line]
    assert not offenders, f"the library imports the companion at {', '.join(offenders)}"
