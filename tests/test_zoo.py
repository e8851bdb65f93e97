"""nncost's parameters and MACs against torchvision's published ``num_params`` and ``_ops``.

The default run checks a handful of classification models built on the meta device; the whole
zoo is marked ``slow`` (``python -m pytest -m slow``).  Models are built and sized by
``bench/zoo.py``, which also writes the full comparison to docs/zoo.md (``--write-docs``).
"""

from __future__ import annotations

import pytest

from scripts import load_script

pytest.importorskip("torchvision")


zoo = load_script("bench/zoo.py", "nncost_bench_zoo")

FAST = ["resnet18", "mobilenet_v2", "efficientnet_b0", "vit_b_16", "convnext_tiny", "swin_t",
        "regnet_y_400mf", "squeezenet1_0", "googlenet"]


def _assert_matches(family: str, name: str) -> None:
    row = zoo.check(family, name)
    assert not row.error, row.error
    assert row.params == row.num_params, f"{name}: {row.params:,} params, torchvision says {row.num_params:,}"
    assert not row.uncounted, f"{name}: uncounted ops {row.uncounted}"
    assert zoo.macs_agree(row.macs, row.ops), (
        f"{name}: {row.macs / 1e9:.4f} GMACs, torchvision says {row.ops:.3f} ({row.rel_error:+.3%})"
    )


@pytest.mark.parametrize("name", FAST)
def test_classification_model_matches_torchvision(name: str) -> None:
    _assert_matches("classification", name)


def test_fast_models_run_on_meta() -> None:
    assert zoo.check("classification", "resnet18").execution == "meta"


def test_agreement_allows_the_published_rounding_only() -> None:
    assert zoo.macs_agree(56_510_400, 0.057)  # mobilenet_v3_small: 0.0565 G, published rounded
    assert zoo.macs_agree(4_089_184_256, 4.089)
    assert not zoo.macs_agree(4_200_000_000, 4.089)


CLASSIFICATION = [name for _, name in zoo.models(["classification"])]
OTHER_FAMILIES = [(family, name) for family, name in zoo.models(["segmentation", "video", "optical_flow"])]
DETECTION = [name for _, name in zoo.models(["detection"])]


@pytest.mark.slow
@pytest.mark.parametrize("name", CLASSIFICATION)
def test_every_classification_model_matches_torchvision(name: str) -> None:
    _assert_matches("classification", name)


@pytest.mark.slow
@pytest.mark.parametrize(("family", "name"), OTHER_FAMILIES, ids=[name for _, name in OTHER_FAMILIES])
def test_segmentation_video_and_flow_models_match_torchvision(family: str, name: str) -> None:
    _assert_matches(family, name)


@pytest.mark.slow
@pytest.mark.parametrize("name", DETECTION)
def test_detection_models_match_up_to_their_box_counts(name: str) -> None:
    """Params always match; MACs match, or (two-stage models, whose heads' cost depends on how many
    boxes random weights keep) some box counts within the model's limits reproduce ``_ops``."""
    row = zoo.check("detection", name)
    assert not row.error, row.error
    assert row.execution == "real"
    assert row.params == row.num_params
    assert not row.uncounted, row.uncounted
    if not row.macs_match:
        assert row.roi is not None, f"{name}: {row.macs / 1e9:.4f} vs {row.ops:.3f} GMACs"
        assert row.roi.implied is not None, f"{name}: no box counts reproduce _ops {row.ops:.3f}"
