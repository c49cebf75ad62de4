"""Dynamic images: one image that ranks a clip's frames in time (rank pooling).

The MSMMT paper (Wang F., Li J., Qi C., Wang L., Wang P., "Multi-scale multi-modal
micro-expression recognition algorithm based on transformer", section 3.1, equations (1)-(4))
builds its texture input this way, after Fernando et al. and Bilen et al.:

- equation (1): the time-varying mean ``phi_t = (1/t) sum_{tau <= t} sigma(F_tau)`` of the frames,
  ``sigma(F)`` the frame's pixel vector;
- equation (2): the score of frame t, ``psi(t | d) = <d, phi_t>``;
- equations (3)-(4): ``d* = argmin_d  lambda/2 ||d||^2
  + 2/(T(T-1)) sum_{l > t} max(0, 1 - psi(l | d) + psi(t | d))``, a RankSVM whose learned vector
  ``d*``, shaped like a frame, is the dynamic image (the paper prints the regulariser's weight
  as "d/2", read here as the lambda/2 of Bilen et al.'s equation).

:func:`rank_pooling` solves that problem exactly; :func:`approximate_rank_pooling` is the closed
form of Bilen H., Fernando B., Gavves E., Vedaldi A., Gould S., "Dynamic Image Networks for Action
Recognition", CVPR 2016 ("approximate rank pooling"): one gradient step of the same problem from
``d = 0``, a fixed weighted sum of the frames. Fernando B., Gavves E., Oramas J., Ghodrati A.,
Tuytelaars T., "Modeling video evolution for action recognition", CVPR 2015, introduced rank
pooling.

The scale of the problem (feature normalisation)
------------------------------------------------
Equation (4) does not fix lambda relative to the pixels' units, and the optimum depends on it:
scaling the features by k acts like multiplying C = 2 / (lambda T (T - 1)) by k^2. Fernando et
al.'s released VideoDarwin code (``genRepresentation`` / ``liblinearsvr``) fixes it: it takes
the time-varying mean (``cumsum`` divided by t), optionally a non-linearity ("ssr", the signed
square root), then L2-normalises every ``phi_t`` (``normalizeL2`` on each row) and solves with
C = 1. We keep that scale and the paper's linear ``sigma`` (the pixel vector, no square root):

- ``normalization="clip"`` (default): every ``phi_t`` divided by one number, the root mean square
  over t of ``||phi_t||``. The features have norm 1 up to the clip's own brightness changes (well
  under 1 % on aligned face crops), as in Fernando et al.'s code, and the map from frames to
  features stays linear, so this is exactly equations (1)-(4) with
  ``lambda = 2 s^2 / (C T (T - 1))`` for the clip's scale s. The dynamic image does not depend on
  the pixels' units (0..255 or 0..1).
- ``normalization="frame"``: Fernando et al.'s ``normalizeL2`` literally, each ``phi_t`` to norm 1.
  The features are then blind to a change of overall gain (illumination flicker), which the
  approximate image keeps.
- ``normalization="none"``: raw intensities with C = 1, the hard-margin regime for 8-bit video.

What that scale does on micro-expressions. Consecutive ``phi_t`` of an aligned face clip differ by
a fraction of a percent of their norm, so with unit-norm features and C = 1 no pair reaches the
margin 1, and the optimum is exactly ``C sum_{l > t} (phi_l - phi_t)``, which is Bilen et al.'s
approximate dynamic image (their derivation; a test checks it). Measured on the 36 rendered
synthetic CASME II clips of the default demo set (aligned 224 x 224 crops, onset to apex): the
exact image of ``"clip"`` correlates with the approximate one at r = 1.000 (min and median), of
``"frame"`` at min 0.846, median 0.998 (the one low clip has the largest flicker), of ``"none"`` at
min 0.83, median 0.90; all three order all 36 clips.

Which frames (``dynamic_image_frames``)
---------------------------------------
The paper pools "an entire video sequence" without saying which part of a labelled clip; its
feature extraction uses the onset and apex frames (section 4.1: for SMIC, which has no apex
labels, "we take the intermediate frames as the apex frames for feature extraction"). We pool
onset to apex. From apex to offset the expression returns to neutral, and the time-varying mean of
a rise and fall is not monotone along the expression (it turns back once the frames fall below
it), so the frames cannot be ranked by the expression itself: measured on the same 36 clips over
onset to offset, the exact image orders only 1 clip at Fernando et al.'s scale, and at the raw
scale it orders them all by fitting sensor noise (r = 0.07-0.62 with the approximate image).

Colour
------
The paper: "A dynamic imaging is a standard RGB image", pooling "the RGB feature vector of each
frame F_T", ``sigma(F_T)``. So an RGB clip ``(T, H, W, 3)`` is ranked as one vector of all
``H * W * 3`` values per frame (one ranking, one set of weights for every pixel and channel), and
the result reshaped back to ``(H, W, 3)``: what Bilen et al.'s ``compute_approximate_dynamic_images``
does with its ``H x W x D x N`` array (one call of ``vl_nnarpooltemporal`` over all of it), not
three gray images of the channels pooled apart. For the approximate image, a weighted sum per
entry, the two agree channel for channel; for the exact image they do not (the SVM's margins and
norms run over all channels).

Both functions return a :class:`DynamicImage`: the raw vector and the picture Bilen et al.'s code
shows (``visualize_approximate_dynamic_images.m``: ``di = di - min(di(:)); di = 255 * di ./
max(di(:)); uint8(di)``). ``di(:)`` is every entry of the ``H x W x 3`` image, so the scaling to
0..255 takes one minimum and one maximum over all channels together, as the gray code does over
its pixels; channels keep their relative strength (a channel that changed little stays dim).
Frames are ``(T, H, W)`` gray or ``(T, H, W, 3)`` RGB (any channel count C works the same way),
any real dtype.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Literal

import numpy as np

#: Weight C of the summed pairwise hinge losses in :func:`rank_pooling`. Fernando et al.'s released
#: VideoDarwin code documents its C as "set to 1", on L2-normalised time-varying means.
RANK_SVM_C = 1.0

Normalization = Literal["clip", "frame", "none"]
#: Default feature normalisation of :func:`rank_pooling` (see the module docstring).
FEATURE_NORMALIZATION: Normalization = "clip"


@dataclass(frozen=True)
class DynamicImage:
    """A dynamic image.

    ``raw``: float32 array of the frame's shape ``(H, W)`` or ``(H, W, 3)``, the pooled vector
    (for :func:`approximate_rank_pooling` in the frames' intensity units times the dimensionless
    weights; for :func:`rank_pooling` the RankSVM's d*, in inverse units of its features
    :func:`rank_pooling_features`).
    ``image``: uint8 array of the same shape, ``(H, W)`` or ``(H, W, 3)``: ``raw`` min-max scaled
    to 0..255 over the whole image (one min and one max for all channels together), as Bilen et
    al.'s ``visualize_approximate_dynamic_images.m`` does (``min(di(:))``, ``max(di(:))``); all
    zeros when ``raw`` is constant.
    ``scores``: for :func:`rank_pooling`, the (T,) float64 ranking scores ``psi(t | d*)`` of
    equation (2), ``<d*, x_t>`` with ``x_t`` the features the SVM ranked; ``None`` for
    :func:`approximate_rank_pooling`.
    """

    raw: np.ndarray
    image: np.ndarray
    scores: np.ndarray | None = None


def approximate_rank_pooling_weights(n_frames: int) -> np.ndarray:
    """Weights alpha_t of approximate rank pooling, Bilen et al. (2016).

    ``alpha_t = 2 (T - t + 1) - (T + 1) (H_T - H_{t-1})`` for ``t = 1..T``, with ``H_t`` the t-th
    harmonic number (``H_0 = 0``). They sum to zero, so a constant offset of all frames does not
    change the image; the first is the most negative, the last is ``(T - 1) / T``.

    Parameters
    ----------
    n_frames : T, at least 2 (one frame has no order).

    Returns
    -------
    (T,) float64 weights, first frame first.
    """
    count = _frame_count(n_frames)
    t = np.arange(1, count + 1)
    harmonic = np.concatenate([[0.0], np.cumsum(1.0 / t)])  # harmonic[k] = H_k
    return 2.0 * (count - t + 1) - (count + 1) * (harmonic[count] - harmonic[t - 1])


def approximate_rank_pooling(frames: np.ndarray) -> DynamicImage:
    """Approximate dynamic image of Bilen et al. (2016): ``sum_t alpha_t F_t``.

    Parameters
    ----------
    frames : (T, H, W) gray or (T, H, W, 3) RGB clip, T >= 2, any real dtype (e.g. uint8
        intensities).

    Returns
    -------
    :class:`DynamicImage`; ``raw`` (float32, (H, W) or (H, W, 3)) is ``sum_t alpha_t F_t`` with
    the weights of :func:`approximate_rank_pooling_weights`, in the frames' intensity units, the
    same weights for every pixel and channel (Bilen et al.'s ``vl_nnarpooltemporal`` on the
    ``H x W x 3 x T`` array); ``image`` (uint8, same shape) its min-max picture over all channels
    (:func:`display_image`).
    """
    clip = _check_frames(frames)
    weights = approximate_rank_pooling_weights(clip.shape[0])
    # The weights sum to zero, so subtracting the first frame changes nothing in exact arithmetic;
    # it cancels the large common intensity before rounding can, which keeps the subtle changes of a
    # micro-expression and makes a static clip exactly zero.
    flat = clip.reshape(clip.shape[0], -1).astype(np.float32)
    flat -= flat[0].copy()
    raw = weights.astype(np.float32) @ flat
    raw = raw.reshape(clip.shape[1:]).astype(np.float32)
    return DynamicImage(raw=raw, image=display_image(raw))


def dynamic_image_frames(frames: np.ndarray, onset: int, apex: int) -> np.ndarray:
    """The frames a micro-expression's dynamic image pools: onset to apex, both included.

    See the module docstring for why onset to apex and not onset to offset.

    Parameters
    ----------
    frames : (T, H, W) gray or (T, H, W, 3) RGB clip (any (T, ...) array).
    onset, apex : indices into its first axis, ``0 <= onset < apex < T``.

    Returns
    -------
    The view ``frames[onset : apex + 1]`` (at least 2 frames), of the frames' shape and dtype.
    """
    count = len(frames)
    onset, apex = (_index(value, name) for value, name in ((onset, "onset"), (apex, "apex")))
    if not 0 <= onset < apex < count:
        raise ValueError(f"need 0 <= onset < apex < {count} (the clip's frame count), got onset {onset}, apex {apex}")
    return frames[onset : apex + 1]


def time_varying_mean(frames: np.ndarray) -> np.ndarray:
    """phi_t of the MSMMT paper's equation (1): the mean of frames 1..t, for every t.

    Parameters
    ----------
    frames : (T, H, W) or (T, H, W, C) clip, any real dtype.

    Returns
    -------
    float64 array of the frames' shape; entry t (0-based) is the mean of frames 0..t.
    """
    clip = _check_frames(frames, min_frames=1)
    return _running_means(clip.reshape(clip.shape[0], -1)).reshape(clip.shape)


def rank_pooling_features(frames: np.ndarray, normalization: Normalization = FEATURE_NORMALIZATION) -> np.ndarray:
    """The vectors x_t that :func:`rank_pooling` ranks: the time-varying means, normalised.

    Parameters
    ----------
    frames : (T, H, W) or (T, H, W, C) clip, any real dtype.
    normalization : "clip" (default): ``phi_t / s`` with ``s`` the root mean square over t of
        ``||phi_t||``; "frame": ``phi_t / ||phi_t||`` (Fernando et al.'s ``normalizeL2``; a zero
        ``phi_t`` stays zero); "none": ``phi_t``. Norms run over all pixels and channels.

    Returns
    -------
    float64 array of the frames' shape; entry t is x_t. The ranking scores of a dynamic image
    ``d`` are ``features.reshape(T, -1) @ d.ravel()``.
    """
    clip = _check_frames(frames, min_frames=1)
    _check_normalization(normalization)
    means = time_varying_mean(clip)
    if normalization == "none":
        return means
    norms = np.linalg.norm(means.reshape(len(means), -1), axis=1)
    if normalization == "clip":
        scale = float(np.sqrt(np.mean(norms**2)))
        return means / scale if scale > 0 else means
    norms[norms == 0] = 1.0
    return means / norms.reshape((-1,) + (1,) * (clip.ndim - 1))


def rank_pooling(
    frames: np.ndarray,
    C: float = RANK_SVM_C,
    normalization: Normalization = FEATURE_NORMALIZATION,
    tolerance: float = 1e-6,
    max_iter: int = 100_000,
) -> DynamicImage:
    """Exact dynamic image: the RankSVM of the MSMMT paper's equations (1)-(4), solved by scikit-learn.

    The problem, with ``x_t`` the normalised time-varying means (:func:`rank_pooling_features`), is
    ``min_d 1/2 ||d||^2 + C sum_{l > t} max(0, 1 - <d, x_l - x_t>)``, which is equation (4)
    divided by lambda, with ``lambda = 2 / (C T (T - 1))`` in the features' units. It is a linear
    SVM without bias on the T(T-1)/2 pair differences ``x_l - x_t``, all labelled "later". We give
    it to ``sklearn.svm.LinearSVC(loss="hinge", fit_intercept=False)`` (liblinear's dual coordinate
    descent, a maintained solver) with each difference also entered negated and labelled "earlier":
    a hinge term is unchanged by flipping both the sign of its sample and its label, so with
    ``C/2`` per sample the objective is exactly the one above.

    Why not LinearSVR as in Fernando et al.'s own code: that regresses the frame index t on
    ``x_t`` (a pointwise surrogate with an epsilon-insensitive loss), a different problem from
    the pairwise hinge of equation (4), which is the one the paper writes down. We take from their
    code the features' scale and C (module docstring), not the loss.

    The optimum lies in the span of the differences ``x_l - x_t`` (representer theorem), of
    dimension r <= T - 1. So the SVM is solved in the coordinates of an orthonormal basis of that
    span (from the eigenvectors of the T x T Gram matrix of the centred ``x_t``, equivalent to
    their thin SVD), which preserves every inner product and norm, and the solution is mapped back
    to pixels. This is the same problem, not an approximation (a test checks it against the SVM
    on raw pixel differences); it keeps the solver's input at T(T-1) x r instead of
    T(T-1) x (H W C), which is 1.4 GB for 60 frames of 224 x 224.

    Regimes. When no pair reaches margin 1 (small C, or the unit-norm features of the default on
    subtle clips), the optimum is exactly ``C sum_{l > t} (x_l - x_t)``; for "clip" and "none"
    that is ``C / s * approximate_rank_pooling(frames).raw`` (s = 1 for "none"). With raw 8-bit
    intensities and C = 1 ("none") it is close to the hard-margin regime instead: consecutive
    scores differ by about 1 or more wherever the clip allows it, fitted partly to sensor noise.

    Colour: an RGB clip is one ranking of the whole ``H * W * 3`` frame vector (module
    docstring). With three equal channels the problem is the gray one in other units: for "clip"
    and "frame" every channel of d* is the gray d* / sqrt(3), so ``image`` is the gray picture in
    all three channels; for "none" it is the gray problem with 3 C, divided by 3.

    Parameters
    ----------
    frames : (T, H, W) gray or (T, H, W, 3) RGB clip, T >= 2, any real dtype. For a
        micro-expression, the onset-to-apex frames (:func:`dynamic_image_frames`).
    C : weight of the summed pairwise hinge losses (> 0), default 1 as in Fernando et al.'s code.
    normalization : "clip" (default), "frame" or "none"; see :func:`rank_pooling_features`.
    tolerance, max_iter : stopping rule of liblinear's dual coordinate descent. A solve that
        stops at ``max_iter`` emits scikit-learn's ``ConvergenceWarning``.

    Returns
    -------
    :class:`DynamicImage`; ``raw`` is d* (float32, (H, W) or (H, W, 3)), ``image`` its min-max
    picture over all channels (uint8, same shape), ``scores`` the ranking scores ``<d*, x_t>``
    (float64, (T,)).
    """
    from sklearn.svm import LinearSVC

    if not (np.isfinite(C) and C > 0):
        raise ValueError(f"C must be a positive number, got {C}")
    clip = _check_frames(frames)
    _check_normalization(normalization)
    count, shape = clip.shape[0], clip.shape[1:]
    flat = clip.reshape(count, -1)
    # Only differences of x enter the problem. For "none" and "clip" the features are linear in the
    # frames, so the first frame can be subtracted first: the running means then carry only the
    # clip's changes, not its large common intensity, which float64 rounding would otherwise mix in.
    first = flat[0].astype(np.float64)
    changes = _running_means(flat)
    changes -= first  # phi_t - F_1
    # ||phi_t||^2 = ||phi_t - F_1||^2 + 2 <phi_t - F_1, F_1> + ||F_1||^2, without a T x HWC temporary
    squares = np.einsum("ij,ij->i", changes, changes) + 2 * (changes @ first) + first @ first
    norms = np.sqrt(np.maximum(squares, 0.0))
    if normalization == "none":
        scale, features = 1.0, changes
    elif normalization == "clip":
        scale = float(np.sqrt(np.mean(norms**2))) or 1.0
        features = changes / scale
    else:
        scale = 1.0
        norms[norms == 0] = 1.0
        features = (changes + first) / norms[:, None]
    # x_t = features[t] + shift: "none" and "clip" subtracted the (scaled) first frame
    shift = np.zeros_like(first) if normalization == "frame" else first / scale
    centred = features - features.mean(axis=0)
    # The span of the centred x and every inner product in it, from its T x T Gram matrix (the
    # thin SVD of the T x HWC matrix gives the same basis and costs ten times more).
    gram = centred @ centred.T
    eigenvalues, eigenvectors = np.linalg.eigh(gram)
    # float64 rounding leaves errors of about T * 1e-16 of the largest eigenvalue: anything below
    # 1e-12 of it is not a direction of the clip
    keep = eigenvalues > max(eigenvalues.max(), 0.0) * 1e-12
    if not keep.any():  # a static clip: every pair difference is zero, so the regulariser alone decides
        raw = np.zeros(shape, np.float32)
        return DynamicImage(raw=raw, image=display_image(raw), scores=np.zeros(count))
    singular = np.sqrt(eigenvalues[keep])
    coordinates = eigenvectors[:, keep] * singular  # x_t in an orthonormal basis of the span
    earlier, later = np.triu_indices(count, k=1)
    differences = coordinates[later] - coordinates[earlier]
    samples = np.concatenate([differences, -differences])
    labels = np.concatenate([np.ones(len(differences)), -np.ones(len(differences))])
    solver = LinearSVC(
        C=C / 2, loss="hinge", fit_intercept=False, dual=True, tol=tolerance, max_iter=max_iter, random_state=0
    )
    solver.fit(samples, labels)
    # back to pixels: basis vector k is centred.T @ eigenvector_k / singular_k
    direction = centred.T @ (eigenvectors[:, keep] @ (solver.coef_[0] / singular))
    scores = features @ direction + float(shift @ direction)
    raw = direction.reshape(shape).astype(np.float32)
    return DynamicImage(raw=raw, image=display_image(raw), scores=scores)


def display_image(raw: np.ndarray) -> np.ndarray:
    """uint8 picture of a dynamic image the way Bilen et al.'s code shows it.

    ``(raw - min) * 255 / (max - min)`` with min and max over the whole array (all channels),
    rounded half away from zero like MATLAB's ``uint8``. A constant array gives zeros (the
    MATLAB code would divide by zero).

    Parameters
    ----------
    raw : real array of any shape.

    Returns
    -------
    uint8 array of the same shape.
    """
    values = np.asarray(raw, dtype=np.float64)
    low, high = values.min(), values.max()
    if high == low:
        return np.zeros(values.shape, np.uint8)
    return np.floor((values - low) * (255.0 / (high - low)) + 0.5).astype(np.uint8)


def _running_means(flat: np.ndarray) -> np.ndarray:
    """(T, N) float64 running means of the rows of a (T, N) array: row t is the mean of rows 0..t.

    A loop over the T rows, each one whole-row addition: numpy's ``cumsum`` along the first axis
    of a C-ordered array is about 20 times slower (40 ms against 2 ms for 60 x 224 x 224).
    """
    sums = flat.astype(np.float64)  # a copy even for float64 input
    for t in range(1, len(sums)):
        sums[t] += sums[t - 1]
    sums /= np.arange(1, len(sums) + 1)[:, None]
    return sums


def _frame_count(n_frames) -> int:
    try:
        count = int(n_frames)
    except (TypeError, ValueError):
        raise ValueError(f"n_frames must be an integer, got {n_frames!r}") from None
    if count != n_frames or count < 2:
        raise ValueError(f"a dynamic image needs at least 2 frames (an integer count), got {n_frames!r}")
    return count


def _check_normalization(normalization) -> None:
    if normalization not in ("clip", "frame", "none"):
        raise ValueError(f'normalization must be "clip", "frame" or "none", got {normalization!r}')


def _index(value, name: str) -> int:
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer frame index, got {value!r}") from None


def _check_frames(frames: np.ndarray, min_frames: int = 2) -> np.ndarray:
    clip = np.asarray(frames)
    if clip.ndim not in (3, 4):
        raise ValueError(f"expected frames of shape (T, H, W) or (T, H, W, C), got shape {clip.shape}")
    if clip.dtype == bool or not (np.issubdtype(clip.dtype, np.integer) or np.issubdtype(clip.dtype, np.floating)):
        raise ValueError(f"expected integer or float pixel values, got dtype {clip.dtype}")
    if clip.shape[0] < min_frames:
        raise ValueError(f"a dynamic image needs at least {min_frames} frames, got shape {clip.shape}")
    if 0 in clip.shape[1:]:
        raise ValueError(f"expected non-empty frames, got shape {clip.shape}")
    if np.issubdtype(clip.dtype, np.floating) and not np.all(np.isfinite(clip)):
        raise ValueError("frames contain NaN or infinite values")
    return clip
