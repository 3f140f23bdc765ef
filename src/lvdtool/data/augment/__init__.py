"""Tensor-based DINOv2 augmentation (no torchvision): multi-crop geometry, colour, blur,
solarization, normalisation, and the collate function that adds iBOT masks."""

from lvdtool.data.augment.collate import collate_multicrop
from lvdtool.data.augment.color import IMAGENET_MEAN, IMAGENET_STD, normalize
from lvdtool.data.augment.geometry import CropBox, crop_resize, sample_crop_box
from lvdtool.data.augment.multicrop import (
    CropParams,
    MultiCropAugment,
    MultiCropConfig,
    MultiCropParams,
    sample_multicrop_params,
)
from lvdtool.data.augment.photometric import (
    ColorJitterConfig,
    PhotometricBatch,
    PhotometricParams,
    apply_photometric_batch,
    sample_photometric_params,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ColorJitterConfig",
    "CropBox",
    "CropParams",
    "MultiCropAugment",
    "MultiCropConfig",
    "MultiCropParams",
    "PhotometricBatch",
    "PhotometricParams",
    "apply_photometric_batch",
    "collate_multicrop",
    "crop_resize",
    "normalize",
    "sample_crop_box",
    "sample_multicrop_params",
    "sample_photometric_params",
]
