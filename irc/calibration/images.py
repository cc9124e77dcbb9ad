"""Images from folders, preprocessed the way the model was trained (Pillow decodes).

A ``Preprocess`` says how a file becomes a model input: resize the shorter side (bilinear,
as torchvision's ``Resize`` on a PIL image), centre-crop, scale, normalise per channel,
and lay out as NCHW or NHWC float32. Named presets cover the shared models:

    >>> x = load_folder("imagenet-calib256", "torchvision", limit=8)   # [8, 3, 224, 224]
    >>> x = load_folder("calib", "efficientnet-lite@240")              # [N, 3, 240, 240]

A preset's sizes (resize 256, crop 224) are for a 224 px model. Given a model, a preset
named alone takes the model's input size (``resolve_preprocess(name, size)``, which the
calibration calls with a static square input's side): the crop becomes the size and the
resize keeps the preset's ratio, ``round(size * 256 / 224)``. ``name@SIZE`` asks for a size
explicitly; a ``Preprocess`` (``PRESETS[name].sized(240)``, or any resize and crop of one's
own) is used as given.

Folders are read in file-name order; ``labels.txt`` (``file label`` per line) gives the
labels of a labelled folder. An ``ImageSet`` is a chosen part of a folder's images (with
their labels, if any), accepted wherever a folder is; ``split_images`` cuts a folder in
two, spreading the part it takes over the whole folder (folders are often sorted by class):

    >>> calibration, held_out = split_images("imagenet-calib256", 128)
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from irc.errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class Preprocess:
    """How an image file becomes one model input: ``(x * scale - mean) / std``.

    ``resize``: the shorter side's length after a bilinear resize (None: keep the size);
    ``crop``: the side of the centre square crop (None: no crop); ``x`` is the 0..255
    pixel; ``layout`` is ``"NCHW"`` or ``"NHWC"``; ``color`` is ``"RGB"`` or ``"BGR"``.
    """

    resize: int | None = 256
    crop: int | None = 224
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    scale: float = 1.0
    layout: str = "NCHW"
    color: str = "RGB"

    def __post_init__(self):
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if len(self.mean) != 3 or len(self.std) != 3:
            raise InputError("preprocess: mean and std need one value per channel (3)")
        if any(s == 0 for s in self.std):
            raise InputError(f"preprocess: std {self.std} holds a zero")
        if self.layout not in ("NCHW", "NHWC"):
            raise InputError(f"preprocess: layout must be 'NCHW' or 'NHWC', got {self.layout!r}")
        if self.color not in ("RGB", "BGR"):
            raise InputError(f"preprocess: color must be 'RGB' or 'BGR', got {self.color!r}")
        for name in ("resize", "crop"):
            size = getattr(self, name)
            if size is not None and (not isinstance(size, int) or size <= 0):
                raise InputError(f"preprocess: {name} must be a positive int or None, got {size}")
        if self.resize is not None and self.crop is not None and self.crop > self.resize:
            raise InputError(
                f"preprocess: crop {self.crop} is larger than resize {self.resize} (the shorter "
                "side after resizing): no image can give that crop"
            )

    def sized(self, size: int) -> Preprocess:
        """This preprocessing for a model of input side ``size``: crop ``size``, resize in
        the same ratio to the crop as here (``round(size * resize / crop)``; no crop: resize
        ``size``); InputError naming the size unless it is a positive int."""
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise InputError(f"preprocess: image size must be a positive int, got {size!r}")
        if self.crop is None:
            return replace(self, resize=None if self.resize is None else size)
        resize = None if self.resize is None else max(size, round(size * self.resize / self.crop))
        return replace(self, resize=resize, crop=size)

    def apply(self, image) -> np.ndarray:
        """One PIL image as a float32 array [3, H, W] (NCHW) or [H, W, 3] (NHWC)."""
        from PIL import Image

        image = image.convert("RGB")
        if self.resize is not None:
            w, h = image.size
            # torchvision's rule: the shorter side becomes `resize`, the other truncates
            if w <= h:
                size = (self.resize, int(self.resize * h / w))
            else:
                size = (int(self.resize * w / h), self.resize)
            if size != image.size:
                image = image.resize(size, Image.Resampling.BILINEAR)
        if self.crop is not None:
            w, h = image.size
            if w < self.crop or h < self.crop:
                raise InputError(
                    f"preprocess: image of size {w}x{h} is smaller than the crop {self.crop}"
                )
            left = int(round((w - self.crop) / 2.0))
            top = int(round((h - self.crop) / 2.0))
            image = image.crop((left, top, left + self.crop, top + self.crop))
        x = np.asarray(image, dtype=np.float32)  # [H, W, 3], 0..255
        if self.color == "BGR":
            x = x[:, :, ::-1]
        mean = np.asarray(self.mean, np.float32)
        std = np.asarray(self.std, np.float32)
        x = (x * np.float32(self.scale) - mean) / std
        if self.layout == "NCHW":
            x = x.transpose(2, 0, 1)
        return np.ascontiguousarray(x, dtype=np.float32)


_TORCHVISION = Preprocess(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), scale=1.0 / 255.0)
PRESETS: dict[str, Preprocess] = {
    "imagenet": _TORCHVISION,
    "torchvision": _TORCHVISION,
    "efficientnet-lite": Preprocess(mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0)),
}


def resolve_preprocess(preprocess, size: int | None = None) -> Preprocess:
    """A ``Preprocess`` from itself, a preset name or ``name@SIZE`` (the preset ``sized``
    to SIZE); a preset named alone is ``sized`` to ``size`` (a model's input side) when
    given. InputError naming the argument."""
    if isinstance(preprocess, Preprocess):
        return preprocess
    if isinstance(preprocess, str):
        name, at, given = preprocess.partition("@")
        if name not in PRESETS:
            raise InputError(
                f"preprocess: unknown preset {name!r}; presets: {', '.join(PRESETS)} "
                "(name@SIZE for another input size)"
            )
        if at:
            size = _size_text(given, preprocess)
        return PRESETS[name] if size is None else PRESETS[name].sized(size)
    if preprocess is None:
        raise InputError(
            "preprocess: a folder of images needs a preprocessing spec: a Preprocess or "
            f"one of the presets {', '.join(PRESETS)}"
        )
    raise InputError(
        f"preprocess must be a Preprocess or a preset name, got {type(preprocess).__name__}"
    )


def _size_text(text: str, spec: str) -> int:
    """The SIZE of ``name@SIZE``; InputError naming the spec unless a positive int."""
    try:
        size = int(text)
    except ValueError:
        size = 0
    if size <= 0:
        raise InputError(f"preprocess: {spec!r}: the size after '@' must be a positive int")
    return size


def preprocess_spec(preset: str | None, *, image_size: int | None = None,
                    resize: int | None = None, crop: int | None = None):  # fmt: skip
    """What ``preprocess=`` takes for ``preset`` with sizes given on the command line:
    the name itself when none is (the model's size applies), else a ``Preprocess``:
    ``sized`` to ``image_size`` (or to ``crop`` given alone), then ``resize`` and ``crop``
    as given. InputError when sizes come without a preset."""
    sizes = {"image size": image_size, "resize": resize, "crop": crop}
    if all(v is None for v in sizes.values()):
        return preset
    if preset is None:
        given = ", ".join(k for k, v in sizes.items() if v is not None)
        raise InputError(f"preprocess: {given} given without a preset to apply them to")
    base = resolve_preprocess(preset)
    side = image_size if image_size is not None else crop if resize is None else None
    if side is not None:
        base = base.sized(side)
    return replace(
        base,
        resize=base.resize if resize is None else resize,
        crop=base.crop if crop is None else crop,
    )


@dataclass(frozen=True)
class ImageSet:
    """Some images of ``folder``, by file name, in order, with their labels when the folder
    is labelled (``labels`` is None otherwise)."""

    folder: Path
    names: tuple[str, ...]
    labels: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.names)

    def files(self, limit: int | None = None) -> list[Path]:
        """The image paths, at most the first ``limit``."""
        return [self.folder / name for name in self.names[:limit]]

    def pairs(self, limit: int | None = None) -> list[tuple[str, int]]:
        """(file name, label) of the first ``limit`` images; InputError when unlabelled."""
        if self.labels is None:
            raise InputError(f"data: the images of {str(self.folder)!r} have no labels.txt")
        return list(zip(self.names, self.labels))[:limit]

    def __str__(self) -> str:
        return f"{len(self)} images of {os.fspath(self.folder)}"


def image_set(folder) -> ImageSet:
    """Every image of ``folder``: those ``labels.txt`` lists when it exists (with their
    labels), else every image file, by name."""
    if isinstance(folder, ImageSet):
        return folder
    path = Path(folder)
    if (path / "labels.txt").is_file():
        pairs = read_labels(path)
        _check_listed(path, pairs)
        return ImageSet(path, tuple(n for n, _ in pairs), tuple(y for _, y in pairs))
    return ImageSet(path, tuple(p.name for p in list_images(path)))


def split_images(folder, count: int) -> tuple[ImageSet, ImageSet]:
    """(the rest, ``count`` images) of ``folder`` (a path or an ``ImageSet``): the ``count``
    taken evenly spaced over the folder's order; InputError unless 0 < count < its size."""
    whole = image_set(folder)
    if isinstance(count, bool) or not isinstance(count, int) or not 0 < count < len(whole):
        raise InputError(
            f"holdout: cannot hold out {count!r} of the {len(whole)} images of "
            f"{os.fspath(whole.folder)!r}; give 1 to {len(whole) - 1}"
        )
    taken = set(np.linspace(0, len(whole) - 1, count).round().astype(int).tolist())
    parts = ([], [])
    for i in range(len(whole)):
        parts[i in taken].append(i)

    def subset(indices) -> ImageSet:
        labels = None if whole.labels is None else tuple(whole.labels[i] for i in indices)
        return ImageSet(whole.folder, tuple(whole.names[i] for i in indices), labels)

    return subset(parts[0]), subset(parts[1])


def is_image_source(data) -> bool:
    """Whether ``data`` names images: a folder path or an ``ImageSet``."""
    return isinstance(data, (str, os.PathLike, ImageSet))


def image_files(data, limit: int | None = None) -> list[Path]:
    """The image paths of a folder (``list_images``) or an ``ImageSet``, at most ``limit``."""
    if isinstance(data, ImageSet):
        return data.files(limit)
    return list_images(data, limit)


def list_images(folder, limit: int | None = None) -> list[Path]:
    """The image files (jpg/jpeg/png, any case) in ``folder`` by name, at most ``limit``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"data: image folder {str(folder)!r} does not exist")
    files = sorted(
        p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )
    if not files:
        raise InputError(
            f"data: folder {str(folder)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})"
        )
    return files[:limit] if limit is not None else files


def load_image(path, preprocess) -> np.ndarray:
    """One image file preprocessed (see ``Preprocess.apply``).

    InputError naming the file when Pillow cannot read it (whatever it raises), or when it
    has more pixels than Pillow's ``Image.MAX_IMAGE_PIXELS`` (a decompression bomb: a small
    file declaring a huge image; Pillow itself only warns up to twice that).
    """
    from PIL import Image

    preprocess = resolve_preprocess(preprocess)
    where = os.fspath(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below
            image = Image.open(path)
        with image:
            _check_pixels(image, where)
            return preprocess.apply(image)
    except InputError:
        raise
    except Image.DecompressionBombError as e:
        raise InputError(f"data: image {where!r} is too large to decode: {e}") from None
    except OSError as e:  # Pillow's own: not an image, truncated
        raise InputError(f"data: cannot read image {where!r}: {e}") from None
    except Exception as e:  # noqa: BLE001 - any other failure of Pillow on a file's bytes
        raise InputError(
            f"data: cannot read image {where!r}, it is corrupt ({type(e).__name__}: {e})"
        ) from None


def _check_pixels(image, where: str) -> None:
    """InputError when ``image`` (opened, not decoded) has more pixels than Pillow allows."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    w, h = image.size
    if limit is not None and w * h > limit:
        raise InputError(
            f"data: image {where!r} has {w * h:,} pixels ({w}x{h}), more than Pillow's limit "
            f"of {limit:,} (PIL.Image.MAX_IMAGE_PIXELS): a decompression bomb? Raise the "
            "limit only for a file you trust"
        )


def iter_image_batches(files, preprocess, batch_size: int = 32) -> Iterator[np.ndarray]:
    """Batches [B, ...] float32 of the image ``files``, in order (the last may be short)."""
    preprocess = resolve_preprocess(preprocess)
    files = list(files)
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        yield _stack([load_image(f, preprocess) for f in chunk], chunk)


def load_folder(folder, preprocess, limit: int | None = None) -> np.ndarray:
    """All images of ``folder`` (by name, at most ``limit``) as one float32 array [N, ...]."""
    files = list_images(folder, limit)
    preprocess = resolve_preprocess(preprocess)
    return _stack([load_image(f, preprocess) for f in files], files)


def _stack(arrays: list[np.ndarray], files) -> np.ndarray:
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        odd = next(f for f, a in zip(files, arrays) if a.shape != arrays[0].shape)
        raise InputError(
            f"data: images differ in size after preprocessing ({sorted(shapes)}, e.g. "
            f"{os.fspath(odd)!r}); give the Preprocess a resize and a crop"
        )
    return np.stack(arrays)


def read_labels(folder, labels_file=None) -> list[tuple[str, int]]:
    """(file name, label) pairs from ``labels_file`` (default ``folder/labels.txt``),
    sorted by file name; file names are relative to ``folder``."""
    path = Path(labels_file) if labels_file is not None else Path(folder) / "labels.txt"
    if not path.is_file():
        raise InputError(f"data: {str(path)!r} does not exist (a labelled folder needs it)")
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise InputError(f"{path}:{number}: expected 'file label', got {line!r}")
        try:
            pairs.append((parts[0], int(parts[1])))
        except ValueError:
            raise InputError(f"{path}:{number}: label {parts[1]!r} is not an integer") from None
    if not pairs:
        raise InputError(f"data: {str(path)!r} lists no images")
    return sorted(pairs)


def load_labelled_folder(
    path, preprocess, limit: int | None = None, batch_size: int = 32, labels_file=None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(batch [B, ...] float32, labels [B] int64) over the images listed in labels.txt
    (or ``labels_file``), or over a labelled ``ImageSet``.

    Images come in file-name order, at most ``limit`` of them; for accuracy evaluation.
    """
    preprocess = resolve_preprocess(preprocess)
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    if isinstance(path, ImageSet):
        folder, pairs = path.folder, path.pairs(limit)
    else:
        folder = Path(path)
        pairs = read_labels(folder, labels_file)[:limit]
    _check_listed(folder, pairs)
    return _labelled_batches(folder, pairs, preprocess, batch_size)


def is_labelled(data) -> bool:
    """Whether ``data`` is a folder with a ``labels.txt`` or a labelled ``ImageSet``."""
    if isinstance(data, ImageSet):
        return data.labels is not None
    return isinstance(data, (str, os.PathLike)) and os.path.isfile(os.path.join(data, "labels.txt"))


def _check_listed(folder: Path, pairs) -> None:
    """InputError when a file ``pairs`` lists is missing from ``folder``."""
    missing = [name for name, _ in pairs if not (folder / name).is_file()]
    if missing:
        raise InputError(
            f"data: labels.txt of {str(folder)!r} lists {len(missing)} missing file(s), "
            f"first {missing[0]!r}"
        )


def _labelled_batches(folder: Path, pairs, preprocess: Preprocess, batch_size: int):
    # a separate generator so that load_labelled_folder checks its arguments eagerly
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        files = [folder / name for name, _ in chunk]
        batch = _stack([load_image(f, preprocess) for f in files], files)
        yield batch, np.array([label for _, label in chunk], np.int64)
