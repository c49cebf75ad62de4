"""Dense optical flow between two grayscale frames: TV-L1 (Zach, Pock & Bischof 2007).

The dual TV-L1 scheme as written up by Sanchez, Meinhardt-Llopis and Facciolo, "TV-L1 Optical
Flow Estimation", IPOL 2013, with two backends that compute the same field:

``"opencv"``
    ``cv2.optflow.DualTVL1OpticalFlow`` (opencv-contrib), one pair at a time, on the CPU.
``"torch"``
    our implementation of the same algorithm (:func:`tvl1_batch`): batched, on the device of the
    tensors (CPU or CUDA), float32. It follows OpenCV's ``tvl1flow.cpp`` where that differs from
    the IPOL paper, so that the two backends agree (see "Differences" below).

Conventions
    A flow field is (2, H, W) float32 (batched: (B, 2, H, W)): channel 0 the x (column)
    displacement, channel 1 the y (row) displacement, in pixels, from ``prev`` to ``next`` at
    every pixel of ``prev``: ``prev(x) ~ next(x + flow(x))``.

Images
    2-D grayscale, both the same shape, at least 3 x 3. ``uint8`` is taken on [0, 255]; floating
    point on [0, 1] (the scikit-image convention). Both backends compute on the [0, 255] scale
    internally, as OpenCV does (it multiplies float input by 255), so ``lambda_`` means the same
    for both input types. Float images outside [-0.5, 1.5] are refused: they are almost surely on
    [0, 255], and OpenCV would silently take them to [0, 65025], where (measured on 224 x 224 face
    crops, one thread) it runs ~13x slower and its end-point error is ~2.7x larger.

Parameters (shared by both backends, defaults = OpenCV's ``DualTVL1OpticalFlow`` defaults)

====================  =======  ==================================================================
name                  default  meaning
====================  =======  ==================================================================
``tau``               0.25     time step of the dual (p) update (convergence proven for
                               tau <= 1/8, observed up to 1/4; IPOL)
``lambda_``           0.15     weight of the data term (brightness constancy on [0, 255]
                               intensities); smaller gives smoother fields
``theta``             0.3      coupling of the flow u and its auxiliary variable v; smaller ties
                               v closer to u
``n_scales``          5        pyramid levels; fewer where a level would be under 16 pixels on a
                               side (OpenCV's rule)
``n_warps``           5        warps per level: I1 and its gradient are re-sampled at the current
                               flow and the data term linearised again
``scale_step``        0.8      zoom factor between pyramid levels, in (0, 1)
``epsilon``           0.01     stopping threshold: a warp stops once the summed squared flow
                               update is below ``epsilon**2 * H * W`` (an RMS update of
                               ``epsilon`` px)
``inner_iterations``  30       iterations between two median filterings of the flow
``outer_iterations``  10       at most this many groups of ``inner_iterations`` per warp
``median_filtering``  5        side of the median filter applied to the flow before each group of
                               inner iterations (1 = none; OpenCV takes 3 or 5 on float)
``gamma``             0.0      weight of the illumination-change term (Chambolle & Pock 2011);
                               0 turns it off
``torch_iterations``  50       torch backend only: iterations per warp (see below)
====================  =======  ==================================================================

Iteration budget of the torch backend
    OpenCV checks ``epsilon`` after every iteration and stops a warp when it is met (at most
    ``outer_iterations * inner_iterations`` = 300 iterations); on 224 x 224 face crops that is
    after ~45-65 iterations on the first warp of a level and ~10-20 on the others.
    A GPU must not wait on such a test, so the torch backend runs a fixed number of iterations
    per warp, ``torch_iterations`` (default 50, median filter every ``inner_iterations``), with
    no host synchronisation. The ``epsilon`` test is still applied, per image and on the device:
    an image whose warp has converged is frozen (its flow and dual variables stop changing) until
    the next warp, as OpenCV's would be. The two backends thus run the same iterations on every
    warp that OpenCV finishes within ``torch_iterations``; past that the torch backend stops early.
    Outside the iterations a call waits on the GPU only where it must: floating-point input is
    range-checked (two values read back per image stack), numpy output is copied back, and the
    first call at a new image size copies its resize matrices to the device (cached after that).
    A call on uint8 CUDA tensors at a size seen before makes no host synchronisation at all
    (``benchmarks/gpu_check.py`` counts them with ``torch.cuda.set_sync_debug_mode``).

Differences between the torch backend and OpenCV (all deliberate)
    - Warps sample I1 at the exact flow positions; OpenCV's ``remap`` rounds them to 1/32 px.
    - The fixed iteration budget above.
    - Float32 sums in a different order (OpenCV accumulates the stopping error serially).

Differences of both from the IPOL paper (OpenCV's choices, followed by the torch backend)
    - Pyramid: bilinear down-sampling by ``scale_step`` with no Gaussian pre-smoothing, and level
      sizes rounded to the nearest integer; the flow is up-sampled bilinearly and multiplied by
      ``1 / scale_step``.
    - Image gradients are centred differences; at the border, half the one-sided difference.
    - Warping is bicubic with Keys' a = -0.75 (IPOL's code: a = -0.5), zero outside the image.
      On sub-pixel motion a = -0.75 pulls estimates towards whole pixels: on an exactly moved
      band-limited texture, shifts of 0.2 and 0.7 px read as 0.158 and 0.744 px (a = -0.5:
      0.202 and 0.698). The torch backend keeps a = -0.75, to agree with OpenCV.
    - The stopping test is on the summed squared update, checked every iteration.
    - The flow is median-filtered (``median_filtering``) before each group of inner iterations.

Threads
    Neither function changes global state. OpenCV uses its own thread pool
    (``cv2.setNumThreads``), torch its intra-op pool (``torch.set_num_threads``); a caller running
    one process per core should set both to 1, as ``mepipe synth`` workers do for OpenCV. On the
    CPU the torch backend runs thousands of small operations per pair, each split over the thread
    team: where other work keeps cores busy, one thread is steadier (and often faster) than many.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

BACKENDS = ("opencv", "torch")

#: pyramid levels smaller than this on a side are not made (OpenCV's rule)
MIN_LEVEL_SIZE = 16


@dataclass(frozen=True)
class _Parameters:
    tau: float
    lambda_: float
    theta: float
    n_scales: int
    n_warps: int
    scale_step: float
    epsilon: float
    inner_iterations: int
    outer_iterations: int
    median_filtering: int
    gamma: float
    torch_iterations: int

    def check(self) -> None:
        for name in ("tau", "lambda_", "theta"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        for name in ("n_scales", "n_warps", "inner_iterations", "outer_iterations", "torch_iterations"):
            value = getattr(self, name)
            if not (isinstance(value, (int, np.integer)) and value >= 1):
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not (0 < self.scale_step < 1):
            raise ValueError(f"scale_step must be in (0, 1), got {self.scale_step!r}")
        if not (math.isfinite(self.epsilon) and self.epsilon >= 0):
            raise ValueError(f"epsilon must be >= 0, got {self.epsilon!r}")
        if self.median_filtering not in (0, 1, 3, 5):
            raise ValueError(f"median_filtering must be 1 (off), 3 or 5 (OpenCV's sizes for float), got {self.median_filtering!r}")
        if not math.isfinite(self.gamma) or self.gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {self.gamma!r}")


def tvl1(
    prev,
    next,
    *,
    backend: str = "opencv",
    tau: float = 0.25,
    lambda_: float = 0.15,
    theta: float = 0.3,
    n_scales: int = 5,
    n_warps: int = 5,
    scale_step: float = 0.8,
    epsilon: float = 0.01,
    inner_iterations: int = 30,
    outer_iterations: int = 10,
    median_filtering: int = 5,
    gamma: float = 0.0,
    torch_iterations: int = 50,
) -> np.ndarray:
    """TV-L1 optical flow from ``prev`` to ``next``: (2, H, W) float32, x then y, in pixels.

    ``prev``, ``next``: (H, W) arrays of the same shape, ``uint8`` on [0, 255] or floating point
    on [0, 1] (numpy arrays, or torch tensors for ``backend="torch"``). ``backend``: ``"opencv"``
    or ``"torch"`` (:func:`tvl1_batch` with a batch of one, on the tensors' device). The other
    parameters are described in the module's table; ``torch_iterations`` is the torch backend's
    fixed number of iterations per warp (ignored by OpenCV, which stops on ``epsilon`` alone).

    Returns ``flow`` with ``prev(x, y) ~ next(x + flow[0, y, x], y + flow[1, y, x])``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    parameters = _Parameters(
        tau, lambda_, theta, n_scales, n_warps, scale_step, epsilon, inner_iterations, outer_iterations,
        median_filtering, gamma, torch_iterations,
    )
    parameters.check()
    if backend == "torch":
        first, second = _as_tensor(prev, "prev", 2), _as_tensor(next, "next", 2)
        _check_pair(first, second)
        flow = _tvl1_torch(first[None], second[None], parameters)[0]
        return flow.cpu().numpy()
    first, second = _as_array(prev, "prev"), _as_array(next, "next")
    _check_pair(first, second)
    return _tvl1_opencv(first, second, parameters)


def tvl1_batch(
    prev,
    next,
    *,
    tau: float = 0.25,
    lambda_: float = 0.15,
    theta: float = 0.3,
    n_scales: int = 5,
    n_warps: int = 5,
    scale_step: float = 0.8,
    epsilon: float = 0.01,
    inner_iterations: int = 30,
    outer_iterations: int = 10,
    median_filtering: int = 5,
    gamma: float = 0.0,
    torch_iterations: int = 50,
):
    """TV-L1 flow of B pairs at once with the torch backend: (B, 2, H, W) float32.

    ``prev``, ``next``: (B, H, W) torch tensors (computed on their device, CPU or CUDA) or numpy
    arrays (computed on the CPU), ``uint8`` on [0, 255] or floating point on [0, 1]; pair ``i`` is
    ``prev[i] -> next[i]``. Returns a tensor on the same device for tensor input, a numpy array
    for numpy input. Parameters as :func:`tvl1`; every pair gets the same fixed iteration budget
    (``torch_iterations`` per warp), the ``epsilon`` test freezing the pairs that converge.
    """
    parameters = _Parameters(
        tau, lambda_, theta, n_scales, n_warps, scale_step, epsilon, inner_iterations, outer_iterations,
        median_filtering, gamma, torch_iterations,
    )
    parameters.check()
    numpy_in = not isinstance(prev, torch.Tensor)
    first, second = _as_tensor(prev, "prev", 3), _as_tensor(next, "next", 3)
    _check_pair(first, second)
    if first.device != second.device:
        raise ValueError(f"prev and next must be on the same device, got {first.device} and {second.device}")
    flow = _tvl1_torch(first, second, parameters)
    return flow.cpu().numpy() if numpy_in else flow


# --- input checks ---------------------------------------------------------------------------------

#: float images beyond these bounds are taken to be on [0, 255], not [0, 1]
_FLOAT_RANGE = (-0.5, 1.5)


def _as_array(image, name: str) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) grayscale image, got shape {image.shape}")
    if not (image.dtype == np.uint8 or np.issubdtype(image.dtype, np.floating)):
        raise ValueError(f"{name} must be uint8 on [0, 255] or floating point on [0, 1], got dtype {image.dtype}")
    return image


