"""The extension points agree with the schema: what a config may name is what the code registers."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
import yaml
from conftest import REPO

from stepscope.models.adapter import FamilyAdapter
from stepscope.models.registry import FAMILIES, FAMILY_NAMES, get_family
from stepscope.models.tiny import current_class_path
from stepscope.models.weight_layouts import LAYOUTS, SOURCES

SCHEMA = yaml.safe_load((REPO / "config/schema/config.schema.yaml").read_text())


def test_schema_families_are_the_registered_families_with_their_layouts():
    family_enum = SCHEMA["properties"]["models"]["additionalProperties"]["properties"]["family"]["enum"]
    assert list(family_enum) == list(FAMILY_NAMES)
    assert set(LAYOUTS) == set(FAMILY_NAMES) and set(SOURCES) <= set(FAMILY_NAMES)
    for name in FAMILY_NAMES:
        adapter = get_family(name)
        assert adapter.name == name
        assert adapter.layout == LAYOUTS[name]


def test_listing_families_and_layouts_leaves_torch_out():
    """The Snakefile and CPU jobs read the registry and layouts; they must not pull in torch."""
    code = (
        "import sys; import stepscope.models.registry, stepscope.models.weight_layouts, stepscope.models.hub; "
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize(
    "old_path",
    [
        "stepscope.families.tiny_modules.TinyWanVideoVAE",
        "stepscope.families.ltx.TinyLTX2VideoEncoder",
        "stepscope.models.tiny_modules.TinyWanImageEncoder",
    ],
)
def test_twins_made_by_earlier_versions_name_classes_that_still_import(old_path):
    """A tiny twin's manifest names its classes; twins made before a module moved keep loading."""
    module, _, name = current_class_path(old_path).rpartition(".")
    assert isinstance(getattr(importlib.import_module(module), name), type)


def test_every_registered_adapter_fulfils_the_written_contract():
    """Each family has every attribute and method of `FamilyAdapter` (a new family that forgets
    one fails here, not in the middle of a GPU job)."""
    required = set(FamilyAdapter.__annotations__) | {
        name for name, value in vars(FamilyAdapter).items() if callable(value) and not name.startswith("_")
    }
    for name in FAMILY_NAMES:
        adapter = get_family(name)
        missing = sorted(member for member in required if not hasattr(adapter, member))
        assert not missing, f"{name} lacks {missing}"


def test_a_family_whose_package_is_missing_names_it_and_the_fix():
    """diffsynth's LTX-2 pipeline imports PyAV; without it the first GPU job must say so, not blame
    the weights (the GPU rehearsal's first LTX-2.3 job did)."""
    code = (
        "import sys; sys.modules['av'] = None\n"
        "from stepscope.errors import StepScopeError\n"
        "from stepscope.models.registry import get_family\n"
        "get_family('wan2.2')\n"  # Wan does not need it
        "try:\n    get_family('ltx2.3')\nexcept StepScopeError as error:\n    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "ltx2.3 family needs the Python package 'av'" in result.stdout
    assert "pip install av" in result.stdout and "envs/gpu.yaml" in result.stdout


def test_the_gpu_environment_has_what_the_family_pipelines_import_beyond_diffsynths_requirements():
    """Packages diffsynth lists only under an extra, yet imports for a family we drive (PyAV and
    torchaudio for LTX-2), are in envs/gpu.yaml; PyAV also in the package's own requirements."""
    import importlib.metadata
    import re

    def name(requirement: str) -> str:
        return re.split(r"[ ;<>=!~\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")

    requires = importlib.metadata.requires("diffsynth")
    extras_only = {name(r) for r in requires if "extra ==" in r} - {
        name(r) for r in requires if "extra" not in r
    }
    modules = [FAMILIES[family].split(":")[0] for family in FAMILY_NAMES]
    code = f"import sys; [__import__(m) for m in {modules!r}]; print(' '.join(sorted(sys.modules)))"
    imported = set(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    needed = {package for package in extras_only if package.replace("-", "_") in imported}
    assert {"av", "torchaudio"} <= needed  # what the rehearsal found; others may join
    gpu_env = yaml.safe_load((REPO / "envs/gpu.yaml").read_text())
    pip_lines = next(item["pip"] for item in gpu_env["dependencies"] if isinstance(item, dict))
    declared = {name(line) for line in pip_lines if not line.startswith("-")}
    assert needed <= declared, needed - declared
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r'^\s*"av",', pyproject, re.M)
