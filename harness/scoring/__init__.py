"""Scoring super-resolved faces: identity similarity (:mod:`.identity`), image metrics
(:mod:`.metrics`), recognizers (:mod:`.recognizers`) and whole folders (:mod:`.evaluate`).

This package file holds only the metric names, so that job validation can check them without
importing the scoring code (scipy, OpenCV).
"""

#: Metric names :func:`harness.scoring.evaluate.score_pairs` accepts, in the order records
#: list them.
ALL_METRICS: tuple[str, ...] = ("is", "psnr", "ssim", "psnr_y", "ssim_y", "rmse", "niqe")
