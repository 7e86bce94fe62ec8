"""Exports of an output folder in the layouts training pipelines already read.

Only items whose image is on disk are exported, each with the parameters it was submitted with (as
recorded in the ledger), so a dataset row says exactly how its image was made. Each format is one
``Exporter`` (``write`` a sample, ``close``); ``export`` feeds it the catalog. Writing needs no
third-party library except Parquet (pyarrow); reading the results is the libraries' job.

- ``base``: the row, the sample, the writer interface, the destination folder rules
- ``imagefolder``, ``webdataset``, ``parquet``: one writer each
- ``driver``: the format table and the loop that feeds a writer
"""

from batchgen.outputs.export.base import Exporter, ExportError, MissingLibrary, Sample, rows
from batchgen.outputs.export.driver import FORMATS, Format, export, open_exporter

__all__ = ["FORMATS", "ExportError", "Exporter", "Format", "MissingLibrary", "Sample", "export", "open_exporter", "rows"]
