"""The ground-truth file of a synthetic dataset tree: ``<root>/mepipe_ground_truth.npz``.

One file per tree, readable with plain ``numpy.load`` (it is an ``.npz``) or with
:class:`GroundTruth`. Members:

``manifest.json``
    JSON: ``{"format": 1, "dataset", "fps", "frame_size": [W, H], "seed", "subjects": {...},
    "clips": [...]}``. Each clip: ``subject``, ``clip``, ``path`` (clip folder, relative),
    ``emotion`` and ``action_units`` as the sheet codes them, ``rendered_action_units`` (what moves,
    e.g. ``["6", "12"]``, ``"L12"`` for one side) and ``action_units_source`` (``sheet`` or
    ``emotion`` when the sheet's AUs have no motion model), ``first_frame``/``last_frame``,
    ``onset``/``apex``/``offset`` as the sheet gives them (null where it gives none) and
    ``true_onset``/``true_apex``/``true_offset`` (the frames the motion follows; ``apex_source`` is
    ``sheet`` or ``drawn``), ``amplitude_px`` (largest expression displacement at apex),
    ``blink_frames``, ``head`` (drift in px, rotation in degrees) and ``label`` fields. A manifest
    tree (``dataset`` ``manifest``, rendered in the layout ``frame_layout``) adds ``video`` to each
    clip: true when ``path`` is the clip's video file, whose frame ``i`` is frame ``first_frame + i``.
``<subject>/<clip>/expression_flow.npy``
    (2, H, W) float16: displacement from the onset frame to the apex frame caused by the
    expression, x then y, in pixels, at every pixel of the onset frame (frame coordinates). float16
    keeps it within 0.002 px at 4 px; zero away from the face, so it compresses.
``<subject>/<clip>/head_onset_to_apex.npy``
    (2, 3) float64 affine matrix of the rigid head motion from onset to apex. Head motion is rigid,
    so the matrix is its exact, compact form; :meth:`GroundTruth.head_flow` expands it to the dense
    (2, H, W) field. Onset-to-apex motion of a pixel = expression + head.
``<subject>/<clip>/head_matrices.npy``
    (n_frames, 2, 3) float64: neutral face -> each frame, first to last frame.
``<subject>/<clip>/blink_mask.npy``
    (H, W) bool, only for clips with a blink: every pixel a blink changes in any frame, in that
    frame's coordinates.
``subjects/<subject>/landmarks.npy``
    (68, 2) float64: dlib's landmarks on the subject's neutral face (before head motion).

The file is byte-identical for the same seed and options: members are written in plan order with
fixed time stamps.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

FILE_NAME = "mepipe_ground_truth.npz"
FORMAT_VERSION = 1
_FIXED_DATE = (2020, 1, 1, 0, 0, 0)


def face_evaluation_mask(landmarks: np.ndarray, shape: tuple[int, int], eye_margin: float = 0.15) -> np.ndarray:
    """(H, W) bool pixels over which motion is scored against the truth: the face, eyes excluded.

    The face is the convex hull of the 68 landmarks; each eye is its landmark polygon grown by
    ``eye_margin`` inter-ocular distances (blinks and lid motion are what eye masking removes).
    """
    import cv2

    from mepipe.synth.motion import FaceFrame

    mask = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(landmarks).astype(np.int32)), 1)
    eyes = np.zeros(shape, np.uint8)
    for eye in (slice(36, 42), slice(42, 48)):
        cv2.fillConvexPoly(eyes, cv2.convexHull(np.round(landmarks[eye]).astype(np.int32)), 1)
    grow = max(1, int(round(eye_margin * FaceFrame.from_landmarks(landmarks).iod)))
    eyes = cv2.dilate(eyes, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
    return (mask > 0) & (eyes == 0)


class GroundTruthWriter:
    """Writes the ground-truth file member by member (clips arrive one at a time)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._partial = self.path.with_name(self.path.name + ".partial")
        self._zip = zipfile.ZipFile(self._partial, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6)

    def add_array(self, name: str, array: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
        self._add(name + ".npy", buffer.getvalue())

    def add_clip(self, subject: str, clip: str, truth: dict) -> None:
        prefix = f"{subject}/{clip}/"
        self.add_array(prefix + "expression_flow", truth["expression_flow"].astype(np.float16))
        self.add_array(prefix + "head_onset_to_apex", truth["head_onset_to_apex"])
        self.add_array(prefix + "head_matrices", truth["head_matrices"])
        if truth["blink_mask"].any():
            self.add_array(prefix + "blink_mask", truth["blink_mask"])

    def close(self, manifest: dict) -> None:
        self._add("manifest.json", json.dumps(manifest, indent=1, sort_keys=True).encode())
        self._zip.close()
        self._partial.replace(self.path)

    def abort(self) -> None:
        self._zip.close()
        self._partial.unlink(missing_ok=True)

    def _add(self, name: str, data: bytes) -> None:
        info = zipfile.ZipInfo(name, date_time=_FIXED_DATE)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        self._zip.writestr(info, data, compresslevel=6)


class GroundTruth:
    """Reader of a synthetic tree's ground truth.

    >>> truth = GroundTruth("cache/demo/casme2")          # the tree's root, or the .npz itself
    >>> clip = truth.clips[0]
    >>> flow = truth.expression_flow(clip["subject"], clip["clip"])   # (2, H, W) float32
    """

    def __init__(self, path: str | Path):
        path = Path(path)
        if path.is_dir():
            path = path / FILE_NAME
        if not path.is_file():
            raise FileNotFoundError(f"no synthetic ground truth at {path} (made by `mepipe synth`)")
        self.path = path
        self._npz = np.load(path, allow_pickle=False)
        self.manifest = json.loads(self._npz["manifest.json"])
        if self.manifest.get("format") != FORMAT_VERSION:
            raise ValueError(f"{path}: ground-truth format {self.manifest.get('format')}, expected {FORMAT_VERSION}")
        self.clips: list[dict] = self.manifest["clips"]
        self._by_key = {(c["subject"], c["clip"]): c for c in self.clips}

    @property
    def frame_shape(self) -> tuple[int, int]:
        width, height = self.manifest["frame_size"]
        return height, width

    def clip(self, subject: str, clip: str) -> dict:
        try:
            return self._by_key[(subject, clip)]
        except KeyError:
            raise KeyError(f"{self.path}: no clip {subject}/{clip}") from None

    def expression_flow(self, subject: str, clip: str) -> np.ndarray:
        """(2, H, W) float32 onset -> apex expression displacement, onset-frame coordinates."""
        self.clip(subject, clip)
        return self._npz[f"{subject}/{clip}/expression_flow.npy"].astype(np.float32)

    def head_matrix(self, subject: str, clip: str) -> np.ndarray:
        """(2, 3) rigid head motion from onset to apex."""
        self.clip(subject, clip)
        return self._npz[f"{subject}/{clip}/head_onset_to_apex.npy"]

    def head_flow(self, subject: str, clip: str) -> np.ndarray:
        """(2, H, W) float32 dense onset -> apex head displacement, onset-frame coordinates."""
        from mepipe.synth.render import head_flow

        return head_flow(self.head_matrix(subject, clip), self.frame_shape)

    def total_flow(self, subject: str, clip: str) -> np.ndarray:
        """(2, H, W) float32 onset -> apex displacement of every onset-frame pixel (expression + head)."""
        return self.expression_flow(subject, clip) + self.head_flow(subject, clip)

    def crop_flow(self, subject: str, clip: str, onset_matrix: np.ndarray, apex_matrix: np.ndarray, size: int) -> np.ndarray:
        """(2, S, S) float32 true onset -> apex displacement as seen between two aligned crops.

        ``onset_matrix`` and ``apex_matrix`` are the (2, 3) frame -> crop transforms of the two
        frames (``AlignedClip.matrices[onset]`` and ``[apex]``). A crop pixel p of the onset crop
        shows frame point x = M_onset^-1 p, which moves to x + f(x) in the apex frame (f the total
        flow, bilinearly sampled) and appears at M_apex (x + f(x)) in the apex crop; the result is
        that position minus p.
        """
        import cv2

        flow = self.total_flow(subject, clip)
        linear = np.linalg.inv(onset_matrix[:, :2])
        inverse = np.hstack([linear, -(linear @ onset_matrix[:, 2:])])
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
        frame_x = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
        frame_y = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
        map_x, map_y = frame_x.astype(np.float32), frame_y.astype(np.float32)
        moved_x = frame_x + cv2.remap(flow[0], map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        moved_y = frame_y + cv2.remap(flow[1], map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        crop_x = apex_matrix[0, 0] * moved_x + apex_matrix[0, 1] * moved_y + apex_matrix[0, 2]
        crop_y = apex_matrix[1, 0] * moved_x + apex_matrix[1, 1] * moved_y + apex_matrix[1, 2]
        return np.stack([crop_x - xs, crop_y - ys]).astype(np.float32)

    def head_matrices(self, subject: str, clip: str) -> np.ndarray:
        """(n_frames, 2, 3) neutral face -> frame, first to last frame."""
        self.clip(subject, clip)
        return self._npz[f"{subject}/{clip}/head_matrices.npy"]

    def blink_mask(self, subject: str, clip: str) -> np.ndarray:
        """(H, W) bool pixels changed by a blink in any frame (all False for a clip without one)."""
        self.clip(subject, clip)
        key = f"{subject}/{clip}/blink_mask"  # NpzFile lists its members without ".npy"
        if key in self._npz.files:
            return self._npz[key]
        return np.zeros(self.frame_shape, bool)

    def neutral_landmarks(self, subject: str) -> np.ndarray:
        """(68, 2) dlib landmarks of the subject's neutral face."""
        return self._npz[f"subjects/{subject}/landmarks.npy"]

    def landmarks(self, subject: str, clip: str, frame: int) -> np.ndarray:
        """(68, 2) where the neutral landmarks are carried by the head motion in ``frame``.

        Expression motion is not included: it is zero at onset and small (at most the clip's
        amplitude) elsewhere.
        """
        entry = self.clip(subject, clip)
        matrix = self.head_matrices(subject, clip)[frame - entry["first_frame"]]
        points = self.neutral_landmarks(subject)
        return points @ matrix[:, :2].T + matrix[:, 2]

    def close(self) -> None:
        self._npz.close()
