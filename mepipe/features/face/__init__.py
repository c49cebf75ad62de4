"""The face stage: detection, 68 landmarks, alignment, crop and eye mask, with quality figures.

Every artifact starts from the aligned face crops made here, as the papers of the project do
(``../shared/papers``): dlib's landmarks (MobileViT, MSMMT, CropNet, CVA), the face rotated so the
eye line is horizontal (MobileViT's angle gamma from the eye centres; MSMMT's one affine transform
from the first frame's inner eye corners, applied to every frame), a fixed-size crop (256 px
MobileViT, 224 px CVA, 320 px CropNet's input), and the eyes masked. Only the MobileViT paper
(Liu et al. 2022) masks the eyes: "Finally, the eyes are masked to avoid extraneous noise from
eye movements." MSMMT, CropNet, CVA and MFVAN do not mention masking them, so the mask is always
made and whether it is applied is a setting.

The steps, each a function of its own:

:func:`find_face` (``landmarks``)
    dlib's frontal detector (HOG + linear SVM) on a downscaled copy of the reference (onset)
    frame, mapped back; when it finds nothing, the frame upsampled step by step, then the next
    frames of the clip; a failure raises :class:`FaceNotFoundError` with the reason. Several
    faces: the largest. Then the 68 landmarks of dlib's iBUG 300-W predictor, shipped in the
    PyPI package ``face-recognition-models``.
:func:`alignment_matrix` (``geometry``)
    The similarity transform that puts both eye centres on fixed targets: eye line horizontal
    at ``eye_line * S``, ``inter_ocular * S`` apart, centred.
:func:`crop_frames` (``geometry``)
    One warp per frame to S x S, anti-aliased when the face is shrunk.
:func:`eye_mask`, :func:`fill_eyes` (``mask``)
    The two eye polygons (landmarks 36-41 and 42-47) grown by a margin, and their filling.
:func:`estimate_global_motion` (``stabilize``)
    The rigid head motion between two crops: a similarity fitted by RANSAC to dense flow.
:func:`estimate_clip_geometry`, :func:`warp_clip` (``clip``)
    Detection, landmarks, alignment and stabilisation once per clip, as a :class:`ClipGeometry`
    (matrices, landmarks, :class:`FaceQuality`) at one crop size; :meth:`ClipGeometry.scaled`
    gives the same face at another size without re-running anything, and :func:`warp_clip` the
    gray or RGB crops of a geometry (gray crops of RGB frames are ``to_gray`` of the RGB crops).
:func:`align_clip` (``clip``)
    All of it for a clip at one size, returning the crops, the mask and the quality record.

Landmark indices follow the 68-point model: 0-16 jaw, 17-21 and 22-26 brows, 27-35 nose, 36-41
and 42-47 eyes, 48-67 mouth; the lower index of each pair lies on the image's left (the subject's
right). Coordinates are (x, y) pixels with the origin at the centre of the top-left pixel.
Colour frames are RGB. Arrays in, arrays out: no file I/O beyond loading dlib's model files.
"""

from mepipe.features.face._checks import to_gray
from mepipe.features.face.clip import (
    MODES,
    OPEN_EYES,
    AlignedClip,
    ClipGeometry,
    FaceQuality,
    align_clip,
    estimate_clip_geometry,
    warp_clip,
)
from mepipe.features.face.geometry import (
    DEFAULT_SIZE,
    EYE_LINE,
    INTER_OCULAR,
    alignment_matrix,
    compose,
    crop_frames,
    crop_rescale_matrix,
    eye_targets,
    invert_similarity,
    similarity_from_eyes,
    transform_points,
)
from mepipe.features.face.landmarks import (
    BROWS,
    DETECT_WIDTH,
    JAW,
    LEFT_EYE,
    MIN_INTER_OCULAR,
    RIGHT_EYE,
    FaceBox,
    FaceDetection,
    FaceModelError,
    FaceNotFoundError,
    detect_faces,
    detection_scales,
    eye_aspect_ratio,
    eye_centres,
    face_landmarks,
    find_face,
    inter_ocular_distance,
    landmark_model_path,
)
from mepipe.features.face.mask import EYE_MARGIN, eye_mask, face_region, fill_eyes
from mepipe.features.face.stabilize import (
    GlobalMotion,
    dense_flow,
    estimate_global_motion,
    fit_rigid_motion,
    motion_magnitude,
)

__all__ = [
    "BROWS", "DEFAULT_SIZE", "DETECT_WIDTH", "EYE_LINE", "EYE_MARGIN", "INTER_OCULAR", "JAW", "LEFT_EYE",
    "MIN_INTER_OCULAR", "MODES", "OPEN_EYES", "RIGHT_EYE", "AlignedClip", "ClipGeometry", "FaceBox", "FaceDetection",
    "FaceModelError", "FaceNotFoundError", "FaceQuality", "GlobalMotion", "align_clip", "alignment_matrix",
    "compose", "crop_frames", "crop_rescale_matrix", "dense_flow", "detect_faces", "detection_scales",
    "estimate_clip_geometry", "estimate_global_motion", "eye_aspect_ratio",
    "eye_centres", "eye_mask", "eye_targets", "face_landmarks", "face_region", "fill_eyes", "find_face", "fit_rigid_motion",
    "inter_ocular_distance", "invert_similarity", "landmark_model_path", "motion_magnitude",
    "similarity_from_eyes", "to_gray", "transform_points", "warp_clip",
]
