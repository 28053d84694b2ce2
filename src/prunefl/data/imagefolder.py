"""Load an image-folder data set (``root/train/<class>/*``, ``root/val/<class>/*``), e.g. ImageNet-100."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from prunefl.data.dataset import ArrayDataset, Augment
from prunefl.errors import ConfigError, DataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MAX_IMAGE_PIXELS",
    "Fit",
    "load_imagefolder",
    "read_images",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp"})
"""File suffixes (compared lower-case, so ImageNet's ``.JPEG`` counts) taken as images."""

MAX_IMAGE_PIXELS = 64_000_000
"""Largest image decoded, in pixels (width x height, e.g. 8000 x 8000; ImageNet's largest are a few tens of
megapixels): a header declaring more is refused before its pixels are decoded (Pillow's own bomb check warns only
from 89 MP on and refuses from 179 MP)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Fit = Literal["center_crop", "stretch"]
"""How :func:`read_images` makes an image square: shorter side + centre crop, or a plain resize (LEAF)."""

_HOW_TO_GET = (
    "lay the images out as <root>/train/<class>/*.jpg and <root>/val/<class>/*.jpg (for ImageNet-100: the "
    "100 ImageNet-1k classes of the published class list, train and val images copied from ILSVRC2012) "
    "and pass <root> as data_dir (--data-dir)"
)


def load_imagefolder(
    root: str | Path,
    image_size: int = 64,
    classes: Sequence[str] | None = None,
    name: str = "imagefolder",
    augment: Augment = "crop_flip",
) -> ArrayDataset:
    """Load ``root/train`` and ``root/val`` into memory, resized and centre-cropped to ``image_size``.

    Every image is decoded once, resized so its shorter side is ``image_size``, centre-cropped to a square and
    stored as ``uint8``; memory is ``n * 3 * image_size**2`` bytes. The paper trained ResNet-18 on ImageNet-100 at
    168 pixels (spec §6), which for 126,100 training images is 10.7 GB; the default 64 needs 1.5 GB. Training
    augmentation is :meth:`ArrayDataset.prepare`'s pad-4 crop and flip, not the paper's random-resized crop.

    Parameters
    ----------
    root : str or pathlib.Path
        Folder with ``train/`` and ``val/``, each holding one sub-folder per class.
    image_size : int
        Side of the stored square images, in pixels, >= 1 (default: 64).
    classes : sequence of str or None
        Class folders to load, in label order; ``None`` takes every folder in ``root/train``, sorted by name
        (default: None). Publish this list with results: spec §7 says ImageNet-100's subset is not fixed.
    name : str
        Name given to the data set (default: ``"imagefolder"``).
    augment : {"none", "crop_flip"}
        Training augmentation, see :class:`ArrayDataset` (default: ``"crop_flip"``).

    Returns
    -------
    ArrayDataset
        ``uint8`` images ``(n, 3, image_size, image_size)``, ImageNet mean/std, files in sorted order per class.

    Raises
    ------
    ConfigError
        If ``image_size`` < 1, ``classes`` is empty or has duplicates.
    DataError
        If a folder is missing or empty, a class has no images, or an image cannot be decoded.

    Examples
    --------
    >>> load_imagefolder("/nonexistent")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    prunefl.errors.DataError: imagefolder: expected folder /nonexistent/train with one sub-folder per class, ...
    """
    _check_image_size(image_size)
    root = Path(root)
    if classes is None:
        class_names = _list_classes(name, root / "train")
    else:
        class_names = list(classes)
        _check_classes(class_names)
    x_train, y_train = _read_split(name, root / "train", class_names, image_size)
    x_test, y_test = _read_split(name, root / "val", class_names, image_size)
    logger.debug(
        "loaded %s from %s: %d classes, %d train, %d val", name, root, len(class_names), len(y_train), len(y_test)
    )
    return ArrayDataset(
        name=name,
        x_train=torch.from_numpy(x_train),
        y_train=torch.from_numpy(y_train),
        x_test=torch.from_numpy(x_test),
        y_test=torch.from_numpy(y_test),
        num_classes=len(class_names),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        augment=augment,
    )


def read_images(
    paths: Sequence[Path], image_size: int, fit: Fit = "center_crop", max_workers: int | None = None
) -> np.ndarray:
    """Decode image files into one ``uint8`` RGB array, in the order given.

    Decoding runs on a thread pool: Pillow releases the GIL while decoding, so this scales with cores.

    Parameters
    ----------
    paths : sequence of pathlib.Path
        Image files in any format Pillow reads; greyscale and RGBA are converted to RGB.
    image_size : int
        Side of the square output, in pixels, >= 1.
    fit : {"center_crop", "stretch"}
        ``"center_crop"``: resize the shorter side to ``image_size`` then crop the centre (torchvision's
        Resize + CenterCrop); ``"stretch"``: resize to ``image_size x image_size`` ignoring aspect (LEAF CelebA)
        (default: ``"center_crop"``).
    max_workers : int or None
        Decoding threads (default: ``min(8, os.cpu_count())``).

    Returns
    -------
    numpy.ndarray
        Shape ``(len(paths), 3, image_size, image_size)``, ``uint8``.

    Raises
    ------
    DataError
        If a file is missing, cannot be decoded, or declares more than :data:`MAX_IMAGE_PIXELS` pixels; the
        message names it.

    Examples
    --------
    >>> read_images([], 4).shape
    (0, 3, 4, 4)
    """
    _check_image_size(image_size)
    if fit not in _FITS:
        raise ConfigError(f"fit must be one of {sorted(_FITS)}, got {fit!r}")
    out = np.empty((len(paths), 3, image_size, image_size), dtype=np.uint8)  # (n, 3, s, s)
    if not paths:
        return out
    resize = _FITS[fit]

    def decode(i: int) -> None:
        out[i] = _decode(paths[i], image_size, resize)

    workers = max_workers if max_workers is not None else min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        # list() re-raises the first worker exception here.
        list(pool.map(decode, range(len(paths))))
    return out


def _resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Resize so the shorter side is ``size`` (bilinear, as torchvision), then crop the centre square."""
    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


def _resize_stretch(image: Image.Image, size: int) -> Image.Image:
    """Resize to ``size x size`` with Pillow's default filter, as LEAF's CelebA model does."""
    return image.resize((size, size))


_FITS = {"center_crop": _resize_center_crop, "stretch": _resize_stretch}


def _decode(path: Path, size: int, resize: Callable[[Image.Image, int], Image.Image]) -> np.ndarray:
    """Open one image and return it as ``(3, size, size)`` uint8."""
    try:
        with Image.open(path) as image:  # reads the header only; pixels are decoded by convert()
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise DataError(f"image {path} declares {width} x {height} pixels, more than the {MAX_IMAGE_PIXELS} "
                                f"decoded (a damaged or hostile file?)")  # fmt: skip
            rgb = resize(image.convert("RGB"), size)
            array = np.asarray(rgb, dtype=np.uint8)  # (size, size, 3)
    except DataError:
        raise
    except FileNotFoundError as exc:
        raise DataError(f"image file {path} not found") from exc
    except Exception as exc:  # Pillow's decoders raise OSError, ValueError, SyntaxError, struct.error, ... on bad bytes
        raise DataError(f"cannot decode image {path}: {exc}; the file is corrupt or not an image") from exc
    return array.transpose(2, 0, 1)


def _list_classes(name: str, split_dir: Path) -> list[str]:
    """Sorted names of the sub-folders of ``split_dir``."""
    if not split_dir.is_dir():
        raise DataError(f"{name}: expected folder {split_dir} with one sub-folder per class, not found. {_HOW_TO_GET}")
    class_names = sorted(entry.name for entry in split_dir.iterdir() if entry.is_dir())
    if not class_names:
        raise DataError(f"{name}: {split_dir} has no class sub-folders, expected one per class. {_HOW_TO_GET}")
    return class_names


def _read_split(name: str, split_dir: Path, class_names: list[str], image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode every image of ``split_dir/<class>`` for the given classes; labels are positions in ``class_names``."""
    if not split_dir.is_dir():
        raise DataError(f"{name}: expected folder {split_dir} with one sub-folder per class, not found. {_HOW_TO_GET}")
    paths: list[Path] = []
    counts: list[int] = []
    for class_name in class_names:
        class_dir = split_dir / class_name
        if not class_dir.is_dir():
            raise DataError(f"{name}: expected class folder {class_dir}, not found. {_HOW_TO_GET}")
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not files:
            raise DataError(
                f"{name}: class folder {class_dir} has no images (suffixes {sorted(IMAGE_EXTENSIONS)}). {_HOW_TO_GET}"
            )
        paths.extend(files)
        counts.append(len(files))
    extra = sorted({p.name for p in split_dir.iterdir() if p.is_dir()} - set(class_names))
    if extra:
        logger.debug(
            "%s: ignoring %d class folders in %s not in the class list: %s", name, len(extra), split_dir, extra[:5]
        )
    labels = np.repeat(np.arange(len(class_names), dtype=np.int64), counts)
    return read_images(paths, image_size, "center_crop"), labels


def _check_image_size(image_size: int) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ConfigError(f"image_size must be an int >= 1, got {image_size!r}")


def _check_classes(class_names: list[str]) -> None:
    if not class_names:
        raise ConfigError("classes must name at least one class folder, got an empty list")
    duplicates = sorted({c for c in class_names if class_names.count(c) > 1})
    if duplicates:
        raise ConfigError(f"classes must be distinct, got duplicates {duplicates}")
