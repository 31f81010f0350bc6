"""The packed on-disk format (SPEC.md): bit packing, export, validated reading."""