def _as_tensor(image, name: str, ndim: int) -> torch.Tensor:
    if not isinstance(image, torch.Tensor):
        image = np.asarray(image)
        if not (image.dtype == np.uint8 or np.issubdtype(image.dtype, np.floating)):
            raise ValueError(f"{name} must be uint8 on [0, 255] or floating point on [0, 1], got dtype {image.dtype}")
        image = torch.from_numpy(np.ascontiguousarray(image))
    if image.dtype != torch.uint8 and not image.dtype.is_floating_point:
        raise ValueError(f"{name} must be uint8 on [0, 255] or floating point on [0, 1], got dtype {image.dtype}")
    if image.ndim != ndim:
        expected = "(H, W)" if ndim == 2 else "(B, H, W)"
        raise ValueError(f"{name} must be {expected} grayscale, got shape {tuple(image.shape)}")
    return image


def _check_pair(first, second) -> None:
    if tuple(first.shape) != tuple(second.shape):
        raise ValueError(f"prev and next must have the same shape, got {tuple(first.shape)} and {tuple(second.shape)}")
    if first.dtype != second.dtype:
        raise ValueError(f"prev and next must have the same dtype, got {first.dtype} and {second.dtype}")
    if first.shape[-2] < 3 or first.shape[-1] < 3:
        raise ValueError(f"images must be at least 3 x 3 pixels, got {tuple(first.shape[-2:])}")
    if first.shape[0] == 0:
        raise ValueError("the batch is empty")
    for name, image in (("prev", first), ("next", second)):
        if isinstance(image, torch.Tensor):
            if not image.dtype.is_floating_point:
                continue
            low, high = image.amin().item(), image.amax().item()
        else:
            if image.dtype == np.uint8:
                continue
            low, high = float(image.min()), float(image.max())
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError(f"{name} has non-finite values (NaN or inf)")
        if low < _FLOAT_RANGE[0] or high > _FLOAT_RANGE[1]:
            raise ValueError(
                f"{name} is floating point with values in [{low:g}, {high:g}]; float images must be on [0, 1] "
                "(divide by 255, or pass uint8)"
            )


