"""The bundled digits data really trains fastvit_t8 (``fastvit train --data digits``)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow
def test_digits_demo_reaches_93_percent_and_survives_reparameterization(tmp_path):
    from fastvit.train.demo_digits import run

    result = run(tmp_path, log=lambda _: None)
    assert result["val_images"] == 359  # the held-out 20% of the 1797 digits
    assert result["top1"] >= 93.0, result
    assert result["top1_fused"] == result["top1"] and result["fused"]
    assert result["max_abs_logit_diff"] < 1e-3
    assert (tmp_path / "digits_metrics.json").is_file()


def test_digits_weights_record_the_preprocessing_their_validation_used():
    """``predict`` / ``evaluate`` on image files of a digits-trained model see the pixels
    its validation saw: the weights carry the digits pipeline as their pretrained_cfg."""
    import torch
    from sklearn.datasets import load_digits

    from fastvit.data.digits import DigitsDataset
    from fastvit.pipeline import eval_transform
    from fastvit.run.recipes import apply_overrides
    from fastvit.train.config import load_recipe
    from fastvit.train.data import recorded_with_weights

    cfg = apply_overrides(load_recipe("digits_t8"), ["data.path=digits", "data.image_size=32"])
    recorded = recorded_with_weights(cfg)["pretrained_cfg"]
    assert recorded["input_size"] == [3, 32, 32] and recorded["crop_pct"] == 1.0
    validation = DigitsDataset("val", image_size=32)
    transform = eval_transform(recorded)
    raw = load_digits().images  # 8x8, 0..16: as a user's 8x8 PNG would hold them
    for i in range(5):
        index = int(validation.indices[i])
        pixels = torch.as_tensor(raw[index] * 255 / 16).round().to(torch.uint8)
        seen = transform(pixels.expand(3, -1, -1).contiguous())
        expected, _ = validation[i]
        assert seen.shape == expected.shape == (3, 32, 32)
        assert (seen - expected).abs().max() < 0.05  # uint8 rounding of a 1/16-step image
