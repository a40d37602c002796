"""Files the stages write and read: whole-file writes (atomic), the prepared arrays (arrays)."""
