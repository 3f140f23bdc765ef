"""Gram anchoring pieces: the loss against a hand computation (with and without the grid resize), the
refresh schedule, the frozen Gram teacher, the Gram crops (the student's geometry, no photometric
distortion) and the unchanged random stream of the other crops."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lvdtool.data.augment import MultiCropAugment, MultiCropConfig
from lvdtool.data.augment.geometry import crop_resize, hflip
from lvdtool.models import build_backbone
from lvdtool.ssl.gram import GramRefresh, GramTeacher, gram_loss, resize_patch_grid
from lvdtool.ssl.meta_arch import HeadConfig, MetaArchConfig, SSLMetaArch


# ---- the loss -----------------------------------------------------------------------------------

def test_gram_loss_equals_a_hand_computation_on_tiny_tensors():
    # one image, 2 patches, D = 2: S and T by hand
    student = torch.tensor([[[3.0, 4.0], [1.0, 0.0]]])  # unit rows (0.6, 0.8), (1, 0): S01 = 0.6
    teacher = torch.tensor([[[0.0, 2.0], [5.0, 0.0]]])  # (0, 1), (1, 0): T01 = 0
    # (S - T) = [[0, 0.6], [0.6, 0]] -> mean of squares over 4 entries = 2 * 0.36 / 4
    loss = gram_loss(student, teacher, (1, 2), (1, 2))
    assert loss.item() == pytest.approx(0.18, abs=1e-7)
    assert loss.dtype == torch.float32
    assert gram_loss(student.bfloat16(), teacher.bfloat16(), (1, 2), (1, 2)).dtype == torch.float32


def test_gram_loss_resizes_the_teacher_grid_bicubically_before_normalising():
    torch.manual_seed(0)
    student = torch.randn(3, 4, 5, requires_grad=True)  # 2x2 grid
    teacher = torch.randn(3, 16, 5)  # 4x4 grid
    # by hand: [N, P, D] -> [N, D, 4, 4] -> bicubic to 2x2 (align_corners=False, no antialias) -> normalise
    grid = teacher.permute(0, 2, 1).reshape(3, 5, 4, 4)
    small = F.interpolate(grid, size=(2, 2), mode="bicubic", align_corners=False, antialias=False)
    tg = F.normalize(small.reshape(3, 5, 4).permute(0, 2, 1), dim=-1)
    ts = F.normalize(student, dim=-1)
    expected = ((ts @ ts.transpose(1, 2) - tg @ tg.transpose(1, 2)) ** 2).mean()
    loss = gram_loss(student, teacher, (2, 2), (4, 4))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert torch.equal(resize_patch_grid(teacher, (4, 4), (4, 4)), teacher)
    loss.backward()
    assert student.grad.abs().sum() > 0
    # the resize matters: the teacher's first 4 patches are not its resized grid
    assert gram_loss(student, teacher[:, :4], (2, 2), (2, 2)).item() != pytest.approx(loss.item(), rel=1e-3)


# ---- refreshes ----------------------------------------------------------------------------------

def test_refreshes_happen_exactly_at_the_configured_iterations_and_at_most_max_times():
    # DINOv3's Gram stage scaled down 1000x: every 10, first at 1010, 3 at most
    refresh = GramRefresh(every=10, first=1010, max_refreshes=3)
    after = [it for it in range(1200) if refresh.after(it)]
    assert after == [1009, 1019, 1029]
    # the count is rebuilt from the iteration alone (a resume at any point agrees with a full run)
    running = 0
    for it in range(1200):
        assert refresh.count_before(it) == running
        running += refresh.after(it)
    assert [it for it in range(100) if GramRefresh(every=25).after(it)] == [24, 49, 74, 99]
    assert not any(GramRefresh(every=0).after(it) for it in range(100))
    assert not any(GramRefresh(every=10, max_refreshes=0).after(it) for it in range(100))
    assert [it for it in range(60) if GramRefresh(every=10, first=15).after(it)] == [19, 29, 39, 49, 59]


def test_the_gram_teacher_is_a_frozen_backbone_copied_from_the_ema_teacher():
    torch.manual_seed(0)
    config = MetaArchConfig(dino_head=HeadConfig(32, 16, 8))
    meta = SSLMetaArch(build_backbone("vit_test"), config, gram=True)
    gram = meta.gram_teacher
    assert isinstance(gram, GramTeacher) and not any(p.requires_grad for p in gram.parameters())
    assert set(gram.state_dict()) == {f"backbone.{k}" for k in meta.teacher.backbone.state_dict()} | {"refreshes"}
    meta.train()
    assert not gram.training and not gram.backbone.training and meta.student.training
    with torch.no_grad():
        for p in meta.teacher.backbone.parameters():
            p.add_(0.1)
    assert not torch.equal(gram.backbone.cls_token, meta.teacher.backbone.cls_token)
    meta.load_gram_teacher_from_ema(refresh=False)
    assert int(gram.refreshes) == 0
    assert all(torch.equal(a, b) for a, b in zip(gram.backbone.state_dict().values(),
                                                 meta.teacher.backbone.state_dict().values()))
    meta.load_gram_teacher_from_ema()
    assert int(gram.refreshes) == 1
    # no Gram teacher unless asked: the checkpoint layout of other runs is unchanged
    assert SSLMetaArch(build_backbone("vit_test"), config).gram_teacher is None


# ---- Gram crops ---------------------------------------------------------------------------------

def _image() -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    # a smooth image (so a 2x resize round trip is close), uint8 [3, 80, 96]
    low = torch.rand(1, 3, 10, 12, generator=g)
    return (F.interpolate(low, size=(80, 96), mode="bilinear", align_corners=False)[0] * 255).round().to(torch.uint8)


CROPS = dict(global_crops_size=32, local_crops_size=16, n_local_crops=2, flip_prob=0.5)


def test_gram_crops_are_the_global_crops_geometry_without_photometric_distortion():
    image = _image()
    plain = MultiCropAugment(MultiCropConfig(**CROPS))
    gram = MultiCropAugment(MultiCropConfig(**CROPS, gram_crops_size=64))
    params = gram.sample_params((80, 96), torch.Generator().manual_seed(10))  # one flipped view, one not
    crops = gram.apply(image, params, normalized=False)
    assert [tuple(c.shape) for c in crops["gram_crops"]] == [(3, 64, 64)] * 2
    flips = [c.flip for c in params.global_crops]
    for view, crop in enumerate(params.global_crops):
        # the same box and flip at the Gram size, with no colour, blur or solarisation
        expected = crop_resize(image, crop.box, 64)
        expected = hflip(expected) if crop.flip else expected
        assert torch.equal(crops["gram_crops"][view], expected)
        # downsampled to the student size it is the unjittered student crop, approximately
        down = F.interpolate(crops["gram_crops"][view][None], size=(32, 32), mode="bicubic", antialias=True)[0]
        student_geometry = plain.geometric(image, [crop], 32)[0]
        assert (down - student_geometry).abs().mean() < 0.01
    assert flips == [True, False]
    # the distorted student crops differ from their undistorted geometry (the jitter is really applied)
    assert any((crops["global_crops"][v] - plain.geometric(image, [params.global_crops[v]], 32)[0]).abs().mean() > 0.01
               for v in range(2))


def test_gram_crops_leave_the_other_crops_and_their_random_stream_unchanged():
    images = [_image(), _image().flip(-1)]
    off = MultiCropAugment(MultiCropConfig(**CROPS))
    on = MultiCropAugment(MultiCropConfig(**CROPS, gram_crops_size=48))
    gens = lambda: [torch.Generator().manual_seed(100 + i) for i in range(2)]  # noqa: E731
    a, b = off.batch(images, gens()), on.batch(images, gens())
    assert set(a) == {"global_crops", "local_crops"} and set(b) == {"global_crops", "local_crops", "gram_crops"}
    assert torch.equal(a["global_crops"], b["global_crops"]) and torch.equal(a["local_crops"], b["local_crops"])
    assert b["gram_crops"].shape == (4, 3, 48, 48)  # view-major, like the global crops
    # the generators end in the same state: nothing more was drawn
    g_off, g_on = gens(), gens()
    off.batch(images, g_off), on.batch(images, g_on)
    assert all(torch.equal(x.get_state(), y.get_state()) for x, y in zip(g_off, g_on))
    # and batch() agrees with the per-image call, Gram crops included (normalised)
    single = on(images[1], torch.Generator().manual_seed(101))
    assert torch.allclose(b["gram_crops"][3], single["gram_crops"][1], atol=1e-6)


def test_the_meta_arch_adds_the_weighted_gram_loss_of_the_masked_student_patches():
    torch.manual_seed(0)
    meta = SSLMetaArch(build_backbone("vit_test", patch_size=8, drop_path_rate=0.0),
                       MetaArchConfig(dino_head=HeadConfig(32, 16, 8), centering="sinkhorn_knopp"), gram=True)
    with torch.no_grad():  # a Gram teacher other than the student (Sinkhorn-Knopp: no centre changes between calls)
        for p in meta.gram_teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    b = 2
    masks = torch.zeros(2 * b, 16, dtype=torch.bool)
    masks[0, :4] = True
    batch = {"global_crops": torch.randn(2 * b, 3, 32, 32), "local_crops": torch.randn(2 * b, 3, 16, 16),
             "gram_crops": torch.randn(2 * b, 3, 48, 48), "masks": masks,
             "mask_indices": masks.flatten().nonzero().flatten(), "masks_weight": torch.full((4,), 0.25),
             "n_masked_patches": 4}
    meta.train()
    off = meta(batch, teacher_temp=0.07, gram_weight=0.0)
    on = meta(batch, teacher_temp=0.07, gram_weight=2.0)
    assert off["gram"].item() == 0.0 and on["gram"].item() > 0
    assert torch.allclose(on["loss"] - off["loss"], 2.0 * on["gram"], atol=1e-5)
    # by hand: the masked student forward's patch tokens against the Gram teacher's 6x6 grid resized to 4x4
    student = meta.student.backbone([batch["global_crops"]], [masks])[0]["x_norm_patchtokens"]
    teacher = meta.gram_teacher.backbone(batch["gram_crops"])["x_norm_patchtokens"]
    assert on["gram"].item() == pytest.approx(gram_loss(student, teacher, (4, 4), (6, 6)).item(), rel=1e-5)
    with pytest.raises(Exception, match="gram_crops"):
        meta({k: v for k, v in batch.items() if k != "gram_crops"}, teacher_temp=0.07, gram_weight=1.0)
