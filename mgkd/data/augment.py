"""On-device training augmentation, vectorised over a batch: pad-and-crop, horizontal flip,
normalisation and random erasing.

An epoch's randomness is drawn up front as an :class:`AugmentPlan` (one tensor per kind, from the run's
generator), so saving the generator's state between epochs makes epochs reproducible; applying a slice
of the plan to a batch is a handful of tensor ops with no per-sample Python work.

Random erasing follows Zhong et al. (AAAI 2020) as torchvision does: with probability ``p`` an image gets
one rectangle of area 2-40% of the image and log-uniform aspect ratio in [0.3, 3.3] (up to
:data:`ERASE_ATTEMPTS` draws until one fits; none fits: no erasing); erased pixels are set to 0 *after*
normalisation, i.e. to the data set's mean colour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mgkd.data.containers import DatasetSpec

ERASE_AREA = (0.02, 0.4)
ERASE_ASPECT = (0.3, 3.3)
ERASE_ATTEMPTS = 10


@dataclass(frozen=True)
class AugmentPlan:
    """Per-sample augmentation draws: crop offsets (N, 2) as (top, left) into the padded image,
    flips (N,) bool, erase boxes (N, 4) as (top, left, height, width) with height 0 for none.

    ``starts`` and ``steps`` are what the crop and flip come to, worked out once per epoch: where
    each sample's first output pixel lies in its padded image (its top-right when flipped), and
    the column step (+1, or -1 when flipped).

    ``views`` numbers each sample's (crop offset, flip) as one of the augmenter's
    :attr:`Augmenter.view_count` views, ``(top * S + left) * F + flip`` with S = 2 * padding + 1
    and F = 2 with flips (1 without); None where the views are not a finite set (random erasing)
    or there is no augmentation. The teacher view bank (:mod:`mgkd.knowledge.views`) is indexed
    by it."""

    offsets: torch.Tensor | None = None
    flips: torch.Tensor | None = None
    boxes: torch.Tensor | None = None
    starts: torch.Tensor | None = None
    steps: torch.Tensor | None = None
    views: torch.Tensor | None = None

    def slice(self, lo: int, hi: int) -> AugmentPlan:
        """The draws of samples ``lo:hi``."""
        return AugmentPlan(*(None if t is None else t[lo:hi] for t in
                             (self.offsets, self.flips, self.boxes, self.starts, self.steps,
                              self.views)))


def draw_erase_boxes(count: int, height: int, width: int, probability: float,
                     generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """(count, 4) int64 boxes (top, left, h, w); h = w = 0 where an image is not erased."""
    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=generator, device=device, dtype=torch.float32)

    apply = uniform(count) < probability
    fraction = uniform(count, ERASE_ATTEMPTS) * (ERASE_AREA[1] - ERASE_AREA[0]) + ERASE_AREA[0]
    area = fraction * (height * width)
    log_low, log_high = math.log(ERASE_ASPECT[0]), math.log(ERASE_ASPECT[1])
    aspect = torch.exp(uniform(count, ERASE_ATTEMPTS) * (log_high - log_low) + log_low)
    box_h = torch.sqrt(area * aspect).round().long()
    box_w = torch.sqrt(area / aspect).round().long()
    fits = (box_h > 0) & (box_w > 0) & (box_h < height) & (box_w < width)
    first = fits.int().argmax(dim=1, keepdim=True)  # first attempt that fits (0 if none)
    apply &= fits.any(dim=1)
    box_h = torch.where(apply, box_h.gather(1, first).squeeze(1), 0)
    box_w = torch.where(apply, box_w.gather(1, first).squeeze(1), 0)
    top = (uniform(count) * (height - box_h + 1).float()).long().clamp_max_(height - 1)
    left = (uniform(count) * (width - box_w + 1).float()).long().clamp_max_(width - 1)
    return torch.stack([top, left, box_h, box_w], dim=1)


class Augmenter:
    """Draws and applies one data set's training augmentation (or none, for evaluation)."""

    def __init__(self, spec: DatasetSpec, device: torch.device, *, train: bool) -> None:
        height, width = spec.image_shape
        self._height, self._width = height, width
        self._pad = spec.crop_padding if train else 0
        self._flip = train and spec.flip
        self._erase = spec.random_erasing if train else 0.0
        self._device = device
        # x_norm = (x / 255 - mean) / std  ==  x * scale + shift, fused into one addcmul.
        mean = torch.tensor(spec.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        std = torch.tensor(spec.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self._scale = 1.0 / (255.0 * std)
        self._shift = -mean / std
        padded_width = width + 2 * self._pad
        self._padded_width = padded_width
        # Flat offset of each row in a padded image, (1, H, 1); and the columns (W,).
        self._row_offsets = (torch.arange(height, device=device) * padded_width).view(1, height, 1)
        self._cols = torch.arange(width, device=device)
        self._rows_grid = torch.arange(height, device=device).view(1, height, 1)
        self._cols_grid = torch.arange(width, device=device).view(1, 1, width)

    @property
    def active(self) -> bool:
        """Whether training draws anything at all."""
        return self._pad > 0 or self._flip or self._erase > 0

    @property
    def view_count(self) -> int | None:
        """How many distinct training views of an image there are: (2 * padding + 1)^2 crop
        offsets times 2 with flips (162 for CIFAR's padding 4 and flips; 1 without
        augmentation); None where random erasing makes them no finite set."""
        if self._erase > 0:
            return None
        side = 2 * self._pad + 1
        return side * side * (2 if self._flip else 1)

    def augment_spec(self) -> dict[str, object]:
        """What an augmented view depends on besides the image (the teacher view bank's key)."""
        return {"height": self._height, "width": self._width, "padding": self._pad,
                "flip": self._flip, "erase": self._erase,
                "scale": self._scale.flatten().tolist(), "shift": self._shift.flatten().tolist()}

    def draw(self, count: int, generator: torch.Generator | None, *,
             views: bool = False) -> AugmentPlan:
        """One draw per sample for ``count`` samples (crop offsets, then flips, then erase boxes);
        the plan numbers each sample's view when ``views`` asks (same draws either way)."""
        if not self.active:
            return AugmentPlan()
        assert generator is not None, "training augmentation needs the run's data generator"
        device, pad = self._device, self._pad
        offsets = flips = boxes = None
        if pad:
            offsets = torch.randint(0, 2 * pad + 1, (2, count), generator=generator, device=device).t()
        if self._flip:
            flips = torch.randint(0, 2, (count,), generator=generator, device=device, dtype=torch.bool)
        if self._erase > 0:
            boxes = draw_erase_boxes(count, self._height, self._width, self._erase, generator, device)
        return self._plan(offsets, flips, boxes, views)

    def _plan(self, offsets: torch.Tensor | None, flips: torch.Tensor | None,
              boxes: torch.Tensor | None, views: bool) -> AugmentPlan:
        """The plan of given draws: where crops start, the column steps and (when ``views``
        asks and there is a finite view set) the view numbers."""
        starts = steps = None
        if offsets is not None or flips is not None:
            count = (offsets if offsets is not None else flips).shape[0]
            starts = torch.zeros(count, dtype=torch.int64, device=self._device)
            if offsets is not None:
                starts += offsets[:, 0] * self._padded_width + offsets[:, 1]
            if flips is not None:
                starts += flips * (self._width - 1)
                steps = 1 - 2 * flips.long()
        numbers = None
        if views and boxes is None and starts is not None:
            numbers = torch.zeros_like(starts)
            if offsets is not None:
                numbers += offsets[:, 0] * (2 * self._pad + 1) + offsets[:, 1]
            if flips is not None:
                numbers = numbers * 2 + flips
        return AugmentPlan(offsets, flips, boxes, starts, steps, numbers)

    def view_plan(self, views: torch.Tensor) -> AugmentPlan:
        """The plan that shows each sample its given view number (the inverse of the ``views``
        a drawn plan carries): what the teacher view bank computes each row from."""
        count = self.view_count
        if count is None:
            raise ValueError("random erasing draws no finite set of views")
        views = views.to(device=self._device, dtype=torch.int64)
        if count == 1:
            return AugmentPlan()
        flips = None
        if self._flip:
            flips, views = (views % 2).bool(), views // 2
        offsets = None
        if self._pad:
            side = 2 * self._pad + 1
            offsets = torch.stack([views // side, views % side], dim=1)
        return self._plan(offsets, flips, None, True)

    def source(self, images: torch.Tensor) -> torch.Tensor:
        """A split's uint8 images as :meth:`gather` reads them: zero-padded once for cropping
        (the padded copy saves padding every batch)."""
        if self._pad:
            pad = self._pad
            return F.pad(images, (pad, pad, pad, pad)).contiguous()
        return images.contiguous()

    def normalise(self, images: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 -> normalised float32 (written into ``out`` when given, in its memory layout)."""
        return torch.addcmul(self._shift, images, self._scale, out=out)

    def _cropped(self, source: torch.Tensor, indices: torch.Tensor, plan: AugmentPlan) -> torch.Tensor:
        """Images ``indices`` of ``source``, cropped and flipped by ``plan``: the padded images
        picked, then one gather of flat pixel offsets (the plan's start, the row, the column
        step) shared by every channel."""
        picked = source.index_select(0, indices)
        if plan.starts is None:
            return picked
        count, channels, height, width = picked.shape[0], picked.shape[1], self._height, self._width
        base = plan.starts.view(count, 1, 1) + self._row_offsets
        if plan.steps is None:
            flat = base + self._cols
        else:
            flat = torch.addcmul(base, plan.steps.view(count, 1, 1), self._cols)
        index = flat.view(count, 1, height * width).expand(count, channels, height * width)
        return picked.view(count, channels, -1).gather(2, index).view(count, channels, height, width)

    def _erase_boxes(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        top, left, box_h, box_w = (boxes[:, i].view(-1, 1, 1) for i in range(4))
        rows, cols = self._rows_grid, self._cols_grid
        inside = (rows >= top) & (rows < top + box_h) & (cols >= left) & (cols < left + box_w)
        return images.masked_fill_(inside.unsqueeze(1), 0.0)

    def gather(self, source: torch.Tensor, indices: torch.Tensor, plan: AugmentPlan,
               out: torch.Tensor | None = None) -> torch.Tensor:
        """Images ``indices`` of ``source`` (:meth:`source`) augmented by ``plan`` (their slice
        of the epoch's plan), normalised float32, written into ``out`` when given."""
        out = self.normalise(self._cropped(source, indices, plan), out)
        if plan.boxes is not None:
            out = self._erase_boxes(out, plan.boxes)
        return out

    def apply(self, images: torch.Tensor, plan: AugmentPlan) -> torch.Tensor:
        """Augment a uint8 batch by ``plan`` and return it normalised (float32)."""
        indices = torch.arange(images.shape[0], device=images.device)
        return self.gather(self.source(images), indices, plan)
