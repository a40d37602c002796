"""Files the stages write and read: whole-file writes (atomic), the prepared arrays' .npz files and the
fingerprint of arrays (arrays)."""
