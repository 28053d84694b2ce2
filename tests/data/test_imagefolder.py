"""Tests for prunefl.data.imagefolder: class discovery, resize + centre crop, validation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from prunefl.data.imagefolder import IMAGENET_MEAN, IMAGENET_STD, load_imagefolder, read_images
from prunefl.errors import ConfigError, DataError

_COLOURS = {"zebra": (255, 255, 255), "ant": (255, 0, 0), "bee": (0, 0, 255)}


def _save(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (10, 8), mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour if mode != "L" else colour[0]).save(path)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """train/ with 2 images per class (PNG and upper-case .JPEG, as ImageNet), val/ with 1; colour = class."""
    for class_name, colour in _COLOURS.items():
        _save(tmp_path / "train" / class_name / "b.png", colour)
        _save(tmp_path / "train" / class_name / "a.JPEG", colour)
        _save(tmp_path / "val" / class_name / "v.png", colour)
    (tmp_path / "train" / "ant" / "notes.txt").write_text("not an image")  # ignored: not an image suffix
    return tmp_path


def test_load_imagefolder_labels_are_sorted_class_folders(root: Path) -> None:
    # Execute
    ds = load_imagefolder(root, image_size=4)

    # Assert: classes ant=0, bee=1, zebra=2; the class colour fills every image
    assert ds.num_classes == 3
    assert ds.y_train.tolist() == [0, 0, 1, 1, 2, 2] and ds.y_test.tolist() == [0, 1, 2]
    assert ds.x_train.shape == (6, 3, 4, 4) and str(ds.x_train.dtype) == "torch.uint8"
    assert ds.x_test[:, :, 0, 0].tolist() == [[255, 0, 0], [0, 0, 255], [255, 255, 255]]
    assert ds.mean == IMAGENET_MEAN and ds.std == IMAGENET_STD and ds.augment == "crop_flip"


def test_load_imagefolder_classes_restrict_and_order_labels(root: Path) -> None:
    # Execute
    ds = load_imagefolder(root, image_size=2, classes=["zebra", "ant"], name="imagenet100")

    # Assert
    assert ds.name == "imagenet100" and ds.num_classes == 2
    assert ds.y_train.tolist() == [0, 0, 1, 1]
    assert ds.x_train[0, :, 0, 0].tolist() == [255, 255, 255]  # zebra is label 0


def test_read_images_center_crop_keeps_the_middle_of_a_wide_image(tmp_path: Path) -> None:
    # Prepare: a 12x4 image, thirds red | green | blue; the shorter side is already 4, so no resampling
    pixels = np.zeros((4, 12, 3), dtype=np.uint8)
    pixels[:, :4, 0], pixels[:, 4:8, 1], pixels[:, 8:, 2] = 255, 255, 255
    path = tmp_path / "wide.png"
    Image.fromarray(pixels).save(path)

    # Execute
    out = read_images([path], image_size=4, fit="center_crop")

    # Assert: only the green middle third survives
    assert out.shape == (1, 3, 4, 4)
    assert (out[0, 1] == 255).all() and (out[0, 0] == 0).all() and (out[0, 2] == 0).all()


def test_read_images_stretch_keeps_the_whole_image(tmp_path: Path) -> None:
    # Prepare: the same 12x4 thirds image
    pixels = np.zeros((4, 12, 3), dtype=np.uint8)
    pixels[:, :4, 0], pixels[:, 4:8, 1], pixels[:, 8:, 2] = 255, 255, 255
    path = tmp_path / "wide.png"
    Image.fromarray(pixels).save(path)

    # Execute
    out = read_images([path], image_size=6, fit="stretch")

    # Assert: squashed to 6 columns, the outer columns are still pure red and blue
    assert out[0, :, 0, 0].tolist() == [255, 0, 0] and out[0, :, 0, 5].tolist() == [0, 0, 255]


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])  # greyscale, alpha, palette images all become RGB
def test_read_images_converts_any_mode_to_rgb(tmp_path: Path, mode: str) -> None:
    # Prepare: 204 is on Pillow's web palette, so the palette image holds it exactly
    path = tmp_path / "img.png"
    Image.new("RGB", (5, 7), (204, 204, 204)).convert(mode).save(path)

    # Execute
    out = read_images([path], image_size=3)

    # Assert
    assert out.shape == (1, 3, 3, 3) and (out == 204).all()


def test_load_imagefolder_corrupt_image_raises_data_error_naming_it(root: Path) -> None:
    # Prepare
    broken = root / "val" / "bee" / "v.png"
    broken.write_bytes(b"GIF89a garbage")

    # Execute
    with pytest.raises(DataError) as info:
        load_imagefolder(root, image_size=4)

    # Assert
    assert str(broken) in str(info.value)


def _empty_class(root: Path) -> None:
    (root / "val" / "bee" / "v.png").unlink()


def _drop_val_class(root: Path) -> None:
    (root / "val" / "bee" / "v.png").unlink()
    (root / "val" / "bee").rmdir()


def _rename_val(root: Path) -> None:
    (root / "val").rename(root / "validation")


@pytest.mark.parametrize(
    ("break_layout", "message"),
    [
        (_empty_class, "has no images"),  # a class folder without images
        (_drop_val_class, "expected class folder"),  # a train class missing from val
        (_rename_val, "expected folder"),  # no val/ split
    ],
)
def test_load_imagefolder_broken_layout_raises_data_error(
    root: Path, break_layout: Callable[[Path], None], message: str
) -> None:
    # Prepare
    break_layout(root)

    # Execute
    with pytest.raises(DataError) as info:
        load_imagefolder(root, image_size=4)

    # Assert
    assert message in str(info.value) and str(root) in str(info.value)
    assert "train/<class>" in str(info.value)  # says how the data must be laid out


def test_load_imagefolder_missing_root_says_how_to_lay_it_out(tmp_path: Path) -> None:
    # Execute
    with pytest.raises(DataError) as info:
        load_imagefolder(tmp_path / "imagenet100")

    # Assert
    assert str(tmp_path / "imagenet100" / "train") in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_size": 0}, "image_size"),  # no pixels
        ({"image_size": 2.5}, "image_size"),  # not an int
        ({"classes": []}, "at least one"),  # nothing to load
        ({"classes": ["ant", "ant"]}, "duplicates ['ant']"),  # one class twice
    ],
)
def test_load_imagefolder_bad_arguments_raise_config_error(root: Path, kwargs: dict, message: str) -> None:
    # Execute / Assert
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_imagefolder(root, **kwargs)


def test_load_imagefolder_unknown_class_raises_data_error(root: Path) -> None:
    # Execute / Assert
    with pytest.raises(DataError, match="expected class folder"):
        load_imagefolder(root, classes=["ant", "wasp"])


def test_read_images_unknown_fit_raises_config_error(tmp_path: Path) -> None:
    # Execute / Assert
    with pytest.raises(ConfigError, match="fit"):
        read_images([tmp_path / "x.png"], 4, fit="pad")  # type: ignore[arg-type]
