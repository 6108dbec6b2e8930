"""Label verification (every corrupt case named once) and the versioned label cache.

Verification runs once per dataset in threads (decoding is done by OpenCV, which releases the
GIL). The outcome of every pair, warnings included, is cached beside the labels keyed by a hash
of the image paths, sizes and mtimes and of the label files' bytes (label files are tiny, so reading
them costs about what a stat does, and a label edited in place within one mtime tick, or by a tool that
restores the mtime, is never read stale), so a second run is instant yet repeats the same warnings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from build_utils.dataset.image_io import HEAD_BYTES, read_image, sniff_image_format, undecodable_reason
from build_utils.errors import DatasetError
from build_utils.geometry import clip_coords, xywh2xyxy, xyxy2xywh

LOGGER = logging.getLogger(__name__)
CACHE_VERSION = 3
MIN_SIDE = 10
TOLERANCE = 0.01  # coordinates up to 1% outside [0, 1] are clipped, beyond that the file is corrupt


@dataclass
class PairResult:
    """Outcome of verifying one image/label pair."""

    shape: tuple[int, int] = (0, 0)  # original (h, w)
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0, 5), np.float32))
    status: str = "ok"  # ok | missing (no label file) | empty | corrupt
    reason: str = ""  # why corrupt
    notes: list[str] = field(default_factory=list)  # non-fatal warnings (duplicates, clipping)


def _check_image(img_path: str) -> tuple[int, int]:
    """Original (h, w) after EXIF rotation; raises ValueError with the reason when unusable."""
    size = os.path.getsize(img_path)
    if size == 0:
        raise ValueError("zero-byte image")
    with open(img_path, "rb") as f:
        head = f.read(HEAD_BYTES)
        if sniff_image_format(head) == "JPEG":  # by content: a PNG named .jpg is fine
            f.seek(max(0, size - 64))
            if b"\xff\xd9" not in f.read():
                raise ValueError("truncated JPEG (no end-of-image marker); re-export the image")
    try:
        img = read_image(img_path)
    except DatasetError as err:  # the decoder's reason (over the pixel limit, undecodable, ...)
        reason = str(err).removeprefix(f"{img_path}: ").split("; remove it")[0]
        raise ValueError(reason or undecodable_reason(head)) from None
    h, w = img.shape[:2]
    if h < MIN_SIDE or w < MIN_SIDE:
        raise ValueError(f"image is {w}x{h} px, under {MIN_SIDE} px")
    return h, w


def _bad_line(rows: list[list[str]], numbers: list[int], nc: int | None) -> tuple[int, str] | None:
    """First (line number, reason) of a malformed label row, or None."""
    for lineno, row in zip(numbers, rows):
        if len(row) != 5:
            return lineno, f"{len(row)} columns, expected 5 (class cx cy w h)"
        try:
            vals = [float(v) for v in row]
        except ValueError:
            return lineno, f"non-numeric value in {' '.join(row)!r}"
        if not all(np.isfinite(vals)):
            return lineno, "NaN or inf value"
        cls = vals[0]
        if cls < 0 or cls != int(cls):
            return lineno, f"class id {row[0]} is not a non-negative integer"
        if nc is not None and cls >= nc:
            return lineno, f"class id {int(cls)} >= nc={nc} (classes in the .data)"
        if vals[3] <= 0 or vals[4] <= 0:
            return lineno, f"width or height <= 0 ({row[3]}, {row[4]})"
        cx, cy, w, h = vals[1:]
        lo, hi = min(cx - w / 2, cy - h / 2), max(cx + w / 2, cy + h / 2)
        if lo < -TOLERANCE or hi > 1 + TOLERANCE:
            return lineno, "box outside the image (normalised coordinates beyond [0, 1])"
    return None


def parse_label_file(label_path: str, nc: int | None) -> tuple[np.ndarray, list[str]]:
    """(n, 5) `[class, cx, cy, w, h]` float32 and notes; raises ValueError naming line and reason."""
    # utf-8-sig: Windows editors start files with a byte-order mark, which must not spoil line 1
    lines = Path(label_path).read_text(encoding="utf-8-sig", errors="replace").splitlines()
    numbers = [i + 1 for i, ln in enumerate(lines) if ln.strip()]
    rows = [lines[i - 1].split() for i in numbers]
    bad = _bad_line(rows, numbers, nc)
    if bad is not None:
        raise ValueError(f"{label_path}:{bad[0]}: {bad[1]}")
    notes: list[str] = []
    if not rows:
        return np.zeros((0, 5), np.float32), notes
    lab = np.array(rows, dtype=np.float64)  # (n, 5)
    # within the tolerance (checked above): clip to the unit image silently, exporters round
    lab[:, 1:5] = xyxy2xywh(clip_coords(xywh2xyxy(lab[:, 1:5]), (1, 1)))
    unique, first = np.unique(lab, axis=0, return_index=True)
    if len(unique) < len(lab):
        notes.append(f"{len(lab) - len(unique)} duplicate label rows removed")
        lab = lab[np.sort(first)]
    return lab.astype(np.float32), notes


def verify_pair(img_path: str, label_path: str, nc: int | None) -> PairResult:
    """Verify one image and its label file; never raises (the reason lands in the result)."""
    res = PairResult()
    try:
        res.shape = _check_image(img_path)
        if not os.path.isfile(label_path):
            res.status = "missing"
            return res
        res.labels, res.notes = parse_label_file(label_path, nc)
        if len(res.labels) == 0:
            res.status = "empty"
    except (ValueError, OSError) as err:
        res.status, res.reason = "corrupt", str(err)
    return res


def dataset_hash(files: list[str]) -> str:
    """sha256 over paths, sizes and mtimes (missing files count too), so any edit invalidates."""
    h = hashlib.sha256()
    for f in files:
        try:
            st = os.stat(f)
            h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{f}|-\n".encode())
    return h.hexdigest()


def content_hash(files: list[str]) -> str:
    """sha256 over paths and contents (missing files count too): for small files, as cheap as stat."""
    h = hashlib.sha256()
    for f in files:
        try:
            fd = os.open(f, os.O_RDONLY)  # no buffered file object: this runs for every label file
            try:
                data = os.read(fd, 1 << 20)
                while chunk := os.read(fd, 1 << 20):
                    data += chunk
            finally:
                os.close(fd)
            h.update(f"{f}|{len(data)}\n".encode() + data)
        except OSError:
            h.update(f"{f}|-\n".encode())
    return h.hexdigest()


def _to_json(results: list[PairResult], key: str) -> dict:
    return {"version": CACHE_VERSION, "hash": key, "pairs": [
        {"shape": list(r.shape), "labels": r.labels.tolist(), "status": r.status, "reason": r.reason,
         "notes": r.notes} for r in results]}


def _from_json(data: dict) -> list[PairResult]:
    return [PairResult(tuple(p["shape"]), np.array(p["labels"], np.float32).reshape(-1, 5), p["status"],
                       p["reason"], p["notes"]) for p in data["pairs"]]


def load_cache(cache_path: Path, key: str) -> list[PairResult] | None:
    """Cached results when the cache exists, is readable, current version and matches `key`."""
    try:
        data = json.loads(cache_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        LOGGER.warning("%s: unreadable label cache (%s); rebuilding it", cache_path, str(err)[:120])
        return None
    if not isinstance(data, dict) or not isinstance(data.get("pairs"), list):
        LOGGER.warning("%s: not a label cache (valid JSON, but %s); rebuilding it", cache_path,
                       "no 'pairs' list" if isinstance(data, dict) else f"a {type(data).__name__}")
        return None
    if data.get("version") != CACHE_VERSION or data.get("hash") != key:
        return None
    try:
        return _from_json(data)
    except (KeyError, TypeError, ValueError, IndexError):
        LOGGER.warning("%s: damaged label cache entries; rebuilding it", cache_path)
        return None


def save_cache(cache_path: Path, results: list[PairResult], key: str) -> bool:
    """Write the cache atomically; a read-only folder costs a warning, never the run."""
    tmp = cache_path.with_name(cache_path.name + f".tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(_to_json(results, key)), encoding="utf-8")
        os.replace(tmp, cache_path)
        return True
    except OSError as err:
        tmp.unlink(missing_ok=True)
        LOGGER.warning("%s: cannot write the label cache (%s); verification will repeat next run",
                       cache_path, err.strerror or err)
        return False


def verify_all(img_files: list[str], label_files: list[str], nc: int | None, cache_path: Path | None,
               workers: int = 8) -> list[PairResult]:
    """Verify every pair (threads + tqdm), using and refreshing the cache at `cache_path`."""
    key = f"{dataset_hash(img_files)}|{content_hash(label_files)}|nc={nc}"
    if cache_path is not None and (cached := load_cache(cache_path, key)) is not None:
        LOGGER.info("%s: labels read from the cache", cache_path)
        return cached
    with ThreadPoolExecutor(max(1, min(workers, os.cpu_count() or 1) * 2)) as pool:
        results = list(tqdm(pool.map(verify_pair, img_files, label_files, [nc] * len(img_files)),
                            total=len(img_files), desc="verifying labels", unit="img", leave=False))
    if cache_path is not None:
        save_cache(cache_path, results, key)
    return results


def report(results: list[PairResult], img_files: list[str], source: str, strict: bool) -> None:
    """Log one warning per corrupt pair and note, the summary line; raise when strict or nothing usable."""
    corrupt = [(f, r.reason) for f, r in zip(img_files, results) if r.status == "corrupt"]
    for f, r in zip(img_files, results):
        for note in r.notes:
            LOGGER.warning("%s: %s", f, note)
    for f, reason in corrupt:
        LOGGER.warning("%s: %s (skipped)", f, reason)
    counts = Counter(r.status for r in results)
    n_ok = len(results) - counts["corrupt"]
    LOGGER.info("%d images, %d backgrounds, %d missing labels, %d corrupt (skipped)", n_ok,
                counts["missing"] + counts["empty"], counts["missing"], counts["corrupt"])
    if strict and corrupt:
        listing = "; ".join(f"{f}: {reason}" for f, reason in corrupt)
        raise DatasetError(f"{source}: {len(corrupt)} corrupt image/label pairs (strict): {listing}")
    if n_ok == 0:
        common = Counter(reason.split(": ")[-1] for _, reason in corrupt).most_common(3)
        why = "; ".join(f"{n}x {r}" for r, n in common) or "no images found"
        raise DatasetError(f"{source}: no usable images ({why}); check the path and the labels")
