"""A wheel holds only the packages pyproject lists: every package folder must be listed."""
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_folder_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed, folders = set(config["packages"]), config["package-dir"]
    found = set()
    for package, folder in folders.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((package, *parts)))
    assert found - listed == set(), f"package folders missing from pyproject's packages: {sorted(found - listed)}"


# --- the editable install (scripts/setup.sh) ----------------------------------------------------

def _editable_checkout() -> Path | None:
    """The checkout tiletune is installed editable from, or None (a regular install)."""
    import json
    from importlib.metadata import distributions
    from urllib.parse import unquote, urlparse

    # the installed one: an egg-info folder in the checkout (setuptools' build leaves it) has no URL
    for dist in distributions(name="tiletune"):
        info = json.loads(dist.read_text("direct_url.json") or "{}")
        if info.get("dir_info", {}).get("editable") and info.get("url", "").startswith("file://"):
            return Path(unquote(urlparse(info["url"]).path)).resolve()
    return None


needs_editable = pytest.mark.skipif(_editable_checkout() != ROOT, reason="tiletune is not installed editable from "
                                    "this checkout (bash scripts/setup.sh does that)")


def _python(code: str, cwd: Path) -> str:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _installed_trees(cwd: Path) -> list[Path]:
    """The entries of the interpreter's path that hold a `tiletune/` folder with the subpackages
    in it: what a static tool (pyright, jedi) walks, with no import hook involved."""
    import json

    code = ("import json, os, sys; print(json.dumps([p for p in sys.path if p and "
            "os.path.isfile(os.path.join(p, 'tiletune', 'kernels', '__init__.py'))]))")
    return [Path(p) for p in json.loads(_python(code, cwd))]


@needs_editable
def test_static_tools_can_follow_the_subpackages_to_the_checkout(tmp_path) -> None:
    # Walking the path, as a static tool does: tiletune/kernels/lower.py is there, and is the
    # checkout's kernels/lower.py (the package-dir mapping, laid out as files).
    trees = _installed_trees(tmp_path)
    assert trees, "no folder on the path holds tiletune/kernels/: the install maps the folders with a hook"
    for tree in trees:
        assert (tree / "tiletune" / "kernels" / "lower.py").resolve() == ROOT / "kernels" / "lower.py"
        assert (tree / "tiletune" / "api.py").resolve() == ROOT / "tiletune" / "api.py"
    # and the import system agrees
    origin = _python("import importlib.util; print(importlib.util.find_spec('tiletune.kernels.lower').origin)",
                     tmp_path).strip()
    assert Path(origin).resolve() == ROOT / "kernels" / "lower.py"


@needs_editable
def test_every_module_of_the_checkout_is_installed(tmp_path) -> None:
    # Strict editable mode links the files that existed when it ran: a module added since is not
    # importable until `bash scripts/setup.sh` runs again.
    (tree,) = _installed_trees(tmp_path)
    folders = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    missing = [str(path.relative_to(ROOT)) for package, folder in folders.items()
               for path in sorted((ROOT / folder).rglob("*.py"))
               if not (tree / package.replace(".", "/") / path.relative_to(ROOT / folder)).exists()]
    assert not missing, f"not in the editable install yet (run: bash scripts/setup.sh): {', '.join(missing)}"


@needs_editable
def test_python_m_from_the_checkout_root_finds_the_subpackages() -> None:
    # The current directory leads sys.path, so `import tiletune` finds the checkout's tiletune/
    # folder; its __path__ reaches the subpackages through the installed tree.
    origin = _python("import tiletune.kernels.lower as m; print(m.__file__)", ROOT).strip()
    assert Path(origin).resolve() == ROOT / "kernels" / "lower.py"
