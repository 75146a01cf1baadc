"""Data set formats, parsed in one place for the upload check (API) and preprocess (worker).

`read_dataset(source)` finds the data file, detects its format (annotations_json, messages,
openai_chat), checks every row and image, and returns `Sample`s (images as bytes plus chat
turns), or raises one InvalidDataset whose `details` list every bad row.
"""

from orchestrator.dataformats.common import (
    ImagePart,
    ParsedDataset,
    Problem,
    Problems,
    Sample,
    SampleImage,
    Turn,
)
from orchestrator.dataformats.reader import FORMATS, detect_format, find_data_file, read_dataset
from orchestrator.dataformats.sources import DirectorySource, FileSource, ZipSource

__all__ = [
    "FORMATS",
    "DirectorySource",
    "FileSource",
    "ImagePart",
    "ParsedDataset",
    "Problem",
    "Problems",
    "Sample",
    "SampleImage",
    "Turn",
    "ZipSource",
    "detect_format",
    "find_data_file",
    "read_dataset",
]
