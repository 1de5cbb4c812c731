"""Web connector: a Segment-compatible HTTP tracking API."""

from connectors.web.segment import SegmentMessageError, to_touchpoint

__all__ = ["SegmentMessageError", "to_touchpoint"]
