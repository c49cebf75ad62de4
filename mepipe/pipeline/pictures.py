"""Pictures of what the store holds: one artifact of one sample as an RGB image (``mepipe show``).

:func:`artifact_picture` reads one sample's chunks of one artifact from a built store (read-only)
and lays them out as labelled panels under a caption (sample id, emotion, onset / apex / offset
as indices into the clip); :func:`write_picture` saves it as a PNG. What each picture shows:

==================  ===========================================================================
artifact            panels
==================  ===========================================================================
``face``            onset crop, apex crop (eyes filled as stored), the eye mask in colour over
                    the apex frame of the aligned clip (eyes kept), ``|apex - onset|`` x 8
``frames``          montage of up to 12 evenly spaced frames of the aligned clip (eyes kept),
(``aligned``)       each tile captioned with its index; onset, apex and offset tiles framed in
                    green, red and blue and always among the tiles
``magnified``       the same montage of the Eulerian-magnified clip
``flow``            colour-coded flow (hue direction, saturation speed; wheel in the corner),
                    full colour at the 99.5th percentile of the speed, which is written with the
                    largest speed; u and v as blue-white-red maps on one symmetric scale (the
                    99.5th percentile of |u| and |v|), with a colour bar
``strain``          optical strain as an inferno heat map from 0 to its 99.5th percentile, with
                    a colour bar; the full range written
``residual``        ARS and RRS (grey levels 0..255) as inferno heat maps, each from 0 to its
                    99.5th percentile, with colour bars; the full ranges written
``dynamic``         the dynamic image as grayscale, min-max stretched (``display_image``), and
                    stretched from its 0.5th to its 99.5th percentile in the face
``magnified_flow``  colour-coded flow of the magnified clip, its strain heat map (as above)
==================  ===========================================================================

A colour variant (``show --variant 320-rgb-eyes-kept``) shows its crops and clips in colour, its
ARS and RRS as the colour images they are (stretched to their 99.5th percentile in the face, the
factor written), and its dynamic image in RGB.

Crops of side S are upscaled by a whole factor (at most 2, nearest neighbour, so pixels stay
pixels) to keep a picture about 1400 pixels wide at most; montage tiles are 160 pixels.
The colour scales of float arrays are taken from the face: the eye mask's pixels (zero in
flow-type arrays) and a margin of S/32 pixels along the crop's edge (where TV-L1 and the strain's
one-sided differences make outliers) are left out of the percentiles, not out of the picture. Everything here is OpenCV and NumPy; no plotting library.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import zarr

from mepipe.features.dynamic import display_image
from mepipe.features.visualize import color_wheel, flow_to_color, label
from mepipe.pipeline.store import StoreError, datasets_in, open_store, variant_groups
from mepipe.pipeline.variants import Variant

#: Picture name -> the artifact whose completion flag (``done/<artifact>``) it needs. ``frames``
#: and ``magnified`` show the ragged clips, ``face`` the ``face`` and ``eye_mask`` arrays, the
#: others the array of their name.
PICTURES: dict[str, str] = {
    "face": "face",
    "frames": "face",
    "flow": "flow",
    "strain": "strain",
    "residual": "residual",
    "dynamic": "dynamic",
    "magnified": "magnified",
    "magnified_flow": "magnified_flow",
}
ALIASES = {"aligned": "frames", "eye_mask": "face"}

#: Widest a picture of upscaled crops is made (pixels), and the largest upscaling factor.
MAX_WIDTH = 1400
MAX_SCALE = 2
TILE = 160
MAX_TILES = 12
GAP = 4
#: Tile frame colours (RGB) of the marked frames of a montage.
MARKS = {"onset": (0, 170, 0), "apex": (220, 0, 0), "offset": (0, 90, 230)}


class PictureError(Exception):
    """A picture cannot be made or written; one line naming the sample, artifact or path."""


@dataclass(frozen=True)
class _Sample:
    group: zarr.Group
    index: int
    sample_id: str
    key: str  # subject/clip within the group
    emotion: str
    onset: int
    apex: int  # the apex the artifacts were computed with (apex_used; the annotation if unset)
    apex_annotated: int
    offset: int
    n_frames: int
    files: tuple[int, int, int]  # onset, apex, offset frame numbers of the image files (-1: unknown)

    def caption(self) -> list[str]:
        apex = f"apex {self.apex}" + (f" (annotated {self.apex_annotated})" if self.apex != self.apex_annotated else "")
        files = ", ".join(str(number) for number in self.files) if min(self.files) >= 0 else ""
        return [f"{self.sample_id}   {self.emotion}",
                f"onset {self.onset}, {apex}, offset {self.offset} of {self.n_frames} frames (clip indices"
                + (f"; image files {files})" if files else ")")]


# ---------------------------------------------------------------- public API

def artifact_picture(store_path: str | Path, sample: str, artifact: str, variant: str | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB picture of one artifact of one sample of the store at ``store_path``.

    Parameters
    ----------
    store_path : a mepipe Zarr store (``mepipe build``); opened read-only.
    sample : sample id, ``group/subject/clip`` (e.g. ``demo/sub01/EP02_01f``), or ``subject/clip``
        when only one group holds it.
    artifact : one of :data:`PICTURES` (``face``, ``frames``, ``flow``, ``strain``, ``residual``,
        ``dynamic``, ``magnified``, ``magnified_flow``) or an alias (``aligned`` for ``frames``,
        ``eye_mask`` for ``face``).
    variant : the input variant to show (``320-rgb-eyes-kept``; ``pipeline.variants``); None: the
        dataset group's own (a build without ``--for``).

    Raises
    ------
    PictureError
        No store there; no such sample (the message names the nearest ids); an artifact unknown or
        not built for the sample's group (the message lists those present); an artifact not
        computed for this sample (the message gives the QC failure reason when there is one).
    """
    name = ALIASES.get(artifact, artifact)
    if name not in PICTURES:
        names = ", ".join(f"{n} (or {a})" if a else n for n, a in ((n, _alias_of(n)) for n in PICTURES))
        raise PictureError(f"unknown artifact {artifact!r}; artifacts: {names}")
    try:
        root = open_store(store_path, "r")
    except StoreError as error:
        raise PictureError(str(error)) from None
    found = _find_sample(root, Path(store_path), sample, variant)
    _check_computed(found, name, artifact)
    picture = _DRAW[name](found)
    return _captioned(picture, found.caption(), name)


