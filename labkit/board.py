"""A study's figures and headline numbers as a TensorBoard run, beside its PNG files.

So that one ``tensorboard --logdir runs`` shows the whole study: the MLP runs' scalars and
pictures, and each unsupervised study's figures (Images tab) and headline numbers (Scalars).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def write_board(log_dir: str | os.PathLike, images: dict[str, str | os.PathLike],
                scalars: dict[str, float], text: str | None = None) -> Path:
    """Write a fresh TensorBoard run into ``log_dir``: PNG files as images, numbers as scalars.

    ``images``: {tag: PNG path}; ``scalars``: {tag: number} (None values are left out); ``text``:
    markdown for the Text tab. The run is written beside ``log_dir`` and renamed into place when
    complete (an earlier run there is replaced), so an interruption leaves no half-written run.
    """
    from matplotlib.image import imread
    from torch.utils.tensorboard import SummaryWriter

    log_dir = Path(log_dir)
    partial = log_dir.with_name(f".{log_dir.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        writer = SummaryWriter(str(partial))
        try:
            for tag, path in images.items():
                picture = imread(path)  # [H, W, 3 or 4] floats in 0..1
                writer.add_image(tag, picture[..., :3], dataformats="HWC")
            for tag, value in scalars.items():
                if value is not None:
                    writer.add_scalar(tag, float(value))
            if text:
                writer.add_text("summary", text)
        finally:
            writer.close()
        shutil.rmtree(log_dir, ignore_errors=True)
        os.replace(partial, log_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return log_dir
