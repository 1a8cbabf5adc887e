"""Saved models of label maps and volumes: what the JSON records and SavedModel reads back."""

from __future__ import annotations

from pathlib import Path

import torch

from rndpo.nets import load_model, save_model
from rndpo.nets.unet import UNet


def test_a_3d_label_map_model_round_trips_its_classes_spacing_and_patch(tmp_path: Path) -> None:
    net = UNet(in_channels=1, out_channels=3, channels=(4, 8), spatial_dims=3)
    save_model(
        tmp_path / "m.pt",
        net,
        in_channels=1,
        image_size=None,
        num_classes=3,
        class_names=["background", "anterior", "posterior"],
        label_values=[0, 1, 4],
        spacing=[2.0, 1.0, 1.0],
        patch_size=[16, 16, 16],
    )
    saved = load_model(tmp_path / "m.pt")
    assert saved.spatial_dims == 3 and saved.num_classes == 3
    assert saved.class_names == ("background", "anterior", "posterior")
    assert saved.label_values == (0, 1, 4)
    assert saved.spacing == (2.0, 1.0, 1.0) and saved.patch_size == (16, 16, 16)
    x = torch.zeros(1, 1, 8, 8, 8)
    torch.testing.assert_close(saved.network(x), net.eval()(x))


def test_a_binary_2d_model_reads_the_binary_defaults(tmp_path: Path) -> None:
    save_model(tmp_path / "b.pt", UNet(channels=(4, 8)), in_channels=1, image_size=32)
    saved = load_model(tmp_path / "b.pt")
    assert (saved.spatial_dims, saved.num_classes, saved.label_values) == (2, 2, (0, 1))
    assert saved.class_names == ("background", "foreground")
    assert saved.spacing is None and saved.patch_size is None


def test_the_inference_window_is_recorded_apart_from_the_training_patch(tmp_path: Path) -> None:
    net = UNet(in_channels=1, out_channels=3, channels=(4, 8), spatial_dims=3, norm="instance")
    common = dict(in_channels=1, image_size=None, num_classes=3, patch_size=[16, 16, 16])
    save_model(tmp_path / "old.pt", net, **common)  # type: ignore[arg-type]
    save_model(tmp_path / "new.pt", net, **common, inference_size=[48, 64, 48])  # type: ignore[arg-type]
    assert load_model(tmp_path / "old.pt").inference_size == (16, 16, 16)  # older files: the patch size
    new = load_model(tmp_path / "new.pt")
    assert new.patch_size == (16, 16, 16) and new.inference_size == (48, 64, 48)
