"""The command line itself: help, version, config listing."""
from __future__ import annotations

from lvd_runner import lvd
from lvdtool import __version__


def test_help_lists_every_stage_with_a_description():
    out = lvd("--help").stdout
    for command in ("crawl-ingest", "embed", "probe", "inspect", "config"):
        line = next((ln for ln in out.splitlines() if ln.strip().startswith(command + " ")), None)
        assert line is not None and len(line.split()) > 2, f"{command} missing or without a description"


def test_version_and_config_listing():
    assert lvd("--version").stdout.strip() == f"lvd {__version__}"
    cfg = lvd("config", "crawl-ingest").stdout
    assert "retries: 2" in cfg and "max_side" in cfg and "blur_faces: false" in cfg
    res = lvd("config", "nope", check=False)
    assert res.returncode == 2 and res.stderr.strip().startswith("error: no stage 'nope'")
