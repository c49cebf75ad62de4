"""Input checks and conversions shared by the face stage."""

from __future__ import annotations

import cv2
import numpy as np


def to_gray(frame: np.ndarray) -> np.ndarray:
    """(H, W) gray of an (H, W) or (H, W, 3) RGB frame, in the frame's dtype (float becomes float32)."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        frame = frame.astype(np.float32)
    if frame.ndim == 2:
        return frame
    if frame.ndim == 3 and frame.shape[2] == 3:
        return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    if frame.ndim == 3 and frame.shape[2] == 1:
        return frame[:, :, 0]
    raise ValueError(f"expected an (H, W) gray or (H, W, 3) RGB frame, got shape {frame.shape}")

def _frame_count(frames) -> int:
    if isinstance(frames, np.ndarray):
        if frames.ndim not in (3, 4):
            raise ValueError(f"expected (T, H, W) or (T, H, W, 3) frames, got an array of shape {frames.shape}")
        return frames.shape[0]
    return len(frames)

def _check_frame(frame: np.ndarray, index: int) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[2] not in (1, 3)):
        raise ValueError(f"frame {index}: expected (H, W) gray or (H, W, 3) RGB, got shape {frame.shape}")
    if frame.dtype != np.uint8 and not np.issubdtype(frame.dtype, np.floating):
        raise ValueError(f"frame {index}: expected uint8 or float pixels in [0, 255], got {frame.dtype}")
    if min(frame.shape[:2]) < 8:
        raise ValueError(f"frame {index}: {frame.shape[1]}x{frame.shape[0]} pixels is too small to hold a face")
    return frame

def _check_landmarks(landmarks: np.ndarray) -> np.ndarray:
    landmarks = np.asarray(landmarks, np.float64)
    if landmarks.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks of the 68-point model, got shape {landmarks.shape}")
    if not np.isfinite(landmarks).all():
        raise ValueError("landmarks contain NaN or infinite values")
    return landmarks

def _as_gray_uint8(image: np.ndarray) -> np.ndarray:
    if image.ndim != 2:
        raise ValueError(f"expected a (H, W) grayscale image, got shape {image.shape}")
    if image.dtype != np.uint8:
        image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)