def write_picture(image: np.ndarray, path: str | Path) -> Path:
    """Write an (H, W, 3) uint8 RGB picture as a PNG (compression 9) at ``path``; returns the path.

    The parent folder is made when missing. The file is PNG whatever its suffix.

    Raises
    ------
    PictureError
        The image is not (H, W, 3) uint8, or the folder cannot be made or the file written.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise PictureError(f"cannot write {path}: expected an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}")
    path = Path(path)
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise PictureError(f"cannot write {path}: PNG encoding failed")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PictureError(f"cannot create the folder of {path}: {error.strerror or error}") from None
    try:
        path.write_bytes(encoded.tobytes())
    except OSError as error:
        raise PictureError(f"cannot write {path}: {error.strerror or error}") from None
    return path


def thumbnails(face: np.ndarray | None, flow: np.ndarray | None, eye_mask: np.ndarray | None, side: int = 96,
               per_colour: bool = False) -> dict[str, np.ndarray]:
    """Small (side, side, 3) uint8 RGB pictures of one sample's stored arrays, for ``mepipe report``.

    face : the sample's ``face`` chunk, (2, S, S) uint8 onset and apex, or (6, S, S) of a colour
        variant (``per_colour``); None leaves out ``onset``, ``apex`` and ``difference``.
    flow : its ``flow`` chunk, (2, S, S) float32 pixels; None leaves out ``flow``.
    eye_mask : its (S, S) eye mask, left out of the flow's colour scale (None: not left out).

    ``onset`` and ``apex`` are the key frames as stored (eyes filled), ``difference`` is
    ``|apex - onset|`` x 8 (as ``show --artifact face``), ``flow`` the colour-coded flow at full
    colour at the 99.5th percentile of its speed in the face (as ``show --artifact flow``).
    Shrunk with area averaging, or enlarged nearest-neighbour.
    """
    pictures: dict[str, np.ndarray] = {}
    if face is not None:
        crops = _images(face, per_colour)
        difference = np.clip(cv2.absdiff(crops[1], crops[0]).astype(np.int32) * 8, 0, 255).astype(np.uint8)
        for name, image in (("onset", crops[0]), ("apex", crops[1]), ("difference", difference)):
            pictures[name] = _shrink(_gray_rgb(image), side)
    if flow is not None:
        flow = _float(flow)
        region = _edge_and_eye_free_mask(eye_mask, flow.shape[-1])
        speed = np.hypot(flow[0], flow[1])
        top = max(_percentile(speed[region] if region.any() else speed.ravel(), 99.5), 1e-6)
        pictures["flow"] = _shrink(flow_to_color(flow, top), side)
    return pictures


def _shrink(image: np.ndarray, side: int) -> np.ndarray:
    if image.shape[0] == side:
        return np.ascontiguousarray(image)
    method = cv2.INTER_AREA if image.shape[0] > side else cv2.INTER_NEAREST
    return cv2.resize(image, (side, side), interpolation=method)


# ---------------------------------------------------------------- finding the sample

def _alias_of(name: str) -> str | None:
    return next((alias for alias, target in ALIASES.items() if target == name), None)


def _find_sample(root: zarr.Group, store_path: Path, sample: str, variant: str | None = None) -> _Sample:
    groups = datasets_in(root)
    if not groups:
        raise PictureError(f"the store at {store_path} holds no dataset yet (build one with `mepipe build`)")
    ids = {name: [str(value) for value in root[name]["sample_id"][:]] for name in groups}
    wanted = sample.strip().strip("/")
    matches = [(name, ids[name].index(wanted)) for name in groups if wanted in ids[name]]
    if not matches:  # subject/clip without its group
        matches = [(name, ids[name].index(f"{name}/{wanted}")) for name in groups if f"{name}/{wanted}" in ids[name]]
    if len(matches) > 1:
        choices = ", ".join(f"{name}/{wanted}" for name, _ in matches)
        raise PictureError(f"sample {sample!r} is in several groups of {store_path}; name one of: {choices}")
    if not matches:
        every = [sample_id for name in groups for sample_id in ids[name]]
        near = difflib.get_close_matches(wanted, every, n=3, cutoff=0.5)
        if not near and len(groups) == 1:
            near = difflib.get_close_matches(f"{groups[0]}/{wanted}", every, n=3, cutoff=0.5)
        hint = f"nearest: {', '.join(near)}" if near else f"e.g. {', '.join(every[:3])}"
        counts = ", ".join(f"{name} ({len(ids[name])})" for name in groups)
        raise PictureError(f"no sample {sample!r} in {store_path} (groups: {counts}); {hint}")
    name, index = matches[0]
    group = root[name]
    sample_id = ids[name][index]
    if variant is not None:
        group, index = _in_variant(group, name, sample_id, variant)

    def number(field: str, default: int = -1) -> int:
        return int(group[field][index]) if field in group else default

    apex = number("apex")
    used = number("apex_used")
    return _Sample(
        group, index, sample_id, sample_id.split("/", 1)[1], str(group["emotion"][index]) if "emotion" in group else "",
        number("onset"), used if used >= 0 else apex, apex, number("offset"), number("n_frames"),
        (number("onset_frame"), number("apex_frame"), number("offset_frame")),
    )


def _in_variant(group: zarr.Group, name: str, sample_id: str, variant: str) -> tuple[zarr.Group, int]:
    """The group of dataset ``name`` holding ``variant``, and the sample's row there."""
    try:
        wanted = Variant.parse(variant)
    except ValueError as error:
        raise PictureError(str(error)) from None
    held = variant_groups(group)
    if wanted.name not in held:
        raise PictureError(f"{name} has no variant {wanted.name}; its variants: {', '.join(held) or 'none'} "
                           f"(build one with `mepipe build --for MODEL`)")
    child = held[wanted.name]
    rows = [str(value) for value in child["sample_id"][:]]
    if sample_id not in rows:
        raise PictureError(f"{sample_id} is not in variant {wanted.name} of {name} (build it again with --for)")
    return child, rows.index(sample_id)


