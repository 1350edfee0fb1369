"""Datasets with a common item protocol.

Every dataset maps ``dataset[i] -> (image, mask)``:

* ``image``: float32 tensor ``[3, H, W]``, RGB in [0, 1] normalised with the
  ImageNet ``MEAN`` / ``STD`` (``denormalize`` undoes it);
* ``mask``: int64 tensor ``[H, W]`` with class ids ``0..num_classes-1`` and
  ``IGNORE_INDEX = 255`` for "don't care" pixels.

``build_dataset(name, split, root=None, **kwargs)`` builds one by name:
``"synthetic"`` (:class:`SyntheticScenes`), ``"voc"`` (:class:`VOCSegmentation`)
or ``"folder"`` (:class:`SegmentationFolder`: the VOC layout with its own class list).
``dataset_info`` gives N, the class names and the background class without reading images;
``check_dataset`` checks every file of a split before training.
"""

from .build import DATASETS, DatasetInfo, build_dataset, dataset_info, default_train_split
from .check import BadFile, BadFilesError, check_dataset, find_bad_files
from .common import IGNORE_INDEX, MEAN, NUM_CLASSES, STD, VOC_CLASSES, denormalize, normalize
from .folder import FileError, SegmentationFiles, SegmentationFolder
from .synthetic import SyntheticScenes, class_families
from .voc import VOCSegmentation

__all__ = [
    "BadFile", "BadFilesError", "DATASETS", "DatasetInfo", "FileError", "IGNORE_INDEX", "MEAN", "NUM_CLASSES", "STD",
    "SegmentationFiles", "SegmentationFolder", "SyntheticScenes", "VOCSegmentation", "VOC_CLASSES", "build_dataset",
    "check_dataset", "class_families", "dataset_info", "default_train_split", "denormalize", "find_bad_files",
    "normalize",
]
