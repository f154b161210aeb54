"""pyproject.toml lists every package of the source tree, mapped onto the folder it lives in, so that an
installed hiergym (not only the checkout) has all of them."""

from __future__ import annotations

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_is_listed_and_mapped() -> None:
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages, folders = set(setup["packages"]), setup["package-dir"]
    assert packages == set(folders), "packages and package-dir must name the same packages"
    for package, folder in folders.items():
        assert (ROOT / folder / "__init__.py").is_file(), f"{package} -> {folder} has no __init__.py"
    # Every folder with an __init__.py under a mapped folder is a listed package.
    found = set()
    for package, folder in folders.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            found.add(".".join([package, *relative.parts]))
    missing = sorted(found - packages)
    assert not missing, f"packages missing from pyproject.toml: {missing}"


def test_the_public_training_names_are_exported() -> None:
    import hiergym.training as training

    for name in training.__all__:
        assert getattr(training, name) is not None
    assert training.TrainConfig().estimator == "gigpo"
