"""The manifest: YAML and prompts files in, validated frozen items out (file:line on any mistake)."""

from batchgen.manifest.loader import (
    DEFAULT_MODEL,
    MAX_MANIFEST_BYTES,
    Item,
    Limits,
    Manifest,
    ManifestError,
    check_safe_name,
    derive_id,
    load_manifest,
    loads_manifest,
)

__all__ = [
    "DEFAULT_MODEL",
    "MAX_MANIFEST_BYTES",
    "Item",
    "Limits",
    "Manifest",
    "ManifestError",
    "check_safe_name",
    "derive_id",
    "load_manifest",
    "loads_manifest",
]
