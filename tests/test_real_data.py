"""Real-data paths: VOC without SBD, generic folder datasets with their own classes, the pre-training file check."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image
from torch.utils.data import DataLoader
from voc_tree import (
    build_folder_tree,
    build_voc_tree,
    truncate,
    write_garbage,
    write_png_mask,
)

from imgpix.data import VOC_CLASSES, SyntheticScenes
from imgpix.data.build import DatasetInfo, build_dataset, dataset_info, default_train_split
from imgpix.data.check import BadFilesError, check_dataset, find_bad_files
from imgpix.data.classes import read_class_list, resolve_background
from imgpix.data.folder import FileError, SegmentationFolder, ids_from_colours
from imgpix.data.synthetic import class_names
from imgpix.data.voc import VOCSegmentation

IGNORE = 255
FIVE = ("background", "cat", "dog", "car", "tree")


def as_tensor(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(mask.astype(np.int64))


def voc_only_tree(path, **kwargs) -> dict:
    """A VOC 2012 tree without SBD/ (what many users have)."""
    import shutil

    tree = build_voc_tree(path, **kwargs)
    shutil.rmtree(path / "SBD")
    return tree


# -- VOC: the training split follows what is on disk ------------------------------------------


def test_voc_without_sbd_trains_on_train(tmp_path):
    tree = voc_only_tree(tmp_path)
    split = default_train_split("voc", tmp_path)
    assert split == "train"
    ds = build_dataset("voc", split, root=tmp_path)
    assert ds.ids == tree["train"]
    with pytest.raises(FileNotFoundError, match="SBD"):
        build_dataset("voc", "trainaug", root=tmp_path)


def test_voc_with_sbd_trains_on_trainaug_unless_told(tmp_path):
    tree = build_voc_tree(tmp_path)
    assert default_train_split("voc", tmp_path) == "trainaug"
    assert build_dataset("voc", "train", root=tmp_path).ids == tree["train"]  # an explicit split wins
    assert default_train_split("synthetic") == default_train_split("folder", tmp_path) == "train"
    with pytest.raises(ValueError, match="root"):
        default_train_split("voc")


def test_voc_classes_and_background(tmp_path):
    build_voc_tree(tmp_path, n_sbd=0)
    ds = VOCSegmentation(tmp_path, "val")
    assert (ds.num_classes, ds.class_names, ds.background) == (21, VOC_CLASSES, 0)
    assert dataset_info("voc") == DatasetInfo(21, VOC_CLASSES, 0)
    assert dataset_info("voc", background="none").background is None
    assert VOCSegmentation(tmp_path, "val", background="person").background == 15
    kwargs = {"crop_size": 32, "augment": True}  # the kwargs of build_dataset; those that set no class are ignored
    assert dataset_info("voc", tmp_path, **kwargs) == DatasetInfo(21, VOC_CLASSES, 0)


def test_synthetic_info_matches_dataset():
    for kwargs in ({}, {"num_classes": 9, "family_size": 2, "size": 32}):
        ds = build_dataset("synthetic", "val", num_images=1, **kwargs)
        info = dataset_info("synthetic", **kwargs)
        assert info == (ds.num_classes, tuple(class_names(ds.num_classes, ds.family_size)), 0)
        assert set(ds[0][1].unique().tolist()) <= set(range(info.num_classes)) | {IGNORE}


# -- folder datasets ---------------------------------------------------------------------


@pytest.mark.parametrize("label_mode, class_file", [("P", "class_names.txt"), ("L", "class_names.txt"),
                                                    ("RGB", "labelmap.txt"), ("P", "labelmap.txt")])
def test_folder_reads_ids_of_every_label_format(tmp_path, label_mode, class_file):
    tree = build_folder_tree(tmp_path, FIVE, label_mode=label_mode, class_file=class_file)
    ds = build_dataset("folder", "val", root=tmp_path)
    assert isinstance(ds, SegmentationFolder) and ds.ids == tree["val"]
    assert (ds.num_classes, ds.class_names, ds.background) == (5, FIVE, 0)
    h, w = tree["size"]
    for i, name in enumerate(ds.ids):
        image, mask = ds[i]
        assert image.shape == (3, h, w) and mask.dtype == torch.int64
        assert torch.equal(mask, as_tensor(tree["masks"][name]))
    assert check_dataset(ds, workers=1) == (ds, None)


def test_folder_info_matches_dataset_without_reading_images(tmp_path):
    build_folder_tree(tmp_path, FIVE, class_file="labelmap.txt")
    info = dataset_info("folder", tmp_path)
    assert info == DatasetInfo(5, FIVE, 0)
    ds = build_dataset("folder", "train", root=tmp_path)
    assert info == (ds.num_classes, ds.class_names, ds.background)
    with pytest.raises(ValueError, match="root"):
        dataset_info("folder")


def test_folder_without_background_class(tmp_path):
    names = ("sky", "road", "car", "tree", "person", "sign")
    tree = build_folder_tree(tmp_path, names, label_mode="L")
    ds = SegmentationFolder(tmp_path, "train")
    assert ds.num_classes == 6 and ds.background is None
    assert SegmentationFolder(tmp_path, "train", background="road").background == 1
    assert SegmentationFolder(tmp_path, "train", background=3).background == 3
    assert torch.equal(ds[0][1], as_tensor(tree["masks"][ds.ids[0]]))
    with pytest.raises(ValueError, match="background.*sky, road"):
        SegmentationFolder(tmp_path, "train", background="grass")


def test_resolve_background():
    assert resolve_background(("_Background_", "a")) == 0
    assert resolve_background(("a", "background")) == 1
    assert resolve_background(("a", "b")) is None
    assert resolve_background(("a", "b"), "none") is None and resolve_background(FIVE, None) is None
    assert resolve_background(FIVE, "dog") == 2 and resolve_background(FIVE, "4") == 4
    for bad in (5, -1, "5", "cow"):
        with pytest.raises(ValueError, match="background"):
            resolve_background(FIVE, bad)


def test_folder_crops_and_batches(tmp_path):
    build_folder_tree(tmp_path, FIVE, n_train=4, image_ext=".png")
    ds = SegmentationFolder(tmp_path, "train", crop_size=48, augment=True, seed=0)
    assert all(p.suffix == ".png" for p in ds.images)
    images, masks = next(iter(DataLoader(ds, batch_size=4)))
    assert images.shape == (4, 3, 48, 48) and masks.shape == (4, 48, 48)
    assert (masks == IGNORE).any()  # 36x44 images padded with ignore
    assert set(masks.unique().tolist()) <= set(range(5)) | {IGNORE}


def test_class_lists(tmp_path):
    path = tmp_path / "class_names.txt"
    path.write_text("__ignore__\n_background_\ncat\n\ndog\n")  # labelme's labels.txt form
    assert read_class_list(path) == (("_background_", "cat", "dog"), None)
    labelmap = tmp_path / "labelmap.txt"
    labelmap.write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\ncar:255, 0,7::\n")
    names, colours = read_class_list(labelmap)
    assert names == ("background", "car") and colours.tolist() == [[0, 0, 0], [255, 0, 7]]
    for text, problem in [("cat\n", "2..255 classes"), ("cat\ncat\n", "repeated"),
                          ("a:0,0,0::\nb:0,0::\n", "r,g,b"), ("a:0,0,0::\nb:0,0,300::\n", "r,g,b"),
                          ("a:1,2,3::\nb:1,2,3::\n", "share a colour")]:
        path.write_text(text)
        with pytest.raises(ValueError, match=problem):
            read_class_list(path)


def test_folder_layout_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="labelmap.txt.*class_names.txt"):
        SegmentationFolder(tmp_path, "train")
    build_folder_tree(tmp_path, FIVE)
    with pytest.raises(FileNotFoundError, match="splits found: train, val"):
        SegmentationFolder(tmp_path, "default")
    (tmp_path / "ImageSets/Segmentation/train.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="lists no ids"):
        SegmentationFolder(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="other.txt"):
        SegmentationFolder(tmp_path, "val", classes="other.txt")


def test_colour_masks_need_a_colour_list(tmp_path):
    tree = build_folder_tree(tmp_path, FIVE, label_mode="RGB", class_file="labelmap.txt")
    (tmp_path / "labelmap.txt").rename(tmp_path / "class_names.txt")
    (tmp_path / "class_names.txt").write_text("\n".join(FIVE))
    with pytest.raises(FileError, match=f"{tree['train'][0]}.png: .*mode 'RGB'.*labelmap.txt"):
        SegmentationFolder(tmp_path, "train")[0]


def test_unknown_colour_is_named(tmp_path):
    tree = build_folder_tree(tmp_path, FIVE, label_mode="RGB", class_file="labelmap.txt")
    path = tmp_path / "SegmentationClass" / f"{tree['train'][1]}.png"
    rgb = np.array(Image.open(path))
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb).save(path)
    with pytest.raises(FileError, match=r"colours \[\(1, 2, 3\)\]"):
        SegmentationFolder(tmp_path, "train")[1]


@given(st.data())
def test_ids_from_colours_inverts_painting(data):
    n = data.draw(st.integers(2, 40))
    codes = data.draw(st.lists(st.integers(0, 2**24 - 1), min_size=n, max_size=n, unique=True))
    colours = np.array([[c >> 16, (c >> 8) & 255, c & 255] for c in codes], dtype=np.uint8)
    mask = data.draw(arrays(np.uint8, st.tuples(st.integers(1, 6), st.integers(1, 6)), elements=st.integers(0, n - 1)))
    assert np.array_equal(ids_from_colours(colours[mask], colours, "x.png"), mask)


# -- the pre-training check --------------------------------------------------------------


def break_voc_tree(tmp_path) -> dict:
    """A VOC + SBD tree with one broken file of each kind; returns {path: problem text}."""
    tree = build_voc_tree(tmp_path, n_train=6, n_val=2, n_sbd=6)
    voc = tmp_path / "VOCdevkit/VOC2012"
    train, sbd_only = tree["train"], [i for i in tree["trainaug"] if i not in tree["train"]]
    broken = {
        voc / "JPEGImages" / f"{train[1]}.jpg": "truncated",
        voc / "SegmentationClass" / f"{train[2]}.png": "cannot identify image file",
        voc / "SegmentationClass" / f"{train[3]}.png": "label values [21]",
        voc / "JPEGImages" / f"{train[4]}.jpg": "file not found",
        tmp_path / "SBD/cls" / f"{sbd_only[0]}.mat": "cannot decode SBD .mat",
        tmp_path / "SBD/cls" / f"{sbd_only[1]}.mat": "cannot decode SBD .mat",
    }
    paths = list(broken)
    truncate(paths[0])
    paths[1].write_bytes(b"")
    bad = tree["masks"][train[3]].copy()
    bad[0, 0] = 21
    write_png_mask(paths[2], bad)
    paths[3].unlink()
    write_garbage(paths[4])
    truncate(paths[5])
    return {"tree": tree, "broken": broken}


def test_check_names_every_bad_file(tmp_path):
    broken = break_voc_tree(tmp_path)["broken"]
    ds = VOCSegmentation(tmp_path, "trainaug")
    with pytest.raises(BadFilesError) as caught:
        check_dataset(ds, workers=2)
    message = str(caught.value)
    assert isinstance(caught.value, ValueError)  # the CLI's exit status 2
    assert message.startswith(f"6 bad file(s) in 6 of {len(ds)} items of split 'trainaug'")
    for path, problem in broken.items():
        assert f"{path}: " in message and problem in message.split(f"{path}: ")[1].splitlines()[0]
    bad = caught.value.bad
    assert {b.path for b in bad} == set(map(str, broken))
    assert [b.index for b in bad] == sorted(b.index for b in bad)  # item order
    assert all(ds.ids[b.index] in b.path for b in bad)
    assert find_bad_files(ds, workers=1) == find_bad_files(ds, workers=2) == list(caught.value.bad)


def test_skip_bad_files_drops_their_items(tmp_path):
    broken = break_voc_tree(tmp_path)["broken"]
    ds = VOCSegmentation(tmp_path, "trainaug")
    kept, warning = check_dataset(ds, skip_bad_files=True, workers=1)
    bad_ids = {p.name.split(".")[0] for p in broken}
    assert kept.ids == [i for i in ds.ids if i not in bad_ids] and len(kept) == len(ds) - 6
    assert [p.stem for p in kept.images] == kept.ids == [p.stem for p in kept.labels]
    assert warning.startswith("warning: skipping 6 item(s)") and all(str(p) in warning for p in broken)
    assert check_dataset(kept, workers=1) == (kept, None)
    for i in range(len(kept)):
        kept[i]
    assert len(ds) == len(kept) + 6  # the original is untouched


def test_reading_errors_name_the_file(tmp_path):
    broken = list(break_voc_tree(tmp_path)["broken"])
    ds = VOCSegmentation(tmp_path, "trainaug")
    for path in broken:
        index = ds.ids.index(path.name.split(".")[0])
        with pytest.raises(ValueError, match=str(path)):
            ds[index]


def test_reading_error_keeps_its_type_through_workers(tmp_path):
    tree = build_folder_tree(tmp_path, FIVE, n_train=2)
    truncate(tmp_path / "JPEGImages" / f"{tree['train'][1]}.jpg")
    loader = DataLoader(SegmentationFolder(tmp_path, "train"), batch_size=1, num_workers=1)
    with pytest.raises(FileError, match=f"{tree['train'][1]}.jpg: cannot decode image"):
        list(loader)


def test_check_shows_ten_and_counts(tmp_path):
    tree = build_folder_tree(tmp_path, FIVE, n_train=13, n_val=0, size=(16, 20))
    for name in tree["train"][:12]:
        (tmp_path / "SegmentationClass" / f"{name}.png").unlink()
    ds = SegmentationFolder(tmp_path, "train")
    with pytest.raises(BadFilesError) as caught:
        check_dataset(ds, workers=1)
    lines = str(caught.value).splitlines()
    assert lines[0].startswith("12 bad file(s) in 12 of 13 items")
    assert sum("file not found" in line for line in lines) == 10 and "  ... and 2 more" in lines
    assert "--skip-bad-files" in lines[-1]
    (tmp_path / "SegmentationClass" / f"{tree['train'][12]}.png").unlink()
    with pytest.raises(BadFilesError, match="none is left"):
        check_dataset(ds, skip_bad_files=True, workers=1)


def test_check_catches_size_mismatch_and_wrong_mode(tmp_path):
    tree = build_folder_tree(tmp_path, FIVE, n_train=3)
    small, rgb = (tmp_path / "SegmentationClass" / f"{name}.png" for name in tree["train"][:2])
    write_png_mask(small, np.zeros((5, 5), dtype=np.uint8))
    Image.open(rgb).convert("RGB").save(rgb)
    bad = find_bad_files(SegmentationFolder(tmp_path, "train"), workers=1)
    assert [(b.index, b.path) for b in bad] == [(0, str(small)), (1, str(rgb))]
    assert "label size (5, 5) != image size (36, 44)" in bad[0].problem and "mode 'RGB'" in bad[1].problem


def test_check_passes_datasets_without_files():
    ds = SyntheticScenes("val", num_images=2, size=32)
    assert check_dataset(ds) == (ds, None)
