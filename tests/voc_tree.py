"""Build a tiny fake PASCAL VOC 2012 + SBD tree on disk (for tests; no downloads).

    from voc_tree import build_voc_tree   # tests/ is on pytest's pythonpath (pyproject.toml)
    tree = build_voc_tree(tmp_path)
    tree["train"], tree["val"], tree["trainaug"]  # id lists
    tree["masks"][id]       # uint8 [H,W] class ids written to SegmentationClass/<id>.png
    tree["sbd_masks"][id]   # uint8 [H,W] class ids written to SBD/cls/<id>.mat

Layout (as ``imgpix.data.voc`` expects)::

    root/VOCdevkit/VOC2012/{JPEGImages/*.jpg, SegmentationClass/*.png,
                            ImageSets/Segmentation/{train,val,trainval}.txt}
    root/SBD/{img/*.jpg, cls/*.mat, train.txt, val.txt}

``build_folder_tree`` writes the generic layout of ``imgpix.data.folder`` (any class list,
palette / grey / colour label PNGs); ``truncate`` and ``write_garbage`` break files.

Id sets are chosen to exercise the ``trainaug`` rule (SBD train ∪ SBD val ∪
VOC train) minus VOC val: SBD train also lists the first VOC train id (overlap,
whose VOC PNG must win over SBD's .mat) and the first VOC val id (must be
dropped). SBD-only ids have their JPEG only in ``SBD/img``. VOC PNGs are 'P'
mode with the VOC palette and a 1-px 255 border around each object; SBD masks
have no 255 (like the real SBD).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def voc_palette() -> list[int]:
    """The standard 256-entry PASCAL VOC colour map, flattened RGB."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def random_mask(rng: np.random.Generator, size: tuple[int, int], border: bool = True,
                num_classes: int = 21) -> np.ndarray:
    """Class 0 + 1-2 rectangles of random classes 1..num_classes-1, optional 1-px 255 border."""
    h, w = size
    mask = np.zeros((h, w), dtype=np.uint8)
    for _ in range(int(rng.integers(1, 3))):
        cls = int(rng.integers(1, num_classes))
        y0, x0 = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
        y1, x1 = y0 + int(rng.integers(6, h // 2 + 1)), x0 + int(rng.integers(6, w // 2 + 1))
        if border:
            mask[max(y0 - 1, 0) : y1 + 1, max(x0 - 1, 0) : x1 + 1] = 255
        mask[y0:y1, x0:x1] = cls
    return mask


def write_jpeg(path: Path, rng: np.random.Generator, size: tuple[int, int]) -> None:
    h, w = size
    Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(path, quality=90)


def write_png_mask(path: Path, mask: np.ndarray) -> None:
    h, w = mask.shape
    img = Image.frombytes("P", (w, h), np.ascontiguousarray(mask, dtype=np.uint8).tobytes())
    img.putpalette(voc_palette())
    img.save(path)


def write_sbd_mat(path: Path, mask: np.ndarray) -> None:
    from scipy.io import savemat
    from scipy.sparse import csc_matrix

    boundaries = np.empty((20, 1), dtype=object)  # SBD: a cell of 20 sparse boundary maps
    for k in range(20):
        boundaries[k, 0] = csc_matrix(mask.shape, dtype=np.uint8)

    present = np.unique(mask[(mask > 0) & (mask < 255)]).astype(np.uint8).reshape(-1, 1)
    savemat(
        path,
        {
            "GTcls": {
                "Segmentation": mask.astype(np.uint8),
                "Boundaries": boundaries,
                "CategoriesPresent": present,
            }
        },
    )


def build_voc_tree(root, n_train: int = 3, n_val: int = 2, n_sbd: int = 2, size=(40, 52), seed: int = 0) -> dict:
    """Write the tiny tree under ``root``; return ids per split and the masks written."""
    root = Path(root)
    voc = root / "VOCdevkit" / "VOC2012"
    sbd = root / "SBD"
    for d in (voc / "JPEGImages", voc / "SegmentationClass", voc / "ImageSets" / "Segmentation",
              sbd / "img", sbd / "cls"):
        d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    train = [f"2007_{i:06d}" for i in range(n_train)]
    val = [f"2008_{i:06d}" for i in range(n_val)]
    sbd_new = [f"2009_{i:06d}" for i in range(n_sbd)]
    half = (n_sbd + 1) // 2
    sbd_train = sbd_new[:half] + train[:1] + val[:1]
    sbd_val = sbd_new[half:]

    masks = {}
    for i in train + val:
        write_jpeg(voc / "JPEGImages" / f"{i}.jpg", rng, size)
        masks[i] = random_mask(rng, size, border=True)
        write_png_mask(voc / "SegmentationClass" / f"{i}.png", masks[i])
    sbd_masks = {}
    for i in sbd_train + sbd_val:
        write_jpeg(sbd / "img" / f"{i}.jpg", rng, size)
        sbd_masks[i] = random_mask(rng, size, border=False)
        write_sbd_mat(sbd / "cls" / f"{i}.mat", sbd_masks[i])

    sets = voc / "ImageSets" / "Segmentation"
    (sets / "train.txt").write_text("".join(f"{i}\n" for i in train))
    (sets / "val.txt").write_text("".join(f"{i}\n" for i in val))
    (sets / "trainval.txt").write_text("".join(f"{i}\n" for i in train + val))
    (sbd / "train.txt").write_text("".join(f"{i}\n" for i in sbd_train))
    (sbd / "val.txt").write_text("".join(f"{i}\n" for i in sbd_val))

    trainaug = sorted((set(sbd_train) | set(sbd_val) | set(train)) - set(val))
    return {
        "root": root,
        "train": train,
        "val": val,
        "sbd_train": sbd_train,
        "sbd_val": sbd_val,
        "trainaug": trainaug,
        "masks": masks,
        "sbd_masks": sbd_masks,
        "size": tuple(size),
    }


def write_grey_mask(path: Path, mask: np.ndarray) -> None:
    Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8)).save(path)


