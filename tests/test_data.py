"""Datasets: SyntheticScenes (determinism, protocol, scene rules) and VOCSegmentation on a tiny fake tree."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from voc_tree import build_voc_tree

from imgpix.data import (
    MEAN,
    NUM_CLASSES,
    STD,
    VOC_CLASSES,
    SyntheticScenes,
    VOCSegmentation,
    build_dataset,
    class_families,
    denormalize,
    normalize,
)
from imgpix.data.check import BadFilesError, check_dataset
from imgpix.data.synthetic import family_of, shape_of

IGNORE = 255


def object_classes(mask: torch.Tensor) -> set[int]:
    return set(mask.unique().tolist()) - {0, IGNORE}


# -- package-level API ------------------------------------------------------------


def test_constants():
    assert NUM_CLASSES == 21 and len(VOC_CLASSES) == 21
    assert VOC_CLASSES[0] == "background" and VOC_CLASSES[15] == "person"
    assert len(MEAN) == len(STD) == 3


def test_denormalize_inverts_normalize():
    rgb = torch.rand(2, 3, 5, 7)
    z = normalize(rgb)
    assert torch.allclose(z[0, 0], (rgb[0, 0] - MEAN[0]) / STD[0])
    assert torch.allclose(denormalize(z), rgb, atol=1e-6)
    assert torch.allclose(denormalize(z[1]), rgb[1], atol=1e-6)
    with pytest.raises(ValueError):
        denormalize(torch.zeros(4, 5, 5))


def test_build_dataset_names(tmp_path):
    ds = build_dataset("synthetic", "val", num_images=3, size=32)
    assert isinstance(ds, SyntheticScenes) and len(ds) == 3 and ds.split == "val"
    with pytest.raises(ValueError, match="synthetic.*voc.*folder"):
        build_dataset("cityscapes", "train")
    with pytest.raises(ValueError, match="root"):
        build_dataset("voc", "train")
    tree = build_voc_tree(tmp_path)
    voc = build_dataset("voc", "val", root=tmp_path)
    assert isinstance(voc, VOCSegmentation) and voc.ids == tree["val"]


# -- synthetic ----------------------------------------------------------------------


def test_class_families_partition_objects():
    fams = class_families(21)
    assert len(fams) == 5 and all(len(f) == 4 for f in fams)
    assert sorted(c for f in fams for c in f) == list(range(1, 21))
    for f in fams:
        assert {family_of(c) for c in f} == {fams.index(f)}
        assert len({shape_of(c) for c in f}) == 4  # members differ by shape only
    assert sorted(c for f in class_families(10) for c in f) == list(range(1, 10))


def test_synthetic_defaults_and_len():
    assert len(SyntheticScenes("train")) == 512
    assert len(SyntheticScenes("val")) == 128
    assert len(SyntheticScenes("train", num_images=7)) == 7
    with pytest.raises(IndexError):
        SyntheticScenes("val", num_images=2)[2]


def test_synthetic_protocol_shapes_and_ranges():
    ds = SyntheticScenes("train", num_images=20, size=48)
    for i in range(len(ds)):
        image, mask = ds[i]
        assert image.shape == (3, 48, 48) and image.dtype == torch.float32
        assert mask.shape == (48, 48) and mask.dtype == torch.int64
        rgb = denormalize(image)
        assert rgb.min() >= -1e-5 and rgb.max() <= 1 + 1e-5
        values = set(mask.unique().tolist())
        assert values <= set(range(21)) | {IGNORE}
        assert 0 in values  # background always visible


def test_synthetic_deterministic_across_instances():
    a = SyntheticScenes("train", num_images=10, seed=3)
    b = SyntheticScenes("train", num_images=10, seed=3)
    for i in (0, 5, 9):
        xa, ma = a[i]
        xb, mb = b[i]
        assert torch.equal(xa, xb) and torch.equal(ma, mb)
        assert torch.equal(a[i][0], xa)  # same item twice
    assert torch.equal(a[-1][1], a[9][1])
    # items differ from each other, across seeds and across splits
    assert not torch.equal(a[0][0], a[1][0])
    c = SyntheticScenes("train", num_images=10, seed=4)
    v = SyntheticScenes("val", num_images=10, seed=3)
    assert not torch.equal(a[0][0], c[0][0])
    assert not torch.equal(a[0][0], v[0][0])
    # num_images does not change item content
    assert torch.equal(SyntheticScenes("train", num_images=100, seed=3)[5][1], a[5][1])


def test_synthetic_scene_rules():
    ds = SyntheticScenes("train", num_images=200)
    counts = {1: 0, 2: 0, 3: 0}
    for i in range(len(ds)):
        _, mask = ds[i]
        present = object_classes(mask)
        assert 1 <= len(present) <= 3, (i, present)
        families = [family_of(c) for c in present]
        assert len(families) == len(set(families)), (i, present)  # <= one class per family
        counts[len(present)] += 1
        # each object is large: >= 40 px even after occlusion at 64x64
        for c in present:
            assert (mask == c).sum() >= 40, (i, c)
    assert all(n > 20 for n in counts.values()), counts
    # all 20 object classes occur
    seen = set().union(*(object_classes(ds[i][1]) for i in range(200)))
    assert seen == set(range(1, 21))


def test_synthetic_ignore_border():
    with_border = SyntheticScenes("val", num_images=5)
    without = SyntheticScenes("val", num_images=5, ignore_border=0)
    for i in range(5):
        xb, mb = with_border[i]
        x0, m0 = without[i]
        assert torch.equal(xb, x0)  # same image, only the mask's border differs
        assert IGNORE not in m0.unique().tolist()
        ignored = mb == IGNORE
        assert ignored.any()
        assert torch.equal(mb[~ignored], m0[~ignored])
        assert (m0[ignored] > 0).all()  # border sits on the object side


def test_synthetic_family_members_share_appearance():
    """Object-pixel colour statistics depend on the family, not on the member (shape)."""
    ds = SyntheticScenes("train", num_images=300, ignore_border=0)
    sums = {}
    for i in range(len(ds)):
        rgb, mask = ds.render(i)
        for c in np.unique(mask):
            if c == 0:
                continue
            sel = rgb[:, mask == c]
            s = sums.setdefault(int(c), [np.zeros(3), 0])
            s[0] += sel.mean(1)
            s[1] += 1
    means = {c: s[0] / s[1] for c, s in sums.items()}
    for fam in class_families():
        fam_means = np.stack([means[c] for c in fam])
        within = np.abs(fam_means - fam_means.mean(0)).max()
        assert within < 0.06, (fam, fam_means)
    fam_centres = np.stack([np.mean([means[c] for c in fam], 0) for fam in class_families()])
    between = min(
        np.abs(fam_centres[a] - fam_centres[b]).max() for a in range(5) for b in range(a + 1, 5)
    )
    assert between > 0.15


def test_synthetic_pickle_and_workers():
    ds = SyntheticScenes("train", num_images=8, size=32, seed=1)
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[3][0], ds[3][0]) and torch.equal(clone[3][1], ds[3][1])
    serial = list(DataLoader(ds, batch_size=4, num_workers=0))
    parallel = list(DataLoader(ds, batch_size=4, num_workers=2))
    assert len(serial) == len(parallel) == 2
    for (xs, ms), (xp, mp) in zip(serial, parallel):
        assert xs.shape == (4, 3, 32, 32)
        assert torch.equal(xs, xp) and torch.equal(ms, mp)


# -- VOC ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return build_voc_tree(tmp_path_factory.mktemp("voc"))


def test_voc_tree_writes_palette_pngs(tree):
    some = tree["train"][0]
    path = tree["root"] / "VOCdevkit/VOC2012/SegmentationClass" / f"{some}.png"
    with Image.open(path) as img:
        assert img.mode == "P"
        assert IGNORE in np.array(img)


@pytest.mark.parametrize("split", ["train", "val"])
def test_voc_split_ids_and_items(tree, split):
    ds = VOCSegmentation(tree["root"], split=split)
    assert ds.ids == tree[split] and len(ds) == len(tree[split])
    h, w = tree["size"]
    for i, name in enumerate(ds.ids):
        image, mask = ds[i]
        assert image.shape == (3, h, w) and image.dtype == torch.float32
        assert mask.shape == (h, w) and mask.dtype == torch.int64
        assert set(mask.unique().tolist()) <= set(range(21)) | {IGNORE}
        # palette indices, not RGB colours: exactly the ids that were written
        assert torch.equal(mask, torch.from_numpy(tree["masks"][name].astype(np.int64)))
        rgb = denormalize(image)
        assert rgb.min() >= -1e-5 and rgb.max() <= 1 + 1e-5


def test_voc_reads_palette_index_not_colour(tmp_path):
    tree = build_voc_tree(tmp_path, n_train=1, n_val=1, n_sbd=0)
    name = tree["train"][0]
    path = tmp_path / "VOCdevkit/VOC2012/SegmentationClass" / f"{name}.png"
    mask = np.zeros(tree["size"], dtype=np.uint8)
    mask[5:15, 5:15] = 15  # person: palette colour (192, 128, 128)
    mask[5:15, 20:30] = IGNORE  # palette colour (224, 224, 192)
    img = Image.frombytes("P", mask.shape[::-1], mask.tobytes())
    from voc_tree import voc_palette

    img.putpalette(voc_palette())
    img.save(path)
    _, got = VOCSegmentation(tmp_path, "train")[0]
    assert got[10, 10] == 15 and got[10, 25] == IGNORE and got[0, 0] == 0


def test_voc_trainaug(tree):
    ds = VOCSegmentation(tree["root"], split="trainaug")
    expected = sorted((set(tree["sbd_train"]) | set(tree["sbd_val"]) | set(tree["train"])) - set(tree["val"]))
    assert ds.ids == expected == tree["trainaug"]
    assert not set(ds.ids) & set(tree["val"])
    assert set(tree["train"]) <= set(ds.ids)
    for i, name in enumerate(ds.ids):
        _, mask = ds[i]
        assert set(mask.unique().tolist()) <= set(range(21)) | {IGNORE}
        if name in tree["train"]:  # VOC PNG wins over SBD .mat for VOC train ids
            truth = tree["masks"][name]
        else:
            truth = tree["sbd_masks"][name]
            assert ds.labels[i].suffix == ".mat"
        assert torch.equal(mask, torch.from_numpy(truth.astype(np.int64)))
    overlap = tree["train"][0]
    assert overlap in tree["sbd_train"]
    assert not np.array_equal(tree["masks"][overlap], tree["sbd_masks"][overlap])


def test_voc_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="JPEGImages"):
        VOCSegmentation(tmp_path / "nowhere", "train")


def test_voc_malformed_root(tmp_path):
    tree = build_voc_tree(tmp_path)
    (tmp_path / "SBD" / "val.txt").unlink()
    VOCSegmentation(tmp_path, "train")  # VOC splits don't need SBD
    with pytest.raises(FileNotFoundError, match="SBD"):
        VOCSegmentation(tmp_path, "trainaug")
    missing = tree["val"][1]
    (tmp_path / "VOCdevkit/VOC2012/JPEGImages" / f"{missing}.jpg").unlink()
    ds = VOCSegmentation(tmp_path, "val")  # listed files are checked by check_dataset, or when read
    with pytest.raises(BadFilesError, match=f"{missing}.jpg: file not found"):
        check_dataset(ds, workers=1)
    with pytest.raises(ValueError, match=f"{missing}.jpg: file not found"):
        ds[1]


def test_voc_unknown_split(tree):
    with pytest.raises(ValueError, match="trainaug"):
        VOCSegmentation(tree["root"], "test")


def test_voc_rejects_rgb_label(tmp_path):
    tree = build_voc_tree(tmp_path, n_train=2, n_val=1, n_sbd=0)
    name = tree["train"][1]
    path = tmp_path / "VOCdevkit/VOC2012/SegmentationClass" / f"{name}.png"
    with Image.open(path) as img:
        rgb = img.convert("RGB")
    rgb.save(path)
    ds = VOCSegmentation(tmp_path, "train")
    ds[0]  # the untouched one still loads
    with pytest.raises(ValueError, match="mode"):
        ds[1]


def test_voc_accepts_l_mode_label(tmp_path):
    tree = build_voc_tree(tmp_path, n_train=1, n_val=1, n_sbd=0)
    name = tree["train"][0]
    Image.fromarray(tree["masks"][name]).save(tmp_path / "VOCdevkit/VOC2012/SegmentationClass" / f"{name}.png")
    _, mask = VOCSegmentation(tmp_path, "train")[0]
    assert torch.equal(mask, torch.from_numpy(tree["masks"][name].astype(np.int64)))


def test_voc_centre_crop_pads_with_ignore(tree):
    h, w = tree["size"]  # 40 x 52
    full = VOCSegmentation(tree["root"], "train")
    ds = VOCSegmentation(tree["root"], "train", crop_size=48)
    image, mask = ds[0]
    ref_image, ref_mask = full[0]
    assert image.shape == (3, 48, 48) and mask.shape == (48, 48)
    left = (w - 48) // 2
    assert torch.equal(mask[:h], ref_mask[:, left : left + 48])  # centre crop in width
    assert torch.equal(image[:, :h], ref_image[:, :, left : left + 48])
    assert (mask[h:] == IGNORE).all()  # padded rows are ignore
    assert (image[:, h:] == 0).all()  # padded with the mean colour (0 after normalisation)
    # deterministic without augmentation
    assert torch.equal(ds[0][1], mask)


def test_voc_random_crop_and_flip(tree):
    ds = VOCSegmentation(tree["root"], "train", crop_size=32, augment=True, seed=0)
    full = VOCSegmentation(tree["root"], "train")
    _, ref = full[0]
    again = VOCSegmentation(tree["root"], "train", crop_size=32, augment=True, seed=0)
    outs = []
    for epoch in range(12):
        ds.set_epoch(epoch)
        again.set_epoch(epoch)
        image, mask = ds[0]
        assert image.shape == (3, 32, 32) and mask.shape == (32, 32)
        assert torch.equal(mask, again[0][1])  # deterministic given (seed, epoch, index)
        # every crop is a window of the (possibly flipped) full mask
        found = False
        for cand in (ref, ref.flip(-1)):
            for top in range(ref.shape[0] - 32 + 1):
                for left in range(ref.shape[1] - 32 + 1):
                    if torch.equal(cand[top : top + 32, left : left + 32], mask):
                        found = True
                        break
        assert found
        outs.append(mask)
    assert any(not torch.equal(outs[0], o) for o in outs[1:])  # epochs draw different crops


def test_voc_augment_batches_with_loader(tree):
    ds = VOCSegmentation(tree["root"], "trainaug", crop_size=64, augment=True, scale_range=(0.5, 1.5), seed=1)
    images, masks = next(iter(DataLoader(ds, batch_size=len(ds))))
    assert images.shape == (len(ds), 3, 64, 64) and masks.shape == (len(ds), 64, 64)
    assert (masks == IGNORE).any()  # padding (40x52 < 64) is ignore
    assert set(masks.unique().tolist()) <= set(range(21)) | {IGNORE}
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[0][1], ds[0][1])
