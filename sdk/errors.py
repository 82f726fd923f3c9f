"""Errors that cross layers, in a module that loads nothing heavy.

MediaError is raised by fusionedge.preprocess (image_prep loads OpenCV) and caught by
applications that embed the runtime; defining it here lets `from fusionedge.runtime import
MediaError` work without loading OpenCV before the first image arrives.
"""

from __future__ import annotations


class MediaError(ValueError):
    """A file could not be decoded, or an array cannot be converted to the spec."""
