"""The official linear protocol's description names the resolution a run used."""
from __future__ import annotations

from lvdtool.eval.probe_protocol import OFFICIAL_LINEAR_PROTOCOL, official_linear_protocol


def test_the_paper_resolution_reads_as_the_paper() -> None:
    text = official_linear_protocol(224).augmentation
    assert text == "random-resized-crop 224 + horizontal flip (train); resize 256 + center crop 224 (val)"
    assert official_linear_protocol(224) == OFFICIAL_LINEAR_PROTOCOL


def test_another_resolution_names_its_own_sizes_and_the_papers() -> None:
    # the val resize follows the paper's 256/224 ratio unless the probe config gives one
    assert official_linear_protocol(448).augmentation.startswith(
        "random-resized-crop 448 + horizontal flip (train); resize 512 + center crop 448 (val)")
    given = official_linear_protocol(32, resize=40)
    assert "random-resized-crop 32 " in given.augmentation and "resize 40 + center crop 32 (val)" in given.augmentation
    assert given.augmentation.endswith("(the paper: 224, resize 256)")
    assert "224" not in official_linear_protocol(64, resize=64).augmentation.split(" (the paper")[0]
    # everything but the sizes is the paper's protocol
    assert official_linear_protocol(64).as_dict() | {"augmentation": ""} == OFFICIAL_LINEAR_PROTOCOL.as_dict() | {"augmentation": ""}