# --- OpenCV backend -------------------------------------------------------------------------------


def _tvl1_opencv(prev: np.ndarray, next: np.ndarray, p: _Parameters) -> np.ndarray:
    import cv2

    if prev.dtype != np.uint8:
        # float32 on [0, 1]: OpenCV multiplies it by 255 internally, like uint8 taken as is
        prev, next = prev.astype(np.float32), next.astype(np.float32)
    algorithm = cv2.optflow.DualTVL1OpticalFlow_create(
        p.tau, p.lambda_, p.theta, p.n_scales, p.n_warps, p.epsilon, p.inner_iterations, p.outer_iterations,
        p.scale_step, p.gamma, p.median_filtering, False,
    )
    flow = algorithm.calc(prev, next, None)
    return np.ascontiguousarray(flow.transpose(2, 0, 1))


# --- torch backend --------------------------------------------------------------------------------


def _tvl1_torch(prev: torch.Tensor, next: torch.Tensor, p: _Parameters) -> torch.Tensor:
    with torch.no_grad():  # not inference_mode: its tensors refuse in-place edits afterwards
        scale = 1.0 if prev.dtype == torch.uint8 else 255.0
        first = prev.to(torch.float32).mul(scale).unsqueeze(1)
        second = next.to(torch.float32).mul(scale).unsqueeze(1)
        sizes = pyramid_sizes(tuple(first.shape[-2:]), p.n_scales, p.scale_step)
        firsts, seconds = [first], [second]
        for size in sizes[1:]:
            firsts.append(_resize(firsts[-1], size, p.scale_step))
            seconds.append(_resize(seconds[-1], size, p.scale_step))
        channels = 3 if p.gamma != 0 else 2
        flow = first.new_zeros((first.shape[0], channels) + sizes[-1])
        for level in range(len(sizes) - 1, -1, -1):
            flow = _solve_level(firsts[level], seconds[level], flow, p)
            if level > 0:
                flow = _resize(flow, sizes[level - 1])
                flow[:, :2] *= 1.0 / p.scale_step  # the illumination channel is not a length
        return flow[:, :2].contiguous()


