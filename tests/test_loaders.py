"""imgpix.data.loaders and the real-data options: resize, seeded subsets, the evaluated split, batch checks."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from runs import SIZE, cfg_for, quiet
from voc_tree import build_folder_tree, write_garbage

import imgpix.data.loaders as loaders
import imgpix.train as T
from imgpix.config import TrainConfig
from imgpix.data import NUM_CLASSES, BadFilesError
from imgpix.data.folder import SegmentationFolder, resize_longer_side
from imgpix.data.loaders import build_loader, build_split, make_loader
from imgpix.data.synthetic import PRESETS, class_names
from imgpix.evaluate import evaluate_checkpoint, resolution
from imgpix.train import train

IGNORE = 255


@pytest.fixture
def tree(tmp_path):
    tree = build_folder_tree(tmp_path / "data", n_train=6, n_val=4, size=(30, 48))
    (tree["root"] / "ImageSets/Segmentation/test.txt").write_text("".join(f"{i}\n" for i in tree["val"][:3]))
    return tree


def folder_cfg(tree, **kwargs) -> TrainConfig:
    return TrainConfig(**{"data": "folder", "root": str(tree["root"]), "crop_size": 16, "batch_size": 2,
                          "progress": False, **kwargs})


def test_resize_scales_the_longer_side_and_keeps_label_ids():
    image = torch.rand(3, 30, 48)
    mask = torch.from_numpy(np.random.default_rng(0).choice([0, 3, IGNORE], size=(30, 48)).astype(np.int64))
    small_image, small_mask = resize_longer_side(image, mask, 16)
    assert small_image.shape == (3, 10, 16) and small_mask.shape == (10, 16)
    assert set(small_mask.unique().tolist()) <= {0, 3, IGNORE}  # nearest neighbour: no blended ids
    assert resize_longer_side(image, mask, 48)[1] is mask  # already that size: untouched


def test_resize_reaches_every_item_of_a_folder_dataset(tree):
    plain = SegmentationFolder(tree["root"], "val")
    scaled = SegmentationFolder(tree["root"], "val", resize=24)
    image, mask = scaled[0]
    assert tuple(plain[0][1].shape) == (30, 48) and tuple(mask.shape) == (15, 24) and image.shape[1:] == (15, 24)
    with pytest.raises(ValueError, match="resize must be an int >= 8"):
        SegmentationFolder(tree["root"], "val", resize=4)


def test_num_train_and_num_val_take_the_same_seeded_subset(tree):
    cfg = folder_cfg(tree, num_train=4, num_val=2)
    train_ids = build_split(cfg, "train").ids
    assert len(train_ids) == 4 and set(train_ids) <= set(tree["train"])
    assert build_split(cfg, "train").ids == train_ids  # the same draw every time
    assert build_split(folder_cfg(tree, num_train=4, num_val=2, seed=5), "train").ids == train_ids  # for any seed
    assert len(build_split(cfg, "val").ids) == 2
    with pytest.raises(ValueError, match="the train split of .* has 6 images: cannot take 7"):
        build_split(folder_cfg(tree, num_train=7), "train")


def test_eval_split_is_the_one_scored(tree, tmp_path):
    cfg = folder_cfg(tree, eval_split="test", epochs=1, labeler=None, generator=False, resize=24)
    assert build_loader(cfg, "test").dataset.ids == tree["val"][:3]
    train(cfg, tmp_path / "run", log=lambda text: None)
    evaluation = evaluate_checkpoint(tmp_path / "run" / "checkpoint.pt", ["none"])
    assert evaluation.table["images"].tolist() == [3]
    assert "3 folder test images" in evaluation.where and "longer side of 24 px" in evaluation.where
    assert resolution(cfg) == "scaled to a longer side of 24 px"
    val = evaluate_checkpoint(tmp_path / "run" / "checkpoint.pt", ["none"], eval_split="val")
    assert val.table["images"].tolist() == [4]


def test_a_batch_larger_than_the_training_set_is_refused(tree):
    cfg = folder_cfg(tree, batch_size=8)
    with pytest.raises(ValueError, match="--batch-size 8 is larger than the 6 training images"):
        make_loader(cfg, build_split(cfg, "train"), shuffle=True)
    assert len(make_loader(cfg, build_split(cfg, "val"), shuffle=False)) == 4  # evaluation: any batch


# --- synthetic scenes per epoch, seeded order, files checked first ---------------------------------


def first_images(loader) -> torch.Tensor:
    return torch.stack([loader.dataset[i][0] for i in range(2)])


def test_fresh_synthetic_images_each_epoch_unless_fixed():
    cfg = cfg_for()
    assert len(loaders.build_split(cfg, "train")) == 8 and len(loaders.build_split(cfg, "val")) == 6
    one, two = (first_images(loaders.build_loader(cfg, "train", shuffle=True, epoch=e)) for e in (1, 2))
    assert not torch.equal(one, two)
    assert torch.equal(one, first_images(loaders.build_loader(cfg, "train", shuffle=True, epoch=1)))
    fixed = replace(cfg, fixed_train=True)
    assert torch.equal(*(first_images(loaders.build_loader(fixed, "train", shuffle=True, epoch=e)) for e in (1, 2)))
    val = [first_images(loaders.build_loader(cfg, "val", epoch=e)) for e in (1, 2)]
    assert torch.equal(*val) and not torch.equal(val[0], one)


def test_scene_settings_reach_both_splits():
    cfg = cfg_for(scene_preset="voc", ambiguity=0.5, family_size=2, co_occurrence=True, seed=4)
    for split in ("train", "val"):
        data = loaders.build_split(cfg, split)
        assert (data.preset, data.ambiguity, data.family_size, data.co_occurrence, data.size) == (
            PRESETS["voc"], 0.5, 2, True, SIZE)
    # val: one fixed set
    assert loaders.build_split(cfg, "train").seed == 4 and loaders.build_split(cfg, "val").seed == 0
    assert cfg.info.class_names == tuple(class_names(NUM_CLASSES, 2)) != cfg_for().info.class_names


def test_loader_order_is_seeded_by_the_epoch():
    cfg = replace(cfg_for(), num_train=12, fixed_train=True)

    def order(epoch):
        return torch.cat([mask for _, mask in loaders.build_loader(cfg, "train", shuffle=True, epoch=epoch)])

    assert torch.equal(order(1), order(1)) and not torch.equal(order(1), order(2))
    shuffled = loaders.build_loader(cfg, "train", shuffle=True)
    assert [len(mask) for _, mask in shuffled] == [4, 4, 4] and shuffled.drop_last
    assert [len(mask) for _, mask in loaders.build_loader(cfg, "val")] == [4, 2]


def test_bad_files_stop_training_before_out_is_touched(tmp_path):
    tree = build_folder_tree(tmp_path / "data")
    write_garbage(tree["root"] / "JPEGImages" / f"{tree['val'][0]}.jpg")
    cfg = TrainConfig(data="folder", root=str(tree["root"]), labeler=None, generator=False, epochs=1, progress=False)
    assert cfg.info.num_classes == len(tree["names"]) and cfg.protected == (0,)
    assert replace(cfg, background="none").protected == () and replace(cfg, background="dog").protected == (2,)
    out = tmp_path / "run"
    with pytest.raises(BadFilesError, match=tree["val"][0]):
        T.train(cfg, out, log=quiet)
    assert not out.exists()
    lines = []
    kept = loaders.checked_split(replace(cfg, skip_bad_files=True), "val", log=lines.append)
    assert len(kept) == len(tree["val"]) - 1 and len(lines) == 1 and tree["val"][0] in lines[0]