def _computed(found: _Sample) -> list[str]:
    """The pictures this sample can show."""
    group = found.group
    present = []
    for name, flag in PICTURES.items():
        if "done" in group and flag in group["done"] and bool(group["done"][flag][found.index]):
            present.append(name)
    return present


def _check_computed(found: _Sample, name: str, asked: str) -> None:
    group = found.group
    flag = PICTURES[name]
    flags = built_flags(group)
    built = [n for n, f in PICTURES.items() if f in flags]
    if flag not in flags:
        group_name = found.sample_id.split("/", 1)[0]
        raise PictureError(f"group {group_name} has no {asked} artifact (not built for it); "
                           f"its artifacts: {', '.join(built) or 'none'}")
    if bool(group["done"][flag][found.index]):
        return
    reason = ""
    if "qc" in group and "failures" in group["qc"]:
        reason = failures_of(group, found.index).get(flag, {}).get("reason", "")
    why = f"failed: {reason}" if reason else "not computed yet (run `mepipe build` again)"
    present = _computed(found)
    raise PictureError(f"{found.sample_id}: {asked} {why}; computed for this sample: {', '.join(present) or 'nothing'}")


def built_flags(group: zarr.Group) -> list[str]:
    """Names of the artifacts the group has completion flags for (built or being built)."""
    return sorted(group["done"].array_keys()) if "done" in group else []