def class_colours(num_classes: int) -> np.ndarray:
    """``[N,3]`` uint8: the VOC colour map's first N colours (distinct)."""
    return np.array(voc_palette()[: 3 * num_classes], dtype=np.uint8).reshape(num_classes, 3)


def write_colour_mask(path: Path, mask: np.ndarray, colours: np.ndarray) -> None:
    Image.fromarray(colours[mask]).save(path)


def write_class_list(root: Path, names, class_file: str) -> None:
    """``class_names.txt`` (one name a line) or CVAT's ``labelmap.txt`` (``name:r,g,b::``)."""
    if class_file == "labelmap.txt":
        colours = class_colours(len(names))
        lines = ["# label:color_rgb:parts:actions"]
        lines += [f"{n}:{r},{g},{b}::" for n, (r, g, b) in zip(names, colours.tolist())]
    else:
        lines = list(names)
    (root / class_file).write_text("\n".join(lines) + "\n")


def build_folder_tree(root, names=("background", "cat", "dog", "car", "tree"), n_train: int = 3, n_val: int = 2,
                      size=(36, 44), seed: int = 0, label_mode: str = "P", class_file: str = "class_names.txt",
                      image_ext: str = ".jpg") -> dict:
    """Write a generic VOC-layout tree with ``len(names)`` classes; return ids per split and the masks.

    ``label_mode``: ``"P"`` (palette), ``"L"`` (grey) -- both with a 255 border -- or ``"RGB"``
    (colour masks through ``labelmap.txt``, no ignore pixels).
    """
    root = Path(root)
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True, exist_ok=True)
    write_class_list(root, names, class_file)
    rng = np.random.default_rng(seed)
    train = [f"img_{i:03d}" for i in range(n_train)]
    val = [f"img_{i:03d}" for i in range(n_train, n_train + n_val)]
    masks = {}
    for i in train + val:
        write_jpeg(root / "JPEGImages" / f"{i}{image_ext}", rng, size)
        masks[i] = random_mask(rng, size, border=label_mode != "RGB", num_classes=len(names))
        label = root / "SegmentationClass" / f"{i}.png"
        if label_mode == "RGB":
            write_colour_mask(label, masks[i], class_colours(len(names)))
        elif label_mode == "L":
            write_grey_mask(label, masks[i])
        else:
            write_png_mask(label, masks[i])
    sets = root / "ImageSets" / "Segmentation"
    (sets / "train.txt").write_text("".join(f"{i}\n" for i in train))
    (sets / "val.txt").write_text("".join(f"{i}\n" for i in val))
    return {"root": root, "names": tuple(names), "train": train, "val": val, "masks": masks, "size": tuple(size)}


def truncate(path: Path, keep: float = 0.5) -> None:
    """Cut a file to its first ``keep`` fraction (a partly downloaded file)."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep)])


def write_garbage(path: Path) -> None:
    """Replace a file by bytes no decoder accepts."""
    Path(path).write_bytes(b"this is not an image or a MAT file\n" * 8)
