"""What each label API charges per 1,000 images: one table, with the date it was read.

List prices of the cheapest paid tier for label detection, in USD. Clarifai and Hugging Face
have no per-image list price (Clarifai bills operations against a plan's credits; Hugging
Face bills compute time), so their price is None: give ``--price-per-1000`` to cap spending.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PRICES", "PRICES_READ", "Price"]

# When the figures below were read from the vendors' pricing pages (see
# ../shared/notes/targets.md §1); prices change, so a result records the price it used.
PRICES_READ = "2026-12-07"


@dataclass(frozen=True)
class Price:
    """An API's price per 1,000 images (None: not priced per image) and how it is billed."""

    per_1000: float | None
    billing: str


PRICES: dict[str, Price] = {
    "gcv": Price(1.50, "LABEL_DETECTION, per image; the first 1,000 a month free"),
    "rekognition": Price(1.00, "DetectLabels, per image, first 1M a month (group 1)"),
    "azure": Price(1.00, "Image Analysis 4.0 tags, per transaction, S1 tier"),
    "clarifai": Price(None, "per operation against a plan's credits: no per-image list price"),
    "hf": Price(None, "Inference: compute time (credits), no per-image price"),
    "json": Price(None, "a generic API: give its price with --price-per-1000"),
}