def failures_of(group: zarr.Group, index: int) -> dict:
    """The QC failure record of one sample (``{artifact: {"reason", "key"}}``; empty when none)."""
    text = str(group["qc"]["failures"][index])
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return {}


# ---------------------------------------------------------------- drawing

def _face(found: _Sample) -> np.ndarray:
    group, i = found.group, found.index
    crops = _images(group["face"][i], _per_colour(found, "face"))  # 2 x (S, S[, 3]) uint8, eyes filled
    mask = group["eye_mask"][i, 0].astype(bool)
    scale = _scale(crops.shape[-1], 4)
    try:  # the mask shows best over the eyes it hides: the aligned clip's apex frame keeps them
        apex_frame = np.asarray(_clip_array(found, "frames")[found.apex])
    except (KeyError, IndexError):
        apex_frame = crops[1]
    overlay = _gray_rgb(apex_frame).astype(np.float32)
    overlay[mask] = overlay[mask] * 0.45 + np.array([255, 0, 255], np.float32) * 0.55
    overlay = overlay.astype(np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(overlay, contours, -1, (255, 0, 255), 1)
    difference = np.clip(cv2.absdiff(crops[1], crops[0]).astype(np.int32) * 8, 0, 255).astype(np.uint8)
    panels = [
        label(_up(_gray_rgb(crops[0]), scale), f"onset ({found.onset})"),
        label(_up(_gray_rgb(crops[1]), scale), f"apex ({found.apex})"),
        label(_up(overlay, scale), f"eye mask ({mask.mean() * 100:.1f}%)"),
        label(_up(_gray_rgb(difference), scale), "|apex - onset| x8"),
    ]
    return _row(panels)


def _frames(found: _Sample) -> np.ndarray:
    return _montage(found, "frames")


def _magnified(found: _Sample) -> np.ndarray:
    return _montage(found, "magnified")


def _montage(found: _Sample, kind: str) -> np.ndarray:
    clip = _clip_array(found, kind)
    count = clip.shape[0]
    marks = {index: name for name, index in (("offset", found.offset), ("apex", found.apex), ("onset", found.onset)) if 0 <= index < count}
    chosen = montage_indices(count, list(marks), MAX_TILES)
    frames = clip.get_orthogonal_selection((chosen,)) if hasattr(clip, "get_orthogonal_selection") else clip[chosen]
    tiles = []
    for index, frame in zip(chosen, frames):
        tile = cv2.resize(_gray_rgb(frame), (TILE, TILE), interpolation=cv2.INTER_AREA if frame.shape[0] > TILE else cv2.INTER_LINEAR)
        text = f"{index}"
        names = [name for position, name in marks.items() if position == index]
        if names:
            color = MARKS[names[-1]]
            cv2.rectangle(tile, (1, 1), (TILE - 2, TILE - 2), color, 3)
            text += " " + "+".join(reversed(names))
        tiles.append(label(tile, text))
    columns = min(len(tiles), 6)
    rows = [tiles[start:start + columns] for start in range(0, len(tiles), columns)]
    height, width = tiles[0].shape[:2]
    sheet = []
    for row in rows:
        row = row + [np.full((height, width, 3), 255, np.uint8)] * (columns - len(row))
        sheet.append(_row(row))
    title = f"{'aligned clip' if kind == 'frames' else 'magnified clip'}: {len(chosen)} of {count} frames"
    return label(_column(sheet), title)


def montage_indices(count: int, marks: list[int], tiles: int = MAX_TILES) -> list[int]:
    """Ascending frame indices of a montage of a ``count``-frame clip: at most ``tiles`` of them,
    evenly spaced from the first frame to the last, each index of ``marks`` (e.g. onset, apex,
    offset) put in place of the nearest unmarked one."""
    if count <= tiles:
        return list(range(count))
    chosen = sorted({int(round(x)) for x in np.linspace(0, count - 1, tiles)})
    for mark in marks:
        if mark in chosen or not 0 <= mark < count:
            continue
        free = [c for c in chosen if c not in marks]
        if not free:
            break
        chosen.remove(min(free, key=lambda c: (abs(c - mark), c)))
        chosen.append(mark)
    return sorted(set(chosen))


def _flow(found: _Sample) -> np.ndarray:
    flow = _float(found.group["flow"][found.index])  # (2, S, S) px
    face = _face_region(found, flow.shape[-1])
    scale = _scale(flow.shape[-1], 3)
    colour = _flow_panel(flow, face, scale, "flow")
    extent = max(_percentile(np.abs(flow[0])[face], 99.5), _percentile(np.abs(flow[1])[face], 99.5), 1e-6)
    lut = _diverging_lut()
    u_panel = label(_up(_apply_lut(flow[0], -extent, extent, lut), scale), "u (x), + right")
    v_panel = label(_up(_apply_lut(flow[1], -extent, extent, lut), scale), "v (y), + down")
    maps = _row([u_panel, v_panel])
    maps = _column([maps, _colorbar(lut, maps.shape[1], -extent, extent, "px")])
    return _row([colour, maps])


def _strain(found: _Sample) -> np.ndarray:
    strain = _float(found.group["strain"][found.index, 0])
    face = _face_region(found, strain.shape[-1])
    return _heat_panel(strain, face, _scale(strain.shape[-1], 1), "optical strain")


def _residual(found: _Sample) -> np.ndarray:
    if _per_colour(found, "residual"):  # ARS and RRS of the R, G, B channels: shown as colour images
        ars, rrs = _images(found.group["residual"][found.index], True)
        face = _face_region(found, ars.shape[0])
        scale = _scale(ars.shape[0], 2)
        panels = []
        for image, name in ((ars, "ARS of R, G, B (sum mod 256)"), (rrs, "RRS of R, G, B")):
            # residuals are a few levels against 255: stretched to the 99.5th percentile in the face, said so
            top = max(_percentile(image[face].ravel(), 99.5), 1.0)
            shown = np.clip(image.astype(np.float32) * (255.0 / top), 0, 255).astype(np.uint8)
            panels.append(_label_fit(_up(shown, scale), f"{name}, x{255.0 / top:.1f} (0..{top:.0f} shown as 0..255)", name))
        return _row(panels)
    residual = _float(found.group["residual"][found.index])  # (2, S, S), grey levels 0..255
    face = _face_region(found, residual.shape[-1])
    scale = _scale(residual.shape[-1], 2)
    panels = [_heat_panel(channel, face, scale, name) for channel, name in zip(residual, ("ARS (sum mod 256)", "RRS"))]
    return _row(panels)


def _dynamic(found: _Sample) -> np.ndarray:
    if _per_colour(found, "dynamic"):  # MSMMT's RGB dynamic image
        image = _images(found.group["dynamic"][found.index], True)[0]
        return label(_up(image, _scale(image.shape[0], 2)), "RGB dynamic image, onset..apex")
    image = np.asarray(found.group["dynamic"][found.index, 0])  # (S, S) uint8, min-max scaled
    face = _face_region(found, image.shape[-1])
    scale = _scale(image.shape[-1], 2)
    stretched = display_image(image)
    low, high = np.percentile(image[face], (0.5, 99.5)) if face.any() else (0.0, 255.0)
    contrast = np.clip((image.astype(np.float32) - low) * (255.0 / max(high - low, 1.0)), 0, 255).astype(np.uint8)
    return _row([
        _label_fit(_up(_gray_rgb(stretched), scale), "dynamic image, onset..apex (min-max)", "dynamic image"),
        _label_fit(_up(_gray_rgb(contrast), scale), f"stretched {low:.0f}..{high:.0f} (0.5-99.5th pct)", f"{low:.0f}..{high:.0f} stretched"),
    ])


def _magnified_flow(found: _Sample) -> np.ndarray:
    values = _float(found.group["magnified_flow"][found.index])  # (3, S, S): u, v px, strain
    face = _face_region(found, values.shape[-1])
    scale = _scale(values.shape[-1], 2)
    colour = _flow_panel(values[:2], face, scale, "magnified flow")
    heat = _heat_panel(values[2], face, scale, "strain")
    return _row([colour, heat])


_DRAW = {
    "face": _face, "frames": _frames, "magnified": _magnified, "flow": _flow, "strain": _strain,
    "residual": _residual, "dynamic": _dynamic, "magnified_flow": _magnified_flow,
}


# ---------------------------------------------------------------- panels

def _flow_panel(flow: np.ndarray, face: np.ndarray, scale: int, name: str) -> np.ndarray:
    """Colour-coded (2, S, S) flow, wheel inset; full colour at the 99.5th percentile of the speed
    in the face (the largest speeds are often a few pixels at the crop's border), both written."""
    speed = np.hypot(flow[0], flow[1])
    inside = speed[face] if face.any() else speed.ravel()
    top = max(_percentile(inside, 99.5), 1e-6)
    picture = _up(flow_to_color(flow, top), scale)
    side = max(24, picture.shape[0] // 5)
    wheel = cv2.resize(color_wheel(64), (side, side), interpolation=cv2.INTER_AREA)
    picture[-side - 2:-2, -side - 2:-2] = wheel
    return _label_fit(picture, f"{name}: full colour {top:.2f} px (99.5th pct), max {float(speed.max()):.2f} px",
                      f"full {top:.2f}, max {float(speed.max()):.2f} px")


def _heat_panel(values: np.ndarray, face: np.ndarray, scale: int, name: str) -> np.ndarray:
    """Inferno heat map of a non-negative map from 0 to its 99.5th percentile in the face, with bar."""
    inside = values[face] if face.any() else values.ravel()
    top = max(_percentile(inside, 99.5), 1e-9)
    lut = _inferno_lut()
    picture = _label_fit(_up(_apply_lut(values, 0.0, top, lut), scale), f"{name} {float(values.min()):.3g}..{float(values.max()):.3g}",
                         f"{float(values.min()):.3g}..{float(values.max()):.3g}")
    return _column([picture, _colorbar(lut, picture.shape[1], 0.0, top, "(99.5th pct)")])


def _colorbar(lut: np.ndarray, width: int, low: float, high: float, unit: str) -> np.ndarray:
    """(30, width, 3) uint8: a horizontal bar of ``lut`` (256, 3) with its end values written."""
    bar = np.full((30, width, 3), 255, np.uint8)
    inner = max(width - 8, 2)
    ramp = lut[np.linspace(0, 255, inner).astype(np.int32)]
    bar[2:12, 4:4 + inner] = ramp[None]
    font, size = cv2.FONT_HERSHEY_SIMPLEX, 0.4
    left = f"{low:.3g}"
    right = f"{high:.3g} {unit}".strip()
    cv2.putText(bar, left, (4, 26), font, size, (0, 0, 0), 1, cv2.LINE_AA)
    (text_width, _), _ = cv2.getTextSize(right, font, size, 1)
    cv2.putText(bar, right, (max(4, width - 4 - text_width), 26), font, size, (0, 0, 0), 1, cv2.LINE_AA)
    if low < 0 < high:
        middle = "0"
        (mw, _), _ = cv2.getTextSize(middle, font, size, 1)
        cv2.putText(bar, middle, (width // 2 - mw // 2, 26), font, size, (0, 0, 0), 1, cv2.LINE_AA)
    return bar


def _inferno_lut() -> np.ndarray:
    """(256, 3) uint8 RGB inferno colours (OpenCV's COLORMAP_INFERNO)."""
    ramp = np.arange(256, dtype=np.uint8)[:, None]
    return cv2.cvtColor(cv2.applyColorMap(ramp, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)[:, 0]


def _diverging_lut() -> np.ndarray:
    """(256, 3) uint8 RGB blue - white - red: index 0 blue, 128 white, 255 red."""
    t = np.linspace(-1.0, 1.0, 256)[:, None]
    blue, white, red = np.array([40, 70, 200.0]), np.array([255, 255, 255.0]), np.array([200, 30, 30.0])
    colours = np.where(t < 0, white + (blue - white) * -t, white + (red - white) * t)
    return np.rint(colours).astype(np.uint8)


def _apply_lut(values: np.ndarray, low: float, high: float, lut: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8: ``values`` mapped linearly from [low, high] to the 256 colours of ``lut``."""
    index = np.clip((values - low) / max(high - low, 1e-12) * 255.0, 0, 255)
    return lut[np.rint(index).astype(np.int32)]


# ---------------------------------------------------------------- helpers

def _clip_array(found: _Sample, kind: str):
    subject, clip = found.key.split("/", 1)
    return found.group["clips"][kind][subject][clip.replace("/", "__")]


def _face_region(found: _Sample, size: int) -> np.ndarray:
    return _edge_and_eye_free(found.group, found.index, size)


def _edge_and_eye_free(group: zarr.Group, index: int, size: int) -> np.ndarray:
    return _edge_and_eye_free_mask(group["eye_mask"][index, 0] if "eye_mask" in group else None, size)


def _edge_and_eye_free_mask(eye_mask: np.ndarray | None, size: int) -> np.ndarray:
    """(S, S) bool: the pixels the colour scales are taken from, outside the eye mask and at least
    S/32 pixels (at least 2) from the crop's edge, where the flow's borders make outliers."""
    region = np.zeros((size, size), bool)
    margin = max(2, size // 32)
    region[margin:size - margin, margin:size - margin] = True
    if eye_mask is not None:
        mask = np.asarray(eye_mask).astype(bool)
        if mask.shape == (size, size) and (region & ~mask).any():
            region &= ~mask
    return region


def _float(values) -> np.ndarray:
    return np.nan_to_num(np.asarray(values, np.float32), nan=0.0, posinf=0.0, neginf=0.0)


def _percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if values.size else 0.0


def _scale(size: int, panels: int) -> int:
    """Whole upscaling factor of ``panels`` crops of side ``size`` side by side: 1..MAX_SCALE."""
    return int(max(1, min(MAX_SCALE, MAX_WIDTH // max(1, panels * size))))


def _up(image: np.ndarray, scale: int) -> np.ndarray:
    if scale == 1:
        return np.ascontiguousarray(image)
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)


def _gray_rgb(image: np.ndarray) -> np.ndarray:
    """An (S, S) gray image as RGB; an (S, S, 3) colour one (a colour variant's) as it is."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    return image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)


def _images(stored: np.ndarray, per_colour: bool) -> np.ndarray:
    """A sample's (K, S, S) channels, or (3K, S, S) of a colour variant, as K images (S, S[, 3])."""
    stored = np.asarray(stored)
    if not per_colour:
        return stored
    return stored.reshape(-1, 3, *stored.shape[1:]).transpose(0, 2, 3, 1)


def _per_colour(found: _Sample, name: str) -> bool:
    """Whether the array has its channels per colour (``..._r, ..._g, ..._b``: a colour variant)."""
    channels = list(found.group[name].attrs.get("channels", []))
    return bool(channels) and str(channels[-1]).endswith("_b")


def _row(panels: list[np.ndarray]) -> np.ndarray:
    """Panels left to right on white, GAP apart, shorter ones padded below."""
    height = max(p.shape[0] for p in panels)
    strip = np.full((height, sum(p.shape[1] for p in panels) + GAP * (len(panels) - 1), 3), 255, np.uint8)
    x = 0
    for panel in panels:
        strip[:panel.shape[0], x:x + panel.shape[1]] = panel
        x += panel.shape[1] + GAP
    return strip


def _column(parts: list[np.ndarray]) -> np.ndarray:
    """Parts top to bottom on white, GAP apart, narrower ones padded on the right."""
    width = max(p.shape[1] for p in parts)
    padded = []
    for number, part in enumerate(parts):
        part = np.pad(part, ((0, GAP if number < len(parts) - 1 else 0), (0, width - part.shape[1]), (0, 0)), constant_values=255)
        padded.append(part)
    return np.vstack(padded)


def _label_fit(image: np.ndarray, text: str, short: str) -> np.ndarray:
    """:func:`label` with ``text``, or ``short`` when ``text`` is wider than the image."""
    width = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)[0][0] + 8
    return label(image, text if width <= image.shape[1] else short)


def _captioned(picture: np.ndarray, lines: list[str], artifact: str) -> np.ndarray:
    """The picture under its caption lines, widened (white on the right) so the lines fit."""
    font, size = cv2.FONT_HERSHEY_SIMPLEX, 0.45
    lines = [f"{lines[0]}   [{artifact}]", *lines[1:]]
    needed = max(cv2.getTextSize(line, font, size, 1)[0][0] for line in lines) + 8
    if needed > picture.shape[1]:
        picture = np.pad(picture, ((0, 0), (0, needed - picture.shape[1]), (0, 0)), constant_values=255)
    picture = np.pad(picture, ((GAP, GAP), (GAP, GAP), (0, 0)), constant_values=255)
    for line in reversed(lines):
        picture = label(picture, line, height=20)
    return np.ascontiguousarray(picture)

