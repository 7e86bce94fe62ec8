"""The manifest: YAML and prompts files in, validated frozen items out (file:line on any mistake).

- ``types``: ``Item``, ``Limits``, ``Manifest``, ``ManifestError`` and ``ManifestErrors`` (several)
- ``loader``: reads the file and its top level; each item and row goes to the validator
- ``validate``: the one validator of entries (inline items and prompts-file rows)
- ``mistakes``: the mistakes of one load, up to 20 kept in file order
- ``readfile``: reading a regular file under a cap, never blocking on a FIFO
- ``build``: settles ids and expands matrix and variants into items
- ``ids``: safe names, derived ids, the book of explicit ids
- ``expand``: matrix and variant expansion, id parts, derived seeds
- ``promptfiles``: reading ``.txt``, ``.jsonl`` and ``.csv`` prompts files
- ``yamlnodes``: YAML nodes to values, with lines, alias bounds and ``blame_line``
- ``fast``: the yaml-rs reading, used where it provably agrees with PyYAML's
"""

from batchgen.manifest.ids import check_safe_name, derive_id
from batchgen.manifest.loader import DEFAULT_MODEL, MAX_MANIFEST_BYTES, load_manifest, loads_manifest
from batchgen.manifest.types import Item, Limits, Manifest, ManifestError, ManifestErrors

__all__ = [
    "DEFAULT_MODEL",
    "MAX_MANIFEST_BYTES",
    "Item",
    "Limits",
    "Manifest",
    "ManifestError",
    "ManifestErrors",
    "check_safe_name",
    "derive_id",
    "load_manifest",
    "loads_manifest",
]
