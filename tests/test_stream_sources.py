"""URL sources for predict.py: a local http.server (127.0.0.1, a free port) serving an mp4 and a jpg,
a refused connection, and the live-stream reader's newest-frame and reconnect rules."""

from __future__ import annotations

import functools
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import predict
from build_utils.cli import run_cli
from build_utils.errors import DatasetError
from tests.test_sources import _write_jpg, write_video
from train_val_utils.predict.sources import FramePrefetcher, resolve_source
from train_val_utils.predict.stream_reader import LatestFrameReader


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # no request lines in the test output
        pass


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[str]:
    """http://127.0.0.1:<free port> serving tmp_path/www (clip.mp4, photo.jpg, photo_no_suffix)."""
    www = tmp_path / "www"
    www.mkdir()
    write_video(www / "clip.mp4", 6, size_wh=(96, 64))
    _write_jpg(www / "photo.jpg", 48, 64, 80)
    handler = functools.partial(_QuietHandler, directory=str(www))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_http_image_is_fetched_once(server: str) -> None:
    spec = resolve_source(f"{server}/photo.jpg")
    assert spec.url is None and [p.name for p in spec.files] == ["photo.jpg"]
    frames = list(FramePrefetcher(spec))
    assert len(frames) == 1 and frames[0].kind == "image" and frames[0].img.shape == (48, 64, 3)
    top = frames[0].img[0, 0]
    assert top[0] > 240 and top[2] < 120  # RGB: the red top half is in channel 0


def test_http_video_is_read_in_order(server: str) -> None:
    spec = resolve_source(f"{server}/clip.mp4")
    assert spec.url == f"{server}/clip.mp4" and spec.files == [Path("clip.mp4")]
    frames = list(FramePrefetcher(spec))
    assert [f.frame for f in frames] == list(range(1, 7))  # a finite video: every frame, in order
    brightness = [float(f.img.mean()) for f in frames]
    assert brightness == sorted(brightness) and brightness[-1] - brightness[0] > 60


def test_predict_runs_on_a_url_video(server: str, tiny_weights: Path, repo_root: Path,
                                     tmp_path: Path) -> None:
    args = predict.get_args_parser().parse_args(
        ["--weights", str(tiny_weights), "--cfg", str(repo_root / "cfg" / "yolov3-tiny.cfg"), "--source",
         f"{server}/clip.mp4", "--img-size", "128", "--project", str(tmp_path / "runs"), "--save-txt"])
    stats = predict.main(args)
    assert stats.images == 6
    out = tmp_path / "runs" / "exp"
    assert (out / "clip.mp4").stat().st_size > 0 and len(list((out / "labels").glob("clip_*.txt"))) == 6


def test_unreachable_urls_are_one_line_errors(server: str, tiny_weights: Path, capsys: pytest.CaptureFixture,
                                              tmp_path: Path) -> None:
    for url in (f"http://127.0.0.1:{closed_port()}/clip.mp4", f"rtsp://127.0.0.1:{closed_port()}/live"):
        with pytest.raises(DatasetError, match="cannot reach it") as err:
            resolve_source(url)
        assert url in str(err.value)
    with pytest.raises(DatasetError, match="404"):
        resolve_source(f"{server}/missing.jpg")
    url = f"http://127.0.0.1:{closed_port()}/cam.mp4"
    args = predict.get_args_parser().parse_args(["--weights", str(tiny_weights), "--source", url,
                                                 "--project", str(tmp_path / "runs")])
    assert run_cli(predict.main, args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --source " + url)


class FakeCapture:
    """A capture that yields `n` numbered frames and then fails, like a dropped stream."""

    def __init__(self, n: int, start: int = 0) -> None:
        self.frames = [np.full((4, 4, 3), start + k, np.uint8) for k in range(n)]

    def isOpened(self) -> bool:  # noqa: N802 - cv2's name
        return True

    def read(self) -> tuple[bool, np.ndarray | None]:
        return (True, self.frames.pop(0)) if self.frames else (False, None)

    def release(self) -> None:
        pass


def test_reader_keeps_only_the_newest_frame() -> None:
    reader = LatestFrameReader(lambda: FakeCapture(50), "fake://cam", reconnects=0).start()
    reader.join(timeout=10)  # the consumer is "slow": it starts after all 50 frames arrived
    frames = list(reader.frames())
    assert len(frames) == 1 and frames[0][0, 0, 0] == 49 and reader.dropped == 49
    assert reader.error is not None and "dropped" in reader.error


def test_reader_reconnects_then_stops_with_a_message() -> None:
    opened = []

    def open_capture() -> FakeCapture | None:
        opened.append(1)
        return FakeCapture(2, start=10 * len(opened)) if len(opened) <= 2 else None  # then the camera is gone

    reader = LatestFrameReader(open_capture, "rtsp://cam/live", reconnects=3, retry_wait_s=0.0).start()
    got = [int(f[0, 0, 0]) for f in reader.frames()]
    reader.close()
    assert len(opened) == 5  # first open + 2 recoveries that delivered + failed attempts up to the limit
    assert set(got) <= {10, 11, 20, 21} and got[-1] == 21 and got == sorted(got)
    assert reader.error == ("stream rtsp://cam/live dropped; gave up after 3 reconnect attempts "
                            "(check the camera/server and the URL)")


def test_reader_that_never_opens_says_so() -> None:
    class Closed(FakeCapture):
        def isOpened(self) -> bool:  # noqa: N802
            return False

    reader = LatestFrameReader(lambda: Closed(0), "rtmp://x/live", reconnects=1, retry_wait_s=0.0).start()
    assert list(reader.frames()) == []
    assert reader.error is not None and "cannot be opened" in reader.error