def pyramid_sizes(size: tuple[int, int], n_scales: int, scale_step: float) -> list[tuple[int, int]]:
    """(H, W) of each pyramid level, finest first, as OpenCV makes them.

    Each level is ``scale_step`` times the one above, rounded to the nearest integer (ties to
    even, like ``cv::resize``); levels smaller than 16 pixels on a side are dropped.
    """
    sizes = [tuple(size)]
    for _ in range(1, n_scales):
        height, width = sizes[-1]
        smaller = (round(height * scale_step), round(width * scale_step))
        if min(smaller) < MIN_LEVEL_SIZE:
            break
        sizes.append(smaller)
    return sizes


@functools.lru_cache(maxsize=64)
def _linear_resize_matrix(n_in: int, n_out: int, scale: float | None) -> np.ndarray:
    """(n_out, n_in) weights of OpenCV's INTER_LINEAR resize along one axis.

    ``scale``: the zoom factor OpenCV uses to place samples (``fx`` of ``cv::resize``); None for
    ``n_out / n_in``. Source position of output ``i``: ``(i + 0.5) / scale - 0.5``, clamped to the
    image (OpenCV's replicated border).
    """
    inverse = 1.0 / scale if scale is not None else n_in / n_out
    matrix = np.zeros((n_out, n_in))
    for i in range(n_out):
        position = np.float32((i + 0.5) * inverse - 0.5)  # OpenCV computes it in float
        left = int(np.floor(position))
        weight = float(position - left)
        if left < 0:
            left, weight = 0, 0.0
        if left >= n_in - 1:
            left, weight = n_in - 1, 0.0
        matrix[i, left] += 1.0 - weight
        if weight:
            matrix[i, left + 1] += weight
    return matrix


