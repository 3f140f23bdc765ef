"""What the two linear-evaluation protocols are, so that a report can say which one it used."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from lvdtool.data.eval_transform import EvalTransform

# The 13 learning rates of DINOv2's linear evaluation (before scaling by batch / 256).
DINOV2_LINEAR_LRS: tuple[float, ...] = (
    1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1,
)


@dataclass(frozen=True)
class LinearProtocol:
    name: str
    features: str
    augmentation: str
    learning_rates: tuple[float, ...]
    optimizer: str
    schedule: str
    batch_size: int | None  # None: set per run
    iterations: int | None  # None: set per run
    selection: str

    def as_dict(self) -> dict:
        return asdict(self)


OFFICIAL_LINEAR_PROTOCOL = LinearProtocol(
    name="dinov2-augmented",
    features=(
        "one frozen-backbone forward per batch; CLS tokens of the last 1 or 4 blocks "
        "(concatenated), with or without the average-pooled patch tokens of the last block"
    ),
    augmentation="random-resized-crop 224 + horizontal flip (train); resize 256 + center crop 224 (val)",
    learning_rates=DINOV2_LINEAR_LRS,
    optimizer="SGD momentum 0.9, no weight decay, lr x global batch / 256",
    schedule="cosine to 0, no warm-up",
    batch_size=1024,
    iterations=12_500,
    selection="52 classifiers (4 feature sets x 13 lrs) trained at once; best val top-1 reported",
)



def official_linear_protocol(resolution: int = 224, resize: int | None = None) -> LinearProtocol:
    """The official protocol as a run at `resolution` applies it: the crop sizes it used, and the
    shorter side val images are resized to (`resize`, by default resolution x 256/224 as in the paper)."""
    side = EvalTransform(resolution, resize).resize_to
    text = (f"random-resized-crop {resolution} + horizontal flip (train); "
            f"resize {side} + center crop {resolution} (val)")
    if (resolution, side) != (224, 256):
        text += " (the paper: 224, resize 256)"
    return replace(OFFICIAL_LINEAR_PROTOCOL, augmentation=text)


CACHED_LINEAR_PROTOCOL = LinearProtocol(
    name="cached-features",
    features="features extracted once (no augmentation) and cached; any named feature sets",
    augmentation="none",
    learning_rates=DINOV2_LINEAR_LRS,
    optimizer="SGD momentum 0.9, no weight decay, lr x batch / 256",
    schedule="cosine to 0, no warm-up",
    batch_size=None,
    iterations=None,
    selection="all (feature set, lr) classifiers trained at once; best val top-1 reported",
)


def official_protocol_notes() -> str:
    """One paragraph describing the paper's protocol and the faster cached variant."""
    o = OFFICIAL_LINEAR_PROTOCOL
    return (
        f"DINOv2 linear evaluation ({o.name}): {o.features}; {o.augmentation}; "
        f"{len(o.learning_rates)} learning rates {o.learning_rates[0]:g}..{o.learning_rates[-1]:g}; "
        f"{o.optimizer}; {o.schedule}; {o.iterations} iterations at batch {o.batch_size}; "
        f"{o.selection}. The '{CACHED_LINEAR_PROTOCOL.name}' variant trains the same grid on "
        "cached features without augmentation: much faster, usually a little lower. Picking the "
        "best classifier on the validation set (as the paper does) is optimistic: the reported "
        "number is also the selection criterion."
    )
