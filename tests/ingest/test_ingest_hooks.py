"""User filter hooks loaded from 'module:function' and 'file.py:function' specs."""

from __future__ import annotations

from pathlib import Path

import pytest
import skimage.data
from PIL import Image

from lvdtool.errors import ConfigError
from lvdtool.ingest import load_filter_hook

HOOK_SOURCE = '''
import numpy as np

def bright_only(image, meta):
    return float(np.asarray(image).mean()) > meta.get("threshold", 100)

def explain(image, meta):
    return None if image.width >= 256 else "filter:too_narrow_for_me"

def accept_all(image, meta):
    return None

class Rules:
    @staticmethod
    def never(image, meta):
        return False

not_callable = 3
'''


@pytest.fixture
def hook_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_hooks.py"
    path.write_text(HOOK_SOURCE)
    return path


@pytest.fixture
def photo() -> Image.Image:
    return Image.fromarray(skimage.data.astronaut())


def test_file_hook_verdicts(hook_file: Path, photo: Image.Image):
    bright = load_filter_hook(f"{hook_file}:bright_only")
    assert bright(photo, {"threshold": 10}) is None
    assert bright(photo, {"threshold": 250}) == "filter:bright_only"
    explain = load_filter_hook(f"{hook_file}:explain")
    assert explain(photo, {}) is None
    assert explain(photo.resize((100, 100)), {}) == "filter:too_narrow_for_me"
    assert load_filter_hook(f"{hook_file}:accept_all")(photo, {}) is None
    never = load_filter_hook(f"{hook_file}:Rules.never")
    assert never.name == "never" and never(photo, {}) == "filter:never"


def test_module_hook(hook_file: Path, photo: Image.Image, monkeypatch):
    monkeypatch.syspath_prepend(str(hook_file.parent))
    hook = load_filter_hook("my_hooks:bright_only")
    assert hook(photo, {"threshold": 250}) == "filter:bright_only"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon_here", "expected 'module:function'"),
        (":fn", "expected"),
        ("module_that_does_not_exist_xyz:fn", "cannot import module"),
        ("{file}:missing_function", "has no attribute 'missing_function'"),
        ("{file}:not_callable", "not callable"),
        ("{dir}/absent.py:fn", "not found"),
    ],
)
def test_bad_specs_raise_config_error_naming_the_spec(hook_file: Path, spec: str, message: str):
    spec = spec.format(file=hook_file, dir=hook_file.parent)
    with pytest.raises(ConfigError, match=message) as caught:
        load_filter_hook(spec)
    assert spec in str(caught.value)


def test_hook_file_that_fails_to_import(tmp_path: Path):
    path = tmp_path / "broken_hook.py"
    path.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ConfigError, match="boom"):
        load_filter_hook(f"{path}:fn")