@functools.lru_cache(maxsize=128)
def _resize_matrix_on(n_in: int, n_out: int, scale: float | None, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """:func:`_linear_resize_matrix` as a tensor on ``device``, made once per (size, device, dtype).

    Copying a host array to a GPU waits for the GPU (a host synchronisation: pageable memory);
    cached, a call of :func:`tvl1_batch` at a size seen before makes no such copy.
    """
    return torch.from_numpy(_linear_resize_matrix(n_in, n_out, scale)).to(device=device, dtype=dtype)


def _resize(image: torch.Tensor, size: tuple[int, int], scale: float | None = None) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, *size) bilinear, as ``cv::resize(..., INTER_LINEAR)`` (separable)."""
    rows = _resize_matrix_on(image.shape[-2], size[0], scale, image.device, image.dtype)
    cols = _resize_matrix_on(image.shape[-1], size[1], scale, image.device, image.dtype)
    return rows @ image @ cols.T


def _centred_gradient(image: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) -> (B, 2, H, W) (d/dx, d/dy); half the one-sided difference at the border."""
    padded = F.pad(image, (1, 1, 1, 1), mode="replicate")
    dx = 0.5 * (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2])
    dy = 0.5 * (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1])
    return torch.cat([dx, dy], dim=1)


def _warp(images: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Bicubic samples of (B, C, H, W) ``images`` at x + flow(x); zero outside the image."""
    batch, _, height, width = images.shape
    ys = torch.arange(height, dtype=flow.dtype, device=flow.device).view(1, height, 1)
    xs = torch.arange(width, dtype=flow.dtype, device=flow.device).view(1, 1, width)
    grid = torch.stack(
        [(xs + flow[:, 0]) * (2.0 / (width - 1)) - 1.0, (ys + flow[:, 1]) * (2.0 / (height - 1)) - 1.0], dim=-1
    )
    return F.grid_sample(images, grid, mode="bicubic", padding_mode="zeros", align_corners=True)


def _solve_level(first: torch.Tensor, second: torch.Tensor, flow: torch.Tensor, p: _Parameters) -> torch.Tensor:
    """TV-L1 at one pyramid level: ``n_warps`` warps of ``torch_iterations`` iterations each.

    ``first``, ``second``: (B, 1, H, W) on [0, 255]; ``flow``: (B, C, H, W) initial flow (C = 3
    with the illumination term), updated in place and returned.
    """
    batch, channels, height, width = flow.shape
    lambda_theta = p.lambda_ * p.theta
    squared_threshold = p.epsilon**2 * height * width  # on the summed squared update, as OpenCV
    iterations = min(p.torch_iterations, p.inner_iterations * p.outer_iterations)
    second_and_gradient = torch.cat([second, _centred_gradient(second)], dim=1)
    # the dual variable is kept multiplied by theta: its divergence is then the step itself
    dual = flow.new_zeros((batch, channels, 2, height, width))  # theta (p_x, p_y) per flow channel
    dual_x, dual_y = dual[:, :, 0], dual[:, :, 1]
    flow_gradient = torch.zeros_like(dual)  # last column of d/dx and last row of d/dy stay 0
    gradient_x, gradient_y = flow_gradient[:, :, 0], flow_gradient[:, :, 1]
    step, norm = torch.empty_like(flow), torch.empty_like(flow)
    fraction = flow.new_empty((batch, 1, height, width))
    for _ in range(p.n_warps):
        warped = _warp(second_and_gradient, flow[:, :2])
        warped_image, warped_gradient = warped[:, :1], warped[:, 1:]
        # residual at zero step: I1(x + u0) - grad I1(x + u0) . u0 - I0
        residual_constant = warped_image - (warped_gradient * flow[:, :2]).sum(1, keepdim=True) - first
        negative_inverse_gradient = -1.0 / warped_gradient.square().sum(1, keepdim=True).clamp_min(torch.finfo(torch.float32).eps)
        if channels == 3:  # the illumination term enters the residual like a third gradient
            warped_gradient = torch.cat([warped_gradient, torch.full_like(warped_image, p.gamma)], dim=1)
        active = flow.new_ones((batch, 1, 1, 1))  # 0 once this warp has converged for the image
        for iteration in range(iterations):
            if iteration % p.inner_iterations == 0 and p.median_filtering > 1:
                flow = torch.where(active > 0, median_filter(flow, p.median_filtering), flow)
            # v = u + clamp(-rho / |grad I1|^2, -lambda theta, lambda theta) grad I1: the three
            # cases of the thresholding step in one clamp
            torch.addcmul(residual_constant, warped_gradient[:, :1], flow[:, :1], out=fraction)
            for channel in range(1, channels):
                fraction.addcmul_(warped_gradient[:, channel : channel + 1], flow[:, channel : channel + 1])
            fraction.mul_(negative_inverse_gradient).clamp_(-lambda_theta, lambda_theta)
            # u = v + theta div p, div by backward differences (p is 0 beyond the first row/column)
            torch.add(dual_x, dual_y, out=step)
            step[..., 1:].sub_(dual_x[..., :-1])
            step[..., 1:, :].sub_(dual_y[..., :-1, :])
            step.addcmul_(warped_gradient, fraction).mul_(active)
            flow.add_(step)
            # p = (p + tau/theta grad u) / (1 + tau/theta |grad u|), grad by forward differences
            torch.sub(flow[..., 1:], flow[..., :-1], out=gradient_x[..., :-1])
            torch.sub(flow[..., 1:, :], flow[..., :-1, :], out=gradient_y[..., :-1, :])
            torch.mul(gradient_x, gradient_x, out=norm).addcmul_(gradient_y, gradient_y).sqrt_()
            norm.mul_(active * (p.tau / p.theta)).add_(1.0)
            dual.addcmul_(flow_gradient, (active * p.tau).unsqueeze(1)).div_(norm.unsqueeze(2))
            flat_step = step.view(batch, 1, -1)
            squared_step = torch.bmm(flat_step, flat_step.transpose(1, 2)).view(batch, 1, 1, 1)
            active = active * (squared_step > squared_threshold)
    return flow


# --- median filter --------------------------------------------------------------------------------


def median_filter(image: torch.Tensor, size: int) -> torch.Tensor:
    """Median over ``size`` x ``size`` windows of each (H, W) plane of ``image`` (..., H, W).

    Replicated border, as ``cv2.medianBlur``. Computed with a selection network (element-wise
    min/max of shifted views), which runs well on CPU and GPU alike, unlike a sort per pixel.
    """
    if size % 2 != 1 or size < 1:
        raise ValueError(f"median filter size must be odd and positive, got {size}")
    if size == 1:
        return image.clone()
    radius = size // 2
    shape = image.shape
    height, width = shape[-2:]
    planes = image.reshape((-1, 1, height, width))
    padded = F.pad(planes, (radius, radius, radius, radius), mode="replicate")
    windows = [padded[..., k // size : k // size + height, k % size : k % size + width] for k in range(size * size)]
    operations, target, n_slots = _selection_network(size * size, size * size // 2)
    # intermediate values live in a few reused buffers: less memory traffic than fresh tensors
    slots = planes.new_empty((n_slots,) + planes.shape)
    operands = windows + list(slots)
    for is_min, a, b, out in operations:
        (torch.minimum if is_min else torch.maximum)(operands[a], operands[b], out=operands[out])
    return operands[target].reshape(shape).clone()


@functools.lru_cache(maxsize=8)
def _selection_network(n: int, rank: int) -> tuple[tuple[tuple[bool, int, int, int], ...], int, int]:
    """Min/max operations selecting the ``rank``-th smallest of ``n`` values.

    Batcher's odd-even merge sort on the next power of two (padding with +inf), with the
    comparators that touch padding folded away and those that do not feed output ``rank`` pruned.
    Returns ``(operations, target, n_slots)``: an operation ``(is_min, a, b, out)`` reads operands
    ``a`` and ``b`` and writes ``out``; operands ``0 .. n-1`` are the inputs, ``n ..`` buffer slots
    (``n_slots`` of them, reused once their value is dead); ``target`` holds the result.
    """
    size = 1 << max(0, (n - 1).bit_length())
    infinity = -1
    wires = list(range(n)) + [infinity] * (size - n)  # symbols: inputs 0..n-1, then results
    symbols = itertools.count(n)
    operations = []
    for low, high in _odd_even_merge_sort(size):
        a, b = wires[low], wires[high]
        if b == infinity:
            continue
        if a == infinity:
            wires[low], wires[high] = b, a
            continue
        smaller, larger = next(symbols), next(symbols)
        operations += [(True, a, b, smaller), (False, a, b, larger)]
        wires[low], wires[high] = smaller, larger
    target = wires[rank]
    needed, kept = {target}, []
    for operation in reversed(operations):
        if operation[3] in needed:
            kept.append(operation)
            needed.update(operation[1:3])
    kept.reverse()
    # register allocation: a result takes a slot freed by a value used for the last time
    last_use = {}
    for index, (_, a, b, _) in enumerate(kept):
        last_use[a] = last_use[b] = index
    slot_of: dict[int, int] = {}
    free: list[int] = []
    n_slots = 0
    allocated = []
    for index, (is_min, a, b, out) in enumerate(kept):
        for symbol in (a, b):
            if symbol >= n and last_use[symbol] == index:
                free.append(slot_of[symbol])
        if free:
            slot_of[out] = free.pop()
        else:
            slot_of[out], n_slots = n_slots, n_slots + 1
        operand = lambda symbol: symbol if symbol < n else n + slot_of[symbol]  # noqa: E731
        allocated.append((is_min, operand(a), operand(b), operand(out)))
    return tuple(allocated), n + slot_of[target], n_slots


def _odd_even_merge_sort(n: int) -> list[tuple[int, int]]:
    """Comparators (low, high) of Batcher's odd-even merge sort of ``n`` (a power of two) wires."""
    comparators = []
    width = 1
    while width < n:
        step = width
        while step >= 1:
            for start in range(step % width, n - step, 2 * step):
                for offset in range(min(step, n - start - step)):
                    low, high = start + offset, start + offset + step
                    if low // (2 * width) == high // (2 * width):
                        comparators.append((low, high))
            step //= 2
        width *= 2
    return comparators
