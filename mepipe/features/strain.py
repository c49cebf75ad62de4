"""Optical strain of a flow field, and the (u, v, strain) image that STSTNet-style models take.

Optical strain (Shreve et al. 2011; Liong et al. 2014) is the magnitude of the infinitesimal
strain tensor of the displacement field ``(u, v)``:

    exx = du/dx,   eyy = dv/dy,   exy = (du/dy + dv/dx) / 2
    strain = sqrt(exx**2 + eyy**2 + 2 * exy**2)

(the Frobenius norm of the symmetric 2 x 2 tensor; ``exy`` appears twice, as exy and eyx).

Derivatives are ``np.gradient``'s with ``edge_order=1``: central differences inside, one-sided
differences on the first and last row and column, unit pixel spacing. Beware the axes:
``np.gradient(u)`` returns the derivative along axis 0 first, which is d/dy (rows), then d/dx
(columns). Public micro-expression code often unpacks it as ``ux, uy = np.gradient(u)``, which
swaps du/dx and du/dy: exx and eyy become du/dy and dv/dx, and the shear term the wrong
combination; a pure horizontal shear (u = b y) then shows strain |b| on the diagonal instead of
|b| / sqrt(2) off it, and a pure stretch (u = a x) appears as shear.
"""

from __future__ import annotations

import numpy as np

NORMALIZATIONS = ("none", "minmax")


def optical_strain(flow: np.ndarray) -> np.ndarray:
    """Optical strain magnitude of a (2, H, W) flow (x then y, pixels): (H, W) float32, unitless.

    ``sqrt(exx**2 + eyy**2 + 2 exy**2)`` with the derivatives described in the module docstring
    (central differences; one-sided on the border rows and columns). Needs H, W >= 2.
    """
    flow = _check_flow(flow)
    u, v = flow.astype(np.float64)
    du_dy, du_dx = np.gradient(u, edge_order=1)  # axis 0 (rows, y) first
    dv_dy, dv_dx = np.gradient(v, edge_order=1)
    shear = 0.5 * (du_dy + dv_dx)
    return np.sqrt(du_dx**2 + dv_dy**2 + 2.0 * shear**2).astype(np.float32)


def flow_strain_image(flow: np.ndarray, normalize: str = "none") -> np.ndarray:
    """(3, H, W) float32 (u, v, optical strain) of a (2, H, W) flow: the STSTNet-style input.

    ``normalize``:

    ``"none"``
        raw values: u and v in pixels, strain unitless. Magnitudes stay comparable across samples
        (a model with its own input normalisation, or a study of motion size, needs this). The
        STSTNet paper (Liong et al., FG 2019) describes its input this way: the three fields,
        resized to 28 x 28, with no rescaling mentioned.
    ``"minmax"``
        each channel of this sample mapped to [0, 1] by its own minimum and maximum. Public
        preprocessing scripts of the STSTNet/HTNet line (HTNet: Wang et al. 2024) do this before
        saving (u, v, strain) as an 8-bit PNG (there on [0, 255], and dividing by zero on a
        constant channel). It discards the size of the motion: a faint and a strong expression of
        the same shape give the same image. A constant channel maps to 0 here.
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    flow = _check_flow(flow)
    image = np.concatenate([flow.astype(np.float32), optical_strain(flow)[None]], axis=0)
    if normalize == "minmax":
        low = image.min(axis=(1, 2), keepdims=True)
        span = image.max(axis=(1, 2), keepdims=True) - low
        # a constant channel has span 0: it maps to 0 instead of dividing by zero
        image = np.where(span > 0, (image - low) / np.where(span > 0, span, 1.0), 0.0).astype(np.float32)
    return image


def _check_flow(flow) -> np.ndarray:
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[0] != 2:
        raise ValueError(f"flow must be (2, H, W) (x then y displacement), got shape {flow.shape}")
    if not np.issubdtype(flow.dtype, np.floating):
        raise ValueError(f"flow must be floating point, got dtype {flow.dtype}")
    if flow.shape[1] < 2 or flow.shape[2] < 2:
        raise ValueError(f"flow must be at least 2 x 2 pixels for derivatives, got {flow.shape[1:]}")
    return flow
